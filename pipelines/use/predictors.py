"""What ``--model`` names, as a callable from a degraded uint8 HxWx3 input to a uint8 output.

- ``bicubic`` (SR tasks) / ``identity`` (same-size tasks): the baseline every model must beat;
- a local path: ``models/<task>/`` or a ``model.pt`` in it;
- an MLflow model URI: ``models:/sr_x4@champion``, ``models:/sr_x4/3``, ``runs:/<id>/model``,
  loaded as the registered pyfunc, so evaluation runs exactly what a user would serve.

``load_engine`` gives the network itself (``percept apply``, ``percept export``): from a local
path, or the ``model.pt`` artifact of a registered pyfunc, run with the caller's settings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from pipelines.common.errors import UserError
from pipelines.common.schema import BASELINES
from training.conditioning import rgb_of
from training.imresize import imresize_uint8
from training.inference import Engine, ModelFileError, load_model_file
from training.options import InferenceConfig

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class ModelSpecError(UserError, ValueError):
    """``--model`` names nothing loadable, or a model of another task."""


@dataclass(frozen=True)
class Predictor:
    name: str
    predict: Callable[[np.ndarray], np.ndarray]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.predict(image)


def baseline(task: str, scale: int) -> Predictor:
    """Bicubic upscaling (MATLAB-compatible) for SR; the degraded input itself otherwise."""
    if scale > 1:
        return Predictor("bicubic", lambda image: imresize_uint8(rgb_of(image), scale=scale))
    return Predictor("identity", lambda image: rgb_of(image).copy())


def load_predictor(spec: str, task: str, scale: int, tile: int | None = None, overlap: int = 16,
                   tracking_uri: str | None = None, inference: InferenceConfig | None = None,
                   any_task: bool = False) -> Predictor:
    """``tile``/``overlap`` (evaluation's, whole images by default) override ``inference``'s.
    ``any_task``: a local model trained for another task of the same scale is accepted (how
    ``sr_x4`` copes with ``sr_x4_real``'s inputs)."""
    if spec in BASELINES:
        expected = baseline(task, scale)
        if spec != expected.name:
            raise ModelSpecError(f"--model {spec}: the baseline of {task} is {expected.name!r}")
        return expected
    if spec.startswith(MLFLOW_SCHEMES):
        return _mlflow_predictor(spec, tracking_uri)
    settings = (inference or InferenceConfig()).model_copy(update={"tile": tile, "overlap": overlap})
    engine, meta = load_engine(spec, None if any_task else task, settings)
    if engine.scale != scale:
        raise ModelSpecError(f"--model {spec} upscales x{engine.scale}; {task}'s inputs need x{scale}")
    own = "" if meta["task"] == task else f" ({meta['task']})"
    return Predictor(str(Path(spec)) + own, engine)


def load_engine(spec: str, task: str | None, settings: InferenceConfig,
                tracking_uri: str | None = None) -> tuple[Engine, dict[str, Any]]:
    """(an ``Engine`` for the network ``spec`` names, its metadata); ``task`` None accepts any."""
    model, meta = load_network(spec, task, tracking_uri)
    return Engine(model, meta["scale"], meta["model_config"]["in_channels"], settings), meta


def load_network(spec: str, task: str | None, tracking_uri: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The network ``spec`` names and its metadata: from a models/<task>/ folder, the file itself,
    or the weights artifact of an MLflow pyfunc (downloaded to a temporary folder, then removed)."""
    with tempfile.TemporaryDirectory(prefix="percept-model-") as folder:
        file = _download_weights(spec, tracking_uri, folder) if spec.startswith(MLFLOW_SCHEMES) else _local_file(spec)
        try:
            model, meta = load_model_file(file)
        except ModelFileError as exc:  # one line naming the file; a download's temporary path means nothing
            if spec.startswith(MLFLOW_SCHEMES):
                raise ModelSpecError(f"--model {spec}: its {exc.path.name} artifact: {exc.what} ({exc.why})") from None
            raise ModelSpecError(f"--model {exc}") from None
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelSpecError(f"--model {spec}: {exc}") from None
    if task is not None and meta["task"] != task:
        raise ModelSpecError(f"--model {spec} was trained for task {meta['task']!r}, not {task!r}")
    return model, meta


def _local_file(spec: str) -> Path:
    path = Path(spec)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise ModelSpecError(f"--model {spec}: no such model file or folder (expected {file}); "
                             f"give {' or '.join(BASELINES)}, a models/<task>/ folder, or models:/<name>@<alias>")
    return file


def _download_weights(uri: str, tracking_uri: str | None, folder: str) -> Path:
    import yaml
    from mlflow.artifacts import download_artifacts

    uri = uri.rstrip("/")
    try:
        mlmodel = yaml.safe_load(Path(download_artifacts(f"{uri}/MLmodel", dst_path=folder,
                                                         tracking_uri=tracking_uri)).read_text())
        weights = mlmodel["flavors"]["python_function"]["artifacts"]["weights"]["path"]
        return Path(download_artifacts(f"{uri}/{weights}", dst_path=folder, tracking_uri=tracking_uri))
    except KeyError:
        raise ModelSpecError(f"--model {uri}: not a percept pyfunc (no weights artifact in its MLmodel)") from None
    except Exception as exc:  # MLflow raises several types for a missing name, alias or version
        raise ModelSpecError(f"--model {uri}: cannot download it from MLflow ({exc})") from None


def _mlflow_predictor(uri: str, tracking_uri: str | None) -> Predictor:
    import mlflow
    import mlflow.pyfunc

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises several types for a missing name, alias or version
        raise ModelSpecError(f"--model {uri}: cannot load it from MLflow ({exc})") from None
    return Predictor(uri, model.predict)
