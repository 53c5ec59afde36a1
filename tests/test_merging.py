"""Patch merging as MONAI < 1.5 and the prototype ran it (docs/method.md §9): the concatenation order, and
encoders built with it in both commands, with MONAI's state_dict layout."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging

from gmim.pretraining.model import GMIM
from gmim.swin.merging import LegacyPatchMerging, patch_merging


def concatenation(merging: torch.nn.Module) -> list[int]:
    """Which 2×2×2 sub-grid offset (4d + 2h + w) fills each slot of the merged channels."""
    grid = torch.tensor([[[4 * d + 2 * h + w for w in range(2)] for h in range(2)] for d in range(2)], dtype=torch.float32)
    seen = {}
    merging.norm.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    merging(grid[None, :, :, :, None])
    return [int(v) for v in seen["x"].flatten()]


def test_legacy_merging_concatenates_two_sub_grids_twice_and_two_never():
    # (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0) (0,0,1) (1,1,1)
    assert concatenation(LegacyPatchMerging(dim=1, spatial_dims=3)) == [0, 4, 2, 1, 5, 2, 1, 7]
    assert sorted(concatenation(PatchMerging(dim=1, spatial_dims=3))) == list(range(8))  # MONAI's: all eight


def test_legacy_merging_keeps_monai_layout_and_changes_the_function():
    torch.manual_seed(0)
    monai_net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    prototype_net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, downsample=patch_merging("prototype"))
    prototype_net.load_state_dict(monai_net.state_dict())  # strict: same parameters
    gmim = GMIM(in_channels=1, feature_size=12, patch_merging="prototype")
    assert isinstance(gmim.encoder.layers1[0].downsample, LegacyPatchMerging)
    gmim.encoder.load_state_dict(monai_net.swinViT.state_dict())
    x = torch.randn(1, 1, 64, 64, 32)
    with torch.no_grad():
        ours, theirs = monai_net.swinViT(x)[-1], prototype_net.swinViT(x)[-1]
        torch.testing.assert_close(gmim.encoder(x)[-1], theirs)
    assert float((ours - theirs).norm() / ours.norm()) > 0.1
    assert patch_merging("monai-legacy") is LegacyPatchMerging  # "prototype" is another name for it
    with pytest.raises(ValueError, match="patch_merging"):
        patch_merging("swin")
