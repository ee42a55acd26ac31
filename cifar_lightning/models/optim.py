"""Optimization pieces shared by every model: parameter groups, the learning-rate schedule, Muon, and lookahead."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cifar_lightning.devices import fast_bf16

OptimizerName = Literal["sgd", "adamw", "muon"]


Schedule = Literal["linear", "cosine", "constant"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule) -> float:
    """Learning-rate multiplier: linear warm-up from ~0 to 1, then ``schedule`` down to 0 at ``total_steps``.

    ``linear`` is the triangular one-cycle of the fast CIFAR recipes; ``cosine`` the half-cosine decay.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return _decay(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)), schedule)


def lr_factor_at(progress: float, warmup_fraction: float, schedule: Schedule) -> float:
    """``lr_factor`` driven by the fraction of training done (a time budget's) instead of the step count."""
    if progress < warmup_fraction:
        return max(progress, 1e-3) / warmup_fraction
    return _decay(min(1.0, (progress - warmup_fraction) / max(1e-9, 1 - warmup_fraction)), schedule)


def schedule_factor(
    warmup_fraction: float,
    schedule: Schedule,
    *,
    total_steps: int | None = None,
    progress: Callable[[], float] | None = None,
) -> Callable[[int], float]:
    """``LambdaLR``'s multiplier per step: by the step count over ``total_steps`` or, given ``progress`` instead (a
    time budget's fraction used, read at every step), by that fraction."""
    if (total_steps is None) == (progress is None):
        raise ValueError("schedule_factor needs exactly one of total_steps (a step count) and progress (a callable).")
    if progress is not None:
        return lambda step: lr_factor_at(progress(), warmup_fraction, schedule)
    assert total_steps is not None  # for mypy: the check above
    warmup = max(1, round(warmup_fraction * total_steps))
    return partial(lr_factor, total_steps=total_steps, warmup_steps=warmup, schedule=schedule)


