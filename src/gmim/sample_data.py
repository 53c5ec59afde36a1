"""Real scans that ship inside packages, for the demo, the tests and the benchmarks.

- The MNI ICBM152 2009a template (PyPI package ``nilearn``): T1, grey- and white-matter maps and a
  brain mask, 197×233×189 at 1 mm.
- The ITK example T1 brain MRI (Debian package ``insighttoolkit5-examples``):
  ``KmeansTest_T1UCharRaw.nii.gz`` (128×128×62) with a label map
  (``KmeansTest_T1KmeansPrelimSegmentation.nii.gz``) and a skull-strip mask
  (``KmeansTest_T1RawSkullStrip.nii.gz``) on the same grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
)

from gmim.data.checks import load_nifti, voxel_spacing
from gmim.errors import InputError

#: Where the Debian package installs its data; ``GMIM_ITK_DATA`` points elsewhere.
ITK_EXAMPLES_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
ITK_FILES = {
    "t1": "KmeansTest_T1UCharRaw.nii.gz",
    "labels": "KmeansTest_T1KmeansPrelimSegmentation.nii.gz",
    "skull_strip": "KmeansTest_T1RawSkullStrip.nii.gz",
}


def itk_example_paths() -> dict[str, Path]:
    """Paths of the ITK example T1, its label map and its skull-strip mask."""
    folder = Path(os.environ.get("GMIM_ITK_DATA", ITK_EXAMPLES_DATA))
    paths = {name: folder / file for name, file in ITK_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InputError(
            f"ITK example data not found ({missing[0]}): install the Debian package "
            "insighttoolkit5-examples, or set GMIM_ITK_DATA to its examples/Data folder"
        )
    return paths


def mni152() -> dict[str, nib.Nifti1Image]:
    """The ICBM152 2009a T1 template at 1 mm with its grey/white-matter maps and brain mask."""
    try:
        from nilearn import datasets
    except ImportError as error:
        raise InputError("the ICBM152 template needs the PyPI package nilearn: pip install nilearn") from error
    return {
        "t1": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "brain_mask": datasets.load_mni152_brain_mask(resolution=1),
    }


def deformed_copies(
    image: np.ndarray, count: int, seed: int = 0, labels: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``count`` new subjects made from one real (D, H, W) scan: a smooth random deformation (applied
    to ``labels`` alike, nearest neighbour), then a bias field, a contrast change and noise on the
    image. Deterministic given ``seed``."""
    keys = ["image", "label"] if labels is not None else ["image"]
    modes = ["bilinear", "nearest"] if labels is not None else ["bilinear"]
    transform = Compose(
        [
            Rand3DElasticd(
                keys,
                sigma_range=(6, 9),
                magnitude_range=(40, 120),
                prob=1.0,
                rotate_range=(0.15, 0.15, 0.15),
                scale_range=(0.08, 0.08, 0.08),
                mode=modes,
                padding_mode="zeros",
            ),
            RandBiasFieldd("image", coeff_range=(0.1, 0.3), prob=1.0),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=1.0),
            RandGaussianNoised("image", std=0.02 * float(np.abs(image).max() or 1.0), prob=1.0),
        ]
    )
    transform.set_random_state(seed=seed)
    data = {"image": image[None].astype(np.float32)}
    if labels is not None:
        data["label"] = labels[None].astype(np.float32)
    copies = []
    for _ in range(count):
        out = transform(dict(data))
        new_image = np.asarray(out["image"][0], dtype=np.float32)
        new_labels = np.rint(np.asarray(out["label"][0])).astype(labels.dtype) if labels is not None else None
        copies.append((new_image, new_labels))
    return copies


#: Values of the tissue label maps of :func:`brain_tissue`: outside the brain, brain that is neither
#: grey nor white matter (CSF, deep nuclei below threshold), grey matter, white matter, and deep CSF.
TISSUE_VALUES = {"outside": 0, "other": 1, "grey_matter": 2, "white_matter": 3, "deep_csf": 4}
#: ``other`` tissue this deep inside the brain's outline, in pieces of at least this volume, is deep CSF.
DEEP_CSF_DEPTH_MM, DEEP_CSF_MIN_ML = 15.0, 1.0


def _mark_deep_csf(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``labels`` with :data:`TISSUE_VALUES` ``deep_csf`` where ``other`` tissue lies more than
    :data:`DEEP_CSF_DEPTH_MM` inside the brain, in connected pieces of at least
    :data:`DEEP_CSF_MIN_ML`: the ventricles and the deepest fissures.

    Their intensity is that of the CSF in the sulci; only where they lie tells them apart. So a
    network must use context to find them, which grey and white matter (told apart by intensity)
    do not ask of it."""
    from scipy import ndimage

    zooms = np.asarray(voxel_spacing(affine))
    depth = ndimage.distance_transform_edt(labels != TISSUE_VALUES["outside"], sampling=zooms)
    pieces, _ = ndimage.label((labels == TISSUE_VALUES["other"]) & (depth > DEEP_CSF_DEPTH_MM))
    millilitres = np.bincount(pieces.ravel()) * float(np.prod(zooms)) / 1000
    millilitres[0] = 0.0
    labels = labels.copy()
    labels[np.isin(pieces, np.nonzero(millilitres >= DEEP_CSF_MIN_ML)[0])] = TISSUE_VALUES["deep_csf"]
    return labels


def brain_tissue(source: str, stride: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real T1 brain MRI, its tissue label map (:data:`TISSUE_VALUES`, deep CSF included) and its affine.

    ``icbm152``: the template (already skull-stripped) every ``stride`` voxels; white matter where
    its map exceeds 0.5, else grey matter where that map does, else ``other`` inside the brain mask.
    ``itk``: the ITK example head (with its skull) at its own 2×2×3 mm; the brain is its
    skull-strip mask, grey and white matter its k-means classes 5 and 6 (mean T1 76 and 101 there;
    class 4, at 48, is CSF). One label map for both, so that :func:`deformed_copies` moves tissue and
    brain outline together.
    """
    if source == "icbm152":
        images = mni152()
        t1 = np.asarray(images["t1"].get_fdata(), dtype=np.float32)
        maps = {k: np.asarray(images[k].dataobj) for k in ("brain_mask", "gm", "wm")}
        labels = np.select(
            [maps["wm"] > 0.5, maps["gm"] > 0.5, maps["brain_mask"] > 0],
            [TISSUE_VALUES["white_matter"], TISSUE_VALUES["grey_matter"], TISSUE_VALUES["other"]],
            TISSUE_VALUES["outside"],
        )
        cut = (slice(None, None, stride),) * 3
        affine = images["t1"].affine @ np.diag([stride, stride, stride, 1.0])
        return t1[cut], _mark_deep_csf(labels[cut].astype(np.uint8), affine), affine
    if source == "itk":
        paths = itk_example_paths()
        image = load_nifti(paths["t1"])
        brain = np.asarray(load_nifti(paths["skull_strip"]).dataobj) > 0
        kmeans = np.asarray(load_nifti(paths["labels"]).dataobj)
        labels = np.select(
            [brain & (kmeans == 6), brain & (kmeans == 5), brain],
            [TISSUE_VALUES["white_matter"], TISSUE_VALUES["grey_matter"], TISSUE_VALUES["other"]],
            TISSUE_VALUES["outside"],
        )
        return np.asarray(image.get_fdata(), dtype=np.float32), _mark_deep_csf(labels.astype(np.uint8), image.affine), image.affine
    raise InputError(f"brain_tissue: unknown source {source!r} (icbm152 or itk)")
