"""Swin's patch merging as MONAI ≥ 1.5 builds it, as MONAI < 1.5 built it, and MONAI's v2.

Patch merging halves the token grid: it concatenates the 2×2×2 sub-grids of a (B, D, H, W, C) grid,
normalises and projects 8C → 2C. MONAI 1.5 changed which sub-grids its ``PatchMerging``
(``downsample="merging"``) concatenates, with no switch back: before, it took (0,1,0) and (0,0,1)
twice and (1,1,0), (0,1,1) never. Every public Swin UNETR release (MONAI's self-supervised and model
zoo weights, VoCo, SuPreM, BrainSegFounder, the GMIM authors' prototype) was trained before that, so
those weights compute their function only under the old merging (docs/method.md §9). All variants
have the same parameters and state_dict layout: the weights cannot tell which one trained them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monai.networks.nets.swin_unetr import MERGING_MODE
from torch import nn

from gmim.swin.legacy_merging import LegacyPatchMerging

__all__ = [
    "ALIASES",
    "LEGACY",
    "MONAI_DOWNSAMPLE",
    "PATCH_MERGINGS",
    "LegacyPatchMerging",
    "MergingChoice",
    "canonical_merging",
    "patch_merging",
]

#: MONAI < 1.5's merging, which every public Swin UNETR release was trained with.
LEGACY = "monai-legacy"
#: ``model.patch_merging``: "monai", MONAI ≥ 1.5's ``PatchMerging`` (all eight sub-grids; Swin
#: UNETR's default ``merging``); "monai-v2", MONAI's ``PatchMergingV2`` (the same sub-grids in
#: another order, ``mergingv2``); "monai-legacy", :class:`LegacyPatchMerging` (MONAI < 1.5's ``merging``).
PATCH_MERGINGS = ("monai", "monai-v2", LEGACY)
#: Other names a setting may use: the GMIM prototype's merging is MONAI < 1.5's, which it copied.
ALIASES = {"prototype": LEGACY}
#: gmim's patch mergings as MONAI ≥ 1.5's ``SwinUNETR(downsample=...)`` names them; the legacy merging
#: has no name there: it is passed as a class (:mod:`gmim.swin.legacy_merging`, which a MONAI bundle
#: ships: :mod:`gmim.export.bundle`).
MONAI_DOWNSAMPLE = {"monai": "merging", "monai-v2": "mergingv2"}
#: Each merging in words.
DESCRIPTIONS = {"monai": "MONAI >= 1.5's merging", "monai-v2": "MONAI's mergingv2", LEGACY: "MONAI < 1.5's merging"}


@dataclass(frozen=True)
class MergingChoice:
    """The patch merging a network is built with to run weights made elsewhere, and why: the weights
    cannot tell it (:mod:`gmim.swin.layouts` says how each source is read)."""

    name: str
    #: ``setting``: model.patch_merging; ``record``: the run, export or bundle the weights came in
    #: (a setting that contradicts it is refused); ``layout``: what the weights' source was trained
    #: with; ``rule``: nothing says, so MONAI >= 1.5's, what the installed MONAI builds.
    reason: Literal["setting", "record", "layout", "rule"]
    #: Why, in words.
    why: str

    def __str__(self) -> str:
        line = f"patch merging {self.name} ({DESCRIPTIONS[self.name]}): {self.why}"
        if self.reason in ("layout", "rule"):
            other, trained = ("monai", "MONAI >= 1.5") if self.name == LEGACY else (LEGACY, "MONAI < 1.5")
            line += f"; if they were trained with {trained}, set model.patch_merging={other} (--patch-merging {other})"
        return line

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "why": self.why}


def canonical_merging(name: str) -> str:
    """``name`` with an alias (:data:`ALIASES`) replaced by the merging it names."""
    return ALIASES.get(name, name)


def patch_merging(name: str) -> type[nn.Module]:
    """The patch-merging class of ``model.patch_merging`` (see :data:`PATCH_MERGINGS`, :data:`ALIASES`)."""
    name = canonical_merging(name)
    if name not in PATCH_MERGINGS:
        raise ValueError(f"patch_merging must be one of {', '.join(PATCH_MERGINGS)}, got {name!r}")
    return MERGING_MODE[MONAI_DOWNSAMPLE[name]] if name in MONAI_DOWNSAMPLE else LegacyPatchMerging
