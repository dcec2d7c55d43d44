"""The registered MLflow pyfunc, logged as "models from code": MLflow runs this file to build it.

Two ways in, through ``training.inference.Engine`` (the path ``percept apply`` and ``percept
evaluate`` use):

- an encoded image: ``{"image": <PNG/JPEG/WEBP... bytes, or their base64 text>, "format": "png"}``
  (``format`` optional: ``png``, the default, or ``jpeg``), answered with ``{"image": <base64 of
  the encoded output>, "format", "width", "height"}``. Over HTTP (``mlflow models serve``):
  ``{"inputs": {"image": "<base64>"}}`` in, ``{"predictions": {"image": "<base64>", ...}}`` out.
  The image is decoded exactly as ``percept apply`` decodes a file (orientation, 16-bit, alpha).
- one uint8 HxWx3 RGB array (any integer array with values 0..255 over HTTP), answered with the
  uint8 HxWx3 output.

A model conditioned on its input's level (``training.conditioning``) takes it as ``"level"``
beside the encoded image; JPEG repair reads it from a JPEG's quantisation tables when it is not
given. As an array, such a model takes HxWx4: the picture and its level channel.

Images larger than ``tile`` input pixels on a side run in overlapping tiles that match the
whole-image output, so memory stays bounded; inputs over ``max_pixels`` are refused. A request
the model cannot take is an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``: the server
answers 400 with one line saying why (any other exception would come back with a traceback).
The ``training`` package travels with the model (``code_paths``), so loading needs only torch,
numpy, Pillow and mlflow.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

WEIGHTS, SETTINGS = "weights", "settings"
IMAGE, FORMAT, LEVEL = "image", "format", "level"
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}
DEFAULT_MAX_PIXELS = 4_000_000  # input pixels per request (4 MP in is 64 MP out at x4); a model's settings may change it
JPEG_QUALITY = 95


class BadRequest(MlflowException):
    def __init__(self, why: str) -> None:
        super().__init__(why, error_code=INVALID_PARAMETER_VALUE)


class PerceptModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from training.conditioning import LevelSpec
        from training.images import DecodeLimits
        from training.inference import Engine, load_model_file
        from training.options import InferenceConfig

        self.model, self.meta = load_model_file(context.artifacts[WEIGHTS])
        self.spec = LevelSpec.from_dict(self.meta["level"]) if "level" in self.meta else None
        with open(context.artifacts[SETTINGS]) as f:
            settings = json.load(f)
        self.limits = DecodeLimits(max_pixels=settings.pop("max_pixels", DEFAULT_MAX_PIXELS))
        # One image per call: batching has nothing to group.
        cfg = InferenceConfig.model_validate({"batch": 1, **settings})
        self.engine = Engine(self.model, self.meta["scale"], self.meta["model_config"]["in_channels"], cfg)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would build a schema from them
        request = _unwrap(model_input)
        if isinstance(request, dict):
            try:
                return self._encoded(request)
            except BadRequest:
                # The server's message repeats the request: keep a megabyte of base64 out of it.
                if isinstance(model_input, dict) and isinstance(request.get(IMAGE), (str, bytes)):
                    model_input[IMAGE] = f"<{len(request[IMAGE])} characters>"
                raise
        return self.engine(self._array(request))

    def _encoded(self, request: dict):
        from training.conditioning import conditioned_input
        from training.images import decode_image, encode_png

        unknown = set(request) - {IMAGE, FORMAT, LEVEL}
        if IMAGE not in request or unknown:
            raise BadRequest(f"expected {{'{IMAGE}': <base64 PNG or JPEG>, '{FORMAT}': 'png' or 'jpeg' (optional), "
                             f"'{LEVEL}': a number (optional)}}, got the keys {sorted(request)}")
        fmt = str(request.get(FORMAT) or "png").lower()
        if fmt not in OUTPUT_FORMATS:
            raise BadRequest(f"{FORMAT}: {fmt[:20]!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        try:
            data = _image_bytes(request[IMAGE])
            image, _ = decode_image(data, limits=self.limits)
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - training.images raises Rejected with a reason
            raise BadRequest(f"{IMAGE}: {exc}") from None
        level = request.get(LEVEL)
        if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float, str))):
            raise BadRequest(f"{LEVEL}: expected a number, got {type(level).__name__}")
        if self.spec is not None:
            try:
                image = conditioned_input(image, self.spec, None if level is None else float(level), data)[0]
            except ValueError as exc:  # no level, or one that is not a number or does not fit
                raise BadRequest(f"{LEVEL}: {exc}") from None
        elif level is not None:
            raise BadRequest(f"{LEVEL}: this model ({self.meta['task']}) is not conditioned on a level")
        out = self.engine(image)
        if OUTPUT_FORMATS[fmt] == "PNG":
            data = encode_png(out)
        else:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format="JPEG", quality=JPEG_QUALITY)
            data = buf.getvalue()
        return {IMAGE: base64.b64encode(data).decode("ascii"), FORMAT: "jpeg" if fmt == "jpg" else fmt,
                "height": int(out.shape[0]), "width": int(out.shape[1])}

    def _array(self, value) -> np.ndarray:
        image = np.asarray(value)
        channels = 4 if self.spec is not None else 3  # a conditioned model: the picture and its level channel
        if image.ndim != 3 or image.shape[2] != channels or not image.size:
            raise BadRequest(f"expected one HxWx{channels} {'RGB + level' if channels == 4 else 'RGB'} image (or "
                             f"{{'{IMAGE}': <base64 PNG>}}), got shape {image.shape}")
        if image.dtype != np.uint8:
            if image.dtype.kind not in "iu" or image.min() < 0 or image.max() > 255:
                raise BadRequest(f"expected integers 0..255, got {image.dtype} from {image.min()} to {image.max()}")
            image = image.astype(np.uint8)
        if image.shape[0] * image.shape[1] > self.limits.max_pixels:
            raise BadRequest(f"{image.shape[1]}x{image.shape[0]} exceeds max_pixels={self.limits.max_pixels}")
        return image


def _unwrap(model_input):
    """The request as a dict (an encoded image) or an array. The scoring server hands over
    ``{"inputs": {...}}`` as a dict of 0-d arrays, ``dataframe_split`` as a one-row DataFrame."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # pandas, not imported here
        if len(model_input) != 1:
            raise BadRequest(f"one image per request, got {len(model_input)} rows")
        model_input = model_input.iloc[0].to_dict()
    if isinstance(model_input, dict):
        return {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in model_input.items()}
    if isinstance(model_input, (str, bytes)) or (isinstance(model_input, np.ndarray) and model_input.dtype.kind in "USO"
                                                 and model_input.size == 1):
        return {IMAGE: np.asarray(model_input).item() if isinstance(model_input, np.ndarray) else model_input}
    return model_input


def _image_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise BadRequest(f"{IMAGE}: expected base64 text or bytes, got {type(value).__name__}")
    try:
        return base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{IMAGE}: not valid base64 ({len(value)} characters)") from None


set_model(PerceptModel())
