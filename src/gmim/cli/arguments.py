"""Command-line arguments shared by the commands: ``--config``, ``--set`` and the direct flags that
stand for config keys (the same flags mean the same keys in every command), and ``--out`` folders."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

from gmim.config import Override, preset_names
from gmim.errors import InputError

__all__ = [
    "COLLECTION_FLAGS",
    "TRAINING_FLAGS",
    "add_collection_arguments",
    "add_config_arguments",
    "add_training_arguments",
    "flag_overrides",
    "require_output_folder",
]

#: The training flags of every training command → config keys.
TRAINING_FLAGS = {
    "roi": "model.roi",
    "feature_size": "model.feature_size",
    "patch_merging": "model.patch_merging",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "device": "train.device",
    "workers": "train.workers",
}


#: How ``gmim prepare`` and ``gmim pretrain`` read a collection → config keys.
COLLECTION_FLAGS = {"modality": "preprocessing.modality", "skip_bad": "data.skip_bad"}


def add_collection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`COLLECTION_FLAGS`."""
    parser.add_argument("--modality", choices=("ct", "mri"), help="intensity preset: CT HU window or MRI z-score")
    parser.add_argument("--skip-bad", action="store_const", const=True, help="go on past unreadable or invalid volumes")


def add_config_arguments(parser: argparse.ArgumentParser, presets: str) -> None:
    """``--config PRESET|FILE.yaml`` and repeatable ``--set key.sub=value``."""
    names = ", ".join(preset_names(presets)) or "none"
    parser.add_argument("--config", metavar="PRESET|FILE.yaml", help=f"a shipped preset ({names}) or a YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config value, e.g. --set train.lr=2e-4 (repeatable; applied last)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`TRAINING_FLAGS`."""
    parser.add_argument("--roi", type=int, nargs="+", metavar="N", help="crop size: one size or three (D H W), multiples of 32")
    parser.add_argument("--feature-size", type=int, help="Swin UNETR feature size F (a multiple of 12; 48 in the paper)")
    parser.add_argument(
        "--patch-merging",
        metavar="NAME",  # checked by model.patch_merging's own rule, which names this flag
        help="Swin patch merging: monai (MONAI >= 1.5's), monai-v2, or monai-legacy (MONAI < 1.5's, which public weights "
        "and the GMIM prototype were trained with; also called prototype); default: what the weights record or their source used, else monai",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="length of training in optimizer steps")
    length.add_argument("--epochs", type=int, help="length of training in passes over the training volumes")
    parser.add_argument("--batch-size", type=int, help="volumes per optimizer step over all processes (the global batch)")
    parser.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, help="data-loading worker processes (default: the cores of each process, at most 8)")


def flag_overrides(args: argparse.Namespace, flags: Mapping[str, str]) -> list[Override]:
    """The direct flags given on the command line as overrides of their config keys (flag dest →
    config key), each named as the user wrote it; ``--steps`` unsets ``train.epochs`` and ``--epochs``
    unsets ``train.steps``."""
    roi = getattr(args, "roi", None)
    if roi is not None and len(roi) not in (1, 3):
        raise InputError(f"--roi takes one size or three, got {len(roi)}")
    overrides = []
    for dest, key in flags.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        given_as = flag if value is True else f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        if dest == "roi" and len(value) == 1:
            value = value * 3
        overrides.append(Override(f"{key}={json.dumps(value)}", given_as))
    if getattr(args, "steps", None) is not None:
        overrides.append(Override("train.epochs=null", f"--steps {args.steps}"))
    if getattr(args, "epochs", None) is not None:
        overrides.append(Override("train.steps=null", f"--epochs {args.epochs}"))
    return overrides


def require_output_folder(out: Path) -> None:
    """Create ``--out`` or refuse it, before any work whose results it would receive."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out}: cannot be created ({error.strerror})") from error
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: not writable")
