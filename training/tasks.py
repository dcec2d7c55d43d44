"""The task registry: one entry per image-to-image task.

An entry says how a task's input is made from a clean target (its degradation class and the
defaults ``params.yaml`` may override) and which task-specific options it takes. Everything else
(sharding, training, evaluation) reads the entry; adding a task is one ``register`` call here
plus a block under ``tasks:`` in ``params.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from training import degradations as deg


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StyleOptions(BaseModel):
    """Fast style transfer: one model per style image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    style_image: str = Field("data/raw/styles/the-wave.jpg", min_length=1)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    degradation: type[deg.Degradation]
    degradation_defaults: dict[str, Any] = field(default_factory=dict)
    options: type[BaseModel] = NoOptions

    def make_degradation(self, overrides: dict[str, Any] | None = None) -> deg.Degradation:
        return self.degradation(**{**self.degradation_defaults, **(overrides or {})})


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}") from None


register(Task("sr_x4", "4x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 4}))
register(Task("sr_x8", "8x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 8}))
register(Task("denoise", "Gaussian denoising, sigma 25/255", deg.GaussianNoise, {"sigma": 25.0}))
register(Task("deblur", "Gaussian deblurring", deg.GaussianBlur, {"sigma": 2.0}))
register(Task("jpeg", "JPEG artefact removal, quality 10", deg.JpegCompression, {"quality": 10}))
register(Task("colorize", "colorization: gray in, colour out", deg.Grayscale, {"channels": 3}))
register(Task("style", "fast style transfer: content in, stylised out", deg.Identity, {}, StyleOptions))
