"""Initialise a Swin UNETR, or its encoder, from weights made elsewhere, and say what matched.

Weights files are untrusted: they are read with ``torch.load(..., weights_only=True)`` or, for
``.safetensors``, with the ``safetensors`` package. Accepted layouts, recognised by key names:

- a ``gmim`` ``encoder.pt``: the state_dict of MONAI's ``SwinUNETR(...).swinViT``;
- the Swin UNETR self-supervised ``model_swinvit.pt``: ``{"state_dict": {"module.layers1.0.blocks.0.mlp.fc1.weight": ...}}``
  with rotation, contrastive and reconstruction heads beside the encoder;
- a full fine-tuned (MONAI or ``gmim``) Swin UNETR, plain or inside a checkpoint dict (``model``,
  ``state_dict``, ``network_weights``).

Key prefixes ``module.`` (DataParallel), ``model.``, ``encoder.`` and ``swinViT.`` are removed, and the
old MLP names ``fc1``/``fc2`` become MONAI's ``linear1``/``linear2``, before names are compared. A
tensor whose shape differs is not loaded and is reported; a differing number of input channels
(a CT encoder for 4-channel MRI) leaves only the layers that read the input at their fresh
initialisation, with a warning. No matched parameter at all is an error, never a silent no-op.

    report = load_pretrained(model, "encoder.pt")   # model: SwinUNETR or SwinUNETR.swinViT
    print(report)
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gmim.engine.checkpoint import load_checkpoint
from gmim.errors import InputError

__all__ = ["WeightReport", "load_pretrained", "read_state_dict"]

_WRAPPER_PREFIXES = ("module.", "model.", "encoder.", "swinViT.")
_CHECKPOINT_KEYS = ("state_dict", "model", "network_weights", "model_state_dict")
_OLD_MLP = re.compile(r"\.mlp\.fc([12])\.")


@dataclass
class WeightReport:
    """Which tensors of a weights file went where."""

    source: str
    target: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "shape_mismatched": [{"key": k, "file": list(a), "model": list(b)} for k, a, b in self.mismatched],
        }

    def __str__(self) -> str:
        total = len(self.matched) + len(self.missing) + len(self.mismatched)
        lines = [f"weights {self.source} → {self.target}: {len(self.matched)} of {total} tensors loaded"]
        for name, keys in (("missing (left as initialised)", self.missing), ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"  {name}: {len(keys)} — {_by_module(keys)}")
        for key, file_shape, model_shape in self.mismatched:
            lines.append(f"  shape-mismatched (left as initialised): {key} file {tuple(file_shape)} model {tuple(model_shape)}")
        return "\n".join(lines)


def _by_module(keys: list[str]) -> str:
    counts = Counter(k.split(".")[0] if not k.startswith("swinViT.") else ".".join(k.split(".")[:2]) for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, whatever checkpoint dict they are wrapped in."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise InputError(f"{path}: weights file not found")
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as error:
            raise InputError(f"{path}: reading .safetensors needs the package safetensors: pip install safetensors") from error
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise InputError(f"{path}: not a readable safetensors file ({error})") from error
    data: Any = load_checkpoint(path)
    for key in _CHECKPOINT_KEYS:
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: holds no weight tensors (expected a state_dict or a checkpoint with one)")
    return tensors


def _canonical(key: str) -> str:
    """A key without wrapper prefixes and with MONAI's MLP names: comparable across layouts."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return _OLD_MLP.sub(r".mlp.linear\1.", key)


def load_pretrained(model: torch.nn.Module, path: str | Path) -> WeightReport:
    """Copy the tensors of ``path`` that fit into ``model`` (a SwinUNETR or its ``swinViT``)."""
    source = read_state_dict(path)
    by_canonical: dict[str, str] = {}
    for key in source:
        by_canonical.setdefault(_canonical(key), key)
    target = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    report = WeightReport(str(path), type(model).__name__)
    load: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, tensor in target.items():
        found = by_canonical.get(_canonical(name))
        if found is None:
            report.missing.append(name)
            continue
        used.add(found)
        if source[found].shape != tensor.shape:
            report.mismatched.append((name, tuple(source[found].shape), tuple(tensor.shape)))
            continue
        load[name] = source[found]
        report.matched.append(name)
    report.unexpected = [k for k in source if k not in used]
    matched_parameters = sum(name in parameters for name in report.matched)
    if matched_parameters == 0:
        raise InputError(
            f"{path}: no weights match a {report.target} of this configuration "
            f"({len(source)} tensors in the file, e.g. {next(iter(source))})"
        )
    if len(report.mismatched) > matched_parameters:
        key, file_shape, model_shape = report.mismatched[0]
        raise InputError(
            f"{path}: {len(report.mismatched)} tensors have other shapes than this {report.target} "
            f"(e.g. {key}: file {file_shape}, model {model_shape}); another --feature-size?"
        )
    model.load_state_dict(load, strict=False)
    if report.mismatched:
        channel_only = all(len(a) == len(b) and a[0] == b[0] and a[2:] == b[2:] for _, a, b in report.mismatched)
        what = "the input channels differ: the layers reading the input start" if channel_only else "they start"
        names = ", ".join(k for k, _, _ in report.mismatched[:3]) + (", …" if len(report.mismatched) > 3 else "")
        warnings.warn(
            f"{path}: {len(report.mismatched)} tensor(s) of another shape not loaded ({names}); {what} from scratch", stacklevel=2
        )
    return report
