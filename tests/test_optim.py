"""The Muon optimizer: orthogonalized filter updates, and plain Nesterov SGD for everything else."""

from __future__ import annotations

import pytest
import torch

from cifar_lightning.models.optim import Muon, orthogonalize, param_groups


def spread_matrix(rows: int, cols: int, smallest: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random matrix with singular values from 1 down to ``smallest``, and its polar factor ``U V^T``."""
    u, _ = torch.linalg.qr(torch.randn(rows, min(rows, cols)))
    v, _ = torch.linalg.qr(torch.randn(cols, min(rows, cols)))
    s = torch.logspace(0, torch.log10(torch.tensor(smallest)).item(), min(rows, cols))
    return u @ torch.diag(s) @ v.T, u @ v.T


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])  # bf16 where native, fp32 on AVX2-only CPUs
@pytest.mark.parametrize("shape", [(384, 3456), (96, 216), (200, 50)])
def test_orthogonalize_equalizes_singular_values_and_keeps_directions(
    shape: tuple[int, int], dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    g, polar = spread_matrix(*shape, smallest=0.1)  # a 10x spread: a few dominant directions, many weak ones
    out = orthogonalize(g, dtype=dtype)
    assert out.shape == g.shape and out.dtype == g.dtype
    s = torch.linalg.svdvals(out)
    assert s.max() < 1.5 and s.max() / s.min() < 3, f"singular values {s.min():.2f}..{s.max():.2f}: still spread"
    cosine = (out * polar).sum() / (out.norm() * polar.norm())
    assert cosine > 0.95  # the same singular directions as g: U S' V^T, not some other orthogonal matrix


def test_sgd_groups_step_exactly_like_torch_sgd() -> None:
    torch.manual_seed(0)
    ours, theirs = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    theirs = theirs.copy_(ours.detach()).requires_grad_()
    muon = Muon([{"params": [ours], "weight_decay": 0.01}], lr=0.1, momentum=0.85)
    sgd = torch.optim.SGD([theirs], lr=0.1, momentum=0.85, weight_decay=0.01, nesterov=True)
    for _ in range(3):
        grad = torch.randn(5, 3)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        muon.step(), sgd.step()
    torch.testing.assert_close(ours, theirs)


def test_filters_are_renormalized_then_take_an_orthogonal_step() -> None:
    """Each step rescales a filter bank to norm sqrt(out_channels), then moves it by lr times an orthogonal matrix."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 8, 3, 3) * 5)
    opt = Muon([{"params": [weight], "orthogonalize": True, "momentum": 0.6}], lr=0.05, momentum=0.9)
    weight.grad = torch.randn_like(weight)
    before = weight.detach() * 16**0.5 / weight.detach().norm()
    opt.step()
    step = ((before - weight.detach()) / 0.05).reshape(16, -1)
    s = torch.linalg.svdvals(step)
    assert s.min() > 0.5 and s.max() < 1.5
    assert torch.linalg.matrix_rank(step) == 16  # every output channel moved, not only the dominant directions


def test_param_groups_send_only_trainable_filters_to_muon() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.randn(1, 3, 8, 8))
    net[0].weight.requires_grad_(False)  # a frozen stem, like the whitening layer
    matrices, vectors, filters = param_groups(net, lr=0.1, weight_decay=1e-3, bias_lr_scale=4, muon_lr=0.2)
    assert filters["params"] == [net[1].weight] and filters["orthogonalize"] and filters["lr"] == 0.2
    assert matrices["params"] == [net[3].weight]  # the linear head stays on SGD
    assert len(vectors["params"]) == 3 and filters["weight_decay"] == 0.0
    assert len(param_groups(net, 0.1, 1e-3, 4)) == 2  # without muon_lr, filters stay with the matrices
