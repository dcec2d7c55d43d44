"""Markdown for the MLflow registry, so a person browsing the UI decides without opening tags one
by one. The registered model says what the task does and how to call it; each version says what
it was trained on, its figures against the baseline, where its comparison sheets are and, once
``promote`` has run, the gate's verdict against the champion. Plain dicts in, text out.
"""

from __future__ import annotations

from typing import Any

from pipelines.common.schema import Config
from training.quality import METRICS

GATE_HEADING = "#### Promotion gate"
BASELINES = {"bicubic": "bicubic", "identity": "input"}


def model_description(task: str, cfg: Config) -> str:
    block, gate = cfg.task(task), cfg.gate(task)
    tolerances = ", ".join(f"`{k}` within {v:g}" for k, v in gate.tolerances.items()) or "none"
    return "\n".join([
        f"**{task}**: {block.entry.description}; network `{block.model.arch}`, trained {block.optim.steps} steps by default.",
        "",
        f"- `@champion` is the version in use; `@challenger` the newest registered. `percept promote` moves "
        f"`@champion` only when `{gate.metric}` beats it by {gate.margin:g} (tolerances: {tolerances}).",
        "- Each version's description has its data, steps and figures; its comparison sheets are in its "
        "training run's artifacts, under `evaluation/`.",
        f"- Use: `percept apply --model models:/{task}@champion --input photos/ --out out/`, or "
        f"`mlflow models serve -m models:/{task}@champion --env-manager local` and POST "
        '`{"inputs": {"image": "<base64 PNG or JPEG>"}}` to `/invocations`.',
        ""])  # fmt: skip


def version_description(task: str, cfg: Config, run: dict[str, Any], index: dict[str, Any],
                        metrics: dict[str, Any], commit: str, sheets: list[str]) -> str:
    """``run``: models/<task>/run.json; ``index``: the shards' index.json; ``metrics``: the
    evaluate stage's summary per image set; ``sheets``: artifact paths in the training run."""
    block = cfg.task(task)
    splits = index.get("splits", {})
    link = f"#/experiments/{run.get('mlflow_experiment_id', '0')}/runs/{run['mlflow_run_id']}"
    lines = [
        f"Trained {run['steps']} step{'s' * (run['steps'] != 1)} of {block.optim.batch_size} x {block.patch_size} px patches on "
        f"{splits.get('train', '?')} training pairs ({splits.get('val', '?')} validation images), manifest "
        f"`{str(index.get('manifest_sha256', '?'))[:12]}`, code `{commit[:12]}`; training run [{run.get('run_name', run['mlflow_run_id'])}]({link}).",
        ""]  # fmt: skip
    if metrics:
        lines += figures_table(metrics, cfg.reported_metrics(task)) + [""]
    if sheets:
        lines += ["Comparison sheets (input, baseline, model, target) in the training run's artifacts: "
                  + ", ".join(f"`{s}`" for s in sheets) + ".", ""]
    return "\n".join(lines)


def figures_table(metrics: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    rows = ["| set | metric | model | baseline | better by |", "|---|---|---|---|---|"]
    for image_set, figures in metrics.items():
        base = figures.get("baseline", {})
        who = BASELINES.get(base.get("model"), base.get("model", "baseline"))
        for name in names:
            if name not in figures:
                continue
            ours, theirs = figures[name], base.get(name)
            gain = "" if theirs is None else f"{ours - theirs if METRICS[name].higher_is_better else theirs - ours:+.4g}"
            rows.append(f"| {image_set} ({figures.get('images', '?')}) | `{name}` | {ours:.4g} | "
                        f"{'' if theirs is None else f'{theirs:.4g} ({who})'} | {gain} |")
    return rows


def gate_markdown(record: dict[str, Any], heading: str = "# Promotion gate") -> str:
    """The promote stage's decision and figures (challenger, champion, baseline) as markdown."""
    lines = [f"{heading}: {record['task']}", "",
             f"**{'Promoted' if record['promoted'] else 'Not promoted'}**: v{record['challenger']}. {record['reason']}", "",
             f"Champion before: {record['champion_before'] and 'v' + str(record['champion_before'])}; "
             f"after: {record['champion_after'] and 'v' + str(record['champion_after'])}.", ""]
    figures = record["figures"]
    if figures:
        names = list(next(iter(figures.values())))
        lines += ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {who} | " + " | ".join(f"{vals[n]:.4f}" for n in names) + " |" for who, vals in figures.items()]
    if record.get("per_set"):
        metric = record["gate"]["metric"]
        lines += ["", f"`{metric}` per set and level (no set or level may be worse than its baseline):", "",
                  "| set | challenger | baseline |", "|---|---|---|"]
        lines += [f"| {name} | {ours:.4f} | {base:.4f} |" for name, (ours, base) in record["per_set"].items()]
    return "\n".join(lines) + "\n"


def with_body(description: str | None, body: str) -> str:
    """A version's description with a new body, keeping the gate section promote wrote, if any."""
    old = description or ""
    return body.rstrip() + ("\n\n" + old[old.index(GATE_HEADING):] if GATE_HEADING in old else "\n")


def with_gate(description: str | None, record: dict[str, Any]) -> str:
    """A version's description with its gate section (the latest decision) in place of any earlier one."""
    body = (description or "").split(GATE_HEADING)[0].rstrip()
    return f"{body}\n\n{gate_markdown(record, GATE_HEADING)}".lstrip()
