"""What this machine is, and which precision it runs natively: the facts every timing needs next to it.

A 2-core CPU with AVX512-BF16 or AMX trains the CNN several times faster in ``bf16-mixed`` than an AVX2-only CPU can
in ``32-true``; a time without its machine class is not a result. ``describe`` is the one line a run prints at its
start, ``hardware_info`` what ``results.json`` records.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from typing import Any, Literal

import torch

from cifar_lightning.devices import cpu_flags, cpu_model, cpu_supports_bf16

DefaultPrecision = Literal["bf16-mixed", "32-true"]


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h): the size from which a block gets its own mmap
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value


def uses_cuda(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def default_precision(accelerator: str) -> DefaultPrecision:
    """bf16-mixed where the hardware runs bf16 natively (recent GPUs, AVX512-BF16/AMX CPUs), else 32-true."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_supports_bf16() else "32-true"
    return "32-true"


def runs_natively(accelerator: str, precision: str) -> bool:
    """Whether the hardware has arithmetic for ``precision`` (rather than converting to fp32 and back)."""
    if "bf16" in precision:
        return torch.cuda.is_bf16_supported() if uses_cuda(accelerator) else cpu_supports_bf16()
    if precision.startswith("16"):
        return uses_cuda(accelerator)
    return True


@functools.cache
def return_freed_memory() -> bool:
    """Fixes glibc's mmap threshold at its initial 128 KB, so every large block freed goes back to the system.

    By default glibc raises the threshold (up to 32 MB) each time it frees a mapped block, after which blocks below
    it come from the heap and stay resident when freed; progressive resizing alternates activations of two sizes,
    and the heap fragments past the 3 GB target in fp32 at no speed gain there. Elsewhere the reuse of heap blocks is
    worth its memory (in bf16, and in fp32 runs of short steps such as the MLP's, which faulting the returned blocks
    in again slows), so the CLI fixes it for fp32 CPU runs with progressive resizing only (figures in
    benchmarks/RESULTS.md). Returns whether it applied (glibc only: Linux).
    """
    return platform.libc_ver()[0] == "glibc" and bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def hardware_info(accelerator: str, precision: str) -> dict[str, Any]:
    """The machine as ``results.json`` records it: device, CPU model and speed flags, kernels, threads."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        # torch's vector kernels (ATEN_CPU_CAPABILITY may cap them below what the CPU has, e.g. to emulate AVX2)
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "precision_native": runs_natively(accelerator, precision),
        "gpu": torch.cuda.get_device_name() if uses_cuda(accelerator) else None,
        # 2 MB pages for large CPU tensors (train.py asks for them): fewer page faults per step, faster CPU steps
        "huge_page_tensors": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
        # whether this process called return_freed_memory (train.py does for fp32 CPU runs) and it applied
        "malloc_returns_freed": bool(return_freed_memory.cache_info().currsize) and return_freed_memory(),
    }
    if isa := os.environ.get("ONEDNN_MAX_CPU_ISA"):
        info["onednn_max_cpu_isa"] = isa
    return info


def describe(accelerator: str, precision: str, info: dict[str, Any] | None = None) -> str:
    """One line: where the run computes, in which precision, whether natively, and on how many threads.

    ``info`` is ``hardware_info(accelerator, precision)`` where the caller has it already."""
    info = info or hardware_info(accelerator, precision)
    device = f"GPU {info['gpu']}" if info["gpu"] else f"CPU {info['cpu']} ({', '.join(info['cpu_flags']) or '-'})"
    native = "native" if info["precision_native"] else "not native here: emulated, slow"
    capped_isa = "avx512f" in info["cpu_flags"] and (info["cpu_kernels"] != "AVX512" or "onednn_max_cpu_isa" in info)
    capped = f", kernels capped at {info.get('onednn_max_cpu_isa', info['cpu_kernels'])}" if capped_isa else ""
    return f"Hardware: {device}, {info['threads']} threads{capped}; precision {precision} ({native})."
