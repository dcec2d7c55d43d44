"""The ``register`` stage: a trained model becomes a version of the MLflow registered model named
after its task, with its lineage as tags, and the ``challenger`` alias.

Registering the same weights again finds the existing version (matched by the weights' sha256)
instead of adding a duplicate, so ``dvc repro`` and the scheduled retrain can rerun it freely.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common.fingerprints import TRAINING_CODE, params_hash
from pipelines.common.fsutil import atomic_write_text, sha256_file
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.services import descriptions, tracking
from pipelines.services.registry import CHALLENGER, MANIFEST_TAG, TAG, WEIGHTS_TAG, find_version

log = logging.getLogger(__name__)
SERVING_CODE = Path(__file__).parents[1] / "use" / "serving.py"  # the pyfunc: logged as code, never imported here
# The pyfunc tiles like `percept apply`: images up to about 1024 output pixels a side run whole,
# larger ones in tiles that match the whole-image output (training/tiling.py).
SERVE_TILE, SERVE_OVERLAP = "auto", None


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lineage_tags(task: str, cfg: Config, paths: Paths, run: dict[str, Any]) -> dict[str, str]:
    tags = {
        TAG + "task": task,
        TAG + "git_commit": git_commit(paths.root),
        TAG + "shards_index_sha256": sha256_file(paths.shards(task) / "index.json"),
        TAG + "params_hash": params_hash(task, cfg),
        TAG + "training_run_id": run["mlflow_run_id"],
        TAG + "training_steps": str(run["steps"]),
        WEIGHTS_TAG: sha256_file(paths.models(task) / "model.pt"),
    }
    if paths.manifest.is_file():
        tags[MANIFEST_TAG] = sha256_file(paths.manifest)
    if paths.report_summary(task).is_file():
        for image_set, figures in json.loads(paths.report_summary(task).read_text()).items():
            flat = tracking.flatten(figures)  # baseline figures nest under baseline.
            tags.update({f"{TAG}eval.{image_set}.{k}": f"{v:.6g}" for k, v in flat.items() if isinstance(v, float)})
    return tags


def log_pyfunc(task: str, paths: Paths, training_run_id: str) -> str:
    """Log ``models/<task>/`` as a pyfunc into its training run; register it; return the version."""
    import mlflow
    import PIL
    import torch

    model_dir = paths.models(task)
    settings = model_dir.parent / f".{task}.serving.json"
    atomic_write_text(settings, json.dumps({"tile": SERVE_TILE, "overlap": SERVE_OVERLAP}))
    try:
        with mlflow.start_run(run_id=training_run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SERVING_CODE),
                artifacts={"weights": str(model_dir / "model.pt"), "settings": str(settings),
                           "config": str(model_dir / "config.json")},
                code_paths=[str(TRAINING_CODE)],
                # No signature and no input example (MLflow would infer a schema from it): the
                # model takes an encoded image (a dict) or a uint8 array and checks both itself,
                # with a 400 and one line when a request is wrong; a schema can hold only one.
                # MLflow would record torch==2.13.0 (dropping +cpu); name what the model needs.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                                  f"pillow=={PIL.__version__}", f"mlflow=={mlflow.__version__}", "pydantic>=2"],
                registered_model_name=task,
            )
    finally:
        settings.unlink(missing_ok=True)
    return str(info.registered_model_version)


def sheets(client, run_id: str) -> list[str]:
    """The comparison sheets the evaluate stage logged into the training run (``evaluation/``)."""
    return sorted(f.path for f in client.list_artifacts(run_id, "evaluation") if f.path.endswith(".png"))


def describe(client, task: str, version: str, cfg: Config, paths: Paths, run: dict[str, Any], tags: dict[str, str]) -> None:
    """Markdown descriptions on the registered model and the version (pipelines.services.descriptions)."""
    index_file, figures_file = paths.shards(task) / "index.json", paths.report_summary(task)
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    metrics = json.loads(figures_file.read_text()) if figures_file.is_file() else {}
    body = descriptions.version_description(task, cfg, run, index, metrics, tags[TAG + "git_commit"],
                                            sheets(client, run["mlflow_run_id"]))
    client.update_registered_model(task, description=descriptions.model_description(task, cfg))
    old = client.get_model_version(task, version).description
    client.update_model_version(task, version, description=descriptions.with_body(old, body))


def register(task: str, cfg: Config, paths: Paths = Paths()) -> dict[str, Any]:
    """Register ``models/<task>/`` (once per distinct weights) and point ``challenger`` at it."""
    import mlflow

    model_dir = paths.models(task)
    if not (model_dir / "run.json").is_file():
        raise FileNotFoundError(f"{model_dir}/run.json not found: run `percept train --task {task}` first")
    run = json.loads((model_dir / "run.json").read_text())
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, paths.root)
    mlflow.set_tracking_uri(tracking_uri)
    client = tracking.client(cfg.mlflow, paths.root)
    tags = lineage_tags(task, cfg, paths, run)
    existing = find_version(client, task, tags[WEIGHTS_TAG])
    if existing is not None:
        version, created = str(existing.version), False
    else:
        version, created = log_pyfunc(task, paths, run["mlflow_run_id"]), True
    for key, value in tags.items():
        client.set_model_version_tag(task, version, key, value)
    describe(client, task, version, cfg, paths, run, tags)
    client.set_registered_model_alias(task, CHALLENGER, version)
    record = {"name": task, "version": int(version), "uri": f"models:/{task}/{version}", "created": created,
              "alias": CHALLENGER, "tags": tags}
    atomic_write_text(paths.registration(task), json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"register {task}: version {version} ({'new' if created else 'already registered'}) -> @{CHALLENGER}")
    return record

