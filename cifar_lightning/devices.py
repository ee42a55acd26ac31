"""What this machine's processors can do: the CPU's model and speed flags, and whether bf16 is native (so faster
than fp32) on a device. The model layer asks it for Muon's Newton-Schulz precision; ``run.hardware`` for the
precision a run defaults to and the line a run prints."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from cifar_lightning.internals import cpu_has_bf16_units

# The CPU flags that decide the speed of a training step: vector width (avx2, avx512f) and native bf16.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of ``SPEED_FLAGS`` the CPU reports (Linux); elsewhere the vector ISA torch's kernels were built for."""
    flags = set(_cpuinfo().get("flags", "").split())
    if flags:
        return [f for f in SPEED_FLAGS if f in flags]
    return [torch.backends.cpu.get_cpu_capability().lower()]


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic (AVX512-BF16 or AMX) and torch's kernels may use it.

    Kernels capped below AVX-512 by ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` (how an AVX2-only machine is
    emulated) count as no: bf16 then runs through conversions, several times slower than fp32.
    """
    if not cpu_has_bf16_units():
        return False
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    onednn_ok = onednn_cap in ("ALL", "DEFAULT") or "AVX512" in onednn_cap or "AMX" in onednn_cap
    return onednn_ok and torch.backends.cpu.get_cpu_capability() == "AVX512"


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls on ``device`` are faster than fp32 ones (CUDA GPUs; CPUs as ``cpu_supports_bf16``)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16())
