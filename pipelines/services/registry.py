"""The MLflow model registry's vocabulary for percept: the aliases, the tags percept writes, and
finding a version by its weights or by an alias (register, promote and retrain share them)."""

from __future__ import annotations

CHAMPION, CHALLENGER = "champion", "challenger"
TAG = "percept."  # prefix of every tag percept writes
WEIGHTS_TAG = TAG + "weights_sha256"
MANIFEST_TAG = TAG + "manifest_sha256"  # the ingested data a version was trained on (retrain compares it)


def find_version(client, name: str, weights_sha256: str):
    """The version of registered model ``name`` holding these weights, or None."""
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get(WEIGHTS_TAG) == weights_sha256:
            return version
    return None


def alias_version(client, task: str, alias: str) -> str | None:
    """The version ``alias`` points at in ``task``'s registered model, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(task, alias).version)
    except MlflowException:
        return None
