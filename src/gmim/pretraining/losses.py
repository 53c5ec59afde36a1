"""GMIM's losses: cross-correlation between the branches and masked reconstruction (docs/method.md §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmim.pretraining.model import GMIMOutput
from gmim.swin.geometry import token_grid

__all__ = [
    "RECONSTRUCTION_MEANS",
    "GMIMLoss",
    "align_to_online",
    "correlation_penalty",
    "cross_correlation_loss",
    "cross_correlation_matrix",
    "reconstruction_loss",
    "variance_loss",
]


def cross_correlation_matrix(
    online: Tensor, target: Tensor, standardize: bool = False, token_weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """C = Zxᵀ Zy / n per sample (B, P, P), and which samples count (B,).

    ``online`` and ``target`` are (B, n, P) token projections. The prototype uses them as they are;
    ``standardize`` first brings each dimension to zero mean and unit (population) variance along
    the tokens, as Barlow Twins does along the batch (needs n ≥ 2). ``token_weights`` (B, n), 0 or
    1, restricts each sample to some tokens (those over the crops' overlap); a sample left with no
    token does not count.
    """
    if online.shape != target.shape or online.dim() != 3:
        raise ValueError(f"online and target must be equal (B, n, P) shapes, got {tuple(online.shape)} and {tuple(target.shape)}")
    zx, zy = online.float(), target.float()
    weights = torch.ones(zx.shape[:2], device=zx.device) if token_weights is None else token_weights.float()
    w = weights.unsqueeze(-1)
    n = weights.sum(1).clamp_min(1.0).view(-1, 1, 1)
    if standardize:
        if zx.shape[1] < 2:
            raise ValueError("standardize needs at least 2 tokens per sample; use a larger crop")

        def standardized(z: Tensor) -> Tensor:
            mean = (z * w).sum(1, keepdim=True) / n
            variance = ((z - mean) * w).pow(2).sum(1, keepdim=True) / n
            return (z - mean) / variance.clamp_min(1e-12).sqrt()  # clamped before the root: finite gradients

        zx, zy = standardized(zx), standardized(zy)
    return (zx * w).transpose(1, 2) @ zy / n, (weights.sum(1) > 0).float()


def cross_correlation_loss(
    online: Tensor,
    target: Tensor,
    off_diagonal_weight: float = 0.005,
    standardize: bool = False,
    token_weights: Tensor | None = None,
) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² with C of :func:`cross_correlation_matrix`, averaged over
    the samples that count."""
    c, counted = cross_correlation_matrix(online, target, standardize, token_weights)
    return correlation_penalty(c, counted, off_diagonal_weight)


def correlation_penalty(c: Tensor, counted: Tensor, off_diagonal_weight: float) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² per sample of ``c`` (B, P, P), averaged over ``counted``."""
    diagonal = torch.diagonal(c, dim1=1, dim2=2)
    on_diagonal = (1 - diagonal).pow(2).sum(-1)
    off_diagonal = c.pow(2).sum((1, 2)) - diagonal.pow(2).sum(-1)
    per_sample = on_diagonal + off_diagonal_weight * off_diagonal
    return (per_sample * counted).sum() / counted.sum().clamp_min(1.0)


def align_to_online(target: Tensor, token_shape: Sequence[int], offset: Tensor, token_size: int = 32) -> tuple[Tensor, Tensor]:
    """The target tokens at the places of the online tokens, and which online tokens have one.

    Online token i covers voxels [s·i, s·(i + 1)) of x along an axis (s = ``token_size``); with
    ``offset`` = start of y − start of x (B, 3) in voxels, that place is at token i − offset/s of
    y. The target's token grid is interpolated there (trilinearly, the edge tokens extended to the
    crop's border; the projection is linear, so interpolating projected tokens is interpolating
    features); online tokens whose centre lies outside y's crop get weight 0. Returns (B, n, P)
    tokens and (B, n) weights.
    """
    batch, n, channels = target.shape
    if math.prod(token_shape) != n or offset.shape != (batch, 3):
        raise ValueError(f"token_shape {tuple(token_shape)} and offset {tuple(offset.shape)} do not fit {n} tokens of {batch} samples")
    grid_y = target.transpose(1, 2).reshape(batch, channels, *token_shape).float()
    coordinates, valid = [], []
    for axis, size in enumerate(token_shape):
        place = torch.arange(size, device=target.device) - offset[:, axis : axis + 1].to(target.device).float() / token_size
        valid.append((place >= -0.5) & (place <= size - 0.5))
        coordinates.append(2 * place / (size - 1) - 1 if size > 1 else torch.zeros_like(place))
    d, h, w = coordinates  # grid_sample wants (x, y, z) = (w, h, d) in the last dimension
    grid = torch.stack(torch.broadcast_tensors(w[:, None, None, :], h[:, None, :, None], d[:, :, None, None]), dim=-1)
    aligned = F.grid_sample(grid_y, grid, mode="bilinear", padding_mode="border", align_corners=True)
    weights = valid[0][:, :, None, None] & valid[1][:, None, :, None] & valid[2][:, None, None, :]
    return aligned.flatten(2).transpose(1, 2), weights.flatten(1)


def variance_loss(features: Tensor, target: float = 1.0) -> Tensor:
    """VICReg's variance term on tokens (Bardes et al. 2022): mean over channels of
    max(0, ``target`` − std over the tokens), per sample, then over the batch.

    On the encoder's layer-normalised final-stage tokens (B, n, C) it is 0 only when every channel
    varies from place to place, and it is largest for the collapsed encoder whose tokens are all one
    vector; no head after the encoder can rescale it away. Needs n ≥ 2.
    """
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"the variance term needs (B, n ≥ 2, C) tokens, got {tuple(features.shape)}; use a larger crop")
    std = (features.float().var(1, unbiased=False) + 1e-4).sqrt()
    return F.relu(target - std).mean()


#: How the masked voxels' squared errors are averaged: "masked_mean", over each sample's masked
#: voxels, then over the batch; "prototype", as the prototype ran, over all B·C·D·H·W voxels of the
#: batch (visible voxels count as zero error), which weights the loss by the masked fraction.
RECONSTRUCTION_MEANS = ("masked_mean", "prototype")


def reconstruction_loss(prediction: Tensor, target: Tensor, voxel_mask: Tensor | None = None, mean: str = "masked_mean") -> Tensor:
    """Mean squared error over the voxels where ``voxel_mask`` (B, 1, D, H, W) is True, or over all.

    With ``mean`` "masked_mean" the mean is taken per sample, then over the batch, so that a sample
    weighs the same whether it shares its batch or is split over processes; a sample with no masked
    voxel (tiny cells can round to zero masked tokens) contributes 0. "prototype" divides the masked
    voxels' squared error by the batch's voxel count (see :data:`RECONSTRUCTION_MEANS`).
    """
    if mean not in RECONSTRUCTION_MEANS:
        raise ValueError(f"mean must be one of {', '.join(RECONSTRUCTION_MEANS)}, got {mean!r}")
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    squared = (prediction.float() - target.float()).pow(2)
    if voxel_mask is None:
        return squared.mean()
    weight = voxel_mask.to(squared.dtype).expand_as(squared)
    if mean == "prototype":
        return (squared * weight).mean()
    per_sample = (squared * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)
    return per_sample.mean()


class GMIMLoss(nn.Module):
    """α1·L_cc + α2·L_rec (α1 = 0.005, α2 = 1, λ = 0.005 by default, reconstruction on masked voxels),
    and with ``variance_weight`` > 0 that weight times :func:`variance_loss` of the online branch's
    final-stage tokens (an option against collapse; docs/method.md §5).

    ``align_overlap`` correlates each online token with the target at the same anatomical place
    (see :func:`align_to_online`), over the crops' overlap, instead of the token at the same index.
    """

    def __init__(
        self,
        alpha_cc: float = 0.005,
        alpha_rec: float = 1.0,
        off_diagonal_weight: float = 0.005,
        masked_only: bool = True,
        standardize: bool = False,
        align_overlap: bool = False,
        reconstruction: str = "masked_mean",
        variance_weight: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("alpha_cc", alpha_cc),
            ("alpha_rec", alpha_rec),
            ("off_diagonal_weight", off_diagonal_weight),
            ("variance_weight", variance_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.alpha_cc = alpha_cc
        self.alpha_rec = alpha_rec
        self.off_diagonal_weight = off_diagonal_weight
        self.masked_only = masked_only
        self.standardize = standardize
        self.align_overlap = align_overlap
        if reconstruction not in RECONSTRUCTION_MEANS:
            raise ValueError(f"reconstruction must be one of {', '.join(RECONSTRUCTION_MEANS)}, got {reconstruction!r}")
        self.reconstruction = reconstruction
        self.variance_weight = variance_weight

    def correlation(self, output: GMIMOutput, x: Tensor, offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The branches' cross-correlation matrices (B, P, P) as the loss sees them, and which
        samples count (see :func:`cross_correlation_matrix`)."""
        target, weights = output.target, None
        if self.align_overlap:
            if offset is None:
                raise ValueError("align_overlap needs the offset of the two views")
            token_shape = list(token_grid(x.shape[2:]))
            target, weights = align_to_online(target, token_shape, offset)
        return cross_correlation_matrix(output.online, target, self.standardize, weights)

    def forward(self, output: GMIMOutput, x: Tensor, voxel_mask: Tensor | None, offset: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms for the clean online view ``x``, the voxel mask of point a0 and, with
        ``align_overlap``, the views' ``offset`` (B, 3) in voxels."""
        cc = correlation_penalty(*self.correlation(output, x, offset), self.off_diagonal_weight)
        rec = reconstruction_loss(output.reconstruction, x, voxel_mask if self.masked_only else None, self.reconstruction)
        terms = {"loss": self.alpha_cc * cc + self.alpha_rec * rec, "cross_correlation": cc, "reconstruction": rec}
        if self.variance_weight > 0:
            if output.features is None:
                raise ValueError("the variance term needs the online branch's final-stage tokens (GMIMOutput.features)")
            terms["variance"] = variance_loss(output.features)
            terms["loss"] = terms["loss"] + self.variance_weight * terms["variance"]
        return terms
