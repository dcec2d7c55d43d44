"""The docs site builds (`mkdocs build --strict`: no broken link, no page left out), and the
configuration reference it carries keeps up with the settings schema: the committed JSON schema of
params.yaml is the one the schema gives, params.yaml and its profiles pass it, mistakes fail it,
and every field has its row on the generated page."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, Field

from pipelines.common import reference
from pipelines.common.errors import ConfigError
from pipelines.common.params import PROFILE_ENV, apply_profile, load_yaml, parse_config
from pipelines.common.schema import Config, task_params_model
from training.options import ColorNetConfig, OptimConfig, ResNetConfig, TransformNetConfig
from training.tasks import TASKS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `python -m pipelines.common.reference` and commit docs/reference/"


# ------------------------------------------------------------------------------------------
# The site

def nav_pages() -> list[str]:
    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from (walk(value) if isinstance(value, list) else [value])

    return list(walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def built(site: Path, page: str) -> Path:
    """Where mkdocs (directory URLs) writes the page of ``page`` (a path under docs/)."""
    stem = page.removesuffix(".md")
    return site / ("index.html" if stem == "index" else f"{stem}/index.html")


def test_the_site_builds_strictly_with_every_page_of_the_nav(site):
    pages = nav_pages()
    assert "reference/configuration.md" in pages and "blind-restoration.md" in pages
    missing = [page for page in pages if not built(site, page).is_file()]
    assert not missing, f"nav pages not built: {missing}"
    assert (site / "reference" / "params.schema.json").is_file(), "the JSON schema is served beside the reference"


def test_the_built_reference_has_every_section_and_entry(site):
    html = built(site, "reference/configuration.md").read_text()
    assert "ingest.max_bytes" in html and "largest file or S3 object read, in bytes" in html
    for name in Config.model_fields:
        assert f'id="{name}"' in html or f"<code>{name}</code>" in html, f"no section or row for {name}"
    for name in TASKS:
        assert f'id="task-{name}"' in html, f"no section for the registry entry {name}"


# ------------------------------------------------------------------------------------------
# The JSON schema

@pytest.fixture(scope="module")
def schema() -> dict:
    return reference.json_schema()


@pytest.fixture(scope="module")
def validator(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_yaml((ROOT / "params.yaml").read_text())


def problems(validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message[:300]}" for e in validator.iter_errors(data)]


def test_the_committed_schema_and_page_are_the_ones_the_settings_give():
    for path, text in reference.generated().items():
        committed = path.read_text(encoding="utf-8") if path.is_file() else ""
        assert committed == text, f"{path.relative_to(ROOT)} is stale: {REGENERATE}"
    assert reference.main(["--check"]) == 0


def test_params_yaml_points_editors_at_the_schema():
    first = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema={reference.SCHEMA_PATH}"
    assert (ROOT / reference.SCHEMA_PATH) == reference.SCHEMA_FILE


def test_the_schema_is_strict_and_keeps_the_descriptions(schema):
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for n, d in schema["$defs"].items() if "properties" in d), \
        "every model forbids unknown keys, so every object of the schema must too"
    assert set(schema["required"]) == {"acquire", "ingest", "tasks"}
    ingest = schema["$defs"]["IngestConfig"]
    assert ingest["required"] == ["sources"], "a field with a default is not required"
    assert ingest["properties"]["max_bytes"]["description"] == "largest file or S3 object read, in bytes"
    jpeg = schema["$defs"]["TaskParams_jpeg"]
    assert "name" not in jpeg["properties"] and set(jpeg["required"]) == {"patch_size", "patches_per_image"}
    assert jpeg["properties"]["degradation"]["default"]["quality"] == [10, 95], "a block's defaults are its entry's"
    quality = schema["$defs"]["JpegCompression"]["properties"]["quality"]
    assert quality["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 100}, "a level is typed, not anything"


def test_params_yaml_and_every_profile_pass_the_schema(validator, raw, monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert not problems(validator, raw), "params.yaml as written (profiles included)"
    assert raw["profiles"], "params.yaml has profiles to check"
    for name in raw["profiles"]:
        merged = apply_profile({**raw, "profile": name}, "params.yaml")
        parse_config(merged)  # the loader agrees they are valid
        assert not problems(validator, merged), f"params.yaml with profile {name}"


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data.setdefault(key, {})
        data[last] = value
    return change


BROKEN = {
    "unknown key": _set("train.wokers", 2),
    "unknown top-level key": _set("sead", 1),
    "wrong type": _set("seed", "x"),
    "below a bound": _set("ingest.max_bytes", 0),
    "not an option": _set("data.engine", "spark"),
    "unknown task entry": _set("tasks.mine", {"task": "nope", "patch_size": 64, "patches_per_image": 2}),
    "a block of no entry, without task:": _set("tasks.mine", {"patch_size": 64, "patches_per_image": 2}),
    "unknown key in a block": _set("tasks.jpeg.optim.stepz", 5),
    "a level out of range": _set("tasks.jpeg.degradation.quality", [10, 101]),
    "a key of another network": _set("tasks.jpeg.model.chroma_bins", 4),
    "a block without its patch size": lambda data: data["tasks"]["sr_x4"].pop("patch_size"),
    "unknown key in a profile": _set("profiles.gpu.train.wokers", 2),
}


@pytest.mark.parametrize("mistake", sorted(BROKEN))
def test_a_mistake_fails_the_schema_as_it_fails_the_loader(validator, raw, mistake, monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    data = copy.deepcopy(raw)
    BROKEN[mistake](data)
    assert problems(validator, data), f"the schema accepts {mistake}"
    if not mistake.endswith("in a profile"):  # the loader reads a profile only when it is applied
        with pytest.raises(ConfigError):
            parse_config(data)


def test_what_the_loader_accepts_the_schema_accepts(validator, raw):
    """A block keyed by one entry's name may instantiate another; a network named by `arch:`."""
    data = copy.deepcopy(raw)
    data["tasks"]["sr_x4"] = {"task": "sr_real", "patch_size": 96, "patches_per_image": 8}
    data["tasks"]["jpeg"]["model"] = {"arch": "johnson", "residual_blocks": 3}
    parse_config(data)
    assert not problems(validator, data)


