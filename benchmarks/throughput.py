"""Throughput: `gmim pretrain` and `gmim finetune` end to end, beside the isolated step they run.

Real brains (the ICBM152 T1 of the PyPI package nilearn and deformed, bias-field and noise copies of
it, with grey/white-matter labels from its tissue maps) in four runs: pre-training on a 3-volume and
a 24-volume collection, fine-tuning with 1 and with 4 labelled cases (one more case validates, at
the default interval). Each run's loop reports its time in ``summary.json``; its volumes/s are set
beside those of the step alone, timed by ``pretrain_step.py`` at the same crop, feature size and
batch: the GMIM step for pre-training, the plain Swin UNETR step for fine-tuning (a fine-tuning step
here is 1 volume × 2 crops, as the plain step's batch of 2 crops).

    python benchmarks/throughput.py                                    # CPU: 64³ crops, F 12
    python benchmarks/throughput.py --device cuda --roi 128 --feature-size 48 --bf16 --stride 1 \\
        --steps 200 --workers 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

#: Run name → (command, volumes in the collection / labelled cases).
RUNS = {
    "pretrain, 3 volumes": ("pretrain", 3),
    "pretrain, 24 volumes": ("pretrain", 24),
    "finetune, 1 labelled case": ("finetune", 1),
    "finetune, 4 labelled cases": ("finetune", 4),
}
TASK_LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}


def make_data(folder: Path, stride: int) -> dict[str, Path]:
    """Datalists: ``unlabelled_3``, ``unlabelled_24``, ``labelled_1``, ``labelled_4`` (each with one
    validation case); written once per folder."""
    from gmim.sample_data import TISSUE_VALUES, brain_tissue, deformed_copies

    datalists = {f"unlabelled_{n}": folder / f"unlabelled_{n}.json" for n in (3, 24)}
    datalists |= {f"labelled_{n}": folder / f"labelled_{n}.json" for n in (1, 4)}
    if all(p.is_file() for p in datalists.values()):
        return datalists
    folder.mkdir(parents=True, exist_ok=True)
    image, tissue, affine = brain_tissue("icbm152", stride)
    labels = np.select([tissue == TISSUE_VALUES["grey_matter"], tissue == TISSUE_VALUES["white_matter"]], [1, 2], 0).astype(np.uint8)
    subjects = [(image, labels), *deformed_copies(image, 24, seed=0, labels=labels)]
    entries = []
    for i, (volume, label) in enumerate(subjects):
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), folder / f"brain_{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / f"brain_{i:02d}_tissue.nii.gz")
        entries.append({"image": f"brain_{i:02d}.nii.gz", "label": f"brain_{i:02d}_tissue.nii.gz"})
    for n in (3, 24):
        datalists[f"unlabelled_{n}"].write_text(json.dumps({"training": [{"image": e["image"]} for e in entries[:n]]}))
    for n in (1, 4):
        datalists[f"labelled_{n}"].write_text(json.dumps({"training": entries[1 : n + 1], "validation": entries[:1]}))
    return datalists


def run_command(args: argparse.Namespace, command: str, datalist: Path, out: Path) -> dict:
    """One run of ``command`` from scratch; its ``summary.json`` and the wall time with start-up."""
    from gmim.config import load_config

    roi = [args.roi] * 3
    common = [
        f"model.roi={roi}",
        f"model.feature_size={args.feature_size}",
        f"train.steps={args.steps}",
        "train.epochs=null",
        f"train.device={args.device}",
        f"train.workers={args.workers}",
        f"train.mixed_precision={str(args.bf16).lower()}",
        "preprocessing.modality=mri",
        "preprocessing.spacing=null",
        f"train.warmup_steps={max(1, args.steps // 10)}",
        f"model.fused_attention={str(args.sdpa).lower()}",
    ]
    start = time.perf_counter()
    if command == "pretrain":
        from gmim.pretraining.config import PretrainConfig
        from gmim.pretraining.method import pretrain

        config = load_config(PretrainConfig, None, [*common, f"train.batch_size={args.batch_size}", "train.picture_every=0"])
        pretrain(config, [datalist], out)
    else:
        from gmim.segmentation.config import FinetuneConfig
        from gmim.segmentation.method import finetune

        config = load_config(
            FinetuneConfig,
            None,
            [*common, "train.batch_size=1", f"train.samples_per_volume={args.batch_size}", f"task.labels={json.dumps(TASK_LABELS)}"],
        )
        finetune(config, [datalist], out)
    wall = time.perf_counter() - start
    return {**json.loads((out / "summary.json").read_text()), "wall_seconds": wall}


def _isolated(args: argparse.Namespace, variant: str, queue: multiprocessing.Queue) -> None:
    import pretrain_step  # this folder's benchmark of the step alone

    queue.put(pretrain_step._measure(args, variant)["step"])


def isolated_step(args: argparse.Namespace, variant: str) -> float:
    """Seconds of one step alone (``pretrain_step.py``'s measurement, in a process of its own)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_isolated, args=(args, variant, queue))
    process.start()
    seconds = queue.get()
    process.join()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2, help="volumes per pre-training step; crops per fine-tuning step")
    parser.add_argument("--steps", type=int, default=20, help="steps of each run")
    parser.add_argument("--workers", type=int, default=2, help="data-loading workers of each run")
    parser.add_argument("--bf16", action="store_true", help="mixed precision (bf16 on GPUs that have it)")
    parser.add_argument(
        "--sdpa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="window attention through scaled_dot_product_attention (default), or MONAI's by hand",
    )
    parser.add_argument("--stride", type=int, default=2, help="ICBM152 voxels kept per axis: 2 (2 mm, the default) or 1 (1 mm)")
    parser.add_argument("--repeats", type=int, default=3, help="timed isolated steps (median)")
    parser.add_argument("--out", type=Path, help="folder for the data and runs (default: a temporary one)")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        datalists = make_data(root / "data", args.stride)
        print(
            f"roi {args.roi}³, feature size {args.feature_size}, batch {args.batch_size}, {args.steps} steps a run, "
            f"{args.workers} workers, {args.device}{', mixed precision' if args.bf16 else ''}; torch {torch.__version__}",
            flush=True,
        )
        step = {"pretrain": isolated_step(args, "gmim"), "finetune": isolated_step(args, "plain")}
        print(f"isolated step: GMIM {step['pretrain'] * 1e3:.0f} ms, plain Swin UNETR {step['finetune'] * 1e3:.0f} ms", flush=True)
        header = (
            f"{'run':28s} {'volumes/s':>9s} {'of step':>8s} {'training only':>13s} {'of step':>8s} {'data':>6s} "
            f"{'valid.':>7s} {'ckpt':>6s} {'start-up':>9s}"
        )
        rows = []
        for name, (command, count) in RUNS.items():
            pool = f"unlabelled_{count}" if command == "pretrain" else f"labelled_{count}"
            summary = run_command(args, command, datalists[pool], root / "runs" / name.replace(", ", "_").replace(" ", "_"))
            seconds, steps = summary["seconds"], summary["steps"] - summary["first_step"]
            training = seconds * (1 - summary["validation_share"] - summary["checkpoint_share"])
            volumes_per_step = args.batch_size if command == "pretrain" else 1
            isolated_rate = volumes_per_step / step[command]
            training_rate = steps * volumes_per_step / training
            rows.append(
                f"{name:28s} {summary['volumes_per_s']:9.2f} {summary['volumes_per_s'] / isolated_rate:8.0%} "
                f"{training_rate:13.2f} {training_rate / isolated_rate:8.0%} {summary['data_share']:6.1%} "
                f"{summary['validation_share']:7.1%} {summary['checkpoint_share']:6.1%} "
                f"{summary['wall_seconds'] - seconds:8.1f}s"
            )
            print(rows[-1], flush=True)
        print("\n" + header + "\n" + "\n".join(rows))
        print(
            "volumes/s: the whole loop (validation and checkpoints included); training only: without them; "
            "of step: that rate over the isolated step's; start-up: reading, preprocessing and caching before step 1"
        )


if __name__ == "__main__":
    main()
