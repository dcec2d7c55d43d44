"""The configuration reference, generated: params.yaml's JSON schema and the docs page of every setting.

The JSON schema is what editors complete and check params.yaml with. Both come from
``pipelines.common.schema.Config`` (``training.options`` for the compute's options) and the task
registry (``training.tasks``). A description is the field's ``description=``, else the
comment written above or beside the field in its class, else nothing; a section's is its model's
docstring.

``python -m pipelines.common.reference`` writes both, docs/reference/params.schema.json (params.yaml's
first line points editors at it) and docs/reference/configuration.md (a page of the docs site, readable
outside it too); both are committed, and ``--check`` fails while either differs from what the schema
gives now (tests/unit/test_docs.py does the same).

Nothing that runs the pipeline imports this module: it reads the schema, it is not part of it.
No torch here either (the schema is torch-free).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import to_jsonable_python

from pipelines.common.schema import TASK_NAME, Config, task_params_model
from training.tasks import TASKS, Task

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "reference" / "params.schema.json"
PAGE_FILE = SCHEMA_FILE.with_name("configuration.md")
SCHEMA_PATH = "docs/reference/params.schema.json"  # as params.yaml's modeline and the docs name it
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# The fields of a ``tasks:`` block that the schema makes per registry entry (create_model), so no
# class body holds a description for them.
BLOCK_FIELDS = {
    "task": "the registry entry the block instantiates (`percept tasks` lists them); default: the block's key, "
            "so a block named otherwise says which, e.g. `style_wave: {task: style, ...}`",
    "degradation": "how the input is made from a clean target; merged key by key over the entry's defaults",
    "options": "the entry's own options; merged key by key over the entry's defaults",
    "model": "the network; merged key by key over the entry's defaults, or, naming another `arch`, over that "
             "network's own defaults",
    "loss": "the training loss; merged key by key over the entry's defaults",
    "optim": "how the block trains; merged key by key over the entry's defaults",
}
TASKS_DESCRIPTION = ("The tasks to build data for and train, one block each. A block's key names it (a model name, "
                     "a DVC foreach key, a folder); `task:` names the registry entry it instantiates, the key itself "
                     "by default. A block holds only what differs from its entry's defaults.")
PROFILES_DESCRIPTION = ("Named sets of settings merged over the rest by `profile:` or $PERCEPT_PROFILE (a comma "
                        "list merges several in turn): mappings merged key by key, anything else replaced.")
# the placeholder a key of a user-named mapping is shown as, in the markdown page
PLACEHOLDERS = {"compare": "<sheet>", "promote": "<task>", "tasks": "<block>", "profiles": "<profile>",
                "levels": "<task>", "sets": "<set>", "tune": "<task>", "space": "<setting>"}


# ------------------------------------------------------------------------------------------
# Descriptions: description=, else the source's comments

@cache
def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment in ``cls``'s own body right above the field (contiguous comment
    lines) and beside it, joined; empty for a class without source (``create_model``)."""
    try:
        text = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = text.splitlines()
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                if tok.type == tokenize.COMMENT}
    found: dict[str, str] = {}
    [body] = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef)]
    for stmt in body.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above, line = [], stmt.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        beside = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments]
        words = [c.lstrip("#").strip() for c in above + beside]
        words = [w for w in words if w and not re.fullmatch(r"[-=#*]+", w) and not w.startswith(("type:", "noqa"))]
        if words:
            found[stmt.target.id] = " ".join(words)
    return found


def field_description(cls: type[BaseModel], name: str) -> str | None:
    """What a field means: its ``description=``, else its comment in the class that declares it."""
    field = cls.model_fields[name]
    if field.description:
        return field.description
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        return None  # a section: its model's docstring says it better than a comment beside the field
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseModel) and name in klass.__dict__.get("__annotations__", {}):
            return source_comments(klass).get(name)
    return None


