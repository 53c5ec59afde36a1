"""Checkpoints: atomic, loadable with ``weights_only=True``, and complete enough for an exact resume.

A training checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the step,
and the random states of Python, NumPy and PyTorch (CPU and CUDA) of every rank, all as tensors,
lists and numbers, so that loading it never unpickles arbitrary objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gmim.atomic import atomic_path
from gmim.engine.distributed import DistributedContext, gather_objects, unwrap
from gmim.engine.precision import MixedPrecision
from gmim.errors import InputError

__all__ = [
    "restore_training_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "training_state",
]


def rng_state() -> dict[str, Any]:
    """This process's random states, as tensors and lists."""
    version, state, gauss = random.getstate()
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple), "numpy's global RandomState is an MT19937, whose legacy state is a tuple"
    _, keys, position, has_gauss, cached = legacy
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` atomically: an interrupted save leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: MixedPrecision,
    step: int,
    context: DistributedContext,
) -> dict[str, Any]:
    """Everything a resume needs. Collective under ``torchrun``: every rank calls it (RNG states of
    all ranks are gathered); rank 0 then saves it."""
    return {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.state_dict(),
        "step": step,
        "rng": gather_objects(rng_state(), context),
    }


def restore_training_state(
    checkpoint: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: MixedPrecision,
    context: DistributedContext,
    where: str = "checkpoint",
) -> int:
    """Load what :func:`training_state` saved into the live objects; returns the step to continue from."""
    missing = [k for k in ("model", "optimizer", "scheduler", "step", "rng") if k not in checkpoint]
    if missing:
        raise InputError(f"{where}: not a training checkpoint (no {', '.join(missing)})")
    if len(checkpoint["rng"]) != context.world_size:
        raise InputError(
            f"{where}: saved by {len(checkpoint['rng'])} process(es), resumed with {context.world_size}; "
            "an exact resume needs the same number"
        )
    unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    precision.load_state_dict(checkpoint.get("scaler", {}))
    set_rng_state(checkpoint["rng"][context.rank])
    return int(checkpoint["step"])
