"""The DVC remote in S3 when ``s3.bucket`` is set.

It is written to ``.dvc/config.local`` (never committed), as the default remote named
``percept-s3`` at ``s3://bucket/prefix/dvc`` with ``s3.endpoint_url``; the committed
``.dvc/config`` keeps its local-folder default for everyone else. Credentials stay in the standard
AWS chain, which DVC's S3 client reads too. Without a bucket any ``percept-s3`` remote is removed.
Called before every ``dvc`` command percept runs (``percept repro``, the retrain flow) and by
``percept remote`` for a ``dvc push``/``dvc pull`` by hand.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.common.schema import Config

REMOTE = "percept-s3"


def configure_dvc_remote(cfg: Config, root: Path = Path(".")) -> str | None:
    """Point DVC's default remote at ``cfg.dvc_remote`` (or drop ours); the remote's URL or None."""
    from dvc.config import Config as DvcConfig

    dvc = DvcConfig(dvc_dir=str(root / ".dvc"), validate=False)
    url = cfg.dvc_remote
    with dvc.edit("local") as local:
        if url is None:
            if local.get("core", {}).get("remote") == REMOTE:
                del local["core"]["remote"]
            local.get("remote", {}).pop(REMOTE, None)
            return None
        remote = {"url": url}
        if cfg.s3.endpoint_url:
            remote["endpointurl"] = cfg.s3.endpoint_url
        if cfg.s3.region:
            remote["region"] = cfg.s3.region
        local.setdefault("remote", {})[REMOTE] = remote
        local.setdefault("core", {})["remote"] = REMOTE
    return url