class _Generator(GenerateJsonSchema):
    """Pydantic's JSON schema with the descriptions above, defaults made by a factory, and no titles on fields (an editor shows the key already)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: Any) -> dict:
        json_schema = super().model_schema(schema)
        cls = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, field in cls.model_fields.items():
            prop = properties.get(name)
            if prop is None:
                continue
            if "description" not in prop and (text := field_description(cls, name)):
                prop["description"] = text
            if "default" not in prop and field.default_factory is not None:
                prop["default"] = to_jsonable_python(field.default_factory())  # type: ignore[call-arg]
        return json_schema


# ------------------------------------------------------------------------------------------
# The JSON schema

def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def _entry_block(block: dict, entry: Task, defs: dict) -> None:
    """A registry entry's block as users write it: ``name`` is the key (the loader fills it in),
    the block-made fields described, and ``model:`` either the entry's network (``arch`` may be
    left out) or another one named by ``arch`` (the discriminator pydantic cannot show)."""
    block["properties"].pop("name")
    block["required"] = [r for r in block.get("required", []) if r != "name"]
    for key, text in BLOCK_FIELDS.items():
        block["properties"][key].setdefault("description", text)
    model = block["properties"]["model"]
    own = entry.make_model_config().arch
    variants = []
    for variant in model.pop("oneOf"):
        arch = defs[_name(variant["$ref"])]["properties"]["arch"]["const"]
        variants.append(variant if arch == own else {"allOf": [variant, {"required": ["arch"]}]})
    model["anyOf"] = sorted(variants, key=lambda v: "allOf" in v)  # the entry's own first


def _tasks_property(blocks: dict[str, str], defs: dict, *, partial: bool) -> dict:
    """``tasks:``: a block keyed by an entry's name is that entry's, unless it names another with
    ``task:``; a block keyed otherwise must say ``task:`` (``TaskBlock``). In a
    profile a block merges over one of the settings, so it need not say ``task:`` again."""
    any_block = (PARTIAL if partial else "") + "TaskBlock"
    if partial:
        defs[any_block] = {"anyOf": [_ref(block) for block in blocks.values()]}
        keyed = {name: {"anyOf": [_ref(block), _ref(any_block)]} for name, block in blocks.items()}
    else:
        defs[any_block] = {"description": "a block that names its registry entry with `task:`",
                           "anyOf": [{"allOf": [_ref(block), {"required": ["task"]}]} for block in blocks.values()]}
        keyed = {name: {"anyOf": [_ref(block), _ref(any_block)]} for name, block in blocks.items()}
    return {"type": "object", "description": TASKS_DESCRIPTION, "propertyNames": {"pattern": TASK_NAME},
            "properties": keyed, "additionalProperties": _ref(any_block), **({} if partial else {"minProperties": 1})}


PARTIAL = "Partial"


def _partial(node: Any, defs: dict, made: dict) -> Any:
    """``node`` with nothing required wherever a profile merges into it (mappings, key by key);
    a list is replaced whole by a profile, so what it holds stays as it is."""
    if isinstance(node, list):
        return [_partial(n, defs, made) for n in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"required"}:  # a discriminator (allOf: [<network>, {required: [arch]}]) stays
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "required":
            continue
        if key == "$ref":
            out[key] = _partial_ref(value, defs, made)
        elif key == "properties":
            out[key] = {name: _partial(v, defs, made) for name, v in value.items()}
        elif key in ("additionalProperties", "anyOf", "allOf", "oneOf"):
            out[key] = _partial(value, defs, made)
        else:  # items, prefixItems, default, const, enum, bounds: as they are
            out[key] = value
    return out


def _partial_ref(ref: str, defs: dict, made: dict) -> str:
    """The ref of the partial copy of the definition ``ref`` names (made in ``made`` on first use)."""
    name = PARTIAL + _name(ref)
    if name not in made:
        made[name] = None  # reserved: a recursive model comes back here
        made[name] = _partial(defs[_name(ref)], defs, made)
    return f"#/$defs/{name}"


def _reachable(schema: dict) -> set[str]:
    defs, seen, todo = schema["$defs"], set(), [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "$ref" in node and _name(node["$ref"]) not in seen:
                seen.add(_name(node["$ref"]))
                todo.append(defs[_name(node["$ref"])])
            todo += [v for k, v in node.items() if k != "$defs"]
        elif isinstance(node, list):
            todo += node
    return seen


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of params.yaml as users write it."""
    entries = list(TASKS.values())
    models = [(Config, "validation"), *((task_params_model(e), "validation") for e in entries)]
    refs, top = models_json_schema(models, schema_generator=_Generator, ref_template="#/$defs/{model}")
    defs: dict = top["$defs"]
    root = defs.pop(_name(refs[(Config, "validation")]["$ref"]))
    blocks = {e.name: _name(refs[(task_params_model(e), "validation")]["$ref"]) for e in entries}
    for entry in entries:
        _entry_block(defs[blocks[entry.name]], entry, defs)
    root["properties"]["tasks"] = _tasks_property(blocks, defs, partial=False)

    # a profile: any part of the settings (not a profile itself)
    made: dict = {}
    profile = _partial({k: v for k, v in root.items() if k != "properties"}, defs, made)
    profile["properties"] = {k: _partial(v, defs, made) for k, v in root["properties"].items()
                             if k not in ("tasks", "profile", "profiles")}
    profile["properties"]["tasks"] = _tasks_property(
        {k: _name(_partial_ref(f"#/$defs/{v}", defs, made)) for k, v in blocks.items()}, defs, partial=True)
    profile["title"], profile["description"] = "Profile", "Any part of the settings, merged over them"
    defs.update(made)
    defs["Profile"] = profile
    root["properties"]["profiles"] = {**root["properties"]["profiles"], "description": PROFILES_DESCRIPTION,
                                      "additionalProperties": _ref("Profile")}

    schema = {
        "$schema": DRAFT,
        "title": "percept params.yaml",
        "description": ("The settings of the percept pipeline, generated from pipelines/common/schema.py by "
                        "pipelines/common/reference.py: do not edit by hand. The loader also checks what a schema "
                        "cannot say (cross-field rules); docs: reference/configuration.md."),
        **{k: v for k, v in root.items() if k not in ("title", "description")},
        "$defs": defs,
    }
    used = _reachable(schema)
    schema["$defs"] = {name: defs[name] for name in sorted(defs) if name in used}
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------
# The markdown page

