"""The scheduled ``retrain`` flow: the same pipeline ``dvc repro`` runs, unattended.

1. Re-acquire and re-ingest (forced: an ``s3://`` source can change without DVC seeing it).
2. Compare the manifest's sha256 with the one each trained task's latest registered version
   was trained on (the ``percept.manifest_sha256`` tag). Nothing new and not forced: stop with
   "nothing to do".
3. ``dvc repro`` up to the ``register`` stages (shards, training, evaluation, registration),
   ``dvc push`` the data to the remote, then ``dvc repro promote``: a failing push stops the
   run before any alias moves.
4. A markdown artifact: what changed, each task's figures against the champion, the decision.

One retrain at a time per project (a Prefect global concurrency limit): two ``dvc repro`` in
one workspace fight over DVC's lock. DVC and S3 steps retry with exponential backoff.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from pipelines.common.fsutil import sha256_file
from pipelines.common.params import DEFAULT_PARAMS, load_config
from pipelines.common.paths import Paths
from pipelines.services import tracking
from pipelines.services.registry import MANIFEST_TAG
from pipelines.services.remote import configure_dvc_remote

log = logging.getLogger(__name__)
CONCURRENCY_LIMIT = "percept-retrain"
RETRIES, RETRY_BASE_S = 3, 10


class StepFailed(RuntimeError):
    """A pipeline command failed; the message holds the end of its output."""


@task(retries=RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_S), retry_jitter_factor=0.2)
def dvc(args: list[str], root: str) -> str:
    """``dvc <args>`` in the project root, with the project's own ``percept`` on PATH."""
    from prefect.client.orchestration import get_client

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    with get_client(sync_client=True) as prefect:  # the stages' flows report here: no server of their own
        env.setdefault("PREFECT_API_URL", str(prefect.api_url))
    proc = subprocess.run([str(Path(bin_dir) / "dvc"), *args], cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise StepFailed(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def trained_on(cfg, root: Path) -> dict[str, str | None]:
    """Per trained task: the manifest sha256 its latest registered version was trained on."""
    client = tracking.client(cfg.mlflow, root)
    seen: dict[str, str | None] = {}
    for name in cfg.train.tasks:
        versions = client.search_model_versions(f"name = '{name}'") if _model_exists(client, name) else []
        latest = max(versions, key=lambda v: int(v.version), default=None)
        seen[name] = latest.tags.get(MANIFEST_TAG) if latest is not None else None
    return seen


def _model_exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


@flow(name="retrain")
def retrain_flow(params: str = str(DEFAULT_PARAMS), force: bool = False, push: bool = True,
                 retries: int = RETRIES, retry_delay_s: float = RETRY_BASE_S) -> dict[str, Any]:
    """Retrain every task in ``train.tasks`` if the raw collections changed (or ``force``).
    Each DVC step is retried ``retries`` times, waiting ``retry_delay_s`` x 1, 2, 4, ..."""
    dvc_step = dvc.with_options(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay_s))
    params_path = Path(params).resolve()
    root = params_path.parent
    paths = Paths(root)
    _ensure_limit(CONCURRENCY_LIMIT, 1)
    with concurrency(CONCURRENCY_LIMIT, occupy=1, strict=True):
        cfg = load_config(params_path)
        configure_dvc_remote(cfg, root)  # s3.bucket set: `dvc push` below goes to S3
        dvc_step(["repro", "--force", "ingest"], str(root))  # acquire, then ingest whatever the sources hold now
        manifest = sha256_file(paths.manifest)
        before = trained_on(cfg, root)
        changed = [t for t, sha in before.items() if sha != manifest]
        summary: dict[str, Any] = {"manifest_sha256": manifest, "changed": changed, "forced": force, "tasks": {}}
        if not changed and not force:
            summary["status"] = "nothing to do"
            _report(summary)
            return summary
        dvc_step(["repro", "register"], str(root))  # shards, train, evaluate, register for every task
        if push:
            dvc_step(["push"], str(root))
        dvc_step(["repro", "promote"], str(root))
        for name in cfg.train.tasks:
            record = json.loads(paths.promotion(name).read_text()) if paths.promotion(name).is_file() else {}
            summary["tasks"][name] = record
        summary["status"] = "retrained"
        _report(summary)
        return summary


def _ensure_limit(name: str, limit: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def _report(summary: dict[str, Any]) -> None:
    lines = [f"# Retrain: {summary['status']}", "",
             f"Manifest sha256 `{summary['manifest_sha256'][:16]}…`; "
             f"tasks whose data changed: {', '.join(summary['changed']) or 'none'}"
             f"{' (forced)' if summary['forced'] else ''}.", ""]
    if summary["tasks"]:
        lines += ["| task | version | decision | reason |", "|---|---|---|---|"]
        for name, rec in summary["tasks"].items():
            decision = "promoted" if rec.get("promoted") else "not promoted"
            lines.append(f"| {name} | v{rec.get('challenger')} | {decision} | {rec.get('reason', '')} |")
    create_markdown_artifact(key="retrain", markdown="\n".join(lines) + "\n", description="percept retrain")
    log.info("retrain: %s (changed: %s)", summary["status"], ", ".join(summary["changed"]) or "none")


DEPLOYMENT = "percept-weekly"
SCHEDULE_SLUG = "percept-retrain-cron"


# A run that falls due while a retrain is still going is cancelled, not queued: the next one
# sees whatever data arrived meanwhile, and a slow retrain never builds a backlog behind it.
# prefect.yaml sets the same (a test compares them).
RUN_LIMIT = {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def serve(cfg, params: str) -> None:
    """Serve the retrain flow with its cron schedule in this process (single machine)."""
    from prefect import serve as serve_deployments
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron

    schedule = Cron(cfg.retrain.cron, timezone=cfg.retrain.timezone, slug=SCHEDULE_SLUG, active=True)
    deployment = retrain_flow.to_deployment(  # Flow.serve takes no concurrency limit; to_deployment does
        name=DEPLOYMENT, schedules=[schedule], concurrency_limit=ConcurrencyLimitConfig(**RUN_LIMIT),
        parameters={"params": str(Path(params).resolve()), "push": cfg.retrain.push})
    serve_deployments(deployment)
