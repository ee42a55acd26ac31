"""Optimization pieces shared by every model: parameter groups, the learning-rate schedule, and lookahead."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["linear", "cosine", "constant"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule) -> float:
    """Learning-rate multiplier: linear warm-up from ~0 to 1, then ``schedule`` down to 0 at ``total_steps``.

    ``linear`` is the triangular one-cycle of the fast CIFAR recipes; ``cosine`` the half-cosine decay.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def param_groups(module: nn.Module, lr: float, weight_decay: float, bias_lr_scale: float) -> list[dict[str, Any]]:
    """Two optimizer groups of the trainable parameters: matrices and filters, then 1-D ones (biases, norm shifts).

    The 1-D group gets ``lr * bias_lr_scale`` and ``weight_decay / bias_lr_scale``: the product, the fraction decayed
    per step, stays the same for every parameter.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "lr": lr * bias_lr_scale,
         "weight_decay": weight_decay / bias_lr_scale},
    ]  # fmt: skip


class Lookahead:
    """airbench's lookahead: every ``every`` steps, slow <- decay * slow + (1 - decay) * fast, then fast <- slow.

    ``decay`` grows as ``0.95**5 * (step / total)**3``: no averaging early, when the weights move fast, and strong
    averaging at the end; the last step copies the slow weights in, so the run ends on them. Batch-norm statistics
    are averaged too. The slow copy is not checkpointed: a resumed run restarts it from the current weights.
    """

    def __init__(self, every: int = 5) -> None:
        self.every = every
        self.slow: dict[str, Tensor] = {}

    @torch.no_grad()
    def step(self, net: nn.Module, step: int, total: int) -> None:
        if step >= total:
            decay = 1.0
        elif step % self.every == 0:
            decay = 0.95**5 * (step / total) ** 3
        else:
            return
        state = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
        if not self.slow:
            self.slow = {k: v.detach().clone() for k, v in state.items()}
        for key, fast in state.items():
            self.slow[key].lerp_(fast, 1 - decay)
            fast.copy_(self.slow[key])
