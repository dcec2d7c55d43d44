"""The settings schema: every section of params.yaml as a typed, frozen model, with its defaults
and, in its description, what a field means.

``pipelines.common.params`` reads params.yaml into ``Config``; the compute's own options (``model:``,
``loss:``, ``optim:`` ...) come from ``training.options``. No torch here: loading settings must
stay cheap for the commands that never build a network.

A default changed here changes what every stage runs with, so every stage of dvc.yaml depends
on this file (tests/unit/test_dvc_graph.py, tests/integration/test_dvc_status.py).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipelines.common.errors import ConfigError, quote
from pipelines.common.search_schema import TuneSearch, set_dotted
from training.degradations import Degradation, LevelledDegradation
from training.options import (
    FeatureNetConfig,
    GateConfig,
    InferenceConfig,
    LossConfig,
    LpipsConfig,
    ModelConfig,
    OptimConfig,
)
from training.tasks import TASKS, Task, get_task, merge_model_block

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# What `--model` and `compare.<sheet>.models` take for the baseline every model must beat:
# bicubic upscaling (SR tasks) and the degraded input itself (same-size tasks).
BASELINES = ("bicubic", "identity")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sha256_hex(value: str) -> str:
    value = value.lower()
    if not SHA256_RE.match(value):
        raise ValueError("must be 64 hex digits")
    return value


Sha256 = Annotated[str, AfterValidator(_sha256_hex)]


class RemoteFile(Strict):
    uri: str = Field(min_length=1, description="https://, http://, s3:// or a local path")
    sha256: Sha256 = Field(description="the file's expected sha256 (64 hex digits): a file that differs stops acquire")


class Collection(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the folder it is copied into: data/raw/<name>/")
    dataset: str | None = Field(None, description="a folder of the datasets directory, with SHA256SUMS")
    files: list[RemoteFile] | None = Field(None, description="files to fetch, each with its sha256 (.zip, .tar, .tar.gz "
                                                 "archives are unpacked after the check)")

    @model_validator(mode="after")
    def _one_source(self) -> Collection:
        if (self.dataset is None) == (self.files is None):
            raise ValueError(f"collection {quote(self.name)}: give exactly one of `dataset` or `files`")
        if self.files is not None and not self.files:
            raise ValueError(f"collection {quote(self.name)}: `files` is empty")
        return self


class WeightsFile(Strict):
    """A pretrained file copied from the weights folder ($PERCEPT_WEIGHTS, else ../shared/weights)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the file name in the weights folder and in data/weights/")
    sha256: Sha256 = Field(description="the file's expected sha256: a file that differs stops acquire")


class AcquireConfig(Strict):
    """What acquire copies into data/: image collections and pretrained feature-network files."""

    collections: list[Collection] = Field(min_length=1, description="image collections copied into data/raw/<name>/, each "
                                          "checked file by file")
    weights: list[WeightsFile] = Field([], description="feature-network files copied from $PERCEPT_WEIGHTS "
                                        "(else ../shared/weights) into data/weights/")

    @field_validator("collections")
    @classmethod
    def _unique(cls, value: list[Collection]) -> list[Collection]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"collection names must be unique: {', '.join(dupes)}")
        return value


class Source(Strict):
    uri: str = Field(min_length=1, description="a folder, a glob, or s3://bucket/prefix")
    split: Literal["train", "val"] = Field(description="train: cut into patches; val: used whole (a picture in both "
                                           "splits stays in val)")


