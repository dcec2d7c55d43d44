"""What a search leaves for people: the trial table it prints, the chart and table on the MLflow
parent run, and the best settings written into params.yaml (``percept tune --apply``)."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.common.fsutil import atomic_write_text
from pipelines.common.params import load_yaml, parse_config
from pipelines.common.search_schema import Choice, TuneSearch

if TYPE_CHECKING:
    from pipelines.search.tune import SearchOutcome, Trial

CHART = "search.png"
TABLE = "trials.json"


def summary_lines(outcome: SearchOutcome) -> list[str]:
    """The trials best first, then the best settings as the lines to put in params.yaml."""
    order = sorted(outcome.trials, key=lambda t: (t.figure is None or math.isnan(t.figure),
                                                  -(t.figure or 0) if outcome.higher_is_better else (t.figure or 0)))
    keys = list(outcome.best.settings)
    lines = [f"tune {outcome.task}: {len(outcome.trials)} trials of {outcome.name}, by {outcome.metric} on the tuning "
             f"split ({'higher' if outcome.higher_is_better else 'lower'} is better); MLflow run {outcome.parent_run_id}",
             "  " + "  ".join([f"{'trial':10s}", f"{outcome.metric:>9s}", f"{'reports':>7s}", f"{'state':14s}", *keys])]
    for t in order:
        figure = "-" if t.figure is None else f"{t.figure:9.4f}"
        values = [f"{t.settings.get(k):.4g}" if isinstance(t.settings.get(k), float) else str(t.settings.get(k)) for k in keys]
        mark = (" *" if t is outcome.best else "") + (" (current recipe)" if t is outcome.current else "")
        lines.append("  " + "  ".join([f"{t.id:10s}", f"{figure:>9s}", f"{t.reports:7d}", f"{t.state:14s}", *values]) + mark)
    lines.append(f"best (*): trial {outcome.best.id}; {verdict(outcome)}; as params.yaml settings:")
    lines += ["  " + line for line in params_block(outcome.task, round_settings(outcome.best.settings)).splitlines()]
    return lines


def round_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Four significant digits for drawn floats: what a person writes in params.yaml."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in settings.items()}


def params_block(task: str, settings: dict[str, Any]) -> str:
    """``settings`` as the lines to put under ``tasks:`` in params.yaml."""
    import yaml

    nested: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump({"tasks": {task: nested}}, sort_keys=False, default_flow_style=False)


def verdict(outcome: SearchOutcome) -> str:
    """How the best trial compares with the task's current recipe on the tuning split."""
    best, current = outcome.best, outcome.current
    if current is None:
        return "the current recipe was not a trial (a value outside the space)"
    if current.figure is None:
        return f"the current recipe's trial ({current.id}) gave no figure"
    if best is current or best.figure == current.figure:
        return "the current recipe holds"
    gain = (best.figure - current.figure) * (1 if outcome.higher_is_better else -1)
    return f"{outcome.metric} {best.figure:.4f} against the current recipe's {current.figure:.4f} ({gain:+.4f})"


def apply_settings(params: Path, task: str, settings: dict[str, Any]) -> list[str]:
    """Write dotted ``settings`` into ``tasks.<task>`` of ``params``; returns the keys whose value
    changed. Each edit touches one value in place (a comment beside it keeps its column) or adds
    one key to the mapping that should hold it, so every other line, comment and layout choice
    stays as it was. The result is validated before it replaces the file."""
    lines = params.read_text().splitlines(keepends=True)
    changed = []
    for dotted, value in settings.items():
        edited = _set_value(lines, ["tasks", task, *dotted.split(".")], value)
        if edited is not None:
            lines, changed = edited, [*changed, dotted]
    if changed:
        text = "".join(lines)
        parse_config(load_yaml(text), source=str(params))  # a file percept cannot read is never written
        atomic_write_text(params, text)
    return changed


def _flow(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=4096).strip().removesuffix("...").strip()


def _set_value(lines: list[str], path: list[str], value: Any) -> list[str] | None:
    """``lines`` with the value at ``path`` set, or None when it already holds ``value``."""
    from ruamel.yaml import YAML

    doc = YAML().load("".join(lines))  # parsed again for each edit: the positions move
    node, depth = doc, 0
    while depth < len(path) - 1 and isinstance(node.get(path[depth]), dict):
        node, depth = node[path[depth]], depth + 1
    key, rest = path[depth], path[depth + 1 :]
    wrapped: Any = value
    for part in reversed(rest):
        wrapped = {part: wrapped}
    out = list(lines)
    if key in node and not rest:  # the key is there: replace its value where it stands
        if node[key] == value:
            return None
        line, col = node.lc.value(key)
        text = out[line]
        end = _scalar_end(text, col, flow=node.fa.flow_style())
        out[line] = text[:col] + _flow(value) + text[end:]
    elif key in node:  # a scalar (or null) where a mapping must go: replace it with one
        line, col = node.lc.value(key) if node[key] is not None else (node.lc.key(key)[0], len(out[node.lc.key(key)[0]].rstrip("\n")))
        text = out[line]
        end = _scalar_end(text, col, flow=node.fa.flow_style()) if node[key] is not None else col
        out[line] = text[:col] + (" " if node[key] is None else "") + _flow(wrapped) + text[end:]
    elif node.fa.flow_style():  # add `key: value` inside the flow mapping, before its closing brace
        line, col = _closing_brace(out, *(_start_of(doc, path[:depth])))
        text = out[line]
        before = text[:col].rstrip()
        sep = "" if before.endswith("{") else ", "
        out[line] = before + sep + f"{key}: {_flow(wrapped)}" + text[col:]
    else:  # a block mapping: a new line at its keys' indentation, before its first key
        first = next(iter(node))
        line, col = node.lc.key(first)
        out.insert(line, " " * col + f"{key}: {_flow(wrapped)}\n")
        return out
    out[line] = _keep_comment_column(lines[line], out[line])
    return out


