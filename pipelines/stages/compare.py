"""``percept compare``: models side by side on images that have no clean original.

Real photos (RealSRSet, your own) have no ground truth to score against, so people judge them by
eye. Each row of the sheet is one image: the input (enlarged by pixel repetition for SR, so its
pixels stay visible), then each model's output, then, where given, a reference output of the same
image (another method's published result, matched by file name), all cropped to the same region.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.common.errors import UserError
from pipelines.common.schema import BASELINES
from pipelines.use.predictors import Predictor, baseline
from pipelines.use.sheets import centre_box, render_sheet
from training.conditioning import LevelSpec, NoLevel, conditioned_input
from training.images import DecodeLimits, decode_image, failure_reason, list_images, no_images, read_file
from training.options import InferenceConfig

log = logging.getLogger(__name__)


class CompareError(UserError, ValueError):
    """Models of different scales, no readable input, or no model at all: named, in one line."""


@dataclass(frozen=True)
class Column:
    label: str
    predict: Predictor
    spec: LevelSpec | None = None  # a model conditioned on its input's level

    def __call__(self, image: np.ndarray, data: bytes, level: float | None) -> np.ndarray:
        return self.predict(image if self.spec is None else conditioned_input(image, self.spec, level, data)[0])


def image_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such file or folder")
    return list_images(folder)


def reference_for(image: Path, folder: Path | None) -> Path | None:
    """The file in ``folder`` named like ``image`` (``oldphoto2.png`` or ``oldphoto2_BSRGAN.png``)."""
    if folder is None:
        return None
    matches = [p for p in image_files(folder) if p.stem == image.stem or p.stem.startswith(image.stem + "_")]
    return min(matches, key=lambda p: len(p.stem)) if matches else None


def columns(specs: list[str], settings: InferenceConfig, tracking_uri: str | None,
            scale: int | None = None) -> tuple[list[Column], int]:
    """A column per ``--model`` and the scale they share (a baseline takes the models' scale, or
    ``scale`` when it is alone)."""
    from pipelines.use.predictors import load_engine

    found: dict[str, tuple[Predictor, int, LevelSpec | None]] = {}
    for spec in specs:
        if spec not in BASELINES:
            engine, meta = load_engine(spec, None, settings, tracking_uri)
            label = meta["task"] if not spec.startswith("models:/") else spec.removeprefix("models:/")
            level = LevelSpec.from_dict(meta["level"]) if "level" in meta else None
            found[spec] = (Predictor(label, engine), meta["scale"], level)
    scales = {s for _, s, _ in found.values()} | ({scale} if scale else set())
    if len(scales) > 1:
        raise CompareError(f"the models have different scales ({', '.join(f'{s}: x{found[s][1]}' for s in found)}"
                           f"{f'; --scale {scale}' if scale else ''})")
    scale = scales.pop() if scales else 1
    out = []
    for spec in specs:
        if spec in BASELINES:
            predictor = baseline("compare", scale)
            if predictor.name != spec:
                raise CompareError(f"--model {spec}: at scale x{scale} the baseline is {predictor.name!r}")
            out.append(Column(spec, predictor))
        else:
            predictor, _, level = found[spec]
            out.append(Column(predictor.name, predictor, level))
    return out, scale


def compare(inputs: Path, cols: list[Column], scale: int, reference: Path | None, crop: int, limits: DecodeLimits,
            max_images: int | None = None, progress: bool = True,
            level: float | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(the sheet, [(file, why) for each input left out]) for the images under ``inputs``;
    ``level`` for the models conditioned on it (else each JPEG's own quality, for JPEG repair)."""
    files = image_files(inputs)[:max_images]
    if not files:
        raise CompareError(no_images(inputs))
    rows, skipped = [], []
    side = crop - crop % scale
    for path in tqdm(files, desc="compare", unit="img", file=sys.stderr, disable=not progress):
        try:
            data = read_file(path, limits)
            image, _ = decode_image(data, limits=limits)
        except Exception as exc:  # noqa: BLE001 - one unreadable file is left out, not the sheet
            skipped.append((str(path), f"cannot read it ({failure_reason(exc)})"))
            continue
        try:
            outputs = [col(image, data, level) for col in cols]
        except NoLevel as exc:
            skipped.append((str(path), str(exc)))
            continue
        h, w = image.shape[0] * scale, image.shape[1] * scale
        top, left, ch, cw = centre_box(h, w, side)
        crops = [np.repeat(np.repeat(image[top // scale : (top + ch) // scale, left // scale : (left + cw) // scale],
                                     scale, axis=0), scale, axis=1)]
        crops += [out[top : top + ch, left : left + cw] for out in outputs]
        captions = ["input" + (f" (x{scale}, nearest)" if scale > 1 else ""), *(c.label for c in cols)]
        ref = reference_for(path, reference)
        if ref is not None:
            other, _ = decode_image(read_file(ref, limits), limits=limits)
            if other.shape[:2] == (h, w):
                crops.append(other[top : top + ch, left : left + cw])
                captions.append(ref.parent.name)
            else:
                log.warning("%s: %dx%d, not the output's %dx%d: not shown", ref, other.shape[1], other.shape[0], w, h)
        rows.append((path.stem, crops, captions))
    if not rows:
        raise CompareError(f"{inputs}: none of its {len(files)} image file(s) could be read ({skipped[0][1]})")
    title = f"{inputs.name}: " + " | ".join(c.label for c in cols) + (f" | reference: {reference.name}" if reference else "")
    return render_sheet(rows, title), skipped


def run_cli(args, cfg) -> int:
    """``percept compare``: the columns from ``--model`` (or ``compare.<sheet>`` in params.yaml, the
    DVC stage, writing ``reports/compare/<sheet>.png``), run with ``inference:`` settings."""
    from pipelines.common.fsutil import atomic_write_bytes
    from pipelines.common.paths import Paths
    from pipelines.services import tracking
    from training.images import encode_png

    paths = Paths()
    if args.sheet:
        if args.sheet not in cfg.compare:
            raise CompareError(f"--sheet {args.sheet}: not under `compare:` in params.yaml (have: {', '.join(cfg.compare) or 'none'})")
        sheet_cfg = cfg.compare[args.sheet]
        specs, source, crop = cfg.compare_models(args.sheet), Path(sheet_cfg.input), sheet_cfg.crop
        reference = Path(sheet_cfg.reference) if sheet_cfg.reference else None
        out = args.out or paths.root / "reports" / "compare" / f"{args.sheet}.png"
    else:
        if not (args.input and args.model and args.out):
            raise CompareError("give --sheet NAME (params.yaml's compare:), or --input, --model and --out")
        specs, source, crop, reference, out = args.model, args.input, args.crop, args.reference, args.out
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, paths.root)
    cols, scale = columns(specs, cfg.inference, tracking_uri, args.scale)
    sheet, skipped = compare(source, cols, scale, reference, crop, DecodeLimits.from_config(cfg.ingest), args.max_images,
                             level=args.level)
    atomic_write_bytes(out, encode_png(sheet))
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"compare: {out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(cols)} model(s), {len(skipped)} skipped)")
    return 0
