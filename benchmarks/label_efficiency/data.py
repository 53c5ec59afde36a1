"""The subjects: deformed copies of two real brains, skull-stripped and cropped, written once as
the four pools' datalists."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from gmim.sample_data import TISSUE_VALUES, brain_tissue, deformed_copies

from .presets import Preset
from .results import write_json

#: Seeds of the deformations: each pool its own, so no subject is in two pools.
POOL_SEEDS = {"unlabelled": 1000, "labelled": 2000, "icbm152": 3000, "itk": 4000}
#: Voxels kept around the brain when subjects are cropped to it (as skull-stripped data come).
MARGIN = 4


def _save_subject(
    folder: Path, name: str, image: np.ndarray, tissue: np.ndarray, affine: np.ndarray, task_labels: dict[str, int] | None
) -> dict[str, str]:
    """Skull-strip with the subject's own brain, crop to it, write the image (and its labels of
    ``task_labels``, unless None); a datalist entry.

    The crop keeps sliding-window prediction from spending most of its windows on empty background."""
    brain = tissue != TISSUE_VALUES["outside"]
    occupied = np.argwhere(brain)
    low = np.maximum(occupied.min(0) - MARGIN, 0)
    high = np.minimum(occupied.max(0) + 1 + MARGIN, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :3] @ low
    nib.save(nib.Nifti1Image((image * brain)[box].astype(np.float32), affine), folder / f"{name}.nii.gz")
    if task_labels is None:
        return {"image": f"{name}.nii.gz"}
    labels = np.zeros(tissue.shape, np.uint8)  # background
    for tissue_class, value in task_labels.items():
        if tissue_class != "background":
            labels[tissue == TISSUE_VALUES[tissue_class]] = value
    nib.save(nib.Nifti1Image(labels[box], affine), folder / f"{name}_tissue.nii.gz")
    return {"image": f"{name}.nii.gz", "label": f"{name}_tissue.nii.gz"}


def make_data(folder: Path, preset: Preset) -> dict[str, Path]:
    """The four pools as datalists in ``folder`` (written once; reused when they exist)."""
    counts = {"unlabelled": preset.unlabelled, "labelled": preset.labelled, "icbm152": preset.test_icbm152, "itk": preset.test_itk}
    datalists = {pool: folder / f"{pool}.json" for pool in counts}
    if all(p.is_file() for p in datalists.values()):
        return datalists
    folder.mkdir(parents=True, exist_ok=True)
    icbm = brain_tissue("icbm152", preset.icbm152_stride)
    itk = brain_tissue("itk")
    for pool, count in counts.items():
        image, tissue, affine = itk if pool == "itk" else icbm
        subjects = deformed_copies(image, count - (pool == "itk"), seed=POOL_SEEDS[pool], labels=tissue)
        if pool == "itk":  # the real brain itself first
            subjects.insert(0, (image, tissue))
        # pre-training never sees a label
        task_labels = None if pool == "unlabelled" else preset.task_labels
        entries = [_save_subject(folder, f"{pool}_{i:03d}", im, ti, affine, task_labels) for i, (im, ti) in enumerate(subjects)]
        write_json(datalists[pool], {"training": entries})
    return datalists
