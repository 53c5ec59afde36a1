"""``gmim pretrain DATA... --out DIR [--method NAME]``: the command line of self-supervised pre-training,
GMIM by default, any pre-training method of the registry (:mod:`gmim.methods`) by name."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gmim.cli.arguments import (
    COLLECTION_FLAGS,
    TRAINING_FLAGS,
    add_collection_arguments,
    add_config_arguments,
    add_training_arguments,
    flag_overrides,
)
from gmim.config import load_config
from gmim.errors import InputError
from gmim.methods import METHODS

EPILOG = """\
DATA: prepared stores (gmim prepare), folders of images (.nii, .nii.gz, .nrrd, .mha, .mhd, searched
recursively; one case per file), DICOM trees, MSD/decathlon JSON datalists (training, optional
validation), nnU-Net raw dataset folders (imagesTr/ with _0000, _0001… channel files) or folders of
BraTS-style case folders; several can be combined. DATA other than stores are prepared first into
the shared folder of stores (--store, default ~/.cache/gmim/stores), where later runs with the same
preprocessing find them.

--method chooses the method (default gmim). Settings come from the method's defaults (GMIM's: the
prototype's CT-collection run), then --config (a shipped preset of that method, or a YAML file), then
the direct flags, then each --set key=value (e.g. --set masking.decay=0 --set loss.standardize=true
--set model.target_momentum=0.99). The run folder receives config.yaml,
encoder.pt (MONAI SwinUNETR(...).swinViT weights), last.pt, metrics.jsonl, summary.json,
loss_curve.png, pictures/ and tensorboard/. Ctrl-C or SIGTERM saves last.pt after the step in
flight; --resume goes on. Several processes or machines: torchrun --nproc_per_node N -m gmim.cli
pretrain ... (--batch-size is the global batch).
"""

#: Direct flags → config keys: the training flags, then pre-training's own.
FLAGS = {
    **TRAINING_FLAGS,
    **COLLECTION_FLAGS,
    "init": "model.init",
    "store": "data.store",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="GMIM self-supervised pre-training of a Swin UNETR encoder on unlabelled volumes",
        description="Pre-train a Swin UNETR encoder with GMIM (adaptive and hierarchical grid masked "
        "image modeling) on unlabelled CT or MRI volumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", type=Path, metavar="DATA", help="stores, image folders, datalists or dataset folders")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pretraining = [spec for spec in METHODS.values() if spec.command == "pretrain"]
    parser.add_argument(
        "--method",
        default="gmim",
        metavar="NAME",
        help="the pre-training method: " + "; ".join(f"{spec.name} ({spec.description})" for spec in pretraining) + " (default gmim)",
    )
    add_config_arguments(parser, "pretrain")
    add_training_arguments(parser)
    add_collection_arguments(parser)
    parser.add_argument("--init", help="encoder weights to start from (gmim encoder.pt or Swin UNETR model_swinvit.pt)")
    parser.add_argument("--store", help="folder of prepared stores that DATA are prepared into (default ~/.cache/gmim/stores)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = METHODS.get(args.method)
    if spec is None or spec.command != "pretrain":
        names = ", ".join(name for name, other in METHODS.items() if other.command == "pretrain")
        raise InputError(f"--method {args.method}: not a pre-training method of gmim ({names})")
    overrides = [*flag_overrides(args, FLAGS), *args.overrides]
    config: Any = load_config(spec.config_class(), args.config, overrides, presets=spec.presets)  # torch and MONAI load here
    summary = spec.run_function()(config, args.data, args.out, resume=args.resume)
    if summary.completed and os.environ.get("RANK", "0") == "0":  # under torchrun, one line
        print(f"encoder weights: {args.out / 'encoder.pt'}\nrun folder: {args.out}")
    return 0
