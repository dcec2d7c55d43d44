"""``percept apply``: a model over a folder (or one file) of images, streamed.

Three stages overlap: a thread pool decodes the next files while the network runs on the current
batch in this thread, and a second pool encodes and writes the outputs. Pillow's codecs and
torch's kernels release the GIL, so threads keep every core busy without copying images between
processes; at most ``prefetch`` decoded images and ``prefetch`` pending writes are held.

Each output is ``<out>/<relative path>.png`` (lossless), written under a temporary name and
renamed, so an interrupted run leaves no partial file; a rerun skips outputs that exist unless
``overwrite``. A file that cannot be read or decoded, that the network fails on, or whose output
cannot be written, is reported (file and reason) and skipped, whatever the error: the others are
still written. The command fails only when no input could be processed.

A conditioned model (one that takes its input's level, ``training.conditioning``) gets ``--level``
for every file, or, for JPEG repair without it, each JPEG file's own quality, read from its
quantisation tables; a file with no level is reported and skipped.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.common.errors import UserError
from pipelines.common.fsutil import atomic_write_bytes
from training.conditioning import LevelSpec, NoLevel, conditioned_input
from training.images import DecodeLimits, decode_image, encode_png, failure_reason, list_images, no_images, read_file
from training.inference import Engine

log = logging.getLogger(__name__)


class LevelError(UserError, ValueError):
    """--level given to a model that takes none, or missing where no file carries it."""


@dataclass
class ApplyReport:
    written: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)  # outputs already there, skipped
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, why)

    @property
    def inputs(self) -> int:
        return len(self.written) + len(self.existing) + len(self.failed)

    @property
    def all_failed(self) -> bool:
        """Nothing to show for the run: every input failed (or there was none)."""
        return not self.written and not self.existing

    def line(self) -> str:
        if self.all_failed:
            return (f"apply: none of the {self.inputs} input(s) could be processed ({len(self.failed)} failed)"
                    + "".join(f"\n  {p}: {why}" for p, why in self.failed))
        return (f"apply: {len(self.written)} written, {len(self.existing)} already there, "
                f"{len(self.failed)} failed" + (" (skipped)" if self.failed else "")
                + "".join(f"\n  {p}: {why}" for p, why in self.failed))


def plan(source: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input file, output file) pairs, sorted. A name shared by two inputs (a.jpg, a.png) keeps
    its suffix in the output's name (a.jpg.png, a.png.png)."""
    if source.is_file():
        return [(source, out / f"{source.stem}.png")]
    if not source.is_dir():
        raise FileNotFoundError(f"--input {source}: no such file or folder")
    out_abs = out.resolve()
    files = [p for p in list_images(source) if out_abs not in p.resolve().parents]
    if not files:
        raise FileNotFoundError(f"--input {no_images(source)}")
    rels = [p.relative_to(source) for p in files]
    stems = [r.with_suffix("").as_posix() for r in rels]
    return [(p, out / (r.with_suffix(".png") if stems.count(s) == 1 else r.with_name(r.name + ".png")))
            for p, r, s in zip(files, rels, stems)]


def apply_folder(engine: Engine, source: Path, out: Path, overwrite: bool = False, workers: int = 2,
                 limits: DecodeLimits = DecodeLimits(), progress: bool = True, spec: LevelSpec | None = None,
                 level: float | None = None) -> ApplyReport:
    """``spec``: the model is conditioned on its input's level: ``level`` for every file, or None
    to read each JPEG's own (JPEG repair)."""
    report = ApplyReport()
    jobs = []
    for src, dst in plan(source, out):
        if overwrite or not dst.exists():
            jobs.append((src, dst))
        else:
            report.existing.append(dst)
    prefetch = max(2 * workers, engine.cfg.batch)
    bar = tqdm(total=len(jobs), desc="apply", unit="img", file=sys.stderr, disable=not progress)
    with ThreadPoolExecutor(workers, "decode") as readers, ThreadPoolExecutor(workers, "encode") as writers:
        todo = iter(jobs)
        decoding: deque[tuple[Path, Path, Future]] = deque()
        writing: deque[tuple[Path, Path, Future]] = deque()

        def refill() -> None:
            while len(decoding) < prefetch and (job := next(todo, None)):
                decoding.append((*job, readers.submit(_decode, job[0], limits, spec, level)))

        def finish_writes(keep: int) -> None:
            """Collect the finished writes, and wait for the oldest while more than ``keep`` are pending."""
            while writing and (len(writing) > keep or writing[0][2].done()):
                src, dst, fut = writing.popleft()
                try:
                    fut.result()
                    report.written.append(dst)
                except Exception as exc:  # noqa: BLE001 - a full disk, a folder in the way...: this output only
                    _fail(report, src, f"cannot write {dst} ({failure_reason(exc)})")
                bar.update(1)

        refill()
        while decoding:
            batch = _next_batch(decoding, engine.cfg.batch, report, bar)
            refill()
            if not batch:
                continue
            for (src, dst, _), output in zip(batch, _infer(engine, batch, report)):
                if output is None:
                    bar.update(1)
                    continue
                writing.append((src, dst, writers.submit(_encode, output, dst)))
            finish_writes(prefetch)
        finish_writes(0)
    bar.close()
    return report


