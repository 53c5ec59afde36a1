"""Start a Swin UNETR, or its encoder, from weights made elsewhere, and say what went where.

:func:`read_weights` reads a weights file or folder, recognises its layout (:mod:`gmim.swin.layouts`:
gmim's own files, MONAI's, VoCo's, SuPreM's, BrainSegFounder's, nnssl's), renames its tensors to
MONAI's ``SwinUNETR`` names and reads the architecture off their shapes
(:mod:`gmim.swin.architecture`). :func:`load_weights` copies them into a network and returns a
:class:`WeightReport`: which tensors matched, which were adapted to another number of input
channels, which the network has and the file lacks (left at their fresh values), which the file
has and the network lacks, and which have another shape.

Weights files are untrusted: they are read with ``torch.load(..., weights_only=True)`` or, for
``.safetensors``, with the ``safetensors`` package.

    weights = read_weights("VoCo_L_SSL_head.pt")     # weights.architecture.feature_size == 96
    report = load_weights(network, weights)          # network: SwinUNETR, or SwinUNETR.swinViT
    print(report)
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from gmim.errors import InputError
from gmim.swin.architecture import SwinArchitecture, architecture_of
from gmim.swin.layouts import recognise
from gmim.swin.merging import LEGACY, MergingChoice, canonical_merging
from gmim.weights_only import load_checkpoint

__all__ = ["INPUT_LAYERS", "WeightReport", "Weights", "adapt_input_channels", "load_weights", "read_weights"]

#: The layers of a Swin UNETR that read the input image, whose weights have one slice per input
#: channel (dimension 1): the patch embedding and the first convolution block of the decoder's skip.
INPUT_LAYERS = ("swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight")
#: Files a folder of weights may hold, most specific first: an exported model, a gmim pre-training
#: run, a gmim fine-tuning run, a MONAI bundle.
FOLDER_FILES = ("model.safetensors", "encoder.pt", "best.pt", "last.pt", "models/model.pt")


@dataclass
class Weights:
    """A weights file read and recognised, its tensors under MONAI's ``SwinUNETR`` names."""

    source: str
    #: The layout recognised, in words (e.g. "VoCo (Swin UNETR pre-training)").
    layout: str
    tensors: dict[str, torch.Tensor]
    #: The file's keys that are no part of a Swin UNETR (pre-training heads), as the file names them.
    ignored: list[str]
    #: ``patch_merging`` is set only where a record beside the file says it (binding).
    architecture: SwinArchitecture
    #: The patch merging to build unless the user chooses, and why (record, layout or rule).
    merging: MergingChoice


