"""The registered MLflow pyfunc, logged as "models from code": MLflow runs this file to build it.

It takes one uint8 HxWx3 RGB array and returns the uint8 HxWx3 output (``scale`` times larger
for SR), through ``training.inference.Engine``, the path ``percept apply`` and ``percept
evaluate`` use. Images larger than ``tile`` input pixels on a side are processed in overlapping
tiles that match the whole-image output, so memory stays bounded. The settings file may also
name the engine's other options (``device``, ``channels_last``, ``compile``...). Gray models
(colorization) read the first channel of a gray image.
The ``training`` package travels with the model (``code_paths``), so loading needs only torch,
numpy and mlflow.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model

WEIGHTS, SETTINGS = "weights", "settings"


class PerceptModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from training.inference import Engine, InferenceConfig, load_model_file

        self.model, self.meta = load_model_file(context.artifacts[WEIGHTS])
        with open(context.artifacts[SETTINGS]) as f:
            self.settings = json.load(f)
        # One image per call: batching has nothing to group.
        cfg = InferenceConfig.model_validate({"batch": 1, **self.settings})
        self.engine = Engine(self.model, self.meta["scale"], self.meta["model_config"]["in_channels"], cfg)

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        image = np.asarray(model_input)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected one HxWx3 uint8 image, got {image.dtype} {image.shape}")
        return self.engine(image)


set_model(PerceptModel())