def _comment_at(text: str) -> int | None:
    return next((i for i in range(1, len(text)) if text[i] == "#" and text[i - 1] == " "), None)


def _keep_comment_column(old: str, new: str) -> str:
    """``new`` with the spaces before its trailing comment changed so the comment starts where it
    did in ``old`` (at least one space left)."""
    was, now = _comment_at(old), _comment_at(new)
    if was is None or now is None or was == now:
        return new
    code = new[:now].rstrip()
    return code + " " * max(1, was - len(code)) + new[now:]


def _scalar_end(text: str, col: int, flow: bool) -> int:
    """Where the plain or quoted scalar starting at ``col`` of ``text`` ends."""
    if text[col] in "'\"":
        return text.index(text[col], col + 1) + 1
    if text[col] in "[{":  # a flow sequence or mapping: to its closing bracket
        depth = 0
        for i in range(col, len(text)):
            depth += text[i] in "[{"
            depth -= text[i] in "]}"
            if depth == 0:
                return i + 1
        raise ValueError("a flow collection in params.yaml that does not close on its line")
    stops = ",}]#\n" if flow else "#\n"
    end = next((i for i in range(col, len(text)) if text[i] in stops and (text[i] != "#" or text[i - 1] == " ")), len(text))
    while end > col and text[end - 1] == " ":
        end -= 1
    return end


def _start_of(doc, path: list[str]) -> tuple[int, int]:
    """(line, column) where the value at ``path`` (a flow mapping) starts: its opening brace."""
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node.lc.value(path[-1])


def _closing_brace(lines: list[str], line: int, col: int) -> tuple[int, int]:
    depth = 0
    for i in range(line, len(lines)):
        for j in range(col if i == line else 0, len(lines[i])):
            ch = lines[i][j]
            if ch == "#" and (j == 0 or lines[i][j - 1] == " "):
                break  # the rest of this line is a comment
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0 and ch == "}":
                return i, j
    raise ValueError("an unclosed flow mapping in params.yaml")


def log_search_artifacts(mlflow, run_id: str, task: str, search: TuneSearch, metric: str, higher: bool,
                         trials: list[Trial], best: Trial, current: Trial | None) -> None:
    """The chart (figure against each searched setting) and the trial table onto the parent run."""
    with tempfile.TemporaryDirectory(prefix="percept-tune-") as folder:
        Path(folder, CHART).write_bytes(chart_png(task, search, metric, higher, trials, best, current))
        table = [{"trial": t.id, **t.settings, metric: t.figure, "reports": t.reports, "state": t.state,
                  "run_id": t.run_id} for t in trials]
        Path(folder, TABLE).write_text(json.dumps(table, indent=2) + "\n")
        mlflow.log_artifact(run_id, str(Path(folder, CHART)))
        mlflow.log_artifact(run_id, str(Path(folder, TABLE)))


STYLE = {"completed": ("o", "tab:blue"), "stopped early": ("x", "tab:red"), "cut short": ("s", "tab:gray"),
         "failed": ("v", "black")}


def chart_png(task: str, search: TuneSearch, metric: str, higher: bool, trials: list[Trial], best: Trial,
              current: Trial | None = None) -> bytes:
    """One panel per searched setting: each trial's last figure against its value, by state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    keys = list(search.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        dim = search.space[key]
        categories = [str(c) for c in dim.choices] if isinstance(dim, Choice) else None
        for state, (marker, colour) in STYLE.items():
            points = [(t.settings.get(key), t.figure) for t in trials if t.state == state and t.figure is not None]
            if points:
                xs = [categories.index(str(x)) if categories else x for x, _ in points]
                ax.scatter(xs, [y for _, y in points], marker=marker, color=colour, label=state, s=36)
        if best.figure is not None:
            x = categories.index(str(best.settings.get(key))) if categories else best.settings.get(key)
            ax.scatter([x], [best.figure], marker="*", s=220, facecolor="none", edgecolor="tab:orange", linewidth=1.5,
                       label="best")
        if current is not None and current.figure is not None:
            ax.axhline(current.figure, color="tab:green", linestyle="--", linewidth=1, label="current recipe")
        if categories:
            ax.set_xticks(range(len(categories)), categories)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        else:
            if dim.log:
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 1-2-5 labels: a decade is often all there is
                ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if dim.integer:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            pad = (dim.high / dim.low) ** 0.04 if dim.log else 0.04 * (dim.high - dim.low)
            # the searched range, not just where the trials fell
            ax.set_xlim(*((dim.low / pad, dim.high * pad) if dim.log else (dim.low - pad, dim.high + pad)))
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} on the tuning split ({'higher' if higher else 'lower'} is better)")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: {len(trials)} trials; last figure of each (a stopped trial's at the rung it stopped at)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
