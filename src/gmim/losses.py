"""GMIM's losses: cross-correlation between the branches and masked reconstruction (spec §5)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gmim.model import GMIMOutput

__all__ = ["GMIMLoss", "cross_correlation_loss", "reconstruction_loss"]


def cross_correlation_loss(
    online: Tensor, target: Tensor, off_diagonal_weight: float = 0.005, standardize: bool = False
) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² with C = Zxᵀ Zy / n per sample, averaged over the batch.

    ``online`` and ``target`` are (B, n, P) token projections. The prototype uses them as they are;
    ``standardize`` first brings each dimension to zero mean and unit (population) variance along
    the tokens, as Barlow Twins does along the batch (needs n ≥ 2).
    """
    if online.shape != target.shape or online.dim() != 3:
        raise ValueError(f"online and target must be equal (B, n, P) shapes, got {tuple(online.shape)} and {tuple(target.shape)}")
    zx, zy = online.float(), target.float()
    n = zx.shape[1]
    if standardize:
        if n < 2:
            raise ValueError("standardize needs at least 2 tokens per sample; use a larger crop")
        zx = (zx - zx.mean(1, keepdim=True)) / zx.std(1, correction=0, keepdim=True).clamp_min(1e-6)
        zy = (zy - zy.mean(1, keepdim=True)) / zy.std(1, correction=0, keepdim=True).clamp_min(1e-6)
    c = zx.transpose(1, 2) @ zy / n
    diagonal = torch.diagonal(c, dim1=1, dim2=2)
    on_diagonal = (1 - diagonal).pow(2).sum(-1)
    off_diagonal = c.pow(2).sum((1, 2)) - diagonal.pow(2).sum(-1)
    return (on_diagonal + off_diagonal_weight * off_diagonal).mean()


def reconstruction_loss(prediction: Tensor, target: Tensor, voxel_mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the voxels where ``voxel_mask`` (B, 1, D, H, W) is True, or over all.

    The mean is taken per sample, then over the batch, so that a sample weighs the same whether it
    shares its batch or is split over processes (the prototype pools the batch: the same when
    samples mask equally many voxels). A sample with no masked voxel (tiny cells can round to zero
    masked tokens) contributes 0.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    squared = (prediction.float() - target.float()).pow(2)
    if voxel_mask is None:
        return squared.mean()
    weight = voxel_mask.to(squared.dtype).expand_as(squared)
    per_sample = (squared * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)
    return per_sample.mean()


class GMIMLoss(nn.Module):
    """α1·L_cc + α2·L_rec (α1 = 0.005, α2 = 1, λ = 0.005 by default, reconstruction on masked voxels)."""

    def __init__(
        self,
        alpha_cc: float = 0.005,
        alpha_rec: float = 1.0,
        off_diagonal_weight: float = 0.005,
        masked_only: bool = True,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("alpha_cc", alpha_cc), ("alpha_rec", alpha_rec), ("off_diagonal_weight", off_diagonal_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.alpha_cc = alpha_cc
        self.alpha_rec = alpha_rec
        self.off_diagonal_weight = off_diagonal_weight
        self.masked_only = masked_only
        self.standardize = standardize

    def forward(self, output: GMIMOutput, x: Tensor, voxel_mask: Tensor | None) -> dict[str, Tensor]:
        """Loss terms for the clean online view ``x`` and the voxel mask of point a0."""
        cc = cross_correlation_loss(output.online, output.target, self.off_diagonal_weight, self.standardize)
        rec = reconstruction_loss(output.reconstruction, x, voxel_mask if self.masked_only else None)
        return {"loss": self.alpha_cc * cc + self.alpha_rec * rec, "cross_correlation": cc, "reconstruction": rec}