def _decode(path: Path, limits: DecodeLimits, spec: LevelSpec | None = None, level: float | None = None) -> np.ndarray:
    data = read_file(path, limits)
    image = decode_image(data, limits=limits)[0]
    if spec is None:
        return image
    image, found, source = conditioned_input(image, spec, level, data)
    log.debug("%s: %s %g (%s)", path, spec.key, found, source)
    return image


def _fail(report: ApplyReport, src: Path, why: str) -> None:
    report.failed.append((src, why))
    log.warning("skipped %s: %s", src, why)


def _encode(image: np.ndarray, dst: Path) -> None:
    atomic_write_bytes(dst, encode_png(image))


def _next_batch(decoding: deque, size: int, report: ApplyReport, bar) -> list[tuple[Path, Path, np.ndarray]]:
    """The oldest decoded image (waiting for it), then any already decoded ones of the same size
    right behind it, up to ``size``: same-size images share a forward pass."""
    batch: list[tuple[Path, Path, np.ndarray]] = []
    while decoding and len(batch) < size and (not batch or decoding[0][2].done()):
        src, dst, fut = decoding[0]
        try:
            image = fut.result()
        except Exception as exc:  # noqa: BLE001 - Rejected, OSError, or whatever a decoder raised: this file only
            decoding.popleft()
            _fail(report, src, str(exc) if isinstance(exc, NoLevel) else f"cannot read it ({failure_reason(exc)})")
            bar.update(1)
            continue
        if batch and image.shape != batch[0][2].shape:
            break
        decoding.popleft()
        batch.append((src, dst, image))
    return batch


def _infer(engine: Engine, batch: list[tuple[Path, Path, np.ndarray]], report: ApplyReport) -> list[np.ndarray | None]:
    """The outputs of a batch; if the batch fails, each image alone, so one bad image (too small,
    a diverged output) costs only itself."""
    try:
        return engine.run([image for _, _, image in batch])
    except Exception as exc:  # noqa: BLE001 - too small, a diverged output, out of memory...: these images only
        if len(batch) > 1:
            return [_infer(engine, [item], report)[0] for item in batch]
        _fail(report, batch[0][0], f"the model failed on it ({failure_reason(exc)})")
        return [None]


def run_cli(args, cfg) -> int:
    """``percept apply``: the engine from ``--model`` with ``inference:`` and the flags, then the folder."""
    from pipelines.common.paths import Paths
    from pipelines.services import tracking
    from pipelines.use.predictors import load_engine

    given = {k: getattr(args, k) for k in ("device", "overlap", "batch", "channels_last", "compile")
             if getattr(args, k) is not None}
    if hasattr(args, "tile"):  # absent unless given: `--tile none` is None
        given["tile"] = args.tile
    settings = cfg.inference.model_validate({**cfg.inference.model_dump(), **given})
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, Paths().root)
    engine, meta = load_engine(args.model, args.task, settings, tracking_uri)
    spec = LevelSpec.from_dict(meta["level"]) if "level" in meta else None
    level = getattr(args, "level", None)
    if spec is None and level is not None:
        raise LevelError(f"--level: {args.model} is not conditioned on a level (its task {meta['task']} takes none)")
    if spec is not None:
        if level is None and not spec.from_jpeg:
            raise LevelError(f"--level: {args.model} restores by the {spec.key} of its input; give it "
                            f"(trained on {spec.low:g} to {spec.high:g})")
        if level is not None and not spec.low <= level <= spec.high:
            log.warning("--level %g is outside the %s range %s was trained on (%g to %g)", level, spec.key,
                        args.model, spec.low, spec.high)
        log.info("%s: %s %s", args.model, spec.key, f"{level:g} for every file" if level is not None
                 else "read from each JPEG file's quantisation tables (--level sets one for all)")
    if settings.compile:
        side = engine.tile or 256
        log.info("compiling the network (warm-up at %dx%d)", side, side)
        engine.warm_up(side, side)
    report = apply_folder(engine, args.input, args.out, args.overwrite, args.workers,
                          DecodeLimits.from_config(cfg.ingest), spec=spec, level=level)
    print(report.line(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.all_failed else 0
