"""The published objective (Tang et al., CVPR 2022; docs/swin-ssl.md §3): L = λ_rot·L_rot + λ_contrast·L_contrast + λ_rec·L_rec.

- L_rot: cross-entropy of the rotation logits of both views against their quarter turns;
- L_contrast: NT-Xent (MONAI's ``ContrastiveLoss``, τ = 0.5) between the two views' projections,
  each view's positive the other view of its crop, the other 2B − 2 projections its negatives;
- L_rec: the mean absolute error of both views' reconstructions against the turned views
  before their drop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from torch import Tensor

from gmim.swinssl.config import LossConfig
from gmim.swinssl.model import SSLOutput
from gmim.swinssl.views import Views

__all__ = ["SwinSSLLoss"]


class SwinSSLLoss:
    """The weighted sum of the three pretext losses, and each term (``loss``, ``rotation``,
    ``contrastive``, ``reconstruction``; the terms unweighted)."""

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.contrastive = ContrastiveLoss(temperature=config.temperature)

    def __call__(self, output: SSLOutput, views: Views) -> dict[str, Tensor]:
        """``output`` of the network on ``views.inputs`` (view 1 of every crop, then view 2)."""
        first, second = output.contrastive.float().chunk(2)
        rotation = F.cross_entropy(output.rotation.float(), views.turns)
        contrastive = self.contrastive(first, second)
        reconstruction = F.l1_loss(output.reconstruction.float(), views.targets.float())
        c = self.config
        loss = c.rotation * rotation + c.contrastive * contrastive + c.reconstruction * reconstruction
        return {"loss": loss, "rotation": rotation, "contrastive": contrastive, "reconstruction": reconstruction}

    @staticmethod
    def rotation_accuracy(output: SSLOutput, views: Views) -> Tensor:
        """The share of views whose quarter turns the rotation head gets right."""
        return (output.rotation.argmax(1) == views.turns).to(torch.float32).mean()