# ------------------------------------------------------------------------------------------
# The page covers every field

def _models(annotation, placeholder: str) -> list[tuple[str, type[BaseModel]]]:
    """(separator, model) for each pydantic model a field's annotation holds: ``.`` for the model
    itself, ``[].`` in a list, ``.<placeholder>.`` in a mapping."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(".", annotation)]
    if origin is typing.Annotated:
        return _models(args[0], placeholder)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in args for m in _models(arg, placeholder)]
    if origin in (list, tuple):
        return [("[].", m) for arg in args for _, m in _models(arg, placeholder)]
    if origin is dict:
        return [(f".{placeholder}.", m) for _, m in _models(args[1], placeholder)]
    return []


def field_keys(model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()) -> list[tuple[str, type, str]]:
    """(dotted key, model, field) for every field of ``model``, at any depth."""
    keys = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        keys.append((prefix + name, model, name))
        for separator, inner in _models(field.annotation, reference.PLACEHOLDERS.get(name, "<name>")):
            keys += field_keys(inner, prefix + name + separator)
    return keys


def section(page: str, anchor: str) -> str:
    """The markdown of the section whose heading carries ``{#anchor}``, up to the next heading as high."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and line.endswith(f"{{#{anchor}}}"))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start:end])


@pytest.fixture(scope="module")
def page() -> str:
    return reference.markdown_reference()


def test_every_setting_has_its_row_and_description(page):
    keys = field_keys(Config, skip=("tasks",))
    assert len(keys) > 60
    missing = [key for key, _, _ in keys if f"`{key}`" not in page]
    assert not missing, f"settings without a row on the reference page: {missing}"
    undescribed = [key for key, model, name in keys
                   if (text := reference.field_description(model, name)) and reference._text(text) not in page]
    assert not undescribed, f"rows without their field's description: {undescribed}"


@pytest.mark.parametrize("entry", list(TASKS))
def test_every_block_field_of_an_entry_has_its_row_with_the_entry_default(page, entry):
    text = section(page, f"task-{entry}")
    block = task_params_model(TASKS[entry])
    own_network = type(TASKS[entry].make_model_config())
    keys = [(key, model, name) for key, model, name in field_keys(block, skip=("name",))
            if not key.startswith("model.") or model is own_network]
    missing = [key for key, _, _ in keys if f"| `{key}` |" not in text]
    assert not missing, f"{entry}: block fields without a row: {missing}"
    defaults = block.model_fields["optim"].default
    assert f"| `optim.batch_size` | integer ≥ 1 | `{defaults.batch_size}` |" in text, "the entry's default, not the class's"


def test_every_network_has_its_table(page):
    text = section(page, "networks")
    for network in (TransformNetConfig, ResNetConfig, ColorNetConfig):
        arch = network.model_fields["arch"].default
        table = section(text, f"arch-{arch}")
        missing = [name for name in network.model_fields if f"| `model.{name}` |" not in table]
        assert not missing, f"arch {arch}: no row for {missing}"


class _Commented(BaseModel):
    # Said above the field.
    above: int = 1
    beside: int = 2  # said beside it
    described: int = Field(3, description="its own")  # not this
    bare: int = 4


def test_a_field_without_description_takes_the_comment_above_or_beside_it():
    assert [reference.field_description(_Commented, n) for n in _Commented.model_fields] == [
        "Said above the field.", "said beside it", "its own", None]
    assert reference.field_description(OptimConfig, "ema_decay").startswith("An exponential moving average")


def test_the_reference_loads_no_torch():
    code = "import sys, pipelines.common.reference; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
