"""``gmim predict``: segment scans with a fine-tuned run, each output in its input's own grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gmim.cli.arguments import require_output_folder
from gmim.data.sources import discover_cases
from gmim.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment volumes with a fine-tuned model",
        description="Segment volumes (files, folders, datalists, DICOM series) with a `gmim finetune` run folder. Writes "
        "OUT/<case>.nii.gz label maps with each input's shape and affine; with --format dicom-seg also OUT/<case>_seg.dcm, "
        "a DICOM Segmentation over a DICOM input series. A bad case is reported at the end; the others are still predicted.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="run folder of gmim finetune (or a checkpoint inside one)")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files, folders or datalist JSON files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tta", action="store_const", const=True, help="average over the 8 mirrorings (8× slower)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the run's, 0.5)")
    parser.add_argument("--probabilities", action="store_true", help="also write OUT/probabilities/<case>.nii.gz")
    parser.add_argument(
        "--format",
        choices=("nifti", "dicom-seg"),
        default="nifti",
        help="dicom-seg: also a DICOM SEG per DICOM series input, one segment per class or region",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from gmim.engine.device import (
        resolve_device,  # the network stack loads only when a run starts
    )
    from gmim.segmentation.inference import Predictor

    require_output_folder(args.out)  # before any inference, not after it
    predictor = Predictor(args.model, resolve_device(args.device), flip_tta=args.tta, overlap=args.overlap)
    cases = discover_cases(args.inputs, same_channels=False)  # each case is checked against the model
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"{args.inputs[0]}: several inputs named {duplicates[0]}; outputs are named after their input")
    if args.format == "dicom-seg":
        from gmim.data.dicom import is_series_reference
        from gmim.segmentation.dicom_seg import check_source

        other = next((c for c in cases if not is_series_reference(c.images[0])), None)
        if other is not None:
            raise InputError(f"--format dicom-seg: {other.images[0]} is not a DICOM series (a DICOM SEG references its source series)")
        for case in cases:
            check_source(case.images[0])
    failed: list[str] = []
    for case in tqdm(cases, desc="predict", unit="case", dynamic_ncols=True):
        try:
            predictor.predict(case, args.out, args.probabilities, dicom_seg=args.format == "dicom-seg")
        except (InputError, OSError) as error:  # the case's fault; anything else stops the command
            failed.append(f"{case.id}: {error}")
    print(f"{len(cases) - len(failed)} of {len(cases)} case(s) predicted into {args.out}")
    if failed:
        for line in failed:
            print(f"gmim predict: error: {line}", file=sys.stderr)
        return 2
    return 0
