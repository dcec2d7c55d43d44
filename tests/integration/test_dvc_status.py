"""`dvc status` sees every input of a stage: a default changed in the schema, or a module the
stage's command imports, marks that stage changed, though params.yaml is untouched.

The project's code, dvc.yaml and params.yaml are copied into a git repository, every output is
stood in for by a placeholder and ``dvc commit`` records that state as committed; then each
stage's edits are made and undone one at a time.
"""

from __future__ import annotations

import shutil
from contextlib import chdir
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from tests.dvc_graph import ROOT, stage_commands, verb_closure

pytestmark = pytest.mark.integration

# stage -> (a setting it reads, left to its default: the copy's params.yaml drops it; where the
# default lives and an edit of it), then a module its command imports besides its own.
EDITS = {
    "acquire": (("s3.prefix", "pipelines/common/schema.py", 'prefix: str = Field("percept"', 'prefix: str = Field("percept2"'),
                "pipelines/common/fsutil.py"),
    "ingest": (("ingest.min_val_side", "pipelines/common/schema.py", "min_val_side: int = Field(64", "min_val_side: int = Field(65"),
               "pipelines/data/validate.py"),
    "shard": (("shard.encoding", "pipelines/common/schema.py", 'encoding: Literal["raw", "png"] = Field("raw"',
               'encoding: Literal["raw", "png"] = Field("png"'), "training/pairs.py"),
    "train": (("train.bf16", "pipelines/common/schema.py", 'bf16: bool = Field(True, description="bf16 autocast where',
               'bf16: bool = Field(False, description="bf16 autocast where'), "pipelines/use/pretrained.py"),
    "evaluate": (("evaluate.sheet_crop", "pipelines/common/schema.py", "sheet_crop: int = Field(192", "sheet_crop: int = Field(190"),
                 "pipelines/use/pretrained.py"),
    "register": (("mlflow.experiment", "pipelines/common/schema.py", 'experiment: str = Field("percept"', 'experiment: str = Field("percept2"'),
                 "pipelines/services/descriptions.py"),
    "promote": (("promote.sr_x4.no_harm", "training/options.py", "no_harm: bool = Field(True", "no_harm: bool = Field(False"),
                "pipelines/use/scoring.py"),
    "compare": (("compare.RealSRSet.crop", "pipelines/common/schema.py", "crop: int = Field(160", "crop: int = Field(150"),
                "pipelines/use/sheets.py"),
}


def run(cmd: list[str], cwd: Path) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr[-2000:]}"


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A copy of the project whose dvc.lock says every stage is up to date."""
    root = tmp_path_factory.mktemp("graph")
    for name in ("pipelines", "training"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvc/config", ".dvcignore"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # one task and one sheet: each stage once, so a `dvc status` takes a second, not ten
    params["tasks"] = {"sr_x4": params["tasks"]["sr_x4"]}
    params["train"]["tasks"], params["promote"] = ["sr_x4"], {"sr_x4": params["promote"]["sr_x4"]}
    params["compare"] = {"RealSRSet": {**params["compare"]["RealSRSet"], "models": ["bicubic", "sr_x4"]}}
    for (key, *_), _module in EDITS.values():
        *parents, last = key.split(".")
        block = params
        for part in parents:
            block = block[part]
        block.pop(last, None)  # left to its default
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    with chdir(root), Repo(str(root)) as repo:
        for out in (o for stage in repo.index.stages for o in stage.outs):
            target = root / out.def_path
            if "." not in Path(out.def_path).name:  # a folder
                target.mkdir(parents=True, exist_ok=True)
                (target / "placeholder").write_text(out.def_path)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("{}" if target.suffix == ".json" else out.def_path)
        repo.commit(force=True)
    assert status(root) == {}, "every stage should be up to date after dvc commit"
    return root


def status(root: Path, stage: str | None = None) -> dict:
    """``dvc status [stage]``'s answer (its Python API: the same dict as ``--json``, without a process)."""
    with chdir(root), Repo(str(root)) as repo:  # DVC resolves a stage's paths from the working directory
        return repo.status(targets=[stage] if stage else None)


def changed_stages(root: Path, stage: str) -> set[str]:
    return {name.split("@")[0] for name in status(root, stage)}


@pytest.mark.parametrize("stage", sorted(EDITS))
def test_a_changed_default_or_imported_module_marks_the_stage_changed(committed, stage):
    (_key, path, old, new), module = EDITS[stage]
    assert set(EDITS) == set(stage_commands()), "every stage of dvc.yaml needs its edits here"
    assert ROOT / module in verb_closure(stage_commands()[stage])
    for file, edit in ((path, lambda text: text.replace(old, new, 1)), (module, lambda text: text + "\n# edited\n")):
        target = committed / file
        before = target.read_text()
        assert edit(before) != before, f"{file}: the edit for {stage} changes nothing"
        target.write_text(edit(before))
        try:
            assert stage in changed_stages(committed, stage), f"{stage} was not reported changed after editing {file}"
        finally:
            target.write_text(before)
    assert status(committed) == {}