class IngestConfig(Strict):
    """What ingest reads and what it refuses: the sources, and limits checked before a file costs memory."""

    sources: list[Source] = Field(min_length=1, description="what the manifest is made of: folders, globs or "
                                  "s3://bucket/prefix, each tagged train or val")
    max_pixels: int = Field(40_000_000, gt=0, description="largest image, in pixels (from the header, before decoding): "
                            "a decompression-bomb guard")
    min_val_side: int = Field(64, ge=1, description="smallest side of a val image (train images must hold the largest patch)")
    download_retries: int = Field(4, ge=0, le=20, description="retries of a failed S3 or https read, with backoff")
    # What ingest reads at all. Files are refused before they are read (size), before they are
    # decoded (format, pixels, decode memory) and when their metadata is oversized.
    formats: list[str] = Field(["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"], min_length=1,
                               description="Pillow format names opened; anything else is rejected unread")
    max_bytes: int = Field(100_000_000, gt=0, description="largest file or S3 object read, in bytes")
    max_decode_bytes: int = Field(512_000_000, gt=0,
                                  description="largest decode buffer per image (pixels x bytes per pixel)")
    max_metadata_bytes: int = Field(1_000_000, gt=0, description="largest ICC profile, EXIF or text chunk")
    follow_links: bool = Field(False, description="read links in a source folder that point outside it")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from PIL import Image

        Image.init()
        upper = [f.upper() for f in value]
        unknown = [f for f in upper if f not in Image.OPEN]
        if unknown:
            raise ValueError(f"unknown image format(s) {', '.join(unknown)}; Pillow opens {', '.join(sorted(Image.OPEN))}")
        return upper


class S3Config(Strict):
    """Where S3 is, and (``bucket``) whether the pipeline keeps its artefacts there."""

    endpoint_url: str | None = Field(None, description="an S3-compatible store; None = AWS")
    region: str | None = Field(None, description="the bucket's region; None = the AWS chain's")
    bucket: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                               description="set: checkpoints, MLflow artifacts and the DVC remote go to s3://bucket/prefix/")
    prefix: str = Field("percept", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
                        description="the folder in the bucket that holds every artefact")

    def uri(self, *parts: str) -> str | None:
        """``s3://bucket/prefix/<parts>``, or None without a bucket."""
        return "/".join(["s3:/", self.bucket, self.prefix, *parts]) if self.bucket else None


class ShardConfig(Strict):
    """How samples are packed into WebDataset tar shards."""

    max_samples: int = Field(256, ge=1, description="samples per shard, at most")
    max_bytes: int = Field(64_000_000, ge=1_000_000, description="bytes per shard, at most")
    encoding: Literal["raw", "png"] = Field("raw", description="train samples: raw uint8 arrays (fast to read) "
                                            "or PNG (about half the size, slower to read)")


class DataConfig(Strict):
    """Where ingest's and shard's per-item work runs (pipelines/services/engine.py)."""

    engine: Literal["ray", "local"] = Field("ray", description="ray: Ray Data on a local Ray or the cluster "
                                            "train.ray_address / $RAY_ADDRESS names; local: this process only")
    workers: int = Field(0, ge=0, description="CPUs of a local Ray started for the data; 0 = all cores")
    items_per_task: int = Field(4, ge=1, le=4096, description="files or images per Ray task")


class TrainConfig(Strict):
    """How Ray Train runs: workers, resources, checkpoints, retries (the same for every task)."""

    tasks: list[str] = Field(default_factory=list, description="the tasks `dvc repro` trains (each must be under tasks:)")
    workers: int = Field(1, ge=1, le=1024, description="Ray Train workers (data-parallel); a batch splits evenly over them")
    cpus_per_worker: int = Field(2, ge=1, description="Ray CPUs per worker, also torch threads")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; 0 = train on CPUs")
    ray_address: str | None = Field(None, description="join this cluster (host:port) or submit a Ray job to it "
                                       "(http://dashboard:8265); else $RAY_ADDRESS; else start a local Ray")
    storage_path: str = Field("runs", description="checkpoints: a local folder or s3://bucket/prefix")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (a rerun resumes from the last)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept per run, the newest")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint")
    log_every: int = Field(10, ge=1, description="steps between logged losses (MLflow, the progress line, the plot)")
    loader_workers: int = Field(1, ge=0, description="DataLoader processes per training worker")
    shuffle_buffer: int = Field(256, ge=1, description="samples shuffled in memory as the shards stream")
    data_order: Literal["resampled", "sequential"] = Field("resampled", description="resampled: each worker draws its "
                                                          "own seeded sequence of shards (equal steps per rank); "
                                                          "sequential: one pass in order")
    channels_last: bool = Field(True, description="channels-last tensors: faster convolutions on GPUs and on CPUs (oneDNN)")
    bf16: bool = Field(True, description="bf16 autocast where the hardware has it: CUDA, and CPUs with AVX512-BF16 or "
                       "AMX (2-3x faster steps on a Zen 4 core); elsewhere fp32")


