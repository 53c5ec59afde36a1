"""``gmim evaluate``: Dice and HD95 of predicted label maps against references, per class or region."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gmim.atomic import atomic_path
from gmim.cli.arguments import require_output_folder
from gmim.config import load_config
from gmim.data.sources import discover_cases
from gmim.errors import InputError

if TYPE_CHECKING:  # the metrics stack (torch, MONAI) loads only when the command runs
    from gmim.segmentation.evaluation import Evaluation
    from gmim.segmentation.task import Task


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and HD95 of predictions against reference label maps",
        description="Pair predictions (PRED: a folder of label maps) with references (LABELS: a folder of label maps, "
        "a datalist or an nnU-Net dataset) by case name; print a table and write metrics.csv and metrics.json.",
    )
    parser.add_argument("predictions", type=Path, metavar="PRED", help="folder of predicted label maps")
    parser.add_argument("references", type=Path, metavar="LABELS", help="folder of reference label maps, datalist or nnU-Net dataset")
    parser.add_argument(
        "--task", help="classes or regions: a run folder, a finetune preset or a config YAML (default: the label values found in LABELS)"
    )
    parser.add_argument("--out", type=Path, help="folder for metrics.csv, metrics.json and overlays (default: PRED)")
    parser.add_argument("--overlays", action="store_true", help="write OUT/overlays/<case>.png")
    parser.add_argument("--images", type=Path, help="the scans (folder or datalist) to draw the overlays on")
    parser.set_defaults(run=run)


def _task(text: str | None) -> Task | None:
    from gmim.segmentation.config import FinetuneConfig
    from gmim.segmentation.inference import find_run

    if text is None:
        return None
    source: str | Path = find_run(Path(text))[0] if Path(text).is_dir() else text
    task = load_config(FinetuneConfig, source, presets="finetune").task
    task.require_complete(f"--task {text}")
    return task


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _table(result: Evaluation) -> str:
    summary = result.summary()
    width = max(len(n) for n in summary)
    lines = [f"{'':<{width}}  {'Dice':>15}  {'HD95 mm':>9}  {'(cases)':>7}"]
    for name, row in summary.items():
        dice = f"{_fmt(row['dice'])} ± {_fmt(row['dice_std'], 3)}"
        lines.append(f"{name:<{width}}  {dice:>15}  {_fmt(row['hd95'], 2):>9}  {row['hd95_cases']:>7}")
    return "\n".join(lines)


def _write(result: Evaluation, out: Path) -> None:
    from gmim.segmentation.metrics import CONVENTIONS

    with atomic_path(out / "metrics.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", *[f"{n}_{m}" for n in result.names for m in ("dice", "hd95")]])
        for case_id in result.dice:
            writer.writerow([case_id, *[v for pair in zip(result.dice[case_id], result.hd95[case_id]) for v in pair]])
    payload = {
        "conventions": list(CONVENTIONS),
        "names": result.names,
        "summary": result.summary(),
        "cases": {i: {n: {"dice": d, "hd95": h} for n, d, h in zip(result.names, result.dice[i], result.hd95[i])} for i in result.dice},
        "missing_predictions": result.missing,
        "predictions_without_reference": result.unpaired,
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=True))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from gmim.data.checks import read_array, read_grid, voxel_spacing
    from gmim.segmentation.evaluation import evaluate
    from gmim.segmentation.metrics import CONVENTIONS
    from gmim.segmentation.overlays import save_overlay

    if args.out is not None:
        require_output_folder(args.out)  # before the scoring, not after it
    out = args.out or (args.predictions if args.predictions.is_dir() else args.predictions.parent)
    result, pairs = evaluate(args.predictions, args.references, _task(args.task))
    print(_table(result))
    for line in CONVENTIONS:
        print(f"  {line}")
    _write(result, out)
    if args.overlays:
        images = {c.id: c.images[0] for c in discover_cases([args.images])} if args.images else {}
        for case_id, pred, ref in pairs:
            image = read_array(images[case_id]).astype(np.float32) if case_id in images else None
            if image is not None and image.shape[:3] != read_array(ref).shape[:3]:
                raise InputError(f"{images[case_id]}: --images scan not on the grid of {ref}")
            spacing = voxel_spacing(read_grid(ref)[1])
            save_overlay(out / "overlays" / f"{case_id}.png", read_array(pred), read_array(ref), spacing, image, title=case_id)
        without = [case_id for case_id, _, _ in pairs if case_id not in images]
        if args.images and without:
            print(
                f"--images {args.images}: no scan named {', '.join(without[:5])}{' …' if len(without) > 5 else ''}; "
                f"{len(without)} overlay(s) drawn without their scan"
            )
    print(f"{len(result.dice)} case(s) scored; metrics.csv and metrics.json in {out}")
    if result.unpaired:
        print(f"predictions without a reference (not scored): {', '.join(result.unpaired)}")
    if result.missing:
        print(f"gmim evaluate: error: no prediction for {len(result.missing)} reference(s): {', '.join(result.missing)}", file=sys.stderr)
        return 2
    return 0
