"""Recipe-search benchmark: the best recipe ``percept tune`` finds against the task's shipped one,
on the tuning split (from the search) and on the evaluate sets (Set5, Set14) after training each
recipe on the whole training set, both trained and evaluated in this same run.

    .venv/bin/python benchmarks/tune.py                  # tune.sr_x4 of params.yaml: 30 minutes on 2 cores
    .venv/bin/python benchmarks/tune.py --task denoise   # any task with a tune: block
    .venv/bin/python benchmarks/tune.py --tiny           # toy size (the test suite): 8 images, 3 trials

1. The search, exactly as ``percept tune --task <task>`` runs it (``pipelines.search.tune.search``):
   its data under ``data/tune/<task>/``, its trials under ``runs/`` and in the project's MLflow, so
   it shows in the MLflow UI and a rerun of this script resumes it instead of searching again.
   The tuning-split figures below are the search's own: the current recipe is its first trial,
   so both recipes were trained on the same images for the same (``tune.steps``) steps.
2. Each recipe, the shipped one and the best, trained with the train stage's function on the
   project's shards (``data/shards/<task>``, built again in the work folder when the best changes
   a shard setting) for the task's full ``optim.steps``, then scored by the evaluate stage's
   function on every ``evaluate.sets`` folder: what ``percept tune --apply`` and ``dvc repro``
   would give, in a work folder (a temporary one, removed at the end, unless ``--workdir``).
   The project's models/, metrics/ and params.yaml are not touched.

Needs the project's manifest and the task's shards (``dvc repro shard@<task>``, or ``make run``).
The table goes to stdout; progress (and Ray's own messages) to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ending, ingest, load_average, progress, shard  # benchmarks/common.py: this folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY_SEARCH = {"space": {"optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}, "trials": 3, "reports": 2,
               "steps": 4, "tuning_images": 2}


def tiny_project(folder: Path) -> tuple[Any, Path]:
    """(config, root) of a toy project in ``folder``: 8 T91 images to train on, Set5 to evaluate,
    a tiny sr_x4 and a three-trial search; its manifest and shards built here."""
    from pipelines.common.params import load_yaml, parse_config
    from pipelines.common.paths import Paths

    datasets = Paths(ROOT).datasets()
    raw = load_yaml((ROOT / "params.yaml").read_text())
    raw["ingest"]["sources"] = [{"uri": str(datasets / "T91" / "HR" / "t[1-8].png"), "split": "train"}]
    raw["tasks"] = {"sr_x4": {"patch_size": 32, "patches_per_image": 2, "degradation": {"scale": 4},
                              "model": {"channels": 8, "residual_blocks": 1},
                              "optim": {"steps": 6, "batch_size": 2, "warmup_steps": 0}}}
    raw["train"].update(tasks=["sr_x4"], cpus_per_worker=1, checkpoint_every=3, log_every=3, loader_workers=0)
    raw.update(compare={}, promote={}, tune={"sr_x4": TINY_SEARCH})
    raw["evaluate"]["sets"] = {"Set5": str(datasets / "Set5" / "HR")}
    raw["data"]["engine"] = "local"
    raw["feature_net"]["weights"] = str(Paths(ROOT).weights_source() / "vgg_normalised_conv3_1.pth")
    cfg = parse_config(raw)
    paths = Paths(folder)
    manifest = ingest(cfg, paths.manifest_dir)
    shard(cfg, "sr_x4", manifest, paths.shards("sr_x4"), splits=("train",))
    return cfg, folder


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def train_and_evaluate(task: str, cfg, root: Path, work: Path, rebuild_shards: bool) -> dict[str, Any]:
    """``cfg``'s recipe trained in ``work`` (the project's data linked in) and scored on every
    evaluate set: {set: gate metric}, and the training's seconds."""
    from pipelines.common.paths import Paths
    from pipelines.stages import evaluate
    from pipelines.stages.train import train

    project, here = Paths(root), Paths(work)
    for item in ("raw", "weights", "manifest"):
        if (project.data / item).exists():
            link(project.data / item, here.data / item)
    if rebuild_shards:
        shard(cfg, task, project.manifest, here.shards(task), splits=("train",))
    else:
        link(project.shards(task), here.shards(task))
    start = time.perf_counter()
    train(task, cfg, here)
    seconds = time.perf_counter() - start
    reports = evaluate.run(task, str(here.models(task)), cfg, here, progress=False)
    metric = cfg.gate(task).metric
    return {"seconds": seconds, **{name: r[metric] for name, r in reports.items() if name in cfg.evaluate.sets},
            "baseline": {name: r["baseline"][metric] for name, r in reports.items() if name in cfg.evaluate.sets}}


def settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sr_x4", help="a task with a tune: block in params.yaml (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--tiny", action="store_true", help="toy size in a temporary project (what the test suite runs)")
    parser.add_argument("--workdir", type=Path, help="keep the trained recipes here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)

    from pipelines.common.params import load_config
    from pipelines.common.paths import Paths
    from pipelines.common.search_schema import SHARD_SETTINGS
    from pipelines.search.report import round_settings, summary_lines
    from pipelines.search.tune import search

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the search's line per report
    load_start, began = load_average(), time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="percept-bench-tune-"))
    work = args.workdir or scratch / "work"
    try:
        if args.tiny:
            task = "sr_x4"
            cfg, root = tiny_project(scratch / "project")
        else:
            task, root, cfg = args.task, args.params.resolve().parent, load_config(args.params)
            if not Paths(root).shards(task).joinpath("index.json").is_file():
                raise SystemExit(f"{Paths(root).shards(task)} has no shards: run `dvc repro shard@{task}` (or `make run`) first")
        progress(f"searching tune.{task}: {cfg.tune[task].trials} trials, {cfg.tune[task].minutes or 'no'} minutes' budget", "tune")
        searched = time.perf_counter()
        outcome = search(task, cfg, Paths(root))
        search_s = time.perf_counter() - searched
        for line in summary_lines(outcome):
            progress(line, "tune")
        best = round_settings(outcome.best.settings)
        recipes = {"shipped": (dict(outcome.current.settings) if outcome.current else {}, cfg),
                   "tuned": (best, cfg.with_task_settings(task, best))}
        results = {}
        for name, (settings, recipe_cfg) in recipes.items():
            if name == "tuned" and outcome.best is outcome.current:
                results[name] = results["shipped"]  # the shipped recipe won: nothing else to train
                continue
            progress(f"training the {name} recipe ({settings_text(settings) or 'as in params.yaml'}) on the whole "
                     f"training set: {recipe_cfg.task(task).optim.steps} steps", "tune")
            rebuild = name == "tuned" and any(k.split(".")[0] in SHARD_SETTINGS for k in settings)
            results[name] = train_and_evaluate(task, recipe_cfg, root, work / name, rebuild)
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    metric, sets = outcome.metric, list(cfg.evaluate.sets)
    trials = {t.state: sum(x.state == t.state for x in outcome.trials) for t in outcome.trials}
    print(f"search {outcome.name} (MLflow run {outcome.parent_run_id}): {len(outcome.trials)} of "
          f"{cfg.tune[task].trials} trials in {search_s / 60:.1f} min; {json.dumps(trials)}")
    print(f"{metric}: {'recipe':8s}  {'tuning split':>12s}  " + "  ".join(f"{s:>10s}" for s in sets)
          + f"  {'train s':>7s}  settings")
    for name, (settings, _) in recipes.items():
        trial = outcome.current if name == "shipped" else outcome.best
        split = "-" if trial is None or trial.figure is None else f"{trial.figure:.4f}"
        row = results[name]
        print(f"{'':{len(metric) + 2}s}{name:8s}  {split:>12s}  " + "  ".join(f"{row[s]:10.4f}" for s in sets)
              + f"  {row['seconds']:7.0f}  {settings_text(settings) or 'as in params.yaml'}")
    base = results["shipped"]["baseline"]
    print(f"{'':{len(metric) + 2}s}{'baseline':8s}  {'':>12s}  " + "  ".join(f"{base[s]:10.4f}" for s in sets)
          + f"  {'':>7s}  the task's baseline")
    gains = "  ".join(f"{s} {results['tuned'][s] - results['shipped'][s]:+.4f}" for s in sets)
    direction = "higher" if outcome.higher_is_better else "lower"
    print(f"tuned - shipped ({metric}, {direction} is better): {gains}" + ("  (the shipped recipe won the search)" if outcome.best is outcome.current else ""))
    for line in ending(load_start, time.perf_counter() - began):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
