"""Which device a stage runs on: one rule for every command."""

from __future__ import annotations

import os

import torch

from .errors import InputError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; under torchrun each process takes its LOCAL_RANK GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev
