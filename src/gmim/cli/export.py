"""``gmim export``: a run's model as a folder that MONAI and safetensors read without gmim."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run's model as a folder that plain MONAI reads (Hugging Face Hub layout)",
        description="Export a gmim finetune run (its whole Swin UNETR, from best.pt, else last.pt) or a gmim pretrain run "
        "(its encoder, encoder.pt) into OUT: model.safetensors, config.json (the SwinUNETR arguments, input preparation, "
        "labels), config.yaml (the run's gmim configuration) and README.md (a model card from the run's records). "
        "Nothing is uploaded. gmim predict takes an exported segmentation model, gmim finetune --pretrained an exported encoder.",
    )
    parser.add_argument("run_folder", type=Path, metavar="RUN", help="run folder of gmim finetune or gmim pretrain")
    parser.add_argument("--out", type=Path, required=True, help="export folder (created; its export files are replaced)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gmim.export import export_run  # the network stack loads only when the command runs

    out = export_run(args.run_folder, args.out)
    print(f"exported {args.run_folder} into {out}: model.safetensors, config.json, config.yaml, README.md")
    return 0
