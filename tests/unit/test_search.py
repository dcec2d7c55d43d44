"""`percept tune`'s pure pieces: the `tune:` settings, the tuning split, the Tune space, trial
configs, the summary and chart, and the best settings written into params.yaml (no Ray cluster,
no MLflow, no training)."""

import copy
import dataclasses
import io
import itertools
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from pipelines.common.errors import ConfigError
from pipelines.common.params import load_config, parse_config
from pipelines.common.paths import Paths
from pipelines.common.search_schema import SHARD_SETTINGS, Choice, Range, TuneSearch, set_dotted
from pipelines.data.manifest import ManifestRow
from pipelines.search import report
from pipelines.search.split import SearchPaths, carve, variant_key, variants
from pipelines.search.tune import (SearchOutcome, Trial, best_trial, concurrency, current_settings, param_space, report_steps,
                                   trial_config)
from tests.e2e.project_copy import tiny_params

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
LR_RANGE = {"low": 1.0e-4, "high": 3.0e-3, "log": True}


# ------------------------------------------------------------------------------------------
# Settings


@pytest.fixture(scope="module")
def base() -> dict:
    params = tiny_params()
    params.pop("tune", None)  # each test declares its own searches
    return params


def with_tune(base: dict, tune: dict, **train) -> dict:
    data = copy.deepcopy(base)
    data["tune"] = tune
    data["train"].update(train)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return str(exc.value)


def test_valid_search_parses_typed(base):
    cfg = parse_config(with_tune(base, {"sr_x4": {
        "space": {"optim.lr": LR_RANGE, "model.residual_blocks": {"low": 1, "high": 3, "integer": True},
                  "patch_size": {"choices": [32, 64]}},
        "trials": 5, "steps": 6, "reports": 3, "grace": 2}}))
    search = cfg.tune["sr_x4"]
    assert isinstance(search.space["optim.lr"], Range) and search.space["optim.lr"].log
    assert isinstance(search.space["model.residual_blocks"], Range) and search.space["model.residual_blocks"].integer
    assert isinstance(search.space["patch_size"], Choice) and search.space["patch_size"].choices == [32, 64]
    assert (search.trials, search.steps, search.reports, search.grace) == (5, 6, 3, 2)
    assert list(search.shard_space()) == ["patch_size"]
    assert parse_config(copy.deepcopy(base)).tune == {}  # the section is optional


@pytest.mark.parametrize(
    ("search", "words"),
    [
        ({"space": {"optim.lrr": {"low": 1e-4, "high": 1e-3}}}, ["tune.sr_x4.space.optim.lrr", "optim.lrr"]),
        ({"space": {"optim.lr": {"low": 1e-4, "high": 3}}}, ["tune.sr_x4.space.optim.lr", "less than or equal to 1"]),
        ({"space": {"patch_size": {"low": 32, "high": 64}}}, ["tune.sr_x4", "space.patch_size", "choices"]),
        ({"space": {"optim.lr": LR_RANGE}, "grace": 5, "reports": 2}, ["tune.sr_x4", "grace (5) exceeds reports (2)"]),
        ({"space": {"optim.steps": {"low": 2, "high": 8, "integer": True}}, "steps": 4}, ["tune.sr_x4", "optim.steps"]),
        ({"space": {"optim.lr": {"low": 0, "high": 1e-3, "log": True}}}, ["tune.sr_x4.space.optim.lr", "low > 0"]),
        ({"space": {"optim.lr": {"low": 1e-3, "high": 1e-3}}}, ["tune.sr_x4.space.optim.lr", "must be below high"]),
        ({"space": {"optim.lr": {"low": 2e-3, "high": 1e-3}}}, ["tune.sr_x4.space.optim.lr", "must be below high"]),
        ({"space": {"model.channels": {"choices": [8, -4]}}}, ["tune.sr_x4.space.model.channels", "-4"]),
        ({"space": {}}, ["tune.sr_x4.space"]),
        ({"space": {"optim.lr": LR_RANGE}, "trails": 3}, ["tune.sr_x4.trails"]),
    ],
    ids=["misspelt", "out-of-bounds", "shard-range", "grace", "steps-twice", "log-low", "empty-range", "reversed",
         "bad-choice", "empty-space", "unknown-key"],
)
def test_bad_search_is_refused_naming_its_key(base, search, words):
    message = error_of(with_tune(base, {"sr_x4": search}))
    for word in words:
        assert word in message, message


