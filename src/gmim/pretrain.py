"""``gmim pretrain DATA... --out DIR``: the command line of GMIM pre-training."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmim.config import load_config, preset_names
from gmim.pretraining.config import PretrainConfig

EPILOG = """\
DATA: folders of images (.nii, .nii.gz, .nrrd, .mha, .mhd, searched recursively; one channel each),
MSD/decathlon JSON datalists (training, optional validation), nnU-Net raw dataset folders
(imagesTr/ with _0000, _0001… channel files) or folders of BraTS-style case folders; several can be
combined.

Settings come from the defaults (the prototype's CT-collection run), then --config (a preset: {presets};
or a YAML file), then the flags below, then each --set key=value (e.g. --set masking.decay=0
--set loss.standardize=true --set model.target_momentum=0.99). The run folder receives config.yaml,
encoder.pt (MONAI SwinUNETR(...).swinViT weights), last.pt, metrics.jsonl, loss_curve.png,
pictures/ and tensorboard/. Several processes or machines: torchrun --nproc_per_node N -m gmim.cli
pretrain ... (the batch size is the global one).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="GMIM self-supervised pre-training of a Swin UNETR encoder on unlabelled volumes",
        description="Pre-train a Swin UNETR encoder with GMIM (adaptive and hierarchical grid masked "
        "image modeling) on unlabelled CT or MRI volumes.",
        epilog=EPILOG.format(presets=", ".join(preset_names("pretrain"))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", type=Path, metavar="DATA", help="image folders, datalists or dataset folders")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--config", help="a preset name or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting (repeatable), e.g. train.warmup_steps=100")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--modality", choices=("ct", "mri"), help="intensity preset: CT HU window or MRI z-score")
    parser.add_argument("--roi", type=int, nargs="+", metavar="N", help="crop size: one size or three (D H W), divisible by 32")
    parser.add_argument("--feature-size", type=int, help="Swin UNETR feature size F (a multiple of 12; 48 in the paper)")
    parser.add_argument("--steps", type=int, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, help="volumes per step, over all processes")
    parser.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, help="data loading worker processes")
    parser.add_argument("--init", help="encoder weights to start from (gmim encoder.pt or Swin UNETR model_swinvit.pt)")
    parser.add_argument("--skip-bad", action="store_true", help="go on past unreadable or invalid volumes")
    parser.set_defaults(run=run)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The direct flags as ``--set`` overrides, so that they are checked like any other setting."""
    overrides = []
    if args.modality:
        overrides.append(f"preprocessing.modality={args.modality}")
    if args.roi:
        if len(args.roi) not in (1, 3):
            raise ValueError(f"--roi takes one size or three, got {len(args.roi)}")
        roi = args.roi * 3 if len(args.roi) == 1 else args.roi
        overrides.append(f"model.roi=[{', '.join(map(str, roi))}]")
    for flag, key in (("feature_size", "model.feature_size"), ("steps", "train.steps"), ("batch_size", "train.batch_size"),
                      ("lr", "train.lr"), ("device", "train.device"), ("workers", "train.workers"), ("init", "model.init")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    return overrides


def run(args: argparse.Namespace) -> int:
    from gmim.pretraining.train import pretrain  # torch and MONAI load only when a run starts

    config = load_config(PretrainConfig, args.config, [*_flag_overrides(args), *args.overrides], presets="pretrain")
    encoder = pretrain(config, args.data, args.out, resume=args.resume)
    print(f"encoder weights: {encoder}\nrun folder: {args.out}")
    return 0
