"""Mixed precision: bf16 on CUDA devices that support it, else fp16 with a gradient scaler; off on CPU/MPS.

One :meth:`MixedPrecision.step` does backward, unscaling, gradient clipping and the optimizer step,
so that every training loop gets the order of these right.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch

__all__ = ["MixedPrecision"]


class MixedPrecision:
    """The autocast context and gradient scaler that ``enabled`` and the device call for."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device = device
        self.dtype: torch.dtype | None = None
        if enabled and device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def __repr__(self) -> str:
        return f"MixedPrecision({self.dtype or 'off'})"

    def autocast(self) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.nn.Parameter],
        clip: float | None = None,
    ) -> torch.Tensor | None:
        """Backward and optimizer step; returns the gradient norm before clipping when ``clip`` is set."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        norm = None
        if clip is not None:
            self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(list(parameters), clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        return norm

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
