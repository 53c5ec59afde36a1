"""``gmim export``: a run's model as a folder that MONAI reads without gmim."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run's model as a folder that plain MONAI reads (Hugging Face Hub layout or MONAI Bundle)",
        description="Export a gmim finetune run (its whole Swin UNETR, from best.pt, else last.pt) or a gmim pretrain run "
        "(its encoder, encoder.pt) into OUT. --format huggingface (the default): model.safetensors, config.json (the "
        "SwinUNETR arguments, input preparation, labels), config.yaml (the run's gmim configuration) and README.md (a model "
        "card from the run's records); gmim predict takes an exported segmentation model, gmim finetune --pretrained an "
        "exported encoder. --format monai-bundle (fine-tuned models): a MONAI Bundle (configs/metadata.json, "
        "configs/inference.json, models/model.pt, docs/README.md, LICENSE) that python -m monai.bundle run runs without "
        "gmim, writing what gmim predict writes. Nothing is uploaded.",
    )
    parser.add_argument("run_folder", type=Path, metavar="RUN", help="run folder of gmim finetune or gmim pretrain")
    parser.add_argument("--out", type=Path, required=True, help="export folder (created; or an empty one)")
    parser.add_argument("--format", default="huggingface", help="huggingface (the default) or monai-bundle")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gmim.export import export_run  # the network stack loads only when the command runs

    written = export_run(args.run_folder, args.out, args.format)
    print(f"exported {args.run_folder} into {args.out}: {', '.join(written)}")
    return 0
