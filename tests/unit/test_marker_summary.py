"""`make test` ends with a line per marker (tests/conftest.py): how many tests and how long."""

import re
import subprocess
import sys

import pytest

from tests.shared_data import PROJECT

pytestmark = pytest.mark.unit


def test_the_suite_reports_count_and_time_per_marker():
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/unit/test_cli_exit.py"],
                         cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    passed = int(re.search(r"(\d+) passed", run.stdout)[1])
    line = re.search(r"^unit: (\d+) tests, ([\d.]+) min \((\d+) s\)$", run.stdout, re.M)
    assert line, run.stdout[-2000:]
    assert int(line[1]) == passed >= 1
    assert not re.search(r"^(integration|e2e|browser):", run.stdout, re.M)  # markers no test carries stay out
