"""Swin UNETR's geometry, in one place: which crops it takes and how large each stage's tokens are.

The patch embedding turns 2×2×2 voxels into a token, and each of the four patch mergings halves the
token grid, so a final-stage token covers 32 voxels per axis: a crop must be a multiple of 32 along
each axis. The reconstruction decoder (and Swin UNETR's bottleneck) normalise over the final-stage
tokens, which needs at least two of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gmim.rules import multiple_of, satisfies

__all__ = ["FEATURE_SIZE", "MIN_FINAL_TOKENS", "PATCH_SIZE", "ROI", "STRIDE", "crop_problem", "stage_stride", "token_grid"]

#: Voxels per axis of a patch-embedding token.
PATCH_SIZE = 2
#: Voxels per axis of a final-stage token: the patch embedding, then four patch mergings.
STRIDE = PATCH_SIZE * 2**4
#: Final-stage tokens a crop must give for instance normalisation over them.
MIN_FINAL_TOKENS = 2


def stage_stride(stage: int) -> int:
    """Voxels per axis of a token of ``stage`` (0: the patch embedding, 4: the final stage)."""
    return PATCH_SIZE * 2**stage


def token_grid(shape: Sequence[int], stride: int = STRIDE) -> tuple[int, ...]:
    """The token grid of a crop of spatial ``shape`` at a stage of ``stride`` voxels per token."""
    return tuple(int(n) // stride for n in shape)


def crop_problem(shape: Sequence[int]) -> str | None:
    """What makes ``shape`` no crop for Swin UNETR, in words; None when it is one."""
    if any(int(n) < STRIDE or int(n) % STRIDE for n in shape):
        return f"each size must be a positive multiple of {STRIDE}"
    if math.prod(token_grid(shape)) < MIN_FINAL_TOKENS:
        return f"it leaves one final-stage token, and normalising over them needs {MIN_FINAL_TOKENS}: make one size at least {2 * STRIDE}"
    return None


#: The rule of a configuration's crop (``model.roi``).
ROI = satisfies(crop_problem, "a Swin UNETR crop", outside=((48, 64, 64), (32, 32, 32), (0, 64, 64)))
#: The rule of Swin UNETR's feature size: its attention heads divide it.
FEATURE_SIZE = multiple_of(12)
