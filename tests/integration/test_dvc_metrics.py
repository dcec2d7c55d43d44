"""`dvc metrics show` of every default task fits a terminal: each metrics file holds the gate's
metric and, per evaluation set, the model's value, the baseline's and the gain (pipelines.stages.evaluate)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.stages.evaluate import dvc_metrics
from training.quality import METRICS

pytestmark = pytest.mark.integration
DVC = str(Path(sys.executable).parent / "dvc")


def fake_reports(cfg, task: str) -> dict:
    """Reports as the evaluate stage makes them: every reported figure, levels beside the sets."""
    figures = {name: 12345.678901 for name in cfg.reported_metrics(task)}
    sets = [*cfg.evaluate.sets, *(f"{name}-level{i}" for name in cfg.evaluate.sets for i in range(3))]
    return {name: {"images": 14, **figures, "baseline": {"model": "bicubic", **{k: v / 3 for k, v in figures.items()}}} for name in sets}


def test_every_task_gives_dvc_the_same_few_keys_and_a_gain_positive_when_better(make_config):
    cfg = make_config()
    for task in cfg.task_names:
        metric = cfg.gate(task).metric
        reports = fake_reports(cfg, task)
        figures = dvc_metrics(task, cfg, reports)
        assert set(figures) == {"metric", *cfg.evaluate.sets} and figures["metric"] == metric
        for name in cfg.evaluate.sets:
            assert set(figures[name]) == {"value", "baseline", "gain"}
            value, base = reports[name][metric], reports[name]["baseline"][metric]
            assert figures[name]["gain"] == pytest.approx((value - base) * (1 if METRICS[metric].higher_is_better else -1))


def test_dvc_metrics_show_of_every_default_task_fits_160_columns(make_config, tmp_path):
    cfg = make_config()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    stage = {"cmd": "true", "metrics": [{f"metrics/{task}.json": {"cache": False}} for task in cfg.train.tasks]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}))
    (tmp_path / "metrics").mkdir()
    for task in cfg.train.tasks:
        (tmp_path / "metrics" / f"{task}.json").write_text(json.dumps(dvc_metrics(task, cfg, fake_reports(cfg, task))))
    shown = subprocess.run([DVC, "metrics", "show"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert len(rows) == 1 + len(cfg.train.tasks) and len(cfg.train.tasks) >= 10, shown.stdout
    assert max(map(len, rows)) <= 160, shown.stdout