_MISSING = object()


def _flow(value: Any) -> str:
    """A value as YAML flow style, as one writes it in params.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9_./+-][A-Za-z0-9_./+ -]*", value) and not value.endswith(" ") \
            and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off") \
            and not re.fullmatch(r"[-+.\d]+(e[-+]?\d+)?", value)
        return value if plain else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(to_jsonable_python(value))


_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_SPECIAL = re.compile(r"([\\*_\[\]<>|])")


def _text(text: str) -> str:
    """Plain text from the code (a description, a docstring) as one line of markdown: code spans
    kept, and outside them nothing markdown or HTML would read as markup (``4*channels``,
    ``models/<task>/``, ``[1 2 1]``, a pipe in a table cell)."""
    parts = _CODE_SPAN.split(" ".join(text.split()))
    return "".join(p if i % 2 else _SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def _plural(kind: str) -> str:
    return {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans"}.get(kind, kind)


def _code(value: str) -> str:
    fence = "``" if "`" in value else "`"
    pad = " " if "`" in value else ""
    return f"{fence}{pad}{value}{pad}{fence}"  # a pipe in a code span does not split a table's cell


class _Page:
    """Renders the schema's nodes as rows of key | type | default | description."""

    def __init__(self, schema: dict) -> None:
        self.schema, self.defs = schema, schema["$defs"]

    def deref(self, node: dict) -> dict:
        while "$ref" in node:
            node = {**self.defs[_name(node["$ref"])], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def objects(self, node: dict) -> list[dict]:
        """The mappings with fixed keys a node holds (through $ref, allOf and "or null"): their definitions."""
        while "$ref" in node:
            node = self.defs[_name(node["$ref"])]
        if "allOf" in node:
            return self.objects(node["allOf"][0])
        if "anyOf" in node:
            return [o for n in node["anyOf"] if self.deref(n).get("type") != "null" for o in self.objects(n)]
        return [node] if "properties" in node else []

    def type(self, node: dict) -> str:
        node = self.deref(node)
        if "allOf" in node:
            return self.type(node["allOf"][0])
        if "const" in node:
            return _code(_flow(node["const"]))
        if "enum" in node:
            return "one of " + ", ".join(_code(_flow(v)) for v in node["enum"])
        if "anyOf" in node:
            kinds = [self.type(n) for n in node["anyOf"]]
            if len(self.objects(node)) > 1:
                return "[a network](#networks)"
            pair = [n.get("prefixItems") for n in node["anyOf"]]
            if len(kinds) == 2 and pair[1] == [node["anyOf"][0]] * 2:  # training.degradations.Level
                return f"{kinds[0]}, or a [low, high] pair of them (drawn per sample)"
            return " or ".join(dict.fromkeys(k for k in kinds if k != "null")) + (" or null" if "null" in kinds else "")
        kind = node.get("type")
        if kind == "array":
            if "prefixItems" in node:
                return "[" + ", ".join(self.type(n) for n in node["prefixItems"]) + "]"
            items = node.get("items", {})
            text = "list of " + ("mappings" if self.objects(items) else _plural(self.type(items)))
            return text + (f" (at least {node['minItems']})" if node.get("minItems") else "")
        if kind == "object":
            if "properties" in node:
                return "mapping" if node["properties"] else "empty mapping"
            values = node.get("additionalProperties")
            if isinstance(values, dict) and values:
                text = "mapping of names to " + ("mappings" if self.objects(values) else _plural(self.type(values)))
            else:
                text = "mapping"
            return text + (f" (at least {node['minProperties']})" if node.get("minProperties") else "")
        if kind in ("integer", "number", "string", "boolean", "null"):
            text = kind
            bounds = [f"{op} {_flow(node[key])}" for key, op in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                                 ("maximum", "≤"), ("exclusiveMaximum", "<")) if key in node]
            if "minimum" in node and "maximum" in node:
                bounds = [f"{_flow(node['minimum'])} to {_flow(node['maximum'])}"]
            if node.get("minLength") == 1 and kind == "string":
                text = "non-empty string"
            if "pattern" in node:
                text += f" matching {_code(node['pattern'])}"
            return text + (" " + ", ".join(bounds) if bounds else "")
        return "any"

    def description(self, node: dict) -> str:
        if node.get("description"):
            return node["description"]
        objects = self.objects(node)
        return objects[0].get("description", "").split("\n\n")[0] if len(objects) == 1 else ""

    def rows(self, obj: dict, prefix: str, defaults: Any = _MISSING) -> list[tuple[str, str, str, str]]:
        """A row per key of ``obj`` and, below a key holding a mapping, per key of that, at any depth."""
        out: list[tuple[str, str, str, str]] = []
        required = set(obj.get("required", []))
        for name, prop in obj.get("properties", {}).items():
            key = f"{prefix}{name}"
            default = defaults[name] if isinstance(defaults, dict) and name in defaults else prop.get("default", _MISSING)
            objects = self.objects(prop)
            node = self.deref(prop)
            others = [n for n in node.get("anyOf", []) if self.deref(n).get("type") != "null"]
            if len(others) == 1:  # a list or a mapping, or null
                node = self.deref(others[0])
            items = self.objects(node.get("items", {})) if node.get("type") == "array" else []
            values = node.get("additionalProperties") if node.get("type") == "object" and "properties" not in node else None
            values_obj = self.objects(values) if isinstance(values, dict) else []
            if name in required:
                shown = "required"
            elif default is _MISSING or (objects and isinstance(default, dict)):
                shown = ""
            else:
                shown = _code(_flow(default))
            out.append((_code(key), self.type(prop), shown, _text(self.description(prop))))
            if objects:  # the first is the default (a block's own network)
                out += self.rows(objects[0], f"{key}.", default)
            elif items:
                out += self.rows(items[0], f"{key}[].")
            elif values_obj:  # a mapping's values: every kind they may be (a search's range or choice)
                seen = {row[0] for row in out}
                for value in values_obj:
                    inner = [row for row in self.rows(value, f"{key}.{PLACEHOLDERS.get(name, '<name>')}.") if row[0] not in seen]
                    seen |= {row[0] for row in inner}
                    out += inner
        return out

    @staticmethod
    def table(rows: list[tuple[str, str, str, str]]) -> str:
        lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        lines += [f"| {key} | {kind} | {default} | {text} |" for key, kind, default, text in rows]
        return "\n".join(lines) + "\n"


