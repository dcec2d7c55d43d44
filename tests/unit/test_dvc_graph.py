"""dvc.yaml misses no code input: each stage's deps cover the modules its command imports.

The closure is derived from the source (tests/dvc_graph.py): ``percept <verb>`` runs cli.py without
the other verbs' functions, and every project module reached from there by an import, lazy ones
included. A stage that depends on a module its command no longer imports is flagged too, so the
graph does not rerun stages for code they stopped using.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.dvc_graph import CLI, ROOT, closure, code_deps, covered, stage_commands, stage_deps, verb_closure, verbs

pytestmark = pytest.mark.unit

# Code a stage reads as files rather than imports: the registered pyfunc ships serving.py as its
# model code and the whole training package beside it (pipelines/stages/register.py).
READ_AS_FILES = {"register": {"pipelines/use/serving.py", "training"}}

STAGES = stage_commands()


def runs_code(path) -> bool:
    """False for a file that is at most a docstring (a room's __init__.py): nothing in it runs."""
    body = ast.parse(path.read_text()).body
    return not (len(body) <= 1 and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stages_code_deps_are_exactly_what_its_command_imports(stage):
    deps = code_deps(stage_deps(stage))
    needed = {p for p in verb_closure(STAGES[stage]) if runs_code(p)}
    missing = sorted(p.relative_to(ROOT).as_posix() for p in needed if not covered(p, deps))
    assert not missing, f"{stage}: `percept {STAGES[stage]}` imports {missing}, which dvc.yaml's deps do not cover"
    reads = READ_AS_FILES.get(stage, set())
    stale = [d for d in deps if d not in reads and not any(covered(p, [d]) for p in needed)]
    assert not stale, f"{stage}: dvc.yaml depends on {stale}, which `percept {STAGES[stage]}` does not import"


def test_every_stage_depends_on_the_settings_schema_and_its_defaults():
    for stage in STAGES:
        deps = code_deps(stage_deps(stage))
        for schema in ("pipelines/common/schema.py", "training/options.py", "training/tasks.py"):
            assert covered(ROOT / schema, deps), f"{stage} misses {schema}"


def test_the_closure_follows_lazy_imports_and_leaves_out_the_other_verbs():
    train = {p.relative_to(ROOT).as_posix() for p in verb_closure("train")}
    # pipelines/use/pretrained.py is only imported inside functions of train.py and evaluate.py
    assert {"pipelines/stages/train.py", "pipelines/use/pretrained.py", "training/models.py", "training/vgg.py"} <= train
    assert not {"pipelines/stages/evaluate.py", "pipelines/stages/register.py", "pipelines/use/apply.py"} & train
    tasks = {p.relative_to(ROOT).as_posix() for p in verb_closure("tasks")}
    assert "pipelines/stages/train.py" not in tasks and "training/models.py" not in tasks


def test_every_verb_of_the_parser_has_its_function_in_the_table():
    names = set(verbs())
    code = ("import argparse, pipelines.cli as c; p = c.build_parser(); "
            "print(*next(a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    listed = set(out.stdout.split())
    assert len(listed) > 10 and listed == names, (listed, names)
    functions = {n.name for n in ast.parse(CLI.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert set(verbs().values()) <= functions


def test_the_settings_load_without_torch():
    # The schema reads the compute's options (training/options.py), never a network module: every
    # `percept` process loads the settings, and torch alone takes seconds to import.
    code = "import sys, pipelines.common.params; print(sorted(m for m in ('torch', 'albumentations', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert not {p.name for p in closure({"pipelines.common.params"})} & {"models.py", "losses.py", "vgg.py", "inference.py"}
