"""Checks of cases before any work: readable files, channels and label on one grid, known label values.

Headers are read without the voxel data (nibabel for NIfTI, SimpleITK for ``.nrrd``/``.mha``/``.mhd``),
so checking a whole dataset costs little; only label values need the label voxels.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from gmim.data.dicom import is_series_reference, itk_ras_affine, read_series, series_grid
from gmim.data.sources import Case
from gmim.errors import InputError

__all__ = ["Grid", "check_cases", "read_array", "read_grid", "read_label_values", "same_grid", "voxel_spacing"]

#: Tolerance (mm) for affines to count as equal: header round-off, not different grids.
AFFINE_TOLERANCE = 1e-3

Grid = tuple[tuple[int, ...], np.ndarray]


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def read_grid(path: Path) -> Grid:
    """The spatial shape and the RAS voxel-to-world affine of an image file or DICOM series, from
    its headers."""
    if is_series_reference(path):
        return series_grid(path)
    try:
        if _is_nifti(path):
            image = nib.load(path)
            return tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine, dtype=np.float64)
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        if dim < 3:
            raise InputError(f"{path}: a {dim}D image, expected 3D")
        return tuple(int(n) for n in reader.GetSize()[:3]), itk_ras_affine(reader)
    except InputError:
        raise
    except Exception as error:  # nibabel and SimpleITK raise many types for a corrupt file
        raise InputError(f"{path}: not a readable image ({_reason(error)})") from error


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes in mm along the array axes."""
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0)))


def same_grid(a: Grid, b: Grid) -> bool:
    return a[0] == b[0] and bool(np.allclose(a[1], b[1], atol=AFFINE_TOLERANCE))


def read_array(path: Path) -> np.ndarray:
    """The voxels of an image file or DICOM series, axes in nibabel's (i, j, k) order whatever the format."""
    if is_series_reference(path):
        return np.asarray(read_series(path).dataobj)
    try:
        if _is_nifti(path):
            return np.asarray(nib.load(path).dataobj)
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    except Exception as error:
        raise InputError(f"{path}: not a readable image ({_reason(error)})") from error


def read_label_values(path: Path) -> np.ndarray:
    """The distinct values of a label map, refused when they are not integers."""
    values = np.unique(read_array(path))
    if not np.all(values == np.round(values)):
        raise InputError(f"{path}: label map holds non-integer values (e.g. {values[values != np.round(values)][0]})")
    return values.astype(np.int64)


def _check_case(case: Case, label_values: Collection[int] | None) -> None:
    grids = [read_grid(p) for p in case.images]
    for path, grid in zip(case.images[1:], grids[1:]):
        if not same_grid(grid, grids[0]):
            raise InputError(f"{path}: channel on another grid than {case.images[0].name} (shape {grid[0]} vs {grids[0][0]} or affine)")
    if case.label is None:
        return
    label = read_grid(case.label)
    if label[0] != grids[0][0]:
        raise InputError(f"{case.label}: label shape {label[0]} differs from its image's {grids[0][0]} ({case.images[0]})")
    if not same_grid(label, grids[0]):
        raise InputError(f"{case.label}: label affine differs from its image's ({case.images[0]}): not the same grid")
    if label_values is not None:
        unknown = sorted(set(read_label_values(case.label).tolist()) - set(label_values))
        if unknown:
            raise InputError(f"{case.label}: label values {unknown} are not in the task (known: {sorted(label_values)})")


def check_cases(cases: Sequence[Case], label_values: Collection[int] | None = None, workers: int = 4) -> None:
    """Raise InputError naming the first file that is unreadable, off-grid or has unknown labels."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(_check_case, case, label_values) for case in cases]:
            future.result()
