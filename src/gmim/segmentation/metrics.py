"""Dice and HD95 of binary masks, with the conventions for empty masks made explicit.

MONAI computes both (``compute_dice``, ``compute_hausdorff_distance`` with percentile 95 and the
voxel spacing); what an empty mask means is decided here, once (:data:`CONVENTIONS`), and stated
in every evaluation output.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

__all__ = ["CONVENTIONS", "dice_scores", "hd95_scores"]

#: How empty masks are scored (printed with every evaluation).
CONVENTIONS = (
    "Dice: 1 when prediction and reference are both empty, 0 when exactly one is empty.",
    "HD95 (mm): 0 when both are empty, undefined (NaN, left out of means) when exactly one is empty.",
)


def dice_scores(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Dice per channel of binary (K, ...) masks → (K,)."""
    return compute_dice(prediction[None].float(), reference[None].float(), include_background=True, ignore_empty=False)[0]


def hd95_scores(prediction: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """95th-percentile Hausdorff distance in mm per channel of binary (K, ...) masks → (K,)."""
    out = torch.full((prediction.shape[0],), float("nan"), dtype=torch.float64)
    pred_any = prediction.flatten(1).any(1)
    ref_any = reference.flatten(1).any(1)
    out[~pred_any & ~ref_any] = 0.0
    both = (pred_any & ref_any).nonzero().flatten()
    if len(both):
        with warnings.catch_warnings():  # a deprecation inside MONAI's own helper, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            distances = compute_hausdorff_distance(
                prediction[both][None].float(), reference[both][None].float(), include_background=True, percentile=95, spacing=list(spacing)
            )[0]
        out[both] = distances.to(torch.float64).cpu()
    return out
