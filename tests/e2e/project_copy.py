"""Helpers for the end-to-end tests: a temporary copy of the project and a tiny datasets folder."""

import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
COPY = ["pipelines", "training", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore"]


def tiny_datasets(folder: Path) -> Path:
    """A datasets folder in the shared layout: <set>/HR/*.png plus SHA256SUMS."""
    for name, files in {"T91": ["t1", "t2", "t3", "t5"], "Set5": ["bird", "butterfly"]}.items():
        (folder / name / "HR").mkdir(parents=True)
        lines = []
        for f in files:
            data = (SHARED / name / "HR" / f"{f}.png").read_bytes()
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
