"""``model.init``: the weights a training run starts from, as the training loop asks for them.

The loop (:class:`gmim.engine.loop.Trainer`) knows nothing of Swin UNETRs: before it writes the
run's ``config.yaml`` it calls :meth:`InitialWeights.resolve` (the weights fix the architecture
fields left unset, and the patch merging), and once the method has built its model,
:meth:`InitialWeights.load` (the weights into the module the method names, with a report).
"""

from __future__ import annotations

import torch

from gmim.swin.config import ARCHITECTURE_KEYS, SwinConfig
from gmim.swin.merging import MergingChoice
from gmim.swin.weights import WeightReport, Weights, load_weights, read_weights

__all__ = ["InitialWeights"]


class InitialWeights:
    """The ``model`` section's ``init`` weights, read once and loaded once."""

    def __init__(self, model: SwinConfig) -> None:
        self.model = model
        self.weights: Weights | None = None  # from resolve until load
        self.merging: MergingChoice | None = None  # the patch merging built for them, and why

    @property
    def inherited(self) -> tuple[str, ...]:
        """The settings a resume takes from the run where they are unset."""
        return ("model.init", *(f"model.{name}" for name in ARCHITECTURE_KEYS))

    def resolve(self) -> None:
        """Read ``model.init`` and fill the architecture fields left unset from it (a setting it
        contradicts is refused in one line)."""
        init = self.model.init
        self.weights = read_weights(init) if init is not None else None
        found = self.weights.architecture if self.weights is not None else None
        self.merging = self.model.take_architecture(found, init or "", self.weights.merging if self.weights is not None else None)

    def load(self, module: torch.nn.Module) -> WeightReport | None:
        """The weights into ``module`` (a ``SwinUNETR`` or its encoder) and what went where; None
        when there are none (no ``model.init``, or a resume)."""
        if self.weights is None:
            return None
        report = load_weights(module, self.weights, self.model.adapt_channels)
        report.merging = self.merging
        self.weights = None
        return report
