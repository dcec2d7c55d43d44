"""params.yaml validation: the shipped defaults load, and every kind of mistake names its key."""

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, load_config, parse_config
from training.degradations import BicubicDownscale, GaussianNoise
from training.loop import OptimConfig
from training.models import TransformNetConfig
from training.tasks import TASKS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def mutated(raw: dict, change) -> dict:
    data = copy.deepcopy(raw)
    change(data)
    return data


def error_of(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return str(exc.value)


def test_shipped_params_load_typed(raw):
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.task_names == list(raw["tasks"]) and set(cfg.train.tasks) <= set(cfg.task_names)
    sr = cfg.task("sr_x4")
    assert isinstance(sr.degradation, BicubicDownscale) and sr.degradation.input_scale == 4
    assert isinstance(cfg.task("denoise").degradation, GaussianNoise)
    assert cfg.task("denoise").degradation.sigma == 25.0
    assert cfg.largest_patch == max(t["patch_size"] for t in raw["tasks"].values())
    assert cfg.task("style_wave").options.style_image.endswith("the-wave.jpg")
    assert cfg.task("style_candy").entry is TASKS["style"]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["tasks"]["sr_x4"]["degradation"].update(scale=0), "tasks.sr_x4.degradation.scale", "greater than or equal to 1"),
        (lambda d: d["tasks"]["sr_x8"].update(patch_size=12), "tasks.sr_x8", "multiple of the scale (8)"),
        (lambda d: d["tasks"]["sr_x4"].update(patch_size="big"), "tasks.sr_x4.patch_size", "valid integer"),
        (lambda d: d["tasks"].update(superres={}), "tasks.superres", "unknown task"),
        (lambda d: d.update(learning_rate=1), "learning_rate", "unknown key"),
        (lambda d: d["tasks"]["jpeg"]["degradation"].update(quality=0), "tasks.jpeg.degradation.quality", "greater than or equal to 1"),
        (lambda d: d["tasks"]["denoise"]["degradation"].update(sigma_max=1.0), "tasks.denoise.degradation", "sigma_max"),
        (lambda d: d["tasks"]["colorize"]["degradation"].update(channels=2), "tasks.colorize.degradation.channels", "1 or 3"),
        (lambda d: d["tasks"]["deblur"]["degradation"].update(radius=3), "tasks.deblur.degradation.radius", "unknown key"),
        (lambda d: d["ingest"]["sources"][0].update(split="test"), "ingest.sources.0.split", "'train' or 'val'"),
        (lambda d: d["ingest"].update(max_pixels=-5), "ingest.max_pixels", "greater than 0"),
        (lambda d: d["shard"].update(max_bytes=10), "shard.max_bytes", "greater than or equal to"),
        (lambda d: d["acquire"]["collections"].append({"name": "x", "files": [{"uri": "https://a/b.png", "sha256": "abc"}]}),
         "acquire.collections.5.files.0.sha256", "64 hex"),
        (lambda d: d["acquire"]["collections"].append({"name": "T91", "dataset": "T91"}), "acquire.collections", "unique"),
        (lambda d: d["acquire"]["collections"].append({"name": "y"}), "acquire.collections.5", "exactly one of"),
        (lambda d: d.update(tasks={}), "(top level)", "at least one task"),
        (lambda d: d.pop("ingest"), "ingest", "Field required"),
    ],
)
def test_mistakes_name_their_key(raw, change, key, words):
    message = error_of(mutated(raw, change))
    assert f"  {key}: " in message, message
    assert words in message, message


def test_several_mistakes_are_reported_together(raw):
    def two(d):
        d["seed"] = -1
        d["tasks"]["sr_x4"]["patch_size"] = 3
    message = error_of(mutated(raw, two))
    assert "2 invalid setting(s)" in message and "  seed: " in message and "  tasks.sr_x4.patch_size: " in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("tasks: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_unconfigured_task_is_a_clear_error(raw):
    def drop_jpeg(d):
        d["tasks"].pop("jpeg")
        d["train"]["tasks"] = [t for t in d["train"]["tasks"] if t != "jpeg"]

    cfg = parse_config(mutated(raw, drop_jpeg))
    assert "jpeg" not in cfg.task_names
    with pytest.raises(ConfigError, match="no block under `tasks:`"):
        cfg.task("jpeg")
    with pytest.raises(ConfigError, match="registered tasks"):
        cfg.task("nope")


def test_several_blocks_can_instantiate_one_registry_entry(raw):
    data = copy.deepcopy(raw)
    data["tasks"]["style_candy"] = {"task": "style", "patch_size": 64, "patches_per_image": 2,
                                    "options": {"style_image": "data/raw/styles/candy.jpg"}, "optim": {"steps": 7}}
    data["tasks"]["style_wave"].pop("optim", None)
    cfg = parse_config(data)
    candy, wave = cfg.task("style_candy"), cfg.task("style_wave")
    assert candy.entry is wave.entry is TASKS["style"] and candy.name == "style_candy"
    assert candy.options.style_image.endswith("candy.jpg") and wave.options.style_image.endswith("the-wave.jpg")
    assert candy.loss == wave.loss and candy.optim.steps == 7 != wave.optim.steps  # the entry's defaults, then the block's own
    assert cfg.reported_metrics("style_candy") == TASKS["style"].metrics


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ({"task": "styel", "patch_size": 64, "patches_per_image": 1}, "tasks.style_x", "unknown task; registered tasks: sr_x4"),
        ({"task": "style", "patch_size": 64, "patches_per_image": 1, "options": {"style": "a.jpg"}},
         "tasks.style_x.options.style", "unknown key"),
    ],
)
def test_mistakes_in_a_named_block_name_their_key(raw, block, key, words):
    message = error_of(mutated(raw, lambda d: d["tasks"].update(style_x=block)))
    assert f"  {key}: " in message and words in message, message