def _prose(text: str) -> str:
    """Paragraphs of a docstring, each on one line, markdown's special characters escaped."""
    return "\n\n".join(_text(p) for p in text.split("\n\n") if p.strip())


INTRO = f"""\
# Configuration reference

!!! note "Generated: do not edit this page"
    `python -m pipelines.common.reference` writes this page with `pipelines/common/reference.py`, from the settings
    schema in `pipelines/common/schema.py`, the compute's options in `training/options.py` and the
    task registry in `training/tasks.py`. To change what it says, change a field's
    `description=` (or the comment above the field) there.

`params.yaml` is the one source of settings. Every command reads it through that schema: an
unknown key, a wrong type or an impossible value stops the run with a message naming the key
(`tasks.sr_x4.patch_size: ...`). `profile:` or `$PERCEPT_PROFILE` merges a named set of settings
from `profiles:` over it (see [profiles](#profiles)).

## Completion and checks in an editor {{#editor}}

[`params.schema.json`](params.schema.json) is the JSON schema of `params.yaml` (draft 2020-12),
committed as `{SCHEMA_PATH}`. The first line of `params.yaml`,

```yaml
# yaml-language-server: $schema={SCHEMA_PATH}
```

points every editor that uses the YAML language server at it (VS Code with Red Hat's YAML
extension, Neovim or Helix with `yaml-language-server`, ...): each key completes with its
description, and an unknown key or a wrong type is underlined as you type. In a JetBrains IDE, map
the file under *Settings > Languages & Frameworks > Schemas and DTDs > JSON Schema Mappings*. From
a shell: `check-jsonschema --schemafile {SCHEMA_PATH} params.yaml`.

After a change to the schema, `python -m pipelines.common.reference` rewrites this page and the schema
(the unit tests fail while they are stale; `--check` says whether it is). The schema checks keys, types and
bounds; the rules between settings (every task of `train.tasks` has a block, a batch splits
evenly over `train.workers`, a gate's metrics are ones the task reports, ...) are the loader's.
"""


