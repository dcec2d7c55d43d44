"""The services and clients percept talks to: Ray (engine), MLflow (tracking, registry), S3, DVC
(remote, repro, the plots page), Prefect's schedule (retrain) and the native stack."""
