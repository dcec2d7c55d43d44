"""Which project modules each ``dvc.yaml`` stage runs: the static import closure of its command.

A stage's command is ``percept <verb> ...``; its code is ``pipelines/cli.py`` without the other
verbs' functions, plus every project module that code imports, at any depth, at the top of a
module or inside a function (a lazy import still runs). Read from the source (``ast``), nothing
is imported, so the closure is the same on every machine.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "training")
CLI = ROOT / "pipelines" / "cli.py"


def module_file(name: str) -> Path | None:
    """The file of a project module name (``pipelines.stages.train``), or None for anything else."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(nodes: list[ast.AST]) -> set[str]:
    """Module names the import statements anywhere under ``nodes`` name (``from a import b`` names
    ``a`` and ``a.b``: b may be a module)."""
    names: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def closure(names: set[str]) -> set[Path]:
    """Every project file reached from ``names`` by imports (packages' ``__init__`` included)."""
    seen: set[Path] = set()
    todo = [f for f in map(module_file, names) if f]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        found = imported_names([ast.parse(path.read_text())])
        # a submodule import runs its packages' __init__ first
        found |= {".".join(n.split(".")[:i]) for n in found for i in range(1, n.count(".") + 1)}
        todo += [f for f in map(module_file, found) if f and f not in seen]
    return seen


def verbs() -> dict[str, str]:
    """``VERBS`` of pipelines/cli.py: verb -> the name of its function."""
    tree = ast.parse(CLI.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and "VERBS" in ast.unparse(node).split(":")[0]:
            return {k.value: v.id for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError("pipelines/cli.py has no VERBS table")


def verb_closure(verb: str) -> set[Path]:
    """The files ``percept <verb>`` can run: cli.py minus the other verbs' functions, and closure."""
    table = verbs()
    others = set(table.values()) - {table[verb]}
    tree = ast.parse(CLI.read_text())
    kept = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name in others)]
    return {CLI} | closure(imported_names(kept))


def stage_commands(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, str]:
    """Stage name -> its command's verb (``percept <verb>``) for every stage of dvc.yaml."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        cmd = shlex.split((stage.get("do") or stage)["cmd"])
        assert cmd[0] == "percept", f"stage {name}: expected a `percept <verb>` command, got {cmd}"
        out[name] = cmd[1]
    return out


def stage_deps(name: str, dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    stage = yaml.safe_load(dvc_yaml.read_text())["stages"][name]
    return list((stage.get("do") or stage).get("deps", []))


def code_deps(deps: list[str]) -> list[str]:
    """The deps that are project code: a file or folder under a package."""
    return [d for d in deps if d.split("/")[0] in PACKAGES]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)
