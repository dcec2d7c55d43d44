"""`make test` (two pytest-xdist workers) ends with a line per marker and one for the whole run
(tests/conftest.py), and keeps each test file, and the files sharing a costly set-up, on one worker."""

import re
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.workers import work_unit
from tests.shared_data import PROJECT

pytestmark = pytest.mark.unit
FILES = ["tests/unit/test_cli_exit.py", "tests/unit/test_env.py"]


def test_two_workers_report_count_and_time_per_marker_and_run_each_file_on_one_worker():
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2", *FILES],
                         cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    passed = int(re.search(r"(\d+) passed", run.stdout)[1])
    line = re.search(r"^unit: (\d+) tests, ([\d.]+) min \((\d+) s\)$", run.stdout, re.M)
    assert line, run.stdout[-2000:]
    assert int(line[1]) == passed >= 2
    assert not re.search(r"^(integration|e2e|browser):", run.stdout, re.M)  # markers no test carries stay out
    whole = re.search(r"^all: (\d+) tests, ([\d.]+) min of tests in ([\d.]+) min \((\d+) s\) on 2 workers$", run.stdout, re.M)
    assert whole and int(whole[1]) == passed, run.stdout[-2000:]
    workers = defaultdict(set)
    for worker, path in re.findall(r"^\[(gw\d)\] .*PASSED (tests/\S+?)::", run.stdout, re.M):
        workers[path].add(worker)
    assert sorted(workers) == FILES and all(len(ran_on) == 1 for ran_on in workers.values()), dict(workers)
    assert workers[FILES[0]] != workers[FILES[1]]  # two files, two workers


def test_the_files_sharing_the_reproduced_project_are_one_unit_of_work():
    repro, ui = work_unit("tests/e2e/test_dvc_repro.py::test_a"), work_unit("tests/e2e/test_mlflow_ui.py::test_b[x]")
    assert repro == ui == "reproduced"
    assert work_unit("tests/e2e/test_stack.py::test_c") == "tests/e2e/test_stack.py"