def markdown_reference() -> str:
    """The page "Configuration reference": every setting of params.yaml, its type, default and meaning."""
    schema = json_schema()
    page = _Page(schema)
    props = schema["properties"]
    parts = [INTRO, "## Top level {#top-level}\n\nThe sections of `params.yaml`, in the order the schema declares them.\n"]
    top = []
    for name, prop in props.items():
        kind = f"[{page.type(prop)}](#{name})" if page.objects(prop) or name in ("tasks", "compare", "promote", "tune", "profiles") \
            else page.type(prop)
        required = name in schema.get("required", [])
        default = "required" if required else "" if page.objects(prop) or "default" not in prop else _code(_flow(prop["default"]))
        top.append((_code(name), kind, default, _text(page.description(prop))))
    parts.append(page.table(top))

    for name, prop in props.items():
        if name == "tasks":
            parts.append(_tasks_section(page, schema))
            continue
        if not (page.objects(prop) or name in ("compare", "promote", "tune", "profiles")):
            continue
        objects = page.objects(prop)
        intro = objects[0].get("description", "") if objects else prop.get("description", "")
        section = [f"## `{name}` {{#{name}}}\n"]
        if intro:
            section.append(_prose(intro) + "\n")
        if name == "promote":
            section.append("A task's gate is merged over its registry entry's (see each entry under "
                           "[tasks](#tasks)); a task not listed here keeps its entry's.\n")
        if name == "profiles":
            section.append("A profile holds any part of the settings above, with the same keys and types; nothing "
                           "in it is required. `params.yaml`'s own comments say what each of its profiles is for.\n")
            parts.append("\n".join(section))
            continue
        rows = page.rows({"properties": {name: prop}, "required": []}, "")[1:]
        section.append(page.table(rows))
        parts.append("\n".join(section))
    return "\n".join(parts)


