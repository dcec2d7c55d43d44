"""The ``percept`` command exits with ``main``'s status, its objects frozen so that the
interpreter's last collection skips them (about a second per stage, fifty stages per run)."""

from __future__ import annotations

import gc
import tomllib
from pathlib import Path

import pytest

from pipelines import cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_the_installed_command_is_entry():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["percept"] == "pipelines.cli:entry"


def test_entry_exits_with_mains_status_after_freezing(monkeypatch, unfrozen):
    monkeypatch.setattr(cli, "main", lambda: 3)
    assert gc.get_freeze_count() == 0
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert stop.value.code == 3
    assert gc.get_freeze_count() > 0


def test_an_error_in_main_still_surfaces(monkeypatch, unfrozen):
    def fail():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "main", fail)
    with pytest.raises(RuntimeError, match="boom"):
        cli.entry()
    assert gc.get_freeze_count() > 0
