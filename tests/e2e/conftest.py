"""``reproduced`` (session): the tiny project copy after its first `dvc repro` (sr_x4 and denoise,
every stage), shared by the e2e tests that start from there instead of paying for it each: a
named tuple of the folder, a ``run(*cmd)`` in its environment and that first repro's output."""

from __future__ import annotations

import subprocess
from typing import Callable, NamedTuple
from pathlib import Path

import pytest

from tests.e2e.project_copy import tiny_project


class Reproduced(NamedTuple):
    repo: Path
    run: Callable[..., subprocess.CompletedProcess]
    first_repro: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, prefect_harness) -> Reproduced:
    repo, env = tiny_project(tmp_path_factory.mktemp("e2e"))

    def run(*cmd: str, cwd: Path = repo) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    return Reproduced(repo, run, run("dvc", "repro"))