class EvaluateConfig(Strict):
    """What the evaluate stage measures every trained model on: named folders of clean images."""

    sets: dict[str, str] = Field(default_factory=lambda: {"Set5": "data/raw/Set5", "Set14": "data/raw/Set14"}, min_length=1,
                                 description="name -> a folder of clean images every model is scored on")
    tile: int | None = Field(None, ge=32, description="input pixels per tile side; null = whole images")
    overlap: int = Field(16, ge=0, description="tile overlap in input pixels")
    sheet_crop: int = Field(192, ge=16, description="side of the crops on the comparison sheet, in target pixels")
    sheet_images: int = Field(6, ge=1, description="rows per comparison sheet")
    lpips: LpipsConfig | None = Field(None, description="LPIPS files you have locally; every task then reports lpips")
    levels: dict[str, list[float]] = Field(default_factory=dict, description="task -> the fixed strengths (noise sigma, "
                                           "JPEG quality, blur sigma) it is also scored at; default: the registry's")


class CompareSheet(Strict):
    """A sheet of photos without a clean original (``percept compare --sheet <name>``, a DVC stage):
    the input, each model, and a published reference, side by side."""

    input: str = Field(min_length=1, description="a folder of images (a test set: acquired, never ingested)")
    models: list[str] = Field(min_length=1, description="bicubic / identity, a task under train.tasks "
                              "(its models/<task>/), or any --model of `percept compare`")
    reference: str | None = Field(None, description="a folder of reference outputs, matched by file name")
    crop: int = Field(160, ge=16, description="side of each crop, in output pixels")


class RetrainConfig(Strict):
    """The scheduled retrain (``percept schedule``, prefect.yaml): when, and whether to push."""

    cron: str = Field("0 3 * * 1", description="five-field cron; default Mondays 03:00")
    timezone: str = Field("UTC", description="the zone the cron is read in (an IANA name)")
    push: bool = Field(True, description="dvc push the data to the DVC remote after training")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"expected five cron fields (minute hour day month weekday), got {quote(value)}")
        return value


