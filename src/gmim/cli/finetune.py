"""``gmim finetune``: turn a pre-trained encoder into a Swin UNETR segmentation model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gmim.cli.arguments import (
    TRAINING_FLAGS,
    add_config_arguments,
    add_training_arguments,
    flag_overrides,
)
from gmim.config import load_config

#: Direct flags → config keys: the training flags, then fine-tuning's own.
FLAGS = {
    **TRAINING_FLAGS,
    "pretrained": "model.init",
    "fold": "data.fold",
    "label_fraction": "data.label_fraction",
    "labelled_cases": "data.labelled_cases",
    "freeze_encoder": "train.freeze_encoder",
}


def _fold(text: str) -> int | str:
    return "all" if text == "all" else int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a Swin UNETR for segmentation, from a pre-trained encoder or from scratch",
        description="Fine-tune MONAI's Swin UNETR on labelled scans, validate with sliding windows and keep the best "
        "checkpoint. DATA: MSD/decathlon JSON datalists, nnU-Net raw dataset folders or BraTS case folders. "
        "The run folder (--out) holds everything `gmim predict` needs. Ctrl-C or SIGTERM saves last.pt after the "
        "step in flight; --resume goes on. --batch-size is the global batch, also under torchrun.",
    )
    parser.add_argument("data", nargs="+", type=Path, metavar="DATA", help="datalist JSON, nnU-Net dataset folder or BraTS folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--pretrained", help="encoder.pt, model_swinvit.pt or a fine-tuned checkpoint to start from (model.init)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where last.pt left it")
    add_config_arguments(parser, "finetune")
    add_training_arguments(parser)
    parser.add_argument("--fold", type=_fold, help="validation fold (k-fold cross-validation), or 'all' for no validation")
    label = parser.add_mutually_exclusive_group()
    label.add_argument("--label-fraction", type=float, help="fine-tune on this fraction of the training cases")
    label.add_argument("--labelled-cases", type=int, help="fine-tune on this many training cases")
    parser.add_argument("--freeze-encoder", action="store_const", const=True, help="train only the decoder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gmim.segmentation.config import (
        FinetuneConfig,  # the training stack loads only when a run starts
    )
    from gmim.segmentation.method import finetune

    overrides = [*flag_overrides(args, FLAGS), *args.overrides]
    config = load_config(FinetuneConfig, args.config, overrides, presets="finetune")
    summary = finetune(config, args.data, args.out, args.resume)
    if summary.completed and os.environ.get("RANK", "0") == "0":  # under torchrun, one line
        print(f"run folder: {args.out} (weights: best.pt; predict with: gmim predict {args.out} INPUT... --out DIR)")
    return 0
