"""params.yaml validation: the shipped defaults load, and every kind of mistake names its key."""

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.common.params import load_config, parse_config
from pipelines.common.errors import ConfigError
from training.degradations import BicubicDownscale, GaussianNoise
from training.options import OptimConfig, TransformNetConfig
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
    assert cfg.task("denoise").degradation.levels == (0.0, 50.0)  # blind by default
    assert cfg.eval_levels("jpeg") == (10, 30, 60, 90) and cfg.eval_levels("sr_x4") == ()
    # the RealSRSet sheet: a task's name stands for its models/ folder, a baseline for itself
    assert cfg.compare_models("RealSRSet") == ["bicubic", "models/sr_x4", "models/sr_x4_real"]
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
        (lambda d: d["tasks"]["denoise"]["degradation"].update(sigma=[30, 10]), "tasks.denoise.degradation", "[30, 10] is reversed"),
        (lambda d: d["tasks"]["jpeg"]["degradation"].update(quality=[10, 200]), "tasks.jpeg.degradation.quality", "less than or equal to 100"),
        (lambda d: d["tasks"]["deblur"]["degradation"].update(sigma=[1, 2, 3]), "tasks.deblur.degradation.sigma", "[low, high] pair"),
        (lambda d: d["evaluate"].update(levels={"jpeg": [10, 120]}), "(top level)", "evaluate.levels.jpeg: 120 is not a valid quality"),
        (lambda d: d["compare"]["RealSRSet"].update(models=["bicubic", "sr_x9"]), "(top level)",
         "compare.RealSRSet.models: sr_x9 is not in train.tasks"),
        (lambda d: d["evaluate"].update(levels={"sr_x4": [2]}), "(top level)", "evaluate.levels.sr_x4: its degradation (bicubic_downscale) has no single strength"),
        (lambda d: d["tasks"]["sr_x4_real"]["degradation"].update(first={"blur": {"kernels": {"box": 1}}}),
         "tasks.sr_x4_real.degradation.first.blur.kernels", "unknown box"),
        (lambda d: d["tasks"]["colorize"]["degradation"].update(channels=2), "tasks.colorize.degradation.channels", "1 or 3"),
        (lambda d: d["tasks"]["deblur"]["degradation"].update(radius=3), "tasks.deblur.degradation.radius", "unknown key"),
        (lambda d: d["tasks"]["deblur"].update(loss={"chroma_bin_weight": 1.0}), "tasks.deblur", "chroma_bins > 0"),
        (lambda d: d["tasks"]["colorize"].update(patch_size=100, model={"chroma_bins": 8}, loss={"chroma_bin_weight": 1.0}),
         "tasks.colorize", "multiple of 8 (the colornet's chroma grid)"),
        (lambda d: d["ingest"]["sources"][0].update(split="test"), "ingest.sources.0.split", "'train' or 'val'"),
        (lambda d: d["ingest"].update(max_pixels=-5), "ingest.max_pixels", "greater than 0"),
        (lambda d: d["shard"].update(max_bytes=10), "shard.max_bytes", "greater than or equal to"),
        (lambda d: d["acquire"]["collections"].append({"name": "x", "files": [{"uri": "https://a/b.png", "sha256": "abc"}]}),
         "acquire.collections.6.files.0.sha256", "64 hex"),
        (lambda d: d["acquire"]["collections"].append({"name": "T91", "dataset": "T91"}), "acquire.collections", "unique"),
        (lambda d: d["acquire"]["collections"].append({"name": "y"}), "acquire.collections.6", "exactly one of"),
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


# --- issue 15, item 7: duplicate keys, booleans as numbers, bounded error messages ---

def write_params(tmp_path: Path, raw: dict, extra: str = "", drop: tuple[str, ...] = ()) -> tuple[Path, str]:
    """params.yaml from ``raw`` (less ``drop``) with ``extra`` YAML appended; returns (path, text)."""
    text = yaml.safe_dump({k: v for k, v in raw.items() if k not in drop}, sort_keys=False) + extra
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path, text


def line_of(text: str, start: str) -> int:
    return 1 + next(i for i, line in enumerate(text.splitlines()) if line.startswith(start))


def test_a_top_level_key_written_twice_is_refused_with_both_lines(tmp_path, raw):
    path, text = write_params(tmp_path, raw, "seed: 7\n")
    first, second = line_of(text, "seed:"), len(text.splitlines())
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: key 'seed' appears twice in one mapping (lines {first} and {second})"


@pytest.mark.parametrize(
    ("extra", "offsets"),
    [
        ("shard:\n  max_samples: 128\n  workers: 1\n  max_samples: 64\n", (2, 4)),
        ("shard: {max_samples: 128, workers: 1, max_samples: 64}\n", (1, 1)),  # flow style
        ("shard:\n  <<: {workers: 2}\n  max_samples: 128\n  max_samples: 64\n", (3, 4)),  # beside a merge key
    ],
)
def test_a_nested_key_written_twice_is_refused_with_both_lines(tmp_path, raw, extra, offsets):
    path, text = write_params(tmp_path, raw, extra, drop=("shard",))
    before = len(text.splitlines()) - len(extra.splitlines())
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = tuple(before + o for o in offsets)
    assert f"key 'max_samples' appears twice in one mapping (lines {lines[0]} and {lines[1]})" in str(exc.value)


