"""Device names as users type them, and seeding of every random number generator we use."""

from __future__ import annotations

import random

import numpy as np
import torch

from gmim.errors import InputError

__all__ = ["resolve_device", "seed_everything"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:N, mps)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: not supported (auto, cpu, cuda, cuda:N, mps)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