def test_search_of_no_task_is_refused(base):
    message = error_of(with_tune(base, {"sr_x5": {"space": {"optim.lr": LR_RANGE}}}))
    assert "tune.sr_x5" in message and "no such task" in message
    # a registry task without a block under `tasks:` is no task of this file either
    assert "tune.jpeg" in error_of(with_tune(base, {"jpeg": {"space": {"optim.lr": LR_RANGE}}}))


def test_float_range_over_an_integer_setting_is_refused(base):
    message = error_of(with_tune(base, {"sr_x4": {"space": {"optim.steps": {"low": 2, "high": 8}}}}))
    assert "tune.sr_x4.space.optim.steps" in message


def _leaves(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, (*prefix, k))
    else:
        yield prefix, data


def test_with_task_settings_changes_only_the_named_keys(base):
    cfg = parse_config(with_tune(base, {"sr_x4": {"space": {"optim.lr": LR_RANGE}}}))
    before = cfg.model_dump(mode="json", exclude={"tune"})
    lr = cfg.task("sr_x4").optim.lr * 2
    blocks = cfg.task("sr_x4").model.residual_blocks + 1
    new = cfg.with_task_settings("sr_x4", {"optim.lr": lr, "model.residual_blocks": blocks})
    assert type(new) is type(cfg)
    assert new.task("sr_x4").optim.lr == lr and new.task("sr_x4").model.residual_blocks == blocks
    after = new.model_dump(mode="json", exclude={"tune"})
    diff = {path for path, value in _leaves(before) if dict(_leaves(after)).get(path, object()) != value}
    assert diff == {("tasks", "sr_x4", "optim", "lr"), ("tasks", "sr_x4", "model", "residual_blocks")}
    assert set(dict(_leaves(after))) == set(dict(_leaves(before)))
    assert cfg.model_dump(mode="json", exclude={"tune"}) == before  # the original is untouched
    assert new.tune == {}


@pytest.mark.parametrize("settings", [{"optim.lr": 5.0}, {"optim.lrr": 1e-3}, {"patch_size": 30},
                                      {"optim.batch_size": 3}])  # 30: not a multiple of the scale (4)
def test_with_task_settings_validates(base, settings):
    cfg = parse_config(with_tune(base, {}, workers=2))  # batch 3 does not split over 2 workers
    with pytest.raises(ValidationError):
        cfg.with_task_settings("sr_x4", settings)


def test_set_dotted_makes_missing_levels_and_copies():
    block = {"optim": {"steps": 4}, "patch_size": 32}
    out = set_dotted(block, {"optim.lr": 0.01, "model.channels": 8, "patch_size": 64})
    assert out == {"optim": {"steps": 4, "lr": 0.01}, "patch_size": 64, "model": {"channels": 8}}
    assert block == {"optim": {"steps": 4}, "patch_size": 32}


# ------------------------------------------------------------------------------------------
# The tuning split and the shard variants


def rows(train: int, val: int = 3) -> list[ManifestRow]:
    def row(i: int, split: str) -> ManifestRow:
        return ManifestRow(f"{split}{i:03d}", f"file:///{split}/{i}.png", f"{i:064x}", 64, 48, split,
                           f"../raw/{split}/{i}.png", 3)

    return [row(i, "train") for i in range(train)] + [row(i, "val") for i in range(val)]


def test_carve_holds_out_train_rows_by_seed():
    manifest = rows(20)
    kept, held = carve(manifest, "sr_x4", 1234, 5)
    train = {r for r in manifest if r.split == "train"}
    assert len(held) == 5 and len(kept) == 15
    assert set(kept).isdisjoint(held) and set(kept) | set(held) == train
    assert all(r.split == "train" for r in kept + held)  # the test sets are in neither
    # the same for the seed, whatever the manifest's order
    shuffled = list(manifest)
    random.Random(0).shuffle(shuffled)
    assert carve(shuffled, "sr_x4", 1234, 5) == (kept, held)
    assert carve(manifest, "sr_x4", 1234, 5) == (kept, held)
    # another seed, another task: another split
    assert {frozenset(carve(manifest, "sr_x4", s, 5)[1]) for s in range(1230, 1236)} != {frozenset(held)}
    assert len({frozenset(carve(manifest, "sr_x4", s, 5)[1]) for s in range(1230, 1236)}) > 1
    assert len({frozenset(carve(manifest, t, 1234, 5)[1]) for t in ("sr_x4", "denoise", "jpeg", "deblur")}) > 1


def test_carve_needs_an_image_left_to_train_on():
    with pytest.raises(ValueError, match="too few"):
        carve(rows(4, val=10), "sr_x4", 1, 4)  # val rows do not count
    kept, held = carve(rows(4, val=10), "sr_x4", 1, 3)
    assert len(kept) == 1 and len(held) == 3


def test_search_paths_are_the_search_own():
    where = SearchPaths(Path("/p"), "sr_x4", "abc")
    assert where.folder == Paths(Path("/p")).tune("sr_x4")
    assert where.manifest == where.folder / "manifest.csv" and where.split_images == where.folder / "images"
    assert where.shards("any") == where.folder / "shards" / "abc"
    assert where.manifest_dir == Paths(Path("/p")).manifest_dir  # the images stay where ingest put them


def test_variants_are_the_product_of_shard_choices():
    search = TuneSearch(space={"patch_size": Choice(choices=[32, 64]), "optim.lr": Range(**LR_RANGE),
                               "patches_per_image": Choice(choices=[2, 4, 8]),
                               "model.channels": Choice(choices=[8, 16])})
    out = variants(search)
    assert len(out) == 2 * 3
    assert all(set(v) == {"patch_size", "patches_per_image"} for v in out)
    assert {(v["patch_size"], v["patches_per_image"]) for v in out} == set(itertools.product([32, 64], [2, 4, 8]))
    keys = [variant_key(v) for v in out]
    assert len(set(keys)) == len(out) and "default" not in keys
    assert variant_key(dict(reversed(list(out[0].items())))) == keys[0]  # the order of keys does not matter
    assert set(SHARD_SETTINGS) >= {k.split(".")[0] for k in search.shard_space()}


def test_no_shard_setting_searched_is_one_default_variant():
    search = TuneSearch(space={"optim.lr": Range(**LR_RANGE), "model.channels": Choice(choices=[8, 16])})
    assert variants(search) == [{}]
    assert variant_key({}) == "default"


# ------------------------------------------------------------------------------------------
# The Tune space, the current recipe, trial configs and concurrency


def test_param_space_types_and_bounds():
    from ray.tune.search import sample

    search = TuneSearch(space={
        "optim.lr": Range(low=1e-4, high=1e-2, log=True), "loss.pixel_weight": Range(low=0.5, high=2.0),
        "model.residual_blocks": Range(low=1, high=3, integer=True),
        "model.channels": Range(low=1, high=4, integer=True, log=True),
        "patch_size": Choice(choices=[32, 64, 96])})
    space = param_space(search)
    assert set(space) == set(search.space)
    assert isinstance(space["optim.lr"], sample.Float) and isinstance(space["loss.pixel_weight"], sample.Float)
    assert isinstance(space["model.residual_blocks"], sample.Integer)
    assert isinstance(space["model.channels"], sample.Integer)
    assert isinstance(space["patch_size"], sample.Categorical)

    def draws(key, n=2000):
        return list(space[key].sample(size=n, random_state=np.random.default_rng(7)))

    blocks = draws("model.residual_blocks")
    assert set(blocks) == {1, 2, 3}  # both ends included
    channels = draws("model.channels")
    assert set(channels) == {1, 2, 3, 4}
    assert all(float(c).is_integer() for c in blocks + channels)
    assert set(draws("patch_size")) == {32, 64, 96}
    weights = draws("loss.pixel_weight")
    assert 0.5 <= min(weights) and max(weights) <= 2.0
    lrs = np.array(draws("optim.lr"))
    assert 1e-4 <= lrs.min() and lrs.max() <= 1e-2
    # log scale: about half below the geometric middle (1e-3); a uniform draw puts ~9 % there
    assert 0.4 < np.mean(lrs < 1e-3) < 0.6
    assert 0.4 < np.mean(np.array(weights) < 1.25) < 0.6


