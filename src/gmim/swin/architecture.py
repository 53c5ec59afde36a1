"""The shape of a Swin UNETR, as MONAI's ``SwinUNETR(...)`` arguments, and how to read it off its weights.

Every public Swin UNETR checkpoint holds what its architecture was, in its tensor shapes (MONAI's
names; see :mod:`gmim.swin.layouts` for how other projects' names map onto them):

- ``swinViT.patch_embed.proj.weight`` (F, C, 2, 2, 2): the feature size F and the input channels C
  (a 2D Swin's is (F, C, 2, 2));
- ``swinViT.layers{i}.0.blocks.{j}.…``: the blocks of stage i (its depth);
- ``….blocks.0.attn.relative_position_bias_table`` ((2w − 1)³, heads): the heads of stage i and the
  attention window w;
- ``swinViT.layers{i}c.…``: MONAI's Swin UNETR v2 (a residual block before each stage);
- ``out.conv.conv.weight`` (K, F, 1, 1, 1), when the file holds a whole segmentation network: K
  output channels.

Patch merging has the same tensors in all its variants, so the weights cannot tell it; a file that
records it (a gmim run, an exported model) says it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gmim.errors import InputError

__all__ = ["DEFAULT", "SwinArchitecture", "architecture_of", "heads_problem"]

_BLOCK = re.compile(r"^swinViT\.layers([1-4])\.0\.blocks\.(\d+)\.")
_PATCH_EMBED = "swinViT.patch_embed.proj.weight"


@dataclass(frozen=True)
class SwinArchitecture:
    """What MONAI's ``SwinUNETR`` is built with; None where the source does not say."""

    feature_size: int = 48
    in_channels: int | None = None
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    use_v2: bool = False
    #: ``model.patch_merging``, where the source records it.
    patch_merging: str | None = None
    #: Output channels of a whole segmentation network's head.
    out_channels: int | None = None

    def describe(self) -> str:
        parts = [f"F {self.feature_size}", f"depths {list(self.depths)}", f"heads {list(self.num_heads)}"]
        if self.in_channels is not None:
            parts.append(f"{self.in_channels} input channel(s)")
        if self.use_v2:
            parts.append("v2")
        if self.out_channels is not None:
            parts.append(f"a head of {self.out_channels} output channel(s)")
        return ", ".join(parts)


#: MONAI's Swin UNETR as the paper builds it.
DEFAULT = SwinArchitecture()


def architecture_of(tensors: Mapping[str, torch.Tensor], source: str) -> SwinArchitecture:
    """The architecture that made ``tensors`` (MONAI's ``SwinUNETR`` names, ``swinViT.`` for the
    encoder); an :class:`InputError` naming ``source`` when they are no 3D Swin UNETR encoder."""
    embed = tensors.get(_PATCH_EMBED)
    if embed is None:
        raise InputError(f"{source}: no Swin patch embedding ({_PATCH_EMBED}) among its tensors")
    if embed.dim() == 4:
        raise InputError(f"{source}: a 2D Swin (patch embedding {tuple(embed.shape)}); gmim builds 3D Swin UNETRs")
    if embed.dim() != 5 or tuple(embed.shape[2:]) != (2, 2, 2):
        raise InputError(f"{source}: patch embedding {tuple(embed.shape)} is not a 3D Swin UNETR's (F, C, 2, 2, 2)")
    blocks: dict[int, set[int]] = {}
    for key in tensors:
        match = _BLOCK.match(key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise InputError(f"{source}: Swin stages {sorted(blocks)} found, a Swin UNETR encoder has stages 1 to 4")
    heads, windows = [], set()
    for stage in range(1, 5):
        table = tensors.get(f"swinViT.layers{stage}.0.blocks.0.attn.relative_position_bias_table")
        if table is None or table.dim() != 2:
            raise InputError(f"{source}: stage {stage} has no relative position bias table")
        heads.append(int(table.shape[1]))
        windows.add(round((round(table.shape[0] ** (1 / 3)) + 1) / 2))
    window = windows.pop() if len(windows) == 1 else -1
    if window < 1 or (2 * window - 1) ** 3 != tensors["swinViT.layers1.0.blocks.0.attn.relative_position_bias_table"].shape[0]:
        raise InputError(f"{source}: attention windows of several sizes or of no cubic size")
    out = tensors.get("out.conv.conv.weight")
    return SwinArchitecture(
        feature_size=int(embed.shape[0]),
        in_channels=int(embed.shape[1]),
        depths=tuple(len(blocks[stage]) for stage in range(1, 5)),
        num_heads=tuple(heads),
        window_size=window,
        use_v2=any(key.startswith("swinViT.layers1c.") for key in tensors),
        out_channels=int(out.shape[0]) if out is not None and out.dim() == 5 else None,
    )


def heads_problem(feature_size: int, num_heads: tuple[int, ...]) -> str | None:
    """What makes ``num_heads`` unfit for feature size F, in words; None when they fit."""
    for stage, (width, heads) in enumerate(zip((feature_size * 2**i for i in range(4)), num_heads), start=1):
        if width % heads:
            return f"stage {stage} has {width} channels, which {heads} heads do not divide"
    return None