def test_merge_keys_and_aliases_still_load(tmp_path, raw):
    extra = ("profiles:\n  small: {evaluate: &small_eval {overlap: 8, sheet_images: 2}}\n"
             "shard: {max_samples: 128, encoding: png}\n"
             "s3:\n  <<: {region: eu-west-1, prefix: merged}\n  prefix: own\n"  # a key of its own overrides a merged one
             "evaluate:\n  <<: *small_eval\n  sheet_images: 3\n")
    path, _ = write_params(tmp_path, raw, extra, drop=("profiles", "shard", "s3", "evaluate"))
    cfg = load_config(path)
    assert (cfg.shard.max_samples, cfg.shard.encoding) == (128, "png")
    assert (cfg.s3.region, cfg.s3.prefix) == ("eu-west-1", "own")
    assert (cfg.evaluate.overlap, cfg.evaluate.sheet_images) == (8, 3)
    assert cfg.profiles["small"]["evaluate"] == {"overlap": 8, "sheet_images": 2}


@pytest.mark.parametrize("profile", ["", "gpu", "paper", "compose", "cluster", "vgg16", "gpu,paper", "gpu,cluster", "gpu,vgg16"])
def test_shipped_params_load_with_every_profile(monkeypatch, profile):
    # params.yaml itself uses anchors and aliases (the paper and vgg16 profiles).
    monkeypatch.setenv("PERCEPT_PROFILE", profile)
    assert load_config(ROOT / "params.yaml").profile == (profile or None)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d.update(seed=True), "seed"),
        (lambda d: d["shard"].update(max_samples=False), "shard.max_samples"),
        (lambda d: d["train"].update(gpus_per_worker=False), "train.gpus_per_worker"),  # a float
        (lambda d: d["tasks"]["sr_x4"].update(patch_size=True), "tasks.sr_x4.patch_size"),
        (lambda d: d["tasks"]["sr_x4"]["optim"].update(lr=False), "tasks.sr_x4.optim.lr"),  # training.loop's model
        (lambda d: d["tasks"]["sr_x4"]["optim"].update(steps=True), "tasks.sr_x4.optim.steps"),
        (lambda d: d["tasks"]["denoise"]["degradation"].update(sigma=True), "tasks.denoise.degradation.sigma"),
        (lambda d: d["tasks"]["style_candy"]["loss"].update(style_weight=True), "tasks.style_candy.loss.style_weight"),
        (lambda d: d["tasks"]["style_wave"]["options"].update(style_size=True), "tasks.style_wave.options.style_size"),
        (lambda d: d["promote"]["sr_x4"]["tolerances"].update(ssim_y=False), "promote.sr_x4.tolerances.ssim_y"),
        (lambda d: d["evaluate"].update(tile=True), "evaluate.tile"),  # int | None
    ],
)
def test_a_boolean_is_not_a_number(raw, change, key):
    message = error_of(mutated(raw, change))
    assert f"  {key}: expected a number, not a boolean" in message, message


def test_a_boolean_model_field_is_refused_under_its_key(raw):
    message = error_of(mutated(raw, lambda d: d["tasks"]["sr_x4"].update(model={"residual_blocks": True})))
    assert "  tasks.sr_x4.model." in message and "residual_blocks: expected a number, not a boolean" in message, message


def test_yaml_true_for_seed_is_refused_and_numbers_in_strings_still_load(tmp_path, raw):
    path, _ = write_params(tmp_path, raw, "seed: true\n", drop=("seed",))
    with pytest.raises(ConfigError, match="  seed: expected a number, not a boolean"):
        load_config(path)
    path, _ = write_params(tmp_path, raw, 'seed: "3"\n', drop=("seed",))
    assert load_config(path).seed == 3  # as before: only booleans are refused
    assert parse_config(mutated(raw, lambda d: d["train"].update(gpus_per_worker=1))).train.gpus_per_worker == 1.0


def test_a_huge_aliased_value_gives_a_short_message(tmp_path, raw):
    # Eight anchors, each ten aliases of the previous: `seed` stands for over ten million items,
    # but the parsed list is small. Its whole repr (tens of MB) must never reach the message.
    levels = ["&l0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    path, _ = write_params(tmp_path, raw, f"seed: [{', '.join(levels)}]\n", drop=("seed",))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert len(message) < 1000 and "  seed: Input should be a valid integer (got [[0, 0, " in message, message
    assert "… (list of 7 items))" in message, message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["ingest"]["sources"][0].update(split="t" * 1_000_000), "ingest.sources.0.split"),
        (lambda d: d["retrain"].update(cron="* " * 500_000), "retrain.cron"),  # quoted by our own validator
        (lambda d: d["tasks"]["sr_x4"].update(task=["x" * 1000] * 1000), "tasks.sr_x4"),
    ],
)
def test_quoted_values_are_cut_with_their_size(raw, change, key):
    message = error_of(mutated(raw, change))
    assert len(message) < 1000 and f"  {key}: " in message, message
    assert "… (" in message, message


def test_many_problems_and_long_keys_keep_the_message_bounded(raw):
    def many(d):
        d.update({f"unknown_{i}": i for i in range(1000)})
        d["k" * 100_000] = 1
    message = error_of(mutated(raw, many))
    assert message.startswith("params: 1001 invalid setting(s):") and "  ... and 981 more" in message
    assert len(message) < 5000 and all(len(line) < 500 for line in message.splitlines())


def test_a_duplicate_key_message_is_bounded_too(tmp_path, raw):
    long_key = "k" * 100_000  # an explicit key (`? key`): a plain one is at most 1024 characters in YAML
    path, _ = write_params(tmp_path, raw, f"? {long_key}\n: 1\n? {long_key}\n: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "… (100000 characters) appears twice in one mapping" in message and len(message) < 1000, message