def _decay(progress: float, schedule: Schedule) -> float:
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def param_groups(
    module: nn.Module, lr: float, weight_decay: float, bias_lr_scale: float, muon_lr: float | None = None
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: matrices and filters, then 1-D ones (biases, norm shifts).

    The 1-D group gets ``lr * bias_lr_scale`` and ``weight_decay / bias_lr_scale``: the product, the fraction decayed
    per step, stays the same for every parameter. With ``muon_lr``, the hidden layers' weights (every trainable matrix
    or filter bank but the last, the output layer, which stays on SGD as in Muon's own recipe) move to a third group
    of ``Muon`` steps at that rate (no weight decay: Muon keeps their norm fixed instead).
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    matrices = [p for p in trainable if p.ndim > 1]
    # the last is the output layer: registered last in both networks, and in any Sequential
    filters = matrices[:-1] if muon_lr is not None else []
    others = [p for p in trainable if all(p is not f for f in filters)]
    groups = [
        {"params": [p for p in others if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
        {
            "params": [p for p in others if p.ndim <= 1],
            "lr": lr * bias_lr_scale,
            "weight_decay": weight_decay / bias_lr_scale,
        },
    ]
    if filters:
        groups.append({"params": filters, "lr": muon_lr, "weight_decay": 0.0, "orthogonalize": True})
    return groups


@torch.no_grad()
def orthogonalize(g: Tensor, steps: int = 3, eps: float = 1e-7, dtype: torch.dtype | None = None) -> Tensor:
    """Approximately ``U V^T`` of ``g = U S V^T``: 3 quintic Newton-Schulz iterations (Muon's, as tuned in
    airbench94_muon). The result's singular values land roughly in [0.5, 1.5] rather than at 1, which its authors
    measured to train as well.

    The iterations run in bf16 where the hardware multiplies bf16 natively (as airbench does), and in fp32 elsewhere:
    on an AVX2-only CPU bf16 matmuls are converted back and forth, and took a quarter of the fast CNN's training
    step in the profile of benchmarks/RESULTS.md. ``dtype`` forces one.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype or (torch.bfloat16 if fast_bf16(g.device) else torch.float32))
    x = x / (x.norm() + eps)  # singular values <= 1, where the iteration converges
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T  # the smaller of the two Gram matrices
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum, where groups marked ``orthogonalize`` take Muon steps (Jordan et al., 2024).

    A Muon step replaces the momentum of each weight matrix or filter bank (viewed as ``(out, in * k * k)``) with its
    orthogonalized version: every direction of the update moves at the same rate, so rarely-excited directions are
    not starved by a few dominant ones. Filters are rescaled to a fixed norm (``sqrt(out)``) before each step, as in
    airbench94_muon; that keeps the step's relative size set by ``lr`` alone, and replaces weight decay.
    Other groups are plain Nesterov SGD with coupled weight decay, like ``torch.optim.SGD``.

    Args:
        params: parameters or groups; a group with ``orthogonalize=True`` gets Muon steps.
        lr: learning rate of groups that set none.
        momentum: Nesterov momentum of groups that set none (airbench94_muon: 0.85 for SGD, 0.6 for Muon groups).
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": 0.0, "orthogonalize": False})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            muon, momentum = group["orthogonalize"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if muon else p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                update = grad.add(buf.mul_(momentum).add_(grad), alpha=momentum)  # Nesterov
                if muon:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalize(update.reshape(len(p), -1)).view_as(p)
                p.add_(update, alpha=-group["lr"])
        return loss


def build_optimizer(
    module: nn.Module,
    *,
    optimizer: OptimizerName,
    lr: float,
    momentum: float,
    weight_decay: float,
    bias_lr_scale: float,
    muon_lr: float,
    muon_momentum: float,
) -> torch.optim.Optimizer:
    """The optimizer named ``optimizer`` over ``param_groups(module, ...)``; ``muon_*`` apply to ``muon`` only.
    Keyword-only, named as the LightningModule's hyperparameters, so they pass by name."""
    groups = param_groups(module, lr, weight_decay, bias_lr_scale, muon_lr if optimizer == "muon" else None)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if not groups[-1].get("orthogonalize"):  # param_groups appends the filter group only when there are filters
        net = getattr(module, "net", module)
        raise ValueError(
            f"optimizer='muon' orthogonalizes the hidden layers' weights, and {type(net).__name__} has no trainable "
            "hidden layer; use --model.optimizer sgd or adamw."
        )
    groups[-1]["momentum"] = muon_momentum
    return Muon(groups, lr, momentum)


class Lookahead:
    """airbench's lookahead: every ``every`` steps, slow <- decay * slow + (1 - decay) * fast, then fast <- slow.

    ``decay`` grows as ``0.95**5 * progress**3`` (``progress``: the share of training done, ``step / total`` or a
    time budget's): no averaging early, when the weights move fast, and strong averaging at the end; the ``final``
    step copies the slow weights in, so the run ends on them. Batch-norm statistics are averaged too. The slow copy
    travels in checkpoints (``state_dict``), so a resumed run continues the same average.
    """

    def __init__(self, every: int = 5) -> None:
        self.every = every
        self.slow: dict[str, Tensor] = {}

    @torch.no_grad()
    def step(self, net: nn.Module, step: int, progress: float, final: bool) -> None:
        if final:
            decay = 1.0
        elif step % self.every == 0:
            decay = 0.95**5 * progress**3
        else:
            return
        state = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
        if not self.slow:
            self.slow = {k: v.detach().clone() for k, v in state.items()}
        for key, fast in state.items():
            if self.slow[key].device != fast.device:  # restored from a checkpoint, which loads onto the CPU
                self.slow[key] = self.slow[key].to(fast.device)
            self.slow[key].lerp_(fast, 1 - decay)
            fast.copy_(self.slow[key])

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.slow = dict(state)
