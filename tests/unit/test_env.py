"""pipelines.common.env.keep_freed_memory: large freed blocks are reused, not page-faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.common.env import MALLOC_TUNABLES

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")]

ROOT = Path(__file__).resolve().parents[2]

# Allocates and frees a 64 MiB tensor (over glibc's largest default mmap threshold) 30 times, in a
# thread as Ray Train runs its loop, and prints the minor page faults of the last 10 rounds, then
# what a child process sees in GLIBC_TUNABLES. (The first rounds grow the heap: torch asks for
# aligned blocks, which a freed block of the same size cannot serve until free blocks merge.)
PROBE = """
import os, resource, subprocess, sys, threading
sys.path.insert(0, {root!r})
from pipelines.common.env import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
import torch
faults = []
def rounds():
    for i in range(30):
        if i == 20:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        block = torch.ones(16 << 20)  # 64 MiB of float32
        del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('GLIBC_TUNABLES', ''))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(faults[1] - faults[0], child or "-")
"""


def probe(mode: str, env: dict[str, str]) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), mode], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


def test_freed_blocks_are_reused_here_and_children_inherit_the_setting():
    default_faults, default_child = probe("default", clean_env())
    kept_faults, kept_child = probe("keep", clean_env())
    pages = (64 << 20) // 4096
    assert default_faults >= 10 * pages  # each round faults the whole block in again
    assert kept_faults < pages // 10  # the block is reused as it is
    assert (default_child, kept_child) == ("-", MALLOC_TUNABLES)


def test_a_users_own_tunables_are_left_alone():
    mine = "glibc.malloc.arena_max=4"
    _, child = probe("keep", {**clean_env(), "GLIBC_TUNABLES": mine})
    assert child == mine


def test_env_example_shows_the_value_percept_sets():
    assert f"GLIBC_TUNABLES={MALLOC_TUNABLES}" in (ROOT / "infra" / "compose" / ".env.example").read_text()
