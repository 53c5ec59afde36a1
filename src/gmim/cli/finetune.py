"""``gmim finetune``: turn a pre-trained encoder into a Swin UNETR segmentation model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gmim.config import add_config_arguments, add_roi_argument, flag_overrides, load_config
from gmim.segmentation.config import FinetuneConfig

#: Direct flags → config keys (the ones ``gmim pretrain`` has too, then fine-tuning's own).
FLAGS = {
    "roi": "model.roi",
    "feature_size": "model.feature_size",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "device": "train.device",
    "workers": "train.workers",
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
        "The run folder (--out) holds everything `gmim predict` needs.",
    )
    parser.add_argument("data", nargs="+", type=Path, metavar="DATA", help="datalist JSON, nnU-Net dataset folder or BraTS folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--pretrained", type=Path, help="encoder.pt, model_swinvit.pt or a fine-tuned checkpoint to start from")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where last.pt left it")
    add_config_arguments(parser, "finetune")
    add_roi_argument(parser)
    parser.add_argument("--feature-size", type=int, help="Swin UNETR feature size (a multiple of 12; 48 in the paper)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=int, help="passes over the training cases")
    parser.add_argument("--batch-size", type=int, help="volumes per step (each gives train.samples_per_volume crops)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, help="data-loading processes")
    parser.add_argument("--fold", type=_fold, help="validation fold (k-fold cross-validation), or 'all' for no validation")
    label = parser.add_mutually_exclusive_group()
    label.add_argument("--label-fraction", type=float, help="fine-tune on this fraction of the training cases")
    label.add_argument("--labelled-cases", type=int, help="fine-tune on this many training cases")
    parser.add_argument("--freeze-encoder", action="store_const", const=True, help="train only the decoder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gmim.segmentation.method import finetune  # the training stack loads only when a run starts

    overrides = flag_overrides(args, FLAGS)
    if args.steps is not None:
        overrides.append("train.epochs=null")
    if args.epochs is not None:
        overrides.append("train.steps=null")
    config = load_config(FinetuneConfig, args.config, [*overrides, *args.overrides], presets="finetune")
    weights = finetune(config, args.data, args.out, args.pretrained, args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        print(f"run folder: {args.out} (weights: {weights.name}; predict with: gmim predict {args.out} INPUT... --out DIR)")
    return 0
