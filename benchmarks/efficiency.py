"""How much of the machine a training step uses: FLOP/s of one step against the same machine's matmul peak.

    python benchmarks/efficiency.py [--model cnn mlp] [--batch N] [--steps 6] [--precision 32-true|bf16-mixed]
    python benchmarks/efficiency.py --model cnn --set widths=[64,256,256]    # any init_args override
    python benchmarks/efficiency.py --model cnn --device cuda --profile OUT/profile.txt   # a GPU, with a profile

FLOPs per training image come from ``torch.utils.flop_counter`` over one forward and backward pass of the network
of ``configs/<model>.yaml`` (convolutions and matmuls; element-wise work is not counted, as usual). The step is timed
as the training loop runs it: forward, loss, backward and the optimizer (Muon's Newton-Schulz included), at the
precision ``train.py`` picks for this machine unless ``--precision`` says otherwise; the first steps are warm-up.
The peak is a 4,096-square (8,192 on a GPU) matmul in the same precision, timed in the same process. The last line
per model is ``<model>_efficiency=<percent of peak>``. ``--profile`` adds torch.profiler's table of the operators
of three steps, by their own time on the device, so the step's costliest kernels and host work are named.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from overhead import load_config, model_class
from torch.utils.flop_counter import FlopCounterMode

from cifar_lightning.run.hardware import default_precision, describe


def autocast(device: str, precision: str) -> AbstractContextManager[object]:
    if precision == "bf16-mixed":
        return torch.autocast(device, dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: str) -> None:
    if device == "cuda":  # kernels run asynchronously: time them to their end, not to their launch
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2, device: str = "cpu") -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(precision: str, device: str = "cpu", repeats: int = 5) -> float:
    """FLOP/s of a large square matmul: what this machine's BLAS/oneDNN/cuBLAS reaches at its best, in this
    precision."""
    n = 8192 if device == "cuda" else 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    if precision == "bf16-mixed":
        a, b = a.bfloat16(), b.bfloat16()
    return 2 * n**3 / timed(lambda: a @ b, repeats, warmup=1, device=device)


def profile(step: Callable[[], None], device: str, path: str, title: str) -> None:
    """torch.profiler's operator table for three steps, costliest first, written to ``path``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        synchronize(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    with open(path, "a") as f:
        f.write(f"== {title}\n" + prof.key_averages().table(sort_by=key, row_limit=25) + "\n")
    print(f"profile of 3 steps appended to {path}")


def measure(
    model: str,
    batch: int,
    steps: int,
    precision: str,
    overrides: dict[str, object],
    device: str = "cpu",
    profile_path: str | None = None,
) -> dict[str, float]:
    model_args, _ = load_config(model)
    module = model_class(model)(**{**model_args, **overrides})
    module.to(device)
    opt = module.make_optimizer()
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter, autocast(device, precision):
        F.cross_entropy(module(x), y).backward()
    flops_per_image = counter.get_total_flops() / batch
    module.train()
    seconds = timed(step, steps, device=device)
    achieved = flops_per_image * batch / seconds
    peak = matmul_peak(precision, device)
    print(
        f"{model}: {flops_per_image / 1e9:.3f} GFLOP per training image, batch {batch}, {precision}: "
        f"{seconds * 1e3:.1f} ms/step = {batch / seconds:,.0f} img/s = {achieved / 1e9:,.0f} GFLOP/s; "
        f"matmul peak {peak / 1e9:,.0f} GFLOP/s"
    )
    print(f"{model}_efficiency={100 * achieved / peak:.1f}%")
    if profile_path:
        profile(step, device, profile_path, f"{model}, batch {batch}, {precision}, {seconds * 1e3:.1f} ms/step")
    return {"images_per_second": batch / seconds, "efficiency": achieved / peak}


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", default=["cnn", "mlp"], help="configs/<name>.yaml to measure")
    parser.add_argument("--batch", type=int, default=None, help="default: the config's batch size")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--precision", default=None, help="default: what train.py picks here")
    parser.add_argument("--set", nargs="*", default=[], help="model init_args overrides, key=value")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--profile", default=None, help="append torch.profiler's operator table to this file")
    args = parser.parse_args()
    precision = args.precision or default_precision(args.device)
    print(describe(args.device, precision))
    overrides = dict(parse_override(s) for s in args.set)
    for model in args.model:
        batch = args.batch or load_config(model)[1].get("batch_size", 256)
        measure(model, batch, args.steps, precision, overrides, args.device, args.profile)


if __name__ == "__main__":
    main()
