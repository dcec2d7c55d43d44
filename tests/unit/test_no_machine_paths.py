"""No module, test or benchmark reads the shared data through a path of one machine: they find it
as the project does (``$PERCEPT_DATASETS`` / ``$PERCEPT_WEIGHTS``, else ``../shared`` beside the
checkout), so a clone laid out otherwise still works."""

import re
from pathlib import Path

import pytest

from tests.shared_data import DATASETS, PROJECT

pytestmark = pytest.mark.unit

# an absolute POSIX path into a home, a workspace or a temporary folder of some machine
MACHINE_PATH = re.compile(r"""["'](/(?:work|home|root|Users|tmp|mnt|data)/[^"'\s]*)["']""")


def test_no_source_names_an_absolute_path_of_one_machine():
    sources = [p for folder in ("pipelines", "training", "tests", "benchmarks") for p in (PROJECT / folder).rglob("*.py")]
    assert len(sources) > 50
    found = [f"{p.relative_to(PROJECT)}:{n}: {m.group(1)}" for p in sources if p.name != Path(__file__).name
             for n, line in enumerate(p.read_text().splitlines(), 1) for m in MACHINE_PATH.finditer(line)]
    assert not found, "\n".join(found)


def test_the_shared_datasets_are_found_as_the_project_finds_them(monkeypatch, tmp_path):
    from pipelines.common.paths import DATASETS_ENV, Paths

    assert (DATASETS / "Set5" / "SHA256SUMS").is_file()
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    assert Paths(PROJECT).datasets() == tmp_path
    monkeypatch.delenv(DATASETS_ENV)
    assert Paths(PROJECT).datasets() == PROJECT.resolve().parent / "shared" / "datasets"
