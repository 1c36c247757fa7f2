"""Which device a stage runs on: one rule for every command."""

from __future__ import annotations

import functools
import os
import platform
import time
from contextlib import nullcontext

import torch

from .errors import InputError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; under torchrun each process takes its LOCAL_RANK GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(dev: torch.device) -> str:
    """What a figure ran on, as tables and model cards name it: the GPU's name, or the CPU's model with the thread
    count (CPUs of one architecture differ: bf16 pays on some and not on others)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, as lscpu shows it), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def fast_bf16(dev: torch.device) -> bool:
    """Whether bf16 autocast speeds `dev` up: CUDA with bf16, or a CPU whose bf16 convolutions beat float32.

    CPUs differ: with AVX512-BF16 some run a convolution's bf16 kernels twice as fast as float32, others (measured:
    an Intel Xeon with the flag) slower. So on a CPU with a bf16 instruction set, a conv step of the generators'
    shape is timed both ways once per process (about a tenth of a second) and the faster wins.
    """
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    if not any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")):
        return False
    return _seconds_per_conv(True) < 0.8 * _seconds_per_conv(False)


def _seconds_per_conv(bf16: bool, repeats: int = 3) -> float:
    """Best time of a 3x3 conv forward and backward at 64 channels, 64x32, batch 8, channels_last."""
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 64, 32, generator=gen).contiguous(memory_format=torch.channels_last).requires_grad_()
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x).float().sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


AMP_CHOICES = ("auto", "bf16", "float32")


def bf16_available(dev: torch.device) -> bool:
    """Whether `dev` can compute in bf16 at all (CUDA with bf16; a CPU with AVX512-BF16 or AMX)."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return dev.type == "cpu" and any(getattr(cpu, name, lambda: False)()
                                     for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def choose_precision(dev: torch.device, amp: str | bool = "auto", recorded: str | None = None
                     ) -> tuple[str, str | None]:
    """(precision, note): "bf16" or "float32" for a run, and a one-line note when it is not what was asked.

    `amp`: "auto" (bf16 where `fast_bf16` measures it faster), "bf16" (forced) or "float32" (legacy True/False: auto
    and float32). A resumed run keeps the precision its checkpoint `recorded`, so a resume on another CPU does not
    switch silently; where that CPU has no bf16 it continues in float32 and the note says so.
    """
    amp = {True: "auto", False: "float32"}.get(amp, amp)
    if amp not in AMP_CHOICES:
        raise InputError(f"train.amp {amp!r}: one of {', '.join(AMP_CHOICES)}")
    wanted = recorded if recorded in ("bf16", "float32") else (
        "bf16" if amp == "bf16" or (amp == "auto" and fast_bf16(dev)) else "float32")
    if wanted == "bf16" and not bf16_available(dev):
        why = "the checkpoint trained in bf16" if recorded == "bf16" else "train.amp is bf16"
        return "float32", f"{why}, but this {dev.type.upper()} has no bf16: continuing in float32"
    return wanted, None


def autocast(dev: torch.device, enabled: bool | str = True):
    """A context factory: bf16 autocast on `dev` where it pays (see `fast_bf16`) or where `enabled` is "bf16";
    else a no-op. `enabled` is a bool (True: where it pays) or a precision from `choose_precision`."""
    bf16 = enabled == "bf16" or (enabled is True and fast_bf16(dev))
    if bf16:
        return lambda: torch.autocast(dev.type, dtype=torch.bfloat16)
    return nullcontext