def test_task_names_are_safe_for_mlflow_dvc_and_folders(raw):
    message = error_of(mutated(raw, lambda d: d["tasks"].update({"Style Wave": {"task": "style", "patch_size": 64, "patches_per_image": 1}})))
    assert "tasks.Style Wave.name" in message


def test_config_is_frozen(raw):
    cfg = parse_config(raw)
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["train"].update(tasks=["jpeg", "nope"]), "train.tasks names nope"),
        (lambda d: d["train"].update(workers=3), "must be a multiple of train.workers (3)"),
        (lambda d: d.update(profile="tpu"), "profile 'tpu' is not defined"),
    ],
)
def test_training_settings_are_checked(raw, change, words):
    assert words in error_of(mutated(raw, change))


def test_gpu_profile_merges_the_papers_recipe(raw, monkeypatch):
    cfg = parse_config(mutated(raw, lambda d: d.update(profile="gpu")))
    assert cfg.profile == "gpu"
    sr = cfg.task("sr_x4")
    assert (sr.patch_size, sr.optim.batch_size, sr.optim.lr, sr.optim.steps) == (288, 16, 1e-3, 200_000)
    assert sr.model == parse_config(raw).task("sr_x4").model  # the same network as on the CPU
    assert sr.degradation.scale == 4  # untouched keys survive the merge
    assert cfg.task("style_wave").optim.steps == 40_000 and cfg.train.gpus_per_worker == 1
    monkeypatch.setenv("PERCEPT_PROFILE", "gpu")
    assert parse_config(raw).task("sr_x4").patch_size == 288
    monkeypatch.setenv("PERCEPT_PROFILE", "gpu, cluster")  # merged in turn
    both = parse_config(raw)
    assert both.task("sr_x4").patch_size == 288 and (both.train.workers, both.train.gpus_per_worker) == (2, 1)
    assert both.checkpoint_storage.startswith("s3://percept/") and both.artifact_location is None


def test_a_partial_block_keeps_the_tasks_own_defaults(raw):
    raw = copy.deepcopy(raw)
    raw["tasks"]["sr_x4"]["optim"] = {"steps": 5}
    raw["tasks"]["sr_x4"]["model"] = {"residual_blocks": 2}
    params = parse_config(raw).task("sr_x4")
    sr = TASKS["sr_x4"]
    assert params.optim.steps == 5 and params.optim.batch_size == sr.optim_defaults["batch_size"] != OptimConfig().batch_size
    assert params.model.residual_blocks == 2 and params.model.arch == sr.model_defaults["arch"] != TransformNetConfig().arch


def test_a_dumped_config_parses_back_to_itself(raw):
    # The Ray workers get the config as plain data: every task block must survive whole.
    data = copy.deepcopy(raw)
    data["tasks"]["sr_x4"]["optim"] = {"steps": 40}
    cfg = parse_config(data)
    dumped = cfg.model_dump(mode="json")
    assert dumped["tasks"]["sr_x4"]["optim"]["steps"] == 40 and "degradation" in dumped["tasks"]["style_wave"]
    assert parse_config(dumped) == cfg


def test_one_bucket_setting_moves_every_artefact_location_to_s3(raw):
    local = parse_config(raw)
    assert (local.checkpoint_storage, local.artifact_location, local.dvc_remote) == ("runs", "mlartifacts", None)

    def bucket(d):
        d["s3"].update(bucket="team-bucket", prefix="vision/percept")

    cfg = parse_config(mutated(raw, bucket))
    assert cfg.checkpoint_storage == "s3://team-bucket/vision/percept/runs"
    assert cfg.artifact_location == "s3://team-bucket/vision/percept/mlartifacts"
    assert cfg.dvc_remote == "s3://team-bucket/vision/percept/dvc"

    def explicit(d):
        bucket(d)
        d["train"]["storage_path"] = "s3://other/ckpt"
        d["mlflow"]["artifact_location"] = None  # a tracking server that proxies artifacts decides

    cfg = parse_config(mutated(raw, explicit))
    assert cfg.checkpoint_storage == "s3://other/ckpt" and cfg.artifact_location is None
    with pytest.raises(ConfigError, match="s3.bucket"):
        parse_config(mutated(raw, lambda d: d["s3"].update(bucket="Not_A_Bucket")))
