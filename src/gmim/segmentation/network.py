"""The network of a fine-tuning configuration: MONAI's Swin UNETR, with its encoder as a parameter group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR

from gmim.errors import InputError
from gmim.segmentation.config import ModelConfig
from gmim.swin.attention import fuse_window_attention
from gmim.swin.merging import patch_merging
from gmim.swin.weights import read_weights
from gmim.weights_only import load_checkpoint

__all__ = ["build_network", "load_run_weights", "parameter_groups"]


def build_network(model: ModelConfig, out_channels: int) -> SwinUNETR:
    """Swin UNETR of ``model`` (its fields checked when it was built; null ones at their defaults)."""
    assert model.in_channels is not None, "in_channels is resolved from the data first"
    architecture = model.architecture()
    network = SwinUNETR(
        in_channels=model.in_channels,
        out_channels=out_channels,
        feature_size=architecture.feature_size,
        depths=architecture.depths,
        num_heads=architecture.num_heads,
        use_v2=architecture.use_v2,
        use_checkpoint=model.gradient_checkpointing,
        # MONAI annotates downsample as str | Module, but takes (and itself passes on) a module class
        downsample=patch_merging(architecture.patch_merging or "monai"),  # type: ignore[arg-type]
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
    """Load a checkpoint this package wrote (``best.pt``/``last.pt``), or the ``model.safetensors`` of
    a ``gmim export``, strictly; returns the checkpoint (an export's: its tensors under ``model``)."""
    if Path(path).suffix == ".safetensors":
        weights = read_weights(path)  # unreadable files: InputError naming the path
        if weights.ignored:
            raise InputError(f"{path}: holds tensors that are no part of a Swin UNETR ({', '.join(weights.ignored[:3])})")
        checkpoint: dict[str, Any] = {"model": weights.tensors}
    else:
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