def _tasks_section(page: _Page, schema: dict) -> str:
    tasks = schema["properties"]["tasks"]
    blocks = {name: page.deref(prop["anyOf"][0]) for name, prop in tasks["properties"].items()}
    first = next(iter(blocks.values()))
    out = [f"## `tasks` {{#tasks}}\n\n{_prose(tasks['description'])}\n",
           "`percept tasks` lists the blocks `params.yaml` configures "
           "and the registry's entries. Every block has these keys; what each entry takes and its defaults are "
           "below, [one section per entry](#entries).\n"]
    kinds = {"task": "one of " + ", ".join(_code(name) for name in TASKS), "options": "mapping (the entry's own)"}
    rows = [(_code(k), kinds.get(k) or page.type(v), "required" if k in first.get("required", []) else "the entry's",
             _text(page.description(v))) for k, v in first["properties"].items()]
    out.append(page.table(rows))

    out.append("### Networks: `model.arch` {#networks}\n\nA block's `model:` is its entry's network, merged key by "
               "key; `arch:` naming another network starts from that network's defaults, shown here.\n")
    for net in page.objects(first["properties"]["model"]):
        arch = net["properties"]["arch"]["const"]
        out.append(f"#### `arch: {arch}` {{#arch-{arch}}}\n\n{_prose(net.get('description', ''))}\n")
        out.append(page.table(page.rows(net, "model.")))

    out.append("### Registry entries {#entries}\n\nEach entry's block, with the entry's defaults.\n")
    for name, entry in TASKS.items():
        block = blocks[name]
        degradation = page.objects(block["properties"]["degradation"])[0]
        text = [f"#### `{name}` {{#task-{name}}}\n", _text(entry.description[:1].upper() + entry.description[1:]) + ".\n"]
        if degradation.get("description"):
            text.append(f"Degradation `{entry.degradation.kind}`: {_prose(degradation['description'])}\n")
        text.append(page.table(page.rows(block, "")))
        gate = entry.make_gate_config().model_dump(mode="json")
        facts = [f"- reports: {', '.join(f'`{m}`' for m in entry.metrics)}",
                 f"- promotion gate (`promote.<block>`): {_code(_flow(gate))}"]
        if entry.eval_levels:
            facts.append(f"- also evaluated at: {_code(_flow(list(entry.eval_levels)))}")
        text.append("\n".join(facts) + "\n")
        out.append("\n".join(text))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------

def generated() -> dict[Path, str]:
    """Each generated file and what it holds now."""
    return {SCHEMA_FILE: schema_text(), PAGE_FILE: markdown_reference()}


def main(argv: list[str] | None = None) -> int:
    names = " and ".join(str(path.relative_to(ROOT)) for path in generated())
    parser = argparse.ArgumentParser(prog="python -m pipelines.common.reference",
                                     description=f"Write {names} from the settings schema.")
    parser.add_argument("--check", action="store_true", help="only say whether they are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    files = generated()
    if args.check:
        stale = [path for path, text in files.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from what the settings schema gives now: "
                  "run `python -m pipelines.common.reference` and commit it", file=sys.stderr)
        if not stale:
            print(f"{names} are up to date")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
