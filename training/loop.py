"""The per-worker training step: model, loss, optimiser, schedule; no orchestration.

``pipelines/stages/train.py`` runs this inside Ray Train workers (DDP, checkpoints, MLflow); the same
pieces run in a plain loop for the benchmark. Images are float tensors in [0, 1], N x C x H x W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.adversarial import Adversary
from training.losses import PerceptualLoss
from training.options import OptimConfig


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up, then constant or cosine decay to 1% of the base rate."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    # Adam, lr 1e-3, as in the paper.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    return optimizer, scheduler


@dataclass
class StepResult:
    losses: dict[str, float]
    grad_norm: float
    lr: float


def train_step(
    model: nn.Module,
    loss_fn: PerceptualLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    grad_clip: float | None,
    autocast_dtype: torch.dtype | None = None,
    step: int | None = None,
    adversary: Adversary | None = None,
) -> StepResult:
    """One optimisation step; bf16 autocast when a dtype is given. ``step`` goes to the loss
    (its ``pixel_only_steps``). With an ``adversary`` (after the pixel-only steps) the loss gains
    its adversarial term ("gan"), and the discriminator then takes one step on this step's
    output ("disc", its own loss, not part of the total)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    device_type = inputs.device.type
    adversarial = adversary is not None and (step is None or step >= loss_fn.cfg.pixel_only_steps)
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        output = model(inputs)
        total, parts = loss_fn(output.float(), targets, step=step, chroma_logits=getattr(_bare(model), "chroma_logits", None))
        if adversarial:
            gan = adversary.generator_loss(output.float(), targets)
            total = total + gan
            parts = {**{k: v for k, v in parts.items() if k != "total"}, "gan": float(gan.detach()), "total": float(total.detach())}
    total.backward()
    if grad_clip is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    else:
        grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    if adversarial:
        parts["disc"] = adversary.step(output.detach().float(), targets, autocast_dtype)
    return StepResult(parts, grad_norm, lr)


class WeightAverage:
    """An exponential moving average of a model's weights (BasicSR's and traiNNer-redux's EMA),
    saved and evaluated in place of the last step's weights: it smooths the noise of the last
    steps' updates. The decay ramps as (1 + t) / (10 + t) up to ``decay``, so a short run is not
    weighed down by its random start. Only trainable parameters are averaged (a frozen encoder
    stays what it is); buffers are copied. Kept in fp32 on the model's device."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        trained = [(name, p) for name, p in _bare(model).named_parameters() if p.requires_grad]
        self.averages = {name: p.detach().float().clone() for name, p in trained}
        # The same parameter tensors live through the whole run (the optimiser updates them in
        # place), so the pairs are found once, not on every step.
        self._pairs = ([self.averages[name] for name, _ in trained], [p for _, p in trained])

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the current weights of the model it was made from."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averages, params = self._pairs
        torch._foreach_lerp_(averages, [p.detach().float() for p in params], 1.0 - decay)

    def restart_from(self, model: nn.Module) -> None:
        """Start the average again from the model's current weights."""
        for name, p in _bare(model).named_parameters():
            if name in self.averages:
                self.averages[name].copy_(p.detach())

    def averaged_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged weights in place of its trainable ones."""
        state = _bare(model).state_dict()
        return {k: (self.averages[k].to(v.dtype) if k in self.averages else v).detach().clone() for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "averages": self.averages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for name, value in state["averages"].items():
            self.averages[name].copy_(value)


def _bare(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model  # unwrap DDP


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on ``device``: CUDA with bf16 support, or a CPU whose
    oneDNN kernels have native bf16 (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower
    than fp32, so training stays in fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # Private helpers (torch.cpu); a later torch without them falls back to fp32.
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check is not None and check() for check in checks)
    return False


def step_precision(channels_last: bool, bf16: bool, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(channels-last, autocast dtype) for training on ``device`` from ``train.channels_last`` and
    ``train.bf16``: bf16 only where it is native (``bf16_native``). The train worker and the
    benchmarks' plain loop both use this, so they compare like with like."""
    return channels_last, (torch.bfloat16 if bf16 and bf16_native(device) else None)


def to_model_input(batch: torch.Tensor, in_channels: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x H x W x C -> float N x C x H x W in [0, 1] on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    if in_channels == 1:
        x = x[:, :1]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def prefetch_to_device(batches, device: torch.device):
    """The (inputs, targets) stream with each batch copied to a CUDA ``device`` one step ahead,
    on a side stream, so the host-to-device copy overlaps the step before it (the batches should
    come from pinned memory: ``train_batches(pin_memory=True)``). Elsewhere the stream as it is."""
    if device.type != "cuda":
        yield from batches
        return
    copier = torch.cuda.Stream(device)

    def ahead():
        inputs, targets = next(batches)
        with torch.cuda.stream(copier):
            return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    upcoming = ahead()
    while True:
        torch.cuda.current_stream(device).wait_stream(copier)
        ready = upcoming
        for tensor in ready:  # memory the copier filled, used on the compute stream
            tensor.record_stream(torch.cuda.current_stream(device))
        upcoming = ahead()
        yield ready


def checkpoint_state(model: nn.Module, optimizer, scheduler, step: int, extra: dict[str, Any],
                     average: WeightAverage | None = None, adversary: Adversary | None = None) -> dict[str, Any]:
    """What a checkpoint holds. ``model`` is the weights to use (the average when there is one);
    ``last_model`` the last step's, which a resumed run continues from; ``adversary`` the
    discriminator and its optimiser, resumed with the network."""
    state = {
        "model": average.averaged_state(model) if average else _bare(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        **extra,
    }
    if average:
        state["last_model"] = _bare(model).state_dict()
        state["average"] = average.state_dict()
    if adversary:
        state["adversary"] = adversary.state_dict()
    return state


def restore_state(state: dict[str, Any], model: nn.Module, optimizer, scheduler, average: WeightAverage | None = None,
                  adversary: Adversary | None = None) -> int:
    _bare(model).load_state_dict(state.get("last_model", state["model"]))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if average and "average" in state:
        average.load_state_dict(state["average"])
    elif average:  # a checkpoint written without averaging: start the average from its weights
        average.restart_from(model)
    if adversary and "adversary" in state:
        adversary.load_state_dict(state["adversary"])
    return int(state["step"])
