"""The layout is the architecture: imports between pipelines/' rooms go one way only, no stage
imports another, training/ imports nothing of pipelines/, and every module says its job first."""

from __future__ import annotations

import ast

import pytest

from tests.dvc_graph import ROOT, imported_names

pytestmark = pytest.mark.unit

# room -> the rooms its modules may import from (besides training/, which any may use)
ALLOWED = {
    "common": {"common"},                                 # plumbing: settings, paths, errors, files
    "services": {"common", "services"},                   # Ray, MLflow, S3, DVC, the schedule, the stack
    "data": {"common", "services", "data"},               # the data half's pieces: manifest, validation, samples
    "use": {"common", "services", "use"},                 # a trained model: load, score, show, apply, serve, export
    "stages": {"common", "services", "data", "use"},      # what dvc.yaml runs: never another stage
    "search": {"common", "services", "data", "use", "stages", "search"},  # percept tune: trials are the stages' flows
}
PIPELINES = ROOT / "pipelines"


def modules():
    return sorted(p for p in PIPELINES.rglob("*.py") if "__pycache__" not in p.parts)


def room_of(path) -> str | None:
    parts = path.relative_to(PIPELINES).parts
    return parts[0] if len(parts) > 1 else None


def violations(path, text: str) -> list[str]:
    """What ``path`` (with source ``text``) imports against the rules."""
    room, wrong = room_of(path), []
    names = imported_names([ast.parse(text)])
    for name in sorted(n for n in names if n.startswith("pipelines.") and n.count(".") >= 2
                       and PIPELINES.joinpath(*n.split(".")[1:3]).with_suffix(".py").is_file()):
        target_room, target = name.split(".")[1:3]
        if room == "stages" and target_room == "stages":
            if target != path.stem:
                wrong.append(f"{path.relative_to(ROOT)} imports another stage, {name}: move what they share to its room")
        elif target_room not in ALLOWED[room]:
            wrong.append(f"{path.relative_to(ROOT)} imports {name} ({room} may use {', '.join(sorted(ALLOWED[room]))})")
    return wrong


def test_every_module_lives_in_a_room_and_the_rooms_are_the_known_ones():
    loose = [p.name for p in modules() if room_of(p) is None and p.name not in ("__init__.py", "cli.py")]
    assert not loose, f"modules outside a room: {loose}"
    assert {room_of(p) for p in modules()} - {None} == set(ALLOWED)


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room):
    wrong = [v for p in modules() if room_of(p) == room for v in violations(p, p.read_text())]
    assert not wrong, "\n".join(wrong)


def test_training_stays_pure():
    for path in sorted((ROOT / "training").glob("*.py")):
        bad = sorted(n for n in imported_names([ast.parse(path.read_text())]) if n.split(".")[0] in ("pipelines", "prefect", "ray", "mlflow", "dvc", "boto3"))
        assert not bad, f"{path.name} imports {bad}: training/ is compute, tensors and arrays in and out"


def test_every_module_says_its_job_in_its_first_line():
    for path in [*modules(), *sorted((ROOT / "training").glob("*.py"))]:
        if path.name == "__init__.py" and not path.read_text().strip():
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(ROOT)}: no docstring saying what it is for"


def test_the_import_check_sees_a_back_reference():
    promote, engine = PIPELINES / "stages" / "promote.py", PIPELINES / "services" / "engine.py"
    assert any("imports another stage" in v for v in violations(promote, promote.read_text() + "\nfrom pipelines.stages.evaluate import run\n"))
    assert any("services may use" in v for v in violations(engine, engine.read_text() + "\nfrom pipelines.use import apply\n"))