@dataclass
class WeightReport:
    """Which tensors of a weights file went where (``weights_report.json``)."""

    source: str
    layout: str
    target: str
    matched: list[str] = field(default_factory=list)
    #: Input layers made from the file's by :func:`adapt_input_channels`: (key, file shape, model shape).
    adapted: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    #: The patch merging the network was built with, and why.
    merging: MergingChoice | None = None

    def as_dict(self) -> dict[str, Any]:
        def shapes(items: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[dict[str, Any]]:
            return [{"key": k, "file": list(a), "model": list(b)} for k, a, b in items]

        return {
            "source": self.source,
            "layout": self.layout,
            "target": self.target,
            "matched": self.matched,
            "adapted": shapes(self.adapted),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "shape_mismatched": shapes(self.mismatched),
            "patch_merging": self.merging.as_dict() if self.merging is not None else None,
        }

    def __str__(self) -> str:
        total = len(self.matched) + len(self.adapted) + len(self.missing) + len(self.mismatched)
        lines = [
            f"weights {self.source} ({self.layout}) → {self.target}: {len(self.matched) + len(self.adapted)} of {total} tensors loaded"
        ]
        for key, file_shape, model_shape in self.adapted:
            lines.append(f"  adapted to {model_shape[1]} input channel(s) from the file's {file_shape[1]}: {key}")
        for name, keys in (("missing (left as initialised)", self.missing), ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"  {name}: {len(keys)} — {_by_module(keys)}")
        for key, file_shape, model_shape in self.mismatched:
            lines.append(f"  another shape (left as initialised): {key} file {tuple(file_shape)} model {tuple(model_shape)}")
        if self.merging is not None:
            lines.append(f"  {self.merging}")
        return "\n".join(lines)


def _by_module(keys: list[str]) -> str:
    counts = Counter(".".join(k.split(".")[:2]) if k.startswith("swinViT.") else k.split(".")[0] for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def _read_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping: a checkpoint dict, or a safetensors file's tensors."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as error:
            raise InputError(f"{path}: not a readable safetensors file ({error})") from error
    return load_checkpoint(path)


def _recorded_merging(path: Path) -> tuple[str, str] | None:
    """(the patch merging, where it is recorded) by the run, export or MONAI bundle beside ``path``;
    None where nothing records it."""
    exported, run, bundle = path.parent / "config.json", path.parent / "config.yaml", path.parent.parent / "configs" / "metadata.json"
    try:
        if exported.is_file():
            name = json.loads(exported.read_text()).get("gmim", {}).get("patch_merging")
            return (name, f"recorded by the export ({exported.name})") if name else None
        if run.is_file():
            name = (yaml.safe_load(run.read_text()) or {}).get("model", {}).get("patch_merging")
            return (name, f"recorded by the run ({run.name})") if name else None
        if path.parent.name == "models" and bundle.is_file():
            metadata = json.loads(bundle.read_text())
            name = (metadata.get("gmim") or {}).get("patch_merging")
            if name:
                return name, "recorded by the bundle (configs/metadata.json)"
            version = re.match(r"(\d+)\.(\d+)", str(metadata.get("monai_version", "")))
            if version:
                older = (int(version[1]), int(version[2])) < (1, 5)
                return (LEGACY if older else "monai"), f"the bundle was made with MONAI {metadata['monai_version']} (configs/metadata.json)"
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return None
    return None


def read_weights(path: str | Path) -> Weights:
    """The weights in ``path``: a file (``.pt``, ``.pth``, ``.ckpt``, ``.safetensors``), or a folder that
    holds one (an exported model, a gmim run)."""
    path = Path(path).expanduser()
    if path.is_dir():
        inside = next((path / name for name in FOLDER_FILES if (path / name).is_file()), None)
        if inside is None:
            raise InputError(f"{path}: a folder without weights ({', '.join(FOLDER_FILES)})")
        path = inside
    elif not path.exists():
        raise InputError(f"{path}: weights file not found")
    recognised = recognise(_read_file(path), str(path))
    layout = recognised.layout
    architecture = architecture_of(recognised.tensors, str(path))
    recorded = _recorded_merging(path)
    if recorded is not None:
        name = canonical_merging(recorded[0])
        architecture = dataclasses.replace(architecture, patch_merging=name)
        merging = MergingChoice(name, "record", recorded[1])
    elif layout.patch_merging is not None:
        merging = MergingChoice(layout.patch_merging, "layout", f"{layout.name} weights were trained before MONAI 1.5")
    else:
        merging = MergingChoice("monai", "rule", "nothing beside the weights records how they were trained, so the installed MONAI's")
    return Weights(str(path), layout.name, recognised.tensors, recognised.ignored, architecture, merging)


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """An input layer's ``weight`` (out, C, k…) for ``channels`` input channels: the sum over the
    file's channels, divided by ``channels``, in every one of them. An input whose channels all
    hold the same image then gives the activations that image gave the file's layer (the sum over
    C' equal slices of w/C'·x is w·x), as timm's ``adapt_input_conv`` keeps them."""
    return (weight.sum(dim=1, keepdim=True) / channels).repeat_interleave(channels, dim=1).contiguous()


def load_weights(network: torch.nn.Module, weights: Weights, adapt_channels: bool = True) -> WeightReport:
    """Copy ``weights`` into ``network`` (a ``SwinUNETR``, or its encoder ``SwinUNETR.swinViT``): the
    tensors that fit, the input layers adapted to another number of input channels (unless
    ``adapt_channels`` is false: then they keep their fresh values), and the report of it all."""
    state = network.state_dict()
    prefix = "" if any(name.startswith("swinViT.") for name in state) else "swinViT."  # the encoder alone: its keys bare
    target = {prefix + name: tensor for name, tensor in state.items()}
    parameters = {prefix + name for name, _ in network.named_parameters()}
    report = WeightReport(weights.source, weights.layout, type(network).__name__)
    load: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        found = weights.tensors.get(name)
        if found is None:
            report.missing.append(name)
        elif found.shape == tensor.shape:
            load[name] = found
            report.matched.append(name)
        elif adapt_channels and name in INPUT_LAYERS and found.shape[:1] + found.shape[2:] == tensor.shape[:1] + tensor.shape[2:]:
            load[name] = adapt_input_channels(found, tensor.shape[1])
            report.adapted.append((name, tuple(found.shape), tuple(tensor.shape)))
        else:
            report.mismatched.append((name, tuple(found.shape), tuple(tensor.shape)))
    report.unexpected = [k for k in weights.tensors if k not in target] + weights.ignored
    matched = sum(name in parameters for name in report.matched)
    if not matched:
        raise InputError(f"{weights.source}: no weights match a {report.target} of this configuration ({_summary(weights.tensors)})")
    if len(report.mismatched) > matched:
        key, file_shape, model_shape = report.mismatched[0]
        raise InputError(
            f"{weights.source}: {len(report.mismatched)} tensors have other shapes than this {report.target} (e.g. {key}: "
            f"file {file_shape}, model {model_shape}); the weights are a Swin UNETR of {weights.architecture.describe()}"
        )
    network.load_state_dict({name[len(prefix) :]: tensor for name, tensor in load.items()}, strict=False)
    return report


def _summary(tensors: Mapping[str, torch.Tensor]) -> str:
    return f"{len(tensors)} tensors, e.g. {next(iter(tensors), 'none')}"
