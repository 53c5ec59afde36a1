"""Public Swin UNETR weights files, as each project's saving code writes them (key names, wrappers,
heads), from the state_dict of a MONAI ``SwinUNETR``; and weights that any MONAI version reproduces.

No weights can be downloaded here: the layout tests write each file from a network with random
values, and ``tests/fixtures/monai14/make_fixtures.py`` computes, under MONAI 1.4, what such files
compute. This module imports torch only, so that the fixture script can run it under an old MONAI.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

State = Mapping[str, torch.Tensor]


def heads(*shapes: tuple[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Pre-training heads beside the encoder: tensors that no Swin UNETR has."""
    return {name: torch.randn(shape) for name, shape in shapes}


def without(state: State, *prefixes: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def encoder(state: State) -> dict[str, torch.Tensor]:
    """``SwinUNETR.swinViT.state_dict()``: gmim's ``encoder.pt``."""
    return {k[len("swinViT.") :]: v for k, v in state.items() if k.startswith("swinViT.")}


def feature_size(state: State) -> int:
    return int(state["swinViT.patch_embed.proj.weight"].shape[0])


def monai_self_supervised(state: State) -> dict[str, Any]:
    """MONAI's ``model_swinvit.pt``: ``state_dict`` of a DDP SSLHead, ``module.`` and the old MLP names."""
    f = feature_size(state)
    encoder_state = {f"module.{k}".replace(".mlp.linear", ".mlp.fc"): v for k, v in encoder(state).items()}
    ssl_heads = heads(
        ("module.norm.weight", (16 * f,)),
        ("module.norm.bias", (16 * f,)),
        ("module.rotation_head.weight", (4, 16 * f)),
        ("module.contrastive_head.weight", (512, 16 * f)),
        ("module.convTrans3d.weight", (16 * f, 1, 4, 4, 4)),
    )
    return {"state_dict": encoder_state | ssl_heads}


def research_contributions(state: State) -> dict[str, Any]:
    """research-contributions' BTCV / BRATS21 ``model.pt``: the whole network under ``state_dict``."""
    return {"epoch": 5000, "best_acc": 0.8, "state_dict": dict(state)}


def model_zoo(state: State) -> dict[str, torch.Tensor]:
    """A MONAI bundle's ``models/model.pt``: the whole network's state_dict."""
    return dict(state)


def voco_release(state: State) -> dict[str, torch.Tensor]:
    """VoCo's ``VoCo_{B,L,H}_SSL_head.pt``: a Swin UNETR v2 without its decoder and head."""
    return without(state, "decoder", "out.")


def voco_training(state: State) -> dict[str, torch.Tensor]:
    """VoCo's training ``final_model.pt``: ``backbone.`` beside the student and teacher heads."""
    f = feature_size(state)
    backbone = {f"backbone.{k}": v for k, v in voco_release(state).items()}
    return backbone | heads(("student.head.0.weight", (1024, 24 * f)), ("teacher.head.0.weight", (1024, 24 * f)))


def suprem(state: State) -> dict[str, Any]:
    """SuPreM's ``supervised_suprem_swinunetr_2100.pth``: ``net`` of a DDP Universal_model, the Swin
    UNETR as ``module.backbone.`` without its ``out`` layer, and the CLIP-driven heads beside it."""
    f = feature_size(state)
    backbone = {f"module.backbone.{k}": v for k, v in without(state, "out.").items()}
    clip_heads = heads(
        ("module.organ_embedding", (32, 512)),
        ("module.precls_conv.2.weight", (8, f, 1, 1, 1)),
        ("module.GAP.3.weight", (256, 16 * f, 1, 1, 1)),
        ("module.controller.weight", (153, 512, 1, 1, 1)),
        ("module.text_to_vision.weight", (256, 512)),
    )
    return {"net": clip_heads | backbone, "epoch": 2100}


def brainsegfounder(state: State) -> dict[str, Any]:
    """BrainSegFounder's self-supervised checkpoint: ``module.swinViT.`` with rotation, contrastive
    and decoder heads."""
    f = feature_size(state)
    encoder_state = {f"module.swinViT.{k}": v for k, v in encoder(state).items()}
    ssl_heads = heads(
        ("module.rotation_head.weight", (4, 16 * f)),
        ("module.contrastive_head.weight", (512, 16 * f)),
        ("module.conv.0.weight", (8 * f, 16 * f, 3, 3, 3)),
        ("module.conv.20.weight", (2, f, 1, 1, 1)),
    )
    return {"global_step": 10, "epoch": 1, "state_dict": encoder_state | ssl_heads, "optimizer": {}}


#: The layouts of releases trained before MONAI 1.5, by gmim's layout name: (file name, writer, a
#: Swin UNETR v2?). The model-zoo bundle's file goes under ``models/`` beside ``configs/metadata.json``.
PUBLIC_LAYOUTS: dict[str, tuple[str, Callable[[State], Any], bool]] = {
    "MONAI self-supervised (model_swinvit.pt)": ("model_swinvit.pt", monai_self_supervised, False),
    "MONAI research-contributions Swin UNETR (state_dict)": ("model.pt", research_contributions, False),
    "MONAI Swin UNETR (model-zoo bundle, or a network's state_dict)": ("models/model.pt", model_zoo, False),
    "VoCo (Swin UNETR v2 encoder)": ("VoCo_B_SSL_head.pt", voco_release, True),
    "VoCo (training)": ("final_model.pt", voco_training, True),
    "SuPreM": ("supervised_suprem_swinunetr_2100.pth", suprem, False),
    "BrainSegFounder (self-supervised)": ("model_bestValRMSE.pt", brainsegfounder, False),
}


def reproducible_weights(state: State) -> dict[str, torch.Tensor]:
    """``state`` with every floating tensor replaced by values that depend on its name and shape
    only (any MONAI version, same torch): matrices and kernels ~ N(0, 1/fan_in), norm scales near 1,
    biases and bias tables small. Integer buffers (relative position indices) stay as the network
    made them."""
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor.clone()
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        values = torch.randn(tensor.shape, generator=generator)
        if tensor.dim() >= 2 and "relative_position_bias_table" not in name:
            values = values / max(1, tensor[0].numel()) ** 0.5
        elif name.endswith(".weight") and tensor.dim() == 1:
            values = 1 + 0.1 * values
        else:
            values = 0.02 * values
        out[name] = values.to(tensor.dtype)
    return out


def checksum(state: State) -> str:
    """sha256 over the names and values, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