class MlflowConfig(Strict):
    """Where runs and the model registry live."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="a database URI or a tracking server (http://...)")
    artifact_location: str | None = Field("mlartifacts", description="a folder, a URI, or None: the tracking server's default")
    experiment: str = Field("percept", description="the MLflow experiment every training run goes to")


TASK_NAME = r"^[a-z][a-z0-9_]*$"  # also an MLflow model name, a DVC foreach key and a folder name


class TaskParams(Strict):
    """One block under ``tasks:``. Its key names it (``name``); ``task`` names the registry entry
    it instantiates, the key itself by default, so several blocks can share one entry
    (``style_wave: {task: style, options: {style_image: ...}}``)."""

    name: str = Field(pattern=TASK_NAME)
    patch_size: int = Field(ge=8, le=2048, description="side of a training target patch, in pixels (a multiple of the scale)")
    patches_per_image: int = Field(ge=1, le=1000, description="seeded random patches cut from each train image")

    @property
    def entry(self) -> Task:
        return get_task(self.task)  # type: ignore[attr-defined]

    @model_validator(mode="before")
    @classmethod
    def _merge_registry_defaults(cls, data: Any) -> Any:
        # `optim: {steps: 5}` changes the steps and keeps the task's own lr, warm-up and batch,
        # rather than falling back to the generic class defaults.
        if isinstance(data, dict) and data.get("task") in TASKS:
            defaults = TASKS[data["task"]].block_defaults()
            merged = {k: merge_model_block(d, data[k]) if k == "model" else {**d, **data[k]}
                      for k, d in defaults.items() if isinstance(data.get(k), dict)}
            data = {**data, **merged}
        return data

    @model_validator(mode="after")
    def _patch_fits_scale(self) -> TaskParams:
        scale = self.degradation.input_scale  # type: ignore[attr-defined]
        if self.patch_size < scale or self.patch_size % scale:
            raise ValueError(f"patch_size ({self.patch_size}) must be a positive multiple of the scale ({scale})")
        return self

    @model_validator(mode="after")
    def _chroma_bins_have_logits(self) -> TaskParams:
        loss, model = self.loss, self.model  # type: ignore[attr-defined]
        if loss.chroma_bin_weight > 0:
            if getattr(model, "chroma_bins", 0) == 0:
                raise ValueError("loss.chroma_bin_weight needs model.arch colornet with chroma_bins > 0")
            grid = 4 * model.downsample  # the logits' cell: the patch must be whole cells
            if self.patch_size % grid:
                raise ValueError(f"patch_size ({self.patch_size}) must be a multiple of {grid} (the colornet's "
                                 "chroma grid) for loss.chroma_bin_weight")
        return self


def _task_params_model(task: Task) -> type[TaskParams]:
    """A per-task model: each block is validated by the class the registry entry names, and
    each block's defaults are the registry entry's, so params.yaml need only hold what differs."""
    return create_model(
        f"TaskParams_{task.name}",
        __base__=TaskParams,
        task=(Literal[task.name], task.name),  # type: ignore[valid-type]
        degradation=(task.degradation, task.make_degradation()),
        options=(task.options, task.options()),
        model=(ModelConfig, task.make_model_config()),
        loss=(LossConfig, task.make_loss_config()),
        optim=(OptimConfig, task.make_optim_config()),
    )


_MODELS: dict[int, type[TaskParams]] = {}


def task_params_model(task: Task) -> type[TaskParams]:
    """The (cached) block model of a registry entry; built on first use, so entries registered
    after import (plugins, tests) work too."""
    key = id(task)
    if key not in _MODELS:
        _MODELS[key] = _task_params_model(task)
    return _MODELS[key]


def _validate_task_blocks(value: Any) -> Any:
    """Each block validated by its registry entry's model; errors keep their full location."""
    if not isinstance(value, dict):
        return value
    blocks, errors = {}, []
    for key, block in value.items():
        if not isinstance(block, dict):
            errors.append({"type": "dict_type", "loc": (key,), "input": block})
            continue
        entry = block.get("task", key)
        if not isinstance(entry, str) or entry not in TASKS:
            errors.append({"type": PydanticCustomError("unknown_task", "unknown task; registered tasks: {known} (a block for "
                                                        "another name says which with `task:`)", {"known": ", ".join(TASKS)}),
                           "loc": (key,), "input": entry})
            continue
        try:
            blocks[key] = task_params_model(TASKS[entry]).model_validate({**block, "name": key, "task": entry})
        except ValidationError as exc:
            errors.extend({**e, "loc": (key, *e["loc"])} for e in exc.errors())
    if errors:
        raise ValidationError.from_exception_data("tasks", errors)
    return blocks


