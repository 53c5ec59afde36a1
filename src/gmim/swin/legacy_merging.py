"""Swin's patch merging as MONAI < 1.5 computed it, for weights trained before MONAI 1.5.

MONAI 1.5 changed which 2×2×2 sub-grids its ``PatchMerging`` (``SwinUNETR(downsample="merging")``)
concatenates, with no switch back; the parameters and their names stayed the same, so older weights
load into a new ``SwinUNETR`` and compute another function there. Pass this class instead:
``SwinUNETR(..., downsample=LegacyPatchMerging)``.

This module imports only torch and MONAI: gmim uses it, and ``gmim export`` copies it verbatim
beside the weights it exports (``legacy_merging.py``; a MONAI bundle's ``scripts/``), so that they
compute the same function without gmim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMergingV2
from torch import Tensor

__all__ = ["LegacyPatchMerging"]


class LegacyPatchMerging(PatchMergingV2):
    """MONAI < 1.5's ``PatchMerging`` (and the GMIM prototype's copy of it): the sub-grids at (d, h, w)
    offsets (0,0,0), (1,0,0), (0,1,0), (0,0,1), (1,0,1), (0,1,0), (0,0,1), (1,1,1) — (0,1,0) and
    (0,0,1) twice, (1,1,0) and (0,1,1) never. 3D only."""

    OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a (B, D, H, W, C) grid, got shape {tuple(x.shape)}")
        _, depth, height, width, _ = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2, 0, depth % 2))  # odd sizes, as MONAI pads
        x = torch.cat([x[:, d::2, h::2, w::2, :] for d, h, w in self.OFFSETS], dim=-1)
        return self.reduction(self.norm(x))
