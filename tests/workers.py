"""How `make test`'s two pytest-xdist workers share the suite.

The tests that mostly wait (servers, schedulers, clusters) overlap the ones that compute. A unit of
work is a test file, so its module fixtures are set up once; the files whose tests share a session
fixture that costs minutes are one unit together (``SHARED_SETUP``). Units go out in collection
order, e2e first, so the longest start first. xdist's own ``xdist_group`` marks would say the same,
but pytest 9.2 no longer honours them (pytest-xdist issue 1386), hence a scheduler of our own.
"""

from __future__ import annotations

import os

import pytest

SHARED_SETUP = {"reproduced": ("tests/e2e/test_dvc_repro.py", "tests/e2e/test_mlflow_ui.py")}


def share_the_cores() -> None:
    """In a worker, torch computes on its share of the cores: two workers of two threads each on two
    cores spin more than they compute (the unit tier took as long as in one process, for 1.7x the CPU)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or the name of the costly set-up it shares."""
    path = nodeid.split("::", 1)[0]
    return next((name for name, files in SHARED_SETUP.items() if path in files), path)


def check_shared_setup(items: list[pytest.Item]) -> None:
    """A test that uses a shared set-up from a file not listed with it would set it up again on the
    other worker: refused at collection."""
    for item in items:
        for name in SHARED_SETUP:
            if name in item.fixturenames and work_unit(item.nodeid) != name:
                raise pytest.UsageError(f"{item.nodeid} uses the `{name}` fixture: add its file to SHARED_SETUP "
                                        "in tests/workers.py, or a second worker sets it up again")


def make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # xdist would start with the files holding the most tests
    return OneWorkerPerUnit(config, log)