class Config(Strict):
    seed: int = Field(0, ge=0, description="seeds every draw: patches, degradations, initial weights, data order")
    acquire: AcquireConfig
    ingest: IngestConfig
    s3: S3Config = S3Config()
    shard: ShardConfig = ShardConfig()
    data: DataConfig = DataConfig()
    # SerializeAsAny: dump each block as its per-task model (degradation, model, ...), not as the base.
    tasks: Annotated[dict[str, SerializeAsAny[TaskParams]], BeforeValidator(_validate_task_blocks)]

    feature_net: FeatureNetConfig = FeatureNetConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    compare: dict[str, CompareSheet] = {}
    inference: InferenceConfig = InferenceConfig()  # percept apply; evaluate's device, batch, compile
    # The promotion gate per task, merged over the registry's defaults. A section of its own, not
    # under tasks.<t>, so that tuning the gate never invalidates a task's shards or training.
    promote: dict[str, GateConfig] = {}
    retrain: RetrainConfig = RetrainConfig()
    mlflow: MlflowConfig = MlflowConfig()
    # Recipe searches per task (`percept tune`); a section of its own, like promote, so that no
    # stage depends on it.
    tune: dict[str, TuneSearch] = {}
    profile: str | None = Field(None, description="the entry of `profiles` merged over these settings")
    profiles: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _name_tasks(cls, data: Any) -> Any:
        # A block may be empty in YAML (`jpeg:`): the registry entry's defaults, then.
        if isinstance(data, dict) and isinstance(data.get("tasks"), dict):
            data = {**data, "tasks": {k: ({} if v is None else v) for k, v in data["tasks"].items()}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _gate_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("promote"), dict):
            entries = {k: v.get("task", k) for k, v in data["tasks"].items() if isinstance(v, dict)} \
                if isinstance(data.get("tasks"), dict) else {}
            gates = {k: ({**TASKS[entries[k]].gate_defaults, **v}
                         if isinstance(entries.get(k), str) and entries[k] in TASKS and isinstance(v, dict) else v)
                     for k, v in data["promote"].items()}
            data = {**data, "promote": gates}
        return data

    @model_validator(mode="after")
    def _gates_fit_their_tasks(self) -> Config:
        for name, gate in self.promote.items() if self.tasks else ():  # no tasks at all is reported on its own
            if name not in self.tasks:
                raise ValueError(f"promote.{name}: no such task under `tasks:` (have: {', '.join(self.tasks)})")
            try:
                gate.check_metrics(self.reported_metrics(name))
            except ValueError as exc:
                raise ValueError(f"promote.{name}: {exc}") from None
        return self

    def reported_metrics(self, task: str) -> tuple[str, ...]:
        """What evaluation reports for ``task``: the registry's metrics, plus LPIPS when configured."""
        return self.task(task).entry.metrics + (("lpips",) if self.evaluate.lpips else ())

    def compare_models(self, sheet: str) -> list[str]:
        """``compare.<sheet>.models`` as ``percept compare --model`` values: a task is its models/ folder."""
        return [f"models/{m}" if m in self.tasks else m for m in self.compare[sheet].models]

    @model_validator(mode="after")
    def _sheets_name_trained_models(self) -> Config:
        if set(self.train.tasks) - set(self.tasks):
            return self  # reported by _trained_tasks_are_configured
        for name, sheet in self.compare.items():
            # a bare name must be a baseline or a task `dvc repro` trains; a path or URI is taken as it is
            unknown = [m for m in sheet.models if m not in BASELINES and not {"/", ":"} & set(m)
                       and m not in self.train.tasks]
            if unknown:
                raise ValueError(f"compare.{name}.models: {', '.join(unknown)} is not in train.tasks, so `dvc repro` "
                                 "makes no models/ folder for it (a path or an MLflow URI also works)")
        return self

    def eval_levels(self, task: str) -> tuple[float, ...]:
        """The fixed levels ``task`` is also evaluated at: ``evaluate.levels.<task>``, else the registry's."""
        if task in self.evaluate.levels:
            return tuple(self.evaluate.levels[task])
        return self.task(task).entry.eval_levels

    @model_validator(mode="after")
    def _levels_fit_their_tasks(self) -> Config:
        for name, levels in self.evaluate.levels.items() if self.tasks else ():
            if name not in self.tasks:
                raise ValueError(f"evaluate.levels.{name}: no such task under `tasks:` (have: {', '.join(self.tasks)})")
            degradation = self.degradation(name)
            if levels and not isinstance(degradation, LevelledDegradation):
                raise ValueError(f"evaluate.levels.{name}: its degradation ({degradation.kind}) has no single strength")
            for level in levels:
                try:
                    degradation.at(level)
                except ValidationError as exc:
                    raise ValueError(f"evaluate.levels.{name}: {level:g} is not a valid "
                                     f"{degradation.level_key} ({exc.errors()[0]['msg']})") from None
        return self

    def with_task_settings(self, task: str, settings: dict[str, Any]) -> Config:
        """This config with dotted settings of ``task``'s block replaced (a search's trial), validated
        whole (batch splits, gates, levels); without the ``tune`` section, which it does not need."""
        data = self.model_dump(mode="json", exclude={"tune"})
        data["tasks"][task] = set_dotted(data["tasks"][task], settings)
        return type(self).model_validate(data)

    @model_validator(mode="after")
    def _searches_fit_their_tasks(self) -> Config:
        for name, search in self.tune.items() if self.tasks else ():
            if name not in self.tasks:
                raise ValueError(f"tune.{name}: no such task under `tasks:` (have: {', '.join(self.tasks)})")
            for key, dim in search.space.items():
                for value in dim.extremes():  # each end of a range, each choice: a block that validates
                    try:
                        self.with_task_settings(name, {key: value})
                    except ValidationError as exc:
                        err = exc.errors()[0]
                        where = ".".join(map(str, err["loc"]))
                        hint = " (a whole-number setting: add `integer: true`)" if err["type"] == "int_from_float" else ""
                        raise ValueError(f"tune.{name}.space.{key}: {value!r} does not make a valid {name} "
                                         f"block ({where}: {err['msg']}){hint}") from None
        return self

    def gate(self, task: str) -> GateConfig:
        """The promotion gate of ``task``: params' ``promote.<task>``, else the registry default."""
        return self.promote.get(task) or self.task(task).entry.make_gate_config()

    @model_validator(mode="after")
    def _trained_tasks_are_configured(self) -> Config:
        missing = [t for t in self.train.tasks if t not in self.task_names]
        if missing and self.task_names:  # no tasks at all is reported on its own
            raise ValueError(f"train.tasks names {', '.join(missing)}, which have no block under `tasks:`")
        return self

    @model_validator(mode="after")
    def _batches_split_evenly(self) -> Config:
        for name in self.task_names:
            batch = self.task(name).optim.batch_size
            if batch % self.train.workers:
                raise ValueError(
                    f"tasks.{name}.optim.batch_size ({batch}) must be a multiple of train.workers ({self.train.workers})"
                )
        return self

    @model_validator(mode="after")
    def _some_task(self) -> Config:
        if not self.task_names:
            raise ValueError("tasks: list at least one task")
        return self

    # Artefact locations: with ``s3.bucket`` set, a location given as a relative path lives under
    # s3://bucket/prefix/ instead of the project folder; an explicit URI is always kept.

    @property
    def checkpoint_storage(self) -> str:
        """Ray Train's storage_path: a URI, or a folder relative to the project root."""
        return _under_bucket(self.s3, self.train.storage_path)

    @property
    def artifact_location(self) -> str | None:
        """Where a new MLflow experiment keeps its artifacts (None: the tracking server decides)."""
        return self.mlflow.artifact_location and _under_bucket(self.s3, self.mlflow.artifact_location)

    @property
    def dvc_remote(self) -> str | None:
        """The DVC remote percept configures (s3://bucket/prefix/dvc), None to keep .dvc/config's."""
        return self.s3.uri("dvc")

    @cached_property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def task(self, name: str) -> TaskParams:
        if name in self.tasks:
            return self.tasks[name]
        if name in TASKS:
            raise ConfigError(f"task {quote(name)} is registered but has no block under `tasks:` in params.yaml")
        raise ConfigError(f"unknown task {quote(name)}: params.yaml configures {', '.join(self.tasks)}; "
                          f"registered tasks: {', '.join(TASKS)}")

    def degradation(self, name: str) -> Degradation:
        return self.task(name).degradation

    @property
    def largest_patch(self) -> int:
        return max(self.task(n).patch_size for n in self.task_names)


def _under_bucket(s3: S3Config, location: str) -> str:
    if "://" in location or Path(location).is_absolute() or not s3.bucket:
        return location
    return s3.uri(location.strip("/"))
