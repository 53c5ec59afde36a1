"""``gmim demo``: GMIM pre-training on real brain MRI that ships in packages, in minutes on a CPU.

The collection: the ICBM152 2009a T1 template (PyPI package nilearn) and deformed, bias-field,
contrast and noise variants of it for training; the ITK example T1 (Debian package
insighttoolkit5-examples), another real brain, skull-stripped with its own mask as the template is,
held out for the validation loss and the representation health when installed. At 3 mm a 64³
crop holds a whole brain, so the reconstructions can show its shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from gmim.config import load_config
from gmim.errors import InputError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_STEPS = 60
VARIANTS = 5
#: Voxel size (mm) the demo's volumes are resampled to: a 64³ crop then spans 192 mm, a whole brain.
SPACING = 3.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pre-train GMIM on real brain MRI shipped in packages (minutes on a CPU)",
        description="Pre-train a small Swin UNETR encoder with GMIM on the ICBM152 T1 template and "
        "variants of it (nilearn), validating on the ITK example T1 (insighttoolkit5-examples), and "
        "leave a run folder with encoder.pt, the loss curve and mask/reconstruction pictures.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the data and the run")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"pre-training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.set_defaults(run=run)


def _save(path: Path, volume: np.ndarray, affine: np.ndarray) -> str:
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), path)
    return path.name


def write_collection(folder: Path) -> Path:
    """Write the demo's volumes and a datalist naming them; returns the datalist."""
    import numpy as np

    from gmim.data.checks import load_nifti
    from gmim.sample_data import deformed_copies, itk_example_paths, mni152

    folder.mkdir(parents=True, exist_ok=True)
    template = mni152()["t1"]
    t1 = np.asarray(template.get_fdata(), dtype=np.float32)[::2, ::2, ::2]  # 2 mm: quick to deform
    affine = template.affine.copy()
    affine[:3, :3] *= 2
    training = [_save(folder / "icbm152_t1.nii.gz", t1, affine)]
    for i, (variant, _) in enumerate(deformed_copies(t1, VARIANTS, seed=0)):
        training.append(_save(folder / f"icbm152_t1_variant{i}.nii.gz", variant, affine))
    datalist = {"training": [{"image": name} for name in training]}
    try:
        itk = itk_example_paths()
        image = load_nifti(itk["t1"])
        brain = np.asarray(load_nifti(itk["skull_strip"]).dataobj) > 0
        stripped = np.asarray(image.get_fdata()) * brain  # as the template comes: the brain alone
        datalist["validation"] = [{"image": _save(folder / "itk_t1_brain.nii.gz", stripped, image.affine)}]
        print(
            "validation: the ITK example T1, skull-stripped with its own mask: another person's brain, from another "
            "scanner, that training never sees. Its loss asks whether what the encoder learns from one template "
            "carries over to it; its representation health whether the encoder still tells places apart"
        )
    except InputError as missing:
        print(f"no validation volume ({missing}): representation health is measured on training volumes")
    path = folder / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path


def run(args: argparse.Namespace) -> int:
    from gmim.engine.metrics import (
        read_metrics,  # torch and MONAI load only when a run starts
    )
    from gmim.pretraining.config import PretrainConfig
    from gmim.pretraining.health import COLLAPSE_FRACTION
    from gmim.pretraining.method import pretrain

    if args.steps < 1:
        raise InputError(f"--steps must be positive, got {args.steps}")
    datalist = write_collection(args.out / "data")
    checkpoints = max(1, args.steps // 4)
    config = load_config(
        PretrainConfig,
        "cpu-small",
        [
            f"train.steps={args.steps}",
            f"train.device={args.device}",
            f"preprocessing.spacing=[{SPACING}, {SPACING}, {SPACING}]",
            f"train.validate_every={checkpoints}",
            f"train.picture_every={checkpoints}",
            f"train.checkpoint_every={checkpoints}",
        ],
        presets="pretrain",
    )
    run_dir = args.out / "run"
    resume = (run_dir / "last.pt").is_file()
    if resume:
        print(f"continuing the run in {run_dir}")
    pretrain(config, [datalist], run_dir, resume=resume)
    records = read_metrics(run_dir / "metrics.jsonl")
    losses = [r for r in records if "train/loss" in r]
    validation = [r["val/loss"] for r in records if "val/loss" in r]
    print(
        f"training loss {losses[0]['train/loss']:.3f} by step {losses[0]['step']} -> {losses[-1]['train/loss']:.3f} "
        f"by step {losses[-1]['step']}" + (f"; validation loss {validation[0]:.3f} -> {validation[-1]:.3f}" if validation else "")
    )
    health = [r for r in records if "val/health/variation4" in r]
    if health:
        steps = ", ".join(f"{r['val/health/variation4'] / health[0]['val/health/variation4']:.0%} by step {r['step']}" for r in health[1:])
        print(
            f"the final encoder stage's token variation, as a share of the initial encoder's: {steps} "
            f"(under {COLLAPSE_FRACTION:.0%}: collapsed)"
        )
    print(f"encoder weights (MONAI SwinUNETR(...).swinViT): {run_dir / 'encoder.pt'}")
    print(f"loss curve: {run_dir / 'loss_curve.png'}")
    print(f"masks and reconstructions: {run_dir / 'pictures'}")
    return 0
