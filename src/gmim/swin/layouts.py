"""The layouts of public Swin UNETR weights, and their tensors under MONAI's ``SwinUNETR`` names.

Every Swin UNETR project saves MONAI's network (or a copy of it) under its own wrapper, prefixes and
heads. What each file holds, as each project's saving code writes it:

======================================  ====================================  ==========================================
layout                                  wrapper and prefix                    beside the encoder
======================================  ====================================  ==========================================
gmim ``encoder.pt``                     none; ``SwinUNETR.swinViT``'s names   —
gmim run ``last.pt`` / ``best.pt``      ``model``; ``encoder.`` or Swin UNETR  the method's heads, or the decoder
gmim export ``model.safetensors``       none; Swin UNETR or ``swinViT`` names  the decoder (a segmentation model)
MONAI ``model_swinvit.pt``              ``state_dict``; ``module.``, fc1/fc2   ``norm``, ``convTrans3d``, rotation and
                                                                              contrastive heads
MONAI model-zoo bundle                  none (``models/model.pt``); Swin      the decoder and ``out``
                                        UNETR names
research-contributions BTCV / BRATS21   ``state_dict``; Swin UNETR names      the decoder and ``out``
VoCo ``VoCo_{B,L,H}_SSL_head.pt``       none; ``swinViT.`` (v2), F 48/96/192  ``encoder1…4, 10`` (no decoder)
VoCo training ``final_model.pt``        none; ``backbone.``                   ``student`` / ``teacher`` heads
SuPreM ``supervised_suprem_*.pth``      ``net``; ``module.backbone.``         the decoder, ``organ_embedding``,
                                                                              ``precls_conv``, ``GAP``, ``controller``,
                                                                              ``text_to_vision``
BrainSegFounder                         ``state_dict``; ``module.swinViT.``   rotation and contrastive heads, ``conv.*``
nnssl / OpenMind                        ``network_weights`` with              its pretext heads
                                        ``nnssl_adaptation_plan``
======================================  ====================================  ==========================================

After unwrapping and stripping (``module.``, ``_orig_mod.``, ``backbone.``, ``model.``; gmim's and
MONAI's ``encoder.`` for the Swin encoder; the early ``swin_vit``), every key either is a Swin UNETR
key (``swinViT.*``, ``encoder{1,2,3,4,10}.*``, ``decoder{1…5}.*``, ``out.*``) or is ignored and
reported. nnssl's public checkpoints are CNNs (ResEnc-L, Primus): they are named as such and refused.

Which patch merging the weights were trained with (:mod:`gmim.swin.merging`) is read, first match:

1. a record beside the file: a gmim run's ``config.yaml``, an export's ``config.json``, a MONAI
   bundle's ``configs/metadata.json`` (gmim's record in it, else its ``monai_version``);
2. the layout: MONAI's self-supervised weights, research-contributions checkpoints, VoCo, SuPreM
   and BrainSegFounder were all trained before MONAI 1.5, with its old merging (``monai-legacy``);
3. the rule for a file that says nothing of its source (a bare state_dict, a gmim file moved out of
   its run): MONAI >= 1.5's ``monai``, what the installed MONAI builds for such a file.

The console and ``weights_report.json`` say which was taken and why; ``model.patch_merging`` chooses
another, except against a record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gmim.errors import InputError
from gmim.methods import METHODS
from gmim.swin.merging import LEGACY

__all__ = ["LAYOUTS", "Layout", "Recognised", "recognise", "swin_unetr_names"]

#: Checkpoint entries that hold the state_dict, in the order they are looked for.
CONTAINERS = ("network_weights", "state_dict", "net", "model", "model_state_dict", "student")
_WRAPPERS = ("module.", "_orig_mod.", "backbone.", "model.")
_SWIN_UNETR_KEY = re.compile(r"^(swinViT\.|encoder(1|2|3|4|10)\.|decoder[1-5]\.|out\.)")
_ENCODER_KEY = re.compile(r"^(patch_embed|layers[1-4]c?)\.")
_OLD_MLP = re.compile(r"\.mlp\.fc([12])\.")


def _unwrap(top: Mapping[str, Any]) -> tuple[str | None, dict[str, torch.Tensor]]:
    """(the container's name or None, its tensors) of a checkpoint's top-level mapping."""
    for name in CONTAINERS:
        inner = top.get(name)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return name, {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return None, {k: v for k, v in top.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _rename(key: str) -> str:
    """A key under MONAI's ``SwinUNETR`` names, where it is one of its keys (else as it came)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPERS:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    key = key.replace("swin_vit.", "swinViT.", 1) if key.startswith("swin_vit.") else key
    if key.startswith("encoder.") and _ENCODER_KEY.match(key[len("encoder.") :]):
        key = key[len("encoder.") :]
    if _ENCODER_KEY.match(key):
        key = "swinViT." + key
    return _OLD_MLP.sub(r".mlp.linear\1.", key)


def swin_unetr_names(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the tensors under MONAI's ``SwinUNETR`` names, the keys that are no part of one)."""
    renamed: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in tensors.items():
        name = _rename(key)
        if _SWIN_UNETR_KEY.match(name) and name not in renamed:
            renamed[name] = tensor
        else:
            ignored.append(key)
    return renamed, ignored


@dataclass(frozen=True)
class Layout:
    """A project's layout, told by the file's state_dict keys (as the file names them) and its
    checkpoint's top level."""

    name: str
    #: Patterns that some key must match, each.
    keys: tuple[str, ...] = ()
    #: Patterns that no key may match.
    no_keys: tuple[str, ...] = ()
    #: The checkpoint entry that holds the state_dict ("": none, the file is the state_dict; None: any).
    container: str | None = None
    #: A (key, values) of the checkpoint's top level (its value one of them), or a key it must have.
    top: tuple[str, tuple[str, ...]] | str | None = None
    #: The patch merging this source's weights were trained with (None: the layout does not tell).
    patch_merging: str | None = None

    def matches(self, top: Mapping[str, Any], container: str | None, keys: list[str]) -> bool:
        if isinstance(self.top, tuple) and top.get(self.top[0]) not in self.top[1]:
            return False
        if isinstance(self.top, str) and self.top not in top:
            return False
        if self.container is not None and (container or "") != self.container:
            return False
        found = [re.compile(p) for p in self.keys]
        refused = [re.compile(p) for p in self.no_keys]
        return all(any(p.search(k) for k in keys) for p in found) and not any(p.search(k) for p in refused for k in keys)


_WHOLE_NETWORK = (r"^swinViT\.", r"^decoder[1-5]\.")

#: The layouts, most specific first. gmim's runs record their merging beside their files; the
#: public releases were trained before MONAI 1.5 (the legacy merging).
LAYOUTS = (
    Layout("nnssl checkpoint", top="nnssl_adaptation_plan"),
    *(Layout(f"gmim run ({spec.title})", top=("method", (spec.name, *spec.aliases))) for spec in METHODS.values()),
    Layout("SuPreM", container="net", keys=(r"^(module\.)?backbone\.swinViT\.",), patch_merging=LEGACY),
    Layout(
        "BrainSegFounder (self-supervised)",
        keys=(r"^(module\.)?swinViT\.", r"^(module\.)?rotation_head\.", r"^(module\.)?conv\.0\."),
        patch_merging=LEGACY,
    ),
    Layout("MONAI self-supervised (model_swinvit.pt)", keys=(r"^module\.(swin_vit\.)?(patch_embed|layers1)\.",), patch_merging=LEGACY),
    Layout("VoCo (training)", keys=(r"^(module\.)?backbone\.swinViT\.", r"^(module\.)?(student|teacher)\."), patch_merging=LEGACY),
    Layout("VoCo (Swin UNETR v2 encoder)", keys=(r"^swinViT\.layers1c\.",), no_keys=(r"^decoder[1-5]\.",), patch_merging=LEGACY),
    Layout("gmim encoder.pt", container="", keys=(r"^patch_embed\.proj\.weight$",)),
    Layout("MONAI research-contributions Swin UNETR (state_dict)", container="state_dict", keys=_WHOLE_NETWORK, patch_merging=LEGACY),
    Layout("MONAI Swin UNETR (model-zoo bundle, or a network's state_dict)", keys=_WHOLE_NETWORK),
)
#: What no layout matched: a Swin UNETR in some other wrapper.
_ANY = Layout("Swin UNETR")


@dataclass(frozen=True)
class Recognised:
    """A weights file's layout and its tensors under MONAI's ``SwinUNETR`` names."""

    layout: Layout
    tensors: dict[str, torch.Tensor]
    #: The file's keys that are no part of a Swin UNETR (pre-training heads), as the file names them.
    ignored: list[str]


def recognise(top: Mapping[str, Any], source: str) -> Recognised:
    """The layout and tensors of a weights file's top-level mapping; an :class:`InputError` naming
    ``source`` and what it holds when it holds no Swin UNETR."""
    box, tensors = _unwrap(top)
    if not tensors:
        raise InputError(f"{source}: holds no weight tensors (top-level keys: {_first(list(top))})")
    keys = list(tensors)
    layout = next((layout for layout in LAYOUTS if layout.matches(top, box, keys)), _ANY)
    renamed, ignored = swin_unetr_names(tensors)
    if not any(name.startswith("swinViT.") for name in renamed):
        if layout.name == "nnssl checkpoint":
            plan = top["nnssl_adaptation_plan"]
            network = plan.get("architecture_plans", {}).get("arch_class_name", "?") if isinstance(plan, Mapping) else "?"
            raise InputError(f"{source}: an nnssl checkpoint of a {network} network, not a Swin UNETR")
        inside = f"; in {box}: {_first(keys)}" if box else ""
        raise InputError(f"{source}: no Swin UNETR encoder in an unknown layout (top-level keys: {_first(list(top))}{inside})")
    return Recognised(layout, renamed, ignored)


def _first(names: list[str], count: int = 4) -> str:
    return ", ".join(names[:count]) + (f", … ({len(names)} in all)" if len(names) > count else "")
