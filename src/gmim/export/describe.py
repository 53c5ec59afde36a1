"""A run's settings in words, as every format's model card and config files state them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmim.export.source import RunConfig, RunDocuments
from gmim.segmentation.config import FinetuneConfig
from gmim.swin.merging import LEGACY

__all__ = [
    "architecture_line",
    "initial_weights",
    "input_lines",
    "intensity",
    "merging_card_lines",
    "merging_note",
    "number",
    "steps_line",
]

Config = RunConfig


def number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("not recorded" if value is None else str(value))


def intensity(config: Config) -> dict[str, Any]:
    """The intensity normalisation in words and numbers, and as the MONAI transform that does it."""
    preprocessing = config.preprocessing
    if preprocessing.modality == "ct":
        low, high = preprocessing.window
        return {
            "description": f"CT: Hounsfield units in the window [{low:g}, {high:g}] mapped linearly to [0, 1] and clipped to it",
            "window": [low, high],
            "range": [0.0, 1.0],
            "clip": True,
            "monai_transform": f"ScaleIntensityRanged(a_min={low:g}, a_max={high:g}, b_min=0.0, b_max=1.0, clip=True)",
        }
    return {
        "description": "MRI: z-score per channel over the non-zero voxels (each channel minus the mean of its non-zero "
        "voxels, divided by their standard deviation); zero voxels stay 0",
        "nonzero": True,
        "channel_wise": True,
        "monai_transform": "NormalizeIntensityd(nonzero=True, channel_wise=True)",
    }


def input_lines(config: Config) -> list[str]:
    preprocessing = config.preprocessing
    channels = config.task.channels if isinstance(config, FinetuneConfig) else []
    named = ", ".join(f"`{c}`" for c in channels) if channels else "names not recorded"
    spacing = f"{' × '.join(f'{s:g}' for s in preprocessing.spacing)} mm" if preprocessing.spacing else "each scan's own (not resampled)"
    return [
        f"- channels: {config.model.in_channels} ({named}), {preprocessing.modality.upper()}",
        f"- orientation: {preprocessing.orientation}; voxel spacing: {spacing}",
        f"- intensity: {intensity(config)['description']}",
        f"- training crops (roi): {' × '.join(str(n) for n in config.model.roi)} voxels",
    ]


def architecture_line(config: Config) -> str:
    a = config.model.architecture()
    return (
        f"feature size {a.feature_size}, depths {list(a.depths)}, heads {list(a.num_heads)}"
        f"{', v2' if a.use_v2 else ''}, patch merging `{a.patch_merging or 'monai'}`"
    )


def merging_note(merging: str, arguments: str, shipped: str) -> str | None:
    """What a user of plain MONAI ≥ 1.5 must know to build the function the weights were trained in,
    beyond the SwinUNETR arguments (named by ``arguments``); ``shipped`` names the file that holds the
    legacy merging in this format. None for MONAI's default merging."""
    if merging == "monai-v2":
        return f"patch merging: gmim's 'monai-v2' is MONAI's downsample='mergingv2' ({arguments}); without it MONAI builds another function"
    if merging == LEGACY:
        return (
            "patch merging 'monai-legacy' is MONAI < 1.5's PatchMerging, which MONAI 1.5 changed: MONAI >= 1.5's SwinUNETR "
            "loads these weights (the same tensors) but computes another function with them. Under MONAI >= 1.5 pass the "
            f"class LegacyPatchMerging of {shipped}: SwinUNETR(..., downsample=LegacyPatchMerging); under MONAI < 1.5 the "
            "default merging is this one"
        )
    return None


def merging_card_lines(merging: str, arguments: str, shipped: str) -> list[str]:
    """The model card's paragraph on a patch merging other than MONAI's default (see :func:`merging_note`)."""
    if merging == "monai-v2":
        return ["", f'Patch merging is MONAI\'s `mergingv2`: build `SwinUNETR(..., downsample="mergingv2")` ({arguments} say so).']
    if merging == LEGACY:
        return [
            "",
            "> **Patch merging**: these weights were trained with MONAI < 1.5's patch merging (`monai-legacy`, which "
            "every public Swin UNETR release and the GMIM authors' prototype used). MONAI 1.5 changed which sub-grids its "
            "`PatchMerging` concatenates: MONAI ≥ 1.5's `SwinUNETR` loads these weights (the tensors are the same) but "
            f"computes another function with them. `{shipped}` holds the old merging as a class that MONAI ≥ 1.5 takes, "
            "`SwinUNETR(..., downsample=LegacyPatchMerging)`; under MONAI < 1.5 the default merging is this one.",
        ]
    return []


def initial_weights(config: Config) -> str:
    init = config.model.init
    return f"`{Path(init).name}` (model.init)" if init else "none: trained from a random initialisation"


def steps_line(documents: RunDocuments) -> str:
    """The steps a run did and planned, as its records say."""
    done, total = documents.steps()
    if done is None:
        return "- steps: not recorded"
    planned = f" of {total}" if total is not None else ""
    complete = ""
    if documents.summary is not None and "completed" in documents.summary:
        complete = " (completed)" if documents.summary["completed"] else " (stopped early; the run may be resumed)"
    return f"- optimizer steps done: {done}{planned}{complete}"
