"""Whether bf16 pays on this hardware, for generation and for the audit's networks alike.
Profiles ask for bf16; where it is only emulated it is 10-20x slower than fp32 (measured:
autoencoder training on an AVX2-only EPYC), so it is dropped."""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def _cpu_flags() -> frozenset[str]:
    if platform.system() != "Linux":
        return frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 runs in hardware: CUDA devices that support it, CPUs with AVX512-BF16 or
    AMX (Linux). Elsewhere torch emulates bf16 and autocast slows everything down."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(_cpu_flags() & CPU_BF16_FLAGS)
    return False


@functools.cache
def _warn(device_type: str) -> None:
    log.warning(
        "bf16 requested but this %s has no native bf16 (AVX512-BF16/AMX): running in fp32, "
        "which is faster here",
        device_type,
    )


def effective_bf16(requested: bool, device: torch.device | str) -> bool:
    """`requested`, unless the hardware only emulates bf16 (then fp32, with one warning)."""
    if requested and not native_bf16(device):
        _warn(torch.device(device).type)
        return False
    return requested


def effective_mixed_precision(requested: str, device: torch.device | str) -> str:
    """accelerate's mixed_precision setting with bf16 dropped where it is only emulated."""
    if requested == "bf16" and not effective_bf16(True, device):
        return "no"
    return requested
