"""Reading params.yaml: strict YAML, profiles merged over it, validation into ``Config``
(pipelines.common.schema) and errors that name the offending key, e.g. ``tasks.sr_x4.patch_size``.

Every command calls ``load_config`` once and passes the result (or parts of it) down; nothing
else reads the YAML.

Stricter than plain ``yaml.safe_load`` plus pydantic: a key written twice in one mapping is an
error (not "the last one wins"), a YAML boolean is never a number (``seed: true`` is not 1), and
an error quotes at most about a hundred characters of any value.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.common.errors import LINE_LIMIT, ConfigError, clip, quote
from pipelines.common.schema import Config

DEFAULT_PARAMS = Path("params.yaml")
MAX_PROBLEMS = 20  # problems listed in one message (the count says how many there were)


def refuse_bools_as_numbers(raw: Any, validated: Any, loc: tuple = ()) -> list[str]:
    """The key paths where a YAML boolean became a number. Pydantic's lax mode takes ``true`` as
    1 (its strict mode would also refuse "3" for an int, which params.yaml has always accepted):
    comparing what was written with what it became catches exactly that, at any depth, in the
    models of every module, without touching their fields."""
    if isinstance(raw, bool):
        return [_location(loc)] if isinstance(validated, (int, float)) and not isinstance(validated, bool) else []
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(validated, BaseModel) and isinstance(key, str) and key in type(validated).model_fields:
                found += refuse_bools_as_numbers(value, getattr(validated, key), (*loc, key))
            elif isinstance(validated, dict) and key in validated:
                found += refuse_bools_as_numbers(value, validated[key], (*loc, key))
    elif isinstance(raw, list) and isinstance(validated, (list, tuple)) and len(raw) == len(validated):
        for i, (value, out) in enumerate(zip(raw, validated)):
            found += refuse_bools_as_numbers(value, out, (*loc, i))
    return found


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one YAML mapping."""

    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(f"key {quote(key)} appears twice in one mapping (lines {first_line} and {second_line})")
        self.key, self.lines = key, (first_line, second_line)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, but a key written twice in one mapping is an error
    (DuplicateKeyError) rather than silently the last one. Merge keys (``<<: *base``) still
    work, and a key of the mapping itself still overrides a merged one."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[yaml.Node] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Checked here, before the merge: flattening puts the merged keys beside the mapping's own
        # and rewrites merged mappings in place, so each mapping is checked once, as written.
        if node not in self._checked:
            self._checked.add(node)
            self._check_unique(node)
        super().flatten_mapping(node)

    def _check_unique(self, node: yaml.MappingNode) -> None:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable: construct_mapping reports it
                continue
            if first is not key_node:
                raise DuplicateKeyError(key, first.start_mark.line + 1, key_node.start_mark.line + 1)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (DuplicateKeyError)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    """Read and validate params.yaml; raise ConfigError naming the key on any problem."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root, or pass --params)") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, source=str(path))


PROFILE_ENV = "PERCEPT_PROFILE"


def apply_profile(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Merge ``profiles[<profile>]`` over the settings ($PERCEPT_PROFILE wins over `profile:`).
    A comma-separated list merges each in turn: ``gpu,cluster`` is the paper's recipe on a cluster."""
    name = os.environ.get(PROFILE_ENV) or raw.get("profile")
    if not name:
        return raw
    if not isinstance(name, str):
        raise ConfigError(f"{source}: profile: expected a profile name or a comma-separated list, got {quote(name)}")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: profiles: expected a mapping of profile names to settings, got {quote(profiles)}")
    merged = raw
    for one in (n.strip() for n in name.split(",")):
        if one not in profiles:
            have = clip(", ".join(map(str, profiles)), LINE_LIMIT)
            raise ConfigError(f"{source}: profile {quote(one)} is not defined under `profiles:` (have: {have or 'none'})")
        if not isinstance(profiles[one], dict):
            raise ConfigError(f"{source}: profiles.{one}: expected a mapping of settings, got {quote(profiles[one])}")
        merged = deep_merge(merged, profiles[one])
    return {**merged, "profile": name}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: dicts key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def parse_config(raw: Any, source: str = "params") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = apply_profile(raw, source)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [f"{source}: {len(errors)} invalid setting(s):"]
        for err in errors[:MAX_PROBLEMS]:
            loc = _location(err["loc"])
            lines.append(clip(f"  {loc or '(top level)'}: {_message(err)}", LINE_LIMIT))
        if len(errors) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more")
        raise ConfigError("\n".join(lines)) from None
    booleans = refuse_bools_as_numbers(raw, cfg)
    if booleans:
        lines = [f"{source}: {len(booleans)} invalid setting(s):"]
        lines += [f"  {loc}: expected a number, not a boolean (true/false)" for loc in booleans[:MAX_PROBLEMS]]
        raise ConfigError("\n".join(lines))
    return cfg


def _location(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


_NUMBER_ERRORS = ("greater_than", "less_than", "multiple_of", "int_", "float_", "finite_number")


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if isinstance(err.get("input"), bool) and err["type"].startswith(_NUMBER_ERRORS):
        return "expected a number, not a boolean (true/false)"  # not "should be >= 8 (got True)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error", "missing") and "input" in err:
        msg += f" (got {quote(err['input'])})"
    return msg
