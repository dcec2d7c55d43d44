"""Helpers for the end-to-end tests: a temporary copy of the project and a tiny datasets folder."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from tests.shared_data import DATASETS, WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
COPY = ["pipelines", "training", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore"]


def tiny_datasets(folder: Path) -> Path:
    """A datasets folder in the shared layout: <set>/HR/*.png plus SHA256SUMS."""
    for name, files in {"T91": ["t1", "t2", "t3", "t5"], "Set5": ["bird", "butterfly"]}.items():
        (folder / name / "HR").mkdir(parents=True)
        lines = []
        for f in files:
            data = (DATASETS / name / "HR" / f"{f}.png").read_bytes()
            (folder / name / "HR" / f"{f}.png").write_bytes(data)
            lines.append(f"{hashlib.sha256(data).hexdigest()}  HR/{f}.png")
        (folder / name / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder


def copy_project(repo: Path) -> Path:
    """The files a newcomer's clone holds that the pipeline needs, copied into ``repo``."""
    for item in COPY:
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copyfile(src, dst)
    return repo


def tiny_params() -> dict:
    """params.yaml for a short `dvc repro`: sr_x4 and denoise, tiny nets, 4 steps, Set5 (2 images)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["collections"] = [{"name": "T91", "dataset": "T91"}, {"name": "Set5", "dataset": "Set5"}]
    params["ingest"]["sources"] = [{"uri": "data/raw/T91", "split": "train"}, {"uri": "data/raw/Set5", "split": "val"}]
    tiny_net = {"channels": 8, "residual_blocks": 1}
    params["tasks"] = {
        "sr_x4": {"patch_size": 32, "patches_per_image": 2, "degradation": {"scale": 4},
                  "model": tiny_net, "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 0}},
        "denoise": {"patch_size": 32, "patches_per_image": 2, "degradation": {"sigma": 25.0},
                    "model": {"channels": 4, "residual_blocks": 1}, "optim": {"steps": 4, "batch_size": 2}},
    }
    params["train"].update(tasks=["sr_x4", "denoise"], cpus_per_worker=1, checkpoint_every=2, log_every=2, loader_workers=0)
    params["compare"] = {}  # its sheet names models this project does not train
    params["evaluate"]["sets"] = {"Set5": "data/raw/Set5"}
    # Four images: ingest and shard in the stage's own process (a plain `dvc repro` stage would
    # start a Ray of its own for each, ~10 s apiece). The data on Ray: test_stack.py, test_data_engine.py.
    params["data"]["engine"] = "local"
    return params


def tiny_project(base: Path) -> tuple[Path, dict[str, str]]:
    """A git repository under ``base`` holding the project copy with ``tiny_params()``, and the
    environment to run `dvc repro` in it (the tiny datasets, the shared weights, this Prefect API)."""
    from prefect.settings import PREFECT_API_URL

    repo = copy_project(base / "percept")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PERCEPT_DATASETS": str(tiny_datasets(base / "datasets")),
        "PERCEPT_WEIGHTS": str(WEIGHTS),
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the test server: no temporary server per stage
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo, env