@pytest.fixture(scope="module")
def cfg(base):
    return parse_config(with_tune(base, {"sr_x4": {"space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}}))


def test_current_settings_inside_and_outside(cfg):
    block = cfg.task("sr_x4")
    lr, channels, patch = block.optim.lr, block.model.channels, block.patch_size
    inside = TuneSearch(space={"optim.lr": Range(low=lr / 2, high=lr * 2, log=True),
                               "model.channels": Choice(choices=[channels, channels * 2]),
                               "patch_size": Choice(choices=[patch * 2, patch])})
    assert current_settings("sr_x4", cfg, inside) == {"optim.lr": lr, "model.channels": channels, "patch_size": patch}
    at_the_ends = TuneSearch(space={"optim.lr": Range(low=lr, high=lr * 2)})
    assert current_settings("sr_x4", cfg, at_the_ends) == {"optim.lr": lr}
    for outside in ({"optim.lr": Range(low=lr * 2, high=lr * 4, log=True)},
                    {"optim.lr": Range(low=lr / 2, high=lr * 2), "model.channels": Choice(choices=[channels * 2])},
                    {"model.not_a_setting": Choice(choices=[1, 2])}):
        assert current_settings("sr_x4", cfg, TuneSearch(space=outside)) is None


@pytest.mark.parametrize(("steps", "reports"), [(7, 3), (6, 4), (5, 5), (None, 3)])
def test_trial_config(cfg, steps, reports):
    search = TuneSearch(space={"optim.lr": Range(**LR_RANGE)}, steps=steps, reports=reports, grace=1)
    lr = cfg.task("sr_x4").optim.lr / 3
    out = trial_config(cfg, "sr_x4", search, {"optim.lr": lr})
    expected_steps = steps or cfg.task("sr_x4").optim.steps
    assert out.task("sr_x4").optim.steps == expected_steps and out.task("sr_x4").optim.lr == lr
    at = report_steps(expected_steps, reports)
    assert len(set(at)) == reports and at[-1] == expected_steps and at == sorted(at)
    assert out.train.checkpoint_every == expected_steps  # no checkpoint besides the reports
    assert out.train.keep_checkpoints == 1
    assert out.train.log_every <= at[0]
    assert out.task("denoise") == cfg.task("denoise")
    assert cfg.task("sr_x4").optim.lr == lr * 3  # the search's config is untouched


def reports_made(steps: int, every: int, at: list[int]) -> int:
    """Reports a trial that runs to its end makes: the train loop checkpoints (and reports) when
    ``done % checkpoint_every == 0 or done == steps or done in report_steps`` (pipelines/stages/train.py)."""
    return sum(done % every == 0 or done == steps or done in at for done in range(1, steps + 1))


def test_a_full_trial_reports_as_often_as_the_search_says(cfg):
    for steps, reports in [(8, 4), (700, 4), (6, 4), (9, 4), (1000, 60)]:
        search = TuneSearch(space={"optim.lr": Range(**LR_RANGE)}, steps=steps, reports=reports)
        out = trial_config(cfg, "sr_x4", search, {})
        assert reports_made(steps, out.train.checkpoint_every, report_steps(steps, reports)) == reports, (steps, reports)


def test_concurrency(base):
    search = TuneSearch(space={"optim.lr": Range(**LR_RANGE)})
    two_by_two = parse_config(with_tune(base, {}, workers=2, cpus_per_worker=2))  # a trial: 4 CPUs
    assert concurrency(two_by_two, search, {"CPU": 16.0}) == 4
    assert concurrency(two_by_two, search, {"CPU": 19.0, "memory": 1e9}) == 4
    assert concurrency(two_by_two, search, {"CPU": 3.0}) == 1  # at least one
    on_gpus = parse_config(with_tune(base, {}, workers=2, cpus_per_worker=2, gpus_per_worker=0.5))  # 4 CPUs, 1 GPU
    assert concurrency(on_gpus, search, {"CPU": 64.0, "GPU": 3.0}) == 3  # the GPUs bound it
    assert concurrency(on_gpus, search, {"CPU": 8.0, "GPU": 8.0}) == 2  # the CPUs bound it
    assert concurrency(on_gpus, search, {"CPU": 64.0}) == 1
    explicit = TuneSearch(space={"optim.lr": Range(**LR_RANGE)}, concurrent=7)
    assert concurrency(two_by_two, explicit, {"CPU": 16.0}) == 7
    assert concurrency(two_by_two, explicit, {"CPU": 1.0}) == 7


def test_best_trial_skips_missing_figures():
    trials = [Trial("a", {}, 4, 0.3, "completed", None), Trial("b", {}, 0, None, "failed", None),
              Trial("c", {}, 2, float("nan"), "stopped early", None), Trial("d", {}, 4, 0.1, "completed", None)]
    assert best_trial(trials, higher_is_better=True).id == "a"
    assert best_trial(trials, higher_is_better=False).id == "d"
    with pytest.raises(RuntimeError):
        best_trial(trials[1:3], higher_is_better=True)


# ------------------------------------------------------------------------------------------
# `percept tune --apply`: the best settings written into (a copy of) params.yaml


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    return path


def task_line(lines: list[str], task: str, key: str) -> int:
    """The index of ``key``'s line in the block of ``tasks.<task>``."""
    start = lines.index("tasks:\n")
    start = next(i for i in range(start + 1, len(lines)) if lines[i] == f"  {task}:\n")
    for i in range(start + 1, len(lines)):
        if lines[i].strip() and not lines[i].startswith("    "):
            break  # the next task
        if lines[i].startswith(f"    {key}:"):
            return i
    raise AssertionError(f"no {key}: under tasks.{task}")


def only_line_changed(before: list[str], after: list[str], index: int) -> None:
    assert len(after) == len(before)
    assert [line for i, line in enumerate(after) if i != index] == [line for i, line in enumerate(before) if i != index]


def test_apply_changes_a_value_in_place_keeping_the_comment_column(params):
    before = params.read_text().splitlines(keepends=True)
    i = task_line(before, "sr_x4", "patch_size")
    assert "#" in before[i]  # the shipped file comments this value
    patch = load_config(params).task("sr_x4").patch_size
    for new in (patch * 2, patch * 12, patch // 2):  # longer and shorter values
        shutil.copyfile(ROOT / "params.yaml", params)
        assert report.apply_settings(params, "sr_x4", {"patch_size": new}) == ["patch_size"]
        after = params.read_text().splitlines(keepends=True)
        only_line_changed(before, after, i)
        assert after[i].index("#") == before[i].index("#")
        assert after[i].split("#", 1)[1] == before[i].split("#", 1)[1]
        assert after[i].startswith(f"    patch_size: {new} ")
        assert load_config(params).task("sr_x4").patch_size == new


def test_apply_adds_a_key_to_a_flow_mapping(params):
    before = params.read_text().splitlines(keepends=True)
    i = task_line(before, "sr_x4", "optim")
    assert before[i].rstrip().endswith("}") and "lr" not in before[i]
    assert report.apply_settings(params, "sr_x4", {"optim.lr": 0.0005}) == ["optim.lr"]
    after = params.read_text().splitlines(keepends=True)
    only_line_changed(before, after, i)
    assert after[i] == before[i].rstrip()[:-1] + ", lr: 0.0005}\n"  # e.g. optim: {steps: 700, lr: 0.0005}
    cfg = load_config(params)
    assert cfg.task("sr_x4").optim.lr == 0.0005
    assert cfg.task("sr_x4").optim.steps == yaml.safe_load(before[i].strip())["optim"]["steps"]


def test_apply_adds_a_nested_mapping_as_one_line(params):
    raw = yaml.safe_load(params.read_text())
    assert "model" not in raw["tasks"]["sr_x4"]
    old = load_config(params).task("sr_x4").model
    before = params.read_text().splitlines(keepends=True)
    assert report.apply_settings(params, "sr_x4", {"model.channels": old.channels // 2}) == ["model.channels"]
    after = params.read_text().splitlines(keepends=True)
    assert len(after) == len(before) + 1
    added = [line for line in after if line not in before]
    assert len(added) == 1 and added[0] == f"    model: {{channels: {old.channels // 2}}}\n"
    assert [line for line in after if line != added[0]] == before
    assert task_line(after, "sr_x4", "model") == after.index(added[0])  # inside sr_x4's block
    new = load_config(params).task("sr_x4").model
    assert new.channels == old.channels // 2 and new.residual_blocks == old.residual_blocks


def test_apply_several_settings_at_once(params):
    shipped = load_config(params)
    before = shipped.task("denoise")
    changed = report.apply_settings(params, "denoise", {"optim.lr": 0.002, "model.channels": 16,
                                                        "patch_size": before.patch_size * 2})
    assert changed == ["optim.lr", "model.channels", "patch_size"]
    after = load_config(params)
    assert (after.task("denoise").optim.lr, after.task("denoise").model.channels) == (0.002, 16)
    assert after.task("denoise").patch_size == before.patch_size * 2
    assert after.task("denoise").optim.steps == before.optim.steps
    assert after.task("sr_x4") == shipped.task("sr_x4") and after.tune == shipped.tune


def test_apply_of_the_current_values_writes_nothing(params):
    raw = yaml.safe_load(params.read_text())["tasks"]["sr_x4"]
    os.utime(params, ns=(1_000_000_000, 1_000_000_000))
    data, stat = params.read_bytes(), params.stat()
    same = {"optim.steps": raw["optim"]["steps"], "patch_size": raw["patch_size"]}
    assert report.apply_settings(params, "sr_x4", same) == []
    assert params.read_bytes() == data and params.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.mark.parametrize("settings", [{"optim.lr": 5.0}, {"optim.lrr": 0.001}, {"patch_size": 30}])
def test_apply_of_an_invalid_value_leaves_the_file(params, settings):
    data = params.read_bytes()
    with pytest.raises(ConfigError):
        report.apply_settings(params, "sr_x4", settings)
    assert params.read_bytes() == data


def test_apply_replaces_a_list_in_a_flow_mapping(params):
    before = params.read_text().splitlines(keepends=True)
    i = task_line(before, "deblur", "degradation")
    assert report.apply_settings(params, "deblur", {"degradation.sigma": [1.0, 2.0]}) == ["degradation.sigma"]
    after = params.read_text().splitlines(keepends=True)
    only_line_changed(before, after, i)
    assert load_config(params).task("deblur").degradation.sigma == (1.0, 2.0)


def test_apply_in_a_flow_mapping_keeps_the_comment_column(params):
    before = params.read_text().splitlines(keepends=True)
    i = task_line(before, "denoise", "optim")
    assert "#" in before[i] and "{" in before[i]
    steps = load_config(params).task("denoise").optim.steps
    assert report.apply_settings(params, "denoise", {"optim.steps": steps // 10}) == ["optim.steps"]
    after = params.read_text().splitlines(keepends=True)
    only_line_changed(before, after, i)
    assert load_config(params).task("denoise").optim.steps == steps // 10
    assert after[i].index("#") == before[i].index("#")


# ------------------------------------------------------------------------------------------
# The summary, the verdict, the chart


SPACE = {"optim.lr": Range(**LR_RANGE), "model.channels": Choice(choices=[8, 16]),
         "model.residual_blocks": Range(low=1, high=4, integer=True)}


def trials_of(figures: list[float | None]) -> list[Trial]:
    states = ["completed", "stopped early", "cut short", "failed"]
    return [Trial(f"t{i}", {"optim.lr": 1e-4 * 1.7 ** i, "model.channels": [8, 16][i % 2], "model.residual_blocks": 1 + i % 4},
                  4 if f is not None else 0, f, states[i % 4] if f is not None else "failed", f"run{i}")
            for i, f in enumerate(figures)]


def outcome(figures, higher=True, current=0, metric="psnr_y") -> SearchOutcome:
    trials = trials_of(figures)
    return SearchOutcome("search-x", "sr_x4", metric, higher, "parent1", trials, best_trial(trials, higher),
                         None if current is None else trials[current])


def rows_of(lines: list[str], result: SearchOutcome) -> list[str]:
    ids = {t.id for t in result.trials}
    return [line for line in lines if line.split() and line.split()[0] in ids]


@pytest.mark.parametrize(("higher", "figures"), [(True, [30.1, 31.7, None, 29.5, 30.9]),
                                                 (False, [0.21, 0.18, None, 0.25, 0.19])])
def test_summary_orders_and_marks_rows(higher, figures):
    result = outcome(figures, higher=higher, current=0)
    lines = report.summary_lines(result)
    body = rows_of(lines, result)
    assert len(body) == len(result.trials)
    order = [line.split()[0] for line in body]
    scored = sorted((t for t in result.trials if t.figure is not None), key=lambda t: t.figure, reverse=higher)
    assert order == [t.id for t in scored] + [t.id for t in result.trials if t.figure is None]
    starred = [line for line in body if line.endswith(" *") or " * " in line]
    assert [line.split()[0] for line in starred] == [result.best.id] == [order[0]]
    marked = [line for line in body if "(current recipe)" in line]
    assert [line.split()[0] for line in marked] == [result.current.id]
    best_line = next(line for line in lines if line.startswith("best (*)"))
    assert result.best.id in best_line and report.verdict(result) in best_line
    # the lines after it are the best settings as params.yaml lines
    block = "\n".join(line[2:] for line in lines[lines.index(best_line) + 1 :])
    assert yaml.safe_load(block) == yaml.safe_load(report.params_block("sr_x4", report.round_settings(result.best.settings)))


def test_summary_marks_a_best_current_recipe_once():
    result = outcome([31.0, 30.0, 29.0], current=0)
    assert result.best is result.current
    (line,) = [line for line in rows_of(report.summary_lines(result), result) if line.split()[0] == "t0"]
    assert line.endswith(" * (current recipe)")


def test_verdict():
    holds = outcome([31.0, 30.0], current=0)
    assert "holds" in report.verdict(holds)
    higher = outcome([30.0, 31.25], current=0)
    assert higher.best.id == "t1"
    text = report.verdict(higher)
    assert "holds" not in text and f"{31.25 - 30.0:+.4f}" in text and "psnr_y" in text
    lower = outcome([0.25, 0.2], higher=False, current=0, metric="lpips")
    text = report.verdict(lower)
    assert lower.best.id == "t1" and f"{0.25 - 0.2:+.4f}" in text and "-0.0500" not in text and "lpips" in text
    assert "holds" in report.verdict(outcome([0.25, 0.2], higher=False, current=1))
    none = outcome([30.0, 31.0], current=None)
    assert "holds" not in report.verdict(none) and "+" not in report.verdict(none)


def test_params_block_round_trips():
    settings = {"optim.lr": 0.000123, "model.channels": 16, "model.residual_blocks": 3, "patch_size": 64,
                "degradation.sigma": [1.0, 2.0], "loss.pixel": "l1", "model.global_skip": True}
    text = report.params_block("denoise", settings)
    loaded = yaml.safe_load(text)
    assert loaded == {"tasks": {"denoise": set_dotted({}, settings)}}
    assert loaded["tasks"]["denoise"]["model"] == {"channels": 16, "residual_blocks": 3, "global_skip": True}
    assert "{" not in text  # block style: lines to paste


def test_round_settings():
    settings = {"optim.lr": 0.00123456789, "loss.pixel_weight": 12345.678, "model.channels": 17, "flag": True,
                "name": "l1", "steps": 3.0}
    out = report.round_settings(settings)
    assert set(out) == set(settings)
    for key in ("optim.lr", "loss.pixel_weight"):
        assert isinstance(out[key], float) and out[key] == float(f"{out[key]:.4g}")
        assert abs(out[key] - settings[key]) <= 5e-4 * abs(settings[key])
    assert out["model.channels"] == 17 and type(out["model.channels"]) is int
    assert out["flag"] is True and out["name"] == "l1" and out["steps"] == 3.0


def test_chart_png_grows_with_the_searched_settings():
    trials = trials_of([30.1, 31.7, None, 29.5, 30.9, 30.0])
    best = best_trial(trials, True)
    sizes = []
    for n in (1, 3):
        search = TuneSearch(space=dict(list(SPACE.items())[:n]))
        data = report.chart_png("sr_x4", search, "psnr_y", True, trials, best, trials[0])
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.format == "PNG"
            sizes.append(image.size)
    assert sizes[1][0] > sizes[0][0] * 2 and sizes[1][1] == sizes[0][1]
    # no current recipe, lower is better: still a chart
    one = TuneSearch(space=dict(list(SPACE.items())[1:2]))  # a choice
    lower = report.chart_png("sr_x4", one, "lpips", False, trials, best_trial(trials, False))
    assert Image.open(io.BytesIO(lower)).size == sizes[0]


def test_trial_dataclasses_are_frozen():
    trial = trials_of([1.0])[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        trial.figure = 2.0  # type: ignore[misc]
