"""The stages dvc.yaml runs, one module each (`percept <verb>`); no stage imports another."""
