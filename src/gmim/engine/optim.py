"""AdamW with a linear warm-up then cosine decay, the schedule of the GMIM prototype and of Swin UNETR."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["adamw", "warmup_cosine"]


def adamw(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over trainable parameters or parameter groups (groups may carry their own ``lr``);
    ``fused``: PyTorch's single-kernel implementation (CUDA parameters)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_factor: float = 0.0) -> LambdaLR:
    """Learning rate factor rising linearly from 1/(warmup+1) to 1 over ``warmup_steps``, then a cosine
    down to ``final_factor`` at ``total_steps``. Per-group base rates keep their ratio throughout."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
