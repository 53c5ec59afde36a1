"""The network of a fine-tuning configuration: MONAI's Swin UNETR, with its encoder as a parameter group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

from gmim.engine.checkpoint import load_checkpoint
from gmim.errors import InputError
from gmim.segmentation.config import ModelConfig
from gmim.swin.attention import fuse_window_attention
from gmim.swin.merging import patch_merging

__all__ = ["build_network", "load_run_weights", "parameter_groups"]


def build_network(model: ModelConfig, out_channels: int) -> SwinUNETR:
    """Swin UNETR of ``model`` (its fields checked when it was built)."""
    assert model.in_channels is not None, "in_channels is resolved from the data first"
    network = SwinUNETR(
        in_channels=model.in_channels,
        out_channels=out_channels,
        feature_size=model.feature_size,
        use_checkpoint=model.gradient_checkpointing,
        downsample=patch_merging(model.patch_merging),
    )
    return fuse_window_attention(network) if model.fused_attention else network


def parameter_groups(network: SwinUNETR, lr: float, encoder_lr_multiplier: float, freeze_encoder: bool) -> list[dict[str, Any]]:
    """Optimizer groups: the encoder (``swinViT``) at ``lr × multiplier`` or frozen, the rest at ``lr``."""
    encoder = list(network.swinViT.parameters())
    for parameter in encoder:
        parameter.requires_grad_(not freeze_encoder)
    ids = {id(p) for p in encoder}
    groups = [{"params": [p for p in network.parameters() if id(p) not in ids], "lr": lr, "name": "decoder"}]
    if not freeze_encoder:
        groups.append({"params": encoder, "lr": lr * encoder_lr_multiplier, "name": "encoder"})
    return groups


def load_run_weights(network: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load a checkpoint this package wrote (``best.pt``/``last.pt``) strictly; returns the checkpoint."""
    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint:
        raise InputError(f"{path}: not a gmim fine-tuning checkpoint (no 'model')")
    try:
        network.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise InputError(
            f"{path}: weights do not fit the network of its config.yaml ({str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error})"
        ) from error
    return checkpoint
