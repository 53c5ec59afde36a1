"""Swin's patch merging, as MONAI runs it and as the authors' prototype ran it (docs/method.md §9).

Patch merging halves the token grid: it concatenates the eight 2×2×2 sub-grids of a (B, D, H, W, C)
grid, normalises and projects 8C → 2C. The prototype's copy of it concatenates two sub-grids twice
and two never, so encoders trained with it (the authors' weights) compute another function under
MONAI's merging. Both have the same parameters and state_dict layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import MERGING_MODE, PatchMergingV2
from torch import Tensor, nn

__all__ = ["MONAI_DOWNSAMPLE", "PATCH_MERGINGS", "PrototypePatchMerging", "patch_merging"]

#: ``model.patch_merging``: "monai", MONAI's ``PatchMerging`` (all eight sub-grids; Swin UNETR's
#: default, MONAI's ``merging``); "monai-v2", MONAI's ``PatchMergingV2`` (the same sub-grids in
#: another order, MONAI's ``mergingv2``); "prototype", :class:`PrototypePatchMerging`.
PATCH_MERGINGS = ("monai", "monai-v2", "prototype")
#: gmim's patch mergings that MONAI has, as ``SwinUNETR(downsample=...)`` names them; ``prototype``
#: has no MONAI equivalent.
MONAI_DOWNSAMPLE = {"monai": "merging", "monai-v2": "mergingv2"}


class PrototypePatchMerging(PatchMergingV2):
    """The prototype's patch merging: the sub-grids at (d, h, w) offsets (0,0,0), (1,0,0), (0,1,0),
    (0,0,1), (1,0,1), (0,1,0), (0,0,1), (1,1,1) — (0,1,0) and (0,0,1) twice, (1,1,0) and (0,1,1)
    never. For weights trained with it; 3D only."""

    OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a (B, D, H, W, C) grid, got shape {tuple(x.shape)}")
        _, depth, height, width, _ = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2, 0, depth % 2))  # odd sizes, as MONAI pads
        x = torch.cat([x[:, d::2, h::2, w::2, :] for d, h, w in self.OFFSETS], dim=-1)
        return self.reduction(self.norm(x))


def patch_merging(name: str) -> type[nn.Module]:
    """The patch-merging class of ``model.patch_merging`` (see :data:`PATCH_MERGINGS`)."""
    if name not in PATCH_MERGINGS:
        raise ValueError(f"patch_merging must be one of {', '.join(PATCH_MERGINGS)}, got {name!r}")
    return MERGING_MODE[MONAI_DOWNSAMPLE[name]] if name in MONAI_DOWNSAMPLE else PrototypePatchMerging
