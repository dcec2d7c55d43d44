"""The ``tune:`` section of the settings schema: per task, a recipe search's space (ranges and
choices over the task's own settings), its trial count, time budget, rungs and tuning split.

``percept tune --task T`` (pipelines/search/) runs it; no stage reads it, so editing a search
never reruns a stage. ``Config`` checks each dotted setting against its task's block.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Settings the shard stage cuts the samples with: a trial that changes one needs shards of its
# own, so the search builds one set per value before it starts (choices only, not ranges).
SHARD_SETTINGS = ("degradation", "patch_size", "patches_per_image")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A number drawn between ``low`` and ``high``."""

    low: float = Field(description="the smallest value drawn")
    high: float = Field(description="the largest value drawn")
    log: bool = Field(False, description="draw on a log scale (learning rates, loss weights)")
    integer: bool = Field(False, description="draw whole numbers (steps, channels, blocks)")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low:g})")
        return self

    def extremes(self) -> list[Any]:
        """Values that must all make a valid block: the ends, and for a real range a value with a
        fraction (a real range over a whole-number setting fails there, not in every trial)."""
        if self.integer:
            return [int(self.low), int(self.high)]
        inside = self.low + (self.high - self.low) * 0.381966
        return [self.low, self.high, inside if inside % 1 else inside + (self.high - self.low) * 0.01]


class Choice(_Strict):
    """One of a list of values (numbers, strings, booleans, lists)."""

    choices: list[Any] = Field(min_length=1, description="the values a trial may take")

    def extremes(self) -> list[Any]:
        return list(self.choices)


class TuneSearch(_Strict):
    """A recipe search for one task (``tune.<task>``): ``percept tune --task <task>``."""

    space: dict[str, Range | Choice] = Field(min_length=1, description="a setting of the task's block, dotted "
                                             "(optim.lr, loss.pixel_weight, model.channels, patch_size) -> "
                                             "{low, high, log, integer} or {choices: [...]}")
    trials: int = Field(16, ge=1, le=10000, description="trials to run (fewer when `minutes` runs out first)")
    minutes: float | None = Field(None, gt=0, description="wall-clock budget of the search; null: until every trial ran")
    steps: int | None = Field(None, ge=1, description="training steps of each trial; null: the task's optim.steps "
                              "(a short proxy of the full training when set)")
    reports: int = Field(4, ge=1, le=100, description="times a trial is scored on the tuning split, evenly over its "
                         "steps: the rungs of the early-stopping scheduler")
    grace: int = Field(1, ge=1, description="reports every trial gets before the scheduler may stop it")
    reduction_factor: int = Field(2, ge=2, description="ASHA: a trial goes on past a rung only in the best 1/this")
    searcher: Literal["optuna", "random"] = Field("optuna", description="optuna: Optuna's TPE (model-based, seeded); "
                                                  "random: independent draws")
    tuning_images: int = Field(8, ge=1, description="training images held out by seed as the tuning split: trials "
                               "never train on them and are scored on them, never on an evaluate.sets folder")
    concurrent: int | None = Field(None, ge=1, description="trials at once; null: as many as the cluster's CPUs "
                                   "(GPUs) hold at train.workers x cpus_per_worker (gpus_per_worker) each")

    @model_validator(mode="after")
    def _steps_once(self) -> TuneSearch:
        if self.steps is not None and "optim.steps" in self.space:
            raise ValueError("steps is set and optim.steps is searched: keep one")
        if self.steps is not None and self.steps < self.reports:
            raise ValueError(f"steps ({self.steps}) is fewer than reports ({self.reports}): a report needs a step")
        if self.grace > self.reports:
            raise ValueError(f"grace ({self.grace}) exceeds reports ({self.reports}): no trial could be stopped early")
        for name, dim in self.space.items():
            if isinstance(dim, Range) and name.split(".")[0] in SHARD_SETTINGS:
                raise ValueError(f"space.{name}: give choices, not a range: each value of a setting the shards are "
                                 "cut with needs shards of its own")
        return self

    def shard_space(self) -> dict[str, Choice]:
        """The searched settings that change the shards (choices, by the check above)."""
        return {k: v for k, v in self.space.items() if k.split(".")[0] in SHARD_SETTINGS}  # type: ignore[misc]


def set_dotted(block: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``block`` (plain data) with each dotted key of ``settings`` set; missing levels are made, so
    a misspelt key reaches the block's validation, which names it."""
    out = _copy(block)
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return out


def _copy(data: Any) -> Any:
    return {k: _copy(v) for k, v in data.items()} if isinstance(data, dict) else data
