"""Checks of cases before any work: readable files, channels and label on one grid, known label values.

Headers are read without the voxel data (nibabel for NIfTI, SimpleITK for ``.nrrd``/``.mha``/``.mhd``),
so checking a whole dataset costs little; only label values need the label voxels. What a header
claims is checked (:func:`check_header`) before any reader is asked for the voxels: a crafted
header of a few hundred bytes could otherwise make a reader allocate gigabytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gmim.data.dicom import (
    is_series_reference,
    itk_ras_affine,
    read_series,
    series_grid,
)
from gmim.data.sources import Case
from gmim.errors import InputError
from gmim.resources import memory_bytes

__all__ = [
    "Grid",
    "Header",
    "check_cases",
    "check_header",
    "load_nifti",
    "read_array",
    "read_grid",
    "read_header",
    "read_label_map",
    "read_label_values",
    "reader_reason",
    "same_grid",
    "voxel_spacing",
]

#: Tolerance (mm) for affines to count as equal: header round-off, not different grids.
AFFINE_TOLERANCE = 1e-3
#: Images are loaded as float32: one that would take more than this share of the memory the process
#: may use is refused from its header, before a reader allocates it.
MEMORY_SHARE = 0.5
#: Deflate (gzip) compresses at most 1032:1, so a ``.nii.gz`` can hold at most this many bytes of
#: voxels per byte of file; a header that claims more is truncated or crafted.
DEFLATE_MAX_RATIO = 1032

Grid = tuple[tuple[int, ...], np.ndarray]


def reader_reason(error: BaseException, path: Path | None = None) -> str:
    """A reader's error in a few words: its first line, or for SimpleITK, whose message starts with a
    source line of ITK, the reader's own words after "ERROR:" (the file named by its name only)."""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if "ERROR:" in line]
    if lines:
        text = re.sub(r"\(0x[0-9a-f]+\)", "", lines[0].split("ERROR:", 1)[1]).strip()
        return text.replace(str(path), path.name) if path is not None else text
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line.split(". ")[0] if len(line) > 120 else line


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """A NIfTI-1 or NIfTI-2 file as nibabel reads it (the header now, the voxels when asked for);
    TypeError for a file nibabel reads as another kind of image (a CIFTI-2 file, say)."""
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise TypeError(f"read as a {type(image).__name__}, not a NIfTI image")
    return image


@dataclass(frozen=True)
class Header:
    """What an image file's header claims, read without its voxels."""

    shape: tuple[int, ...]  # every axis, the spatial ones first
    dtype: np.dtype
    affine: np.ndarray  # RAS voxel-to-world of the spatial axes
    #: Bytes of voxels the file must hold for its header to be true (None: not known from the file size).
    stored_bytes: int | None = None

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)


def _nifti_header(path: Path) -> Header:
    image = load_nifti(path)
    header = image.header
    shape = tuple(int(n) for n in header.get_data_shape())
    dtype = np.dtype(header.get_data_dtype())
    if path.name.lower().endswith(".gz"):
        stored = -(-math.prod(shape) * dtype.itemsize // DEFLATE_MAX_RATIO)
    else:
        stored = int(header.get("vox_offset", 0)) + math.prod(shape) * dtype.itemsize
    return Header(shape, dtype, np.asarray(image.affine, dtype=np.float64), stored)


def _itk_header(path: Path) -> Header:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    shape = tuple(int(n) for n in reader.GetSize())
    if reader.GetNumberOfComponents() > 1:  # vector pixels: one more axis
        shape = (*shape, int(reader.GetNumberOfComponents()))
    dtype = _itk_dtype(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    if reader.GetDimension() < 3:  # refused by check_header for its shape; it has no 3D affine
        return Header(shape, dtype, np.eye(4))
    if path.name.lower().endswith(".mhd"):
        _require_data_file(path)
    return Header(shape, dtype, itk_ras_affine(reader))


def _require_data_file(path: Path) -> None:
    """A MetaImage header names the file its voxels are in: refuse the header whose file is missing,
    naming that file (ITK would say only that the header "cannot be read")."""
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            name = value.strip()
            if name not in ("LOCAL", "LIST") and "%" not in name and not (path.parent / name).is_file():
                raise InputError(f"{path}: its voxels' file {name} is missing (next to it)")
            return


def _itk_dtype(pixel: str) -> np.dtype:
    """The NumPy type of one of SimpleITK's pixel type names ("16-bit signed integer", "complex of
    32-bit float", "vector of 8-bit unsigned integer")."""
    bits = int(re.search(r"(\d+)-bit", pixel).group(1))  # type: ignore[union-attr]
    if "complex" in pixel:
        return np.dtype(f"c{2 * bits // 8}")
    kind = "f" if "float" in pixel else "u" if "unsigned" in pixel else "i"
    return np.dtype(f"{kind}{bits // 8}")


def size_text(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_header(path: Path, header: Header) -> None:
    """Refuse, naming the file, what no reader should be asked to load: not one 3D volume, an empty
    or complex image, a zero or non-finite voxel size, a header that claims more voxels than the
    file holds, or a volume too large for the memory the process may use."""
    shape = header.shape
    dims = "×".join(map(str, shape))
    if len(shape) < 3:
        raise InputError(f"{path}: a {len(shape)}D image ({dims}), expected 3D")
    if any(n > 1 for n in shape[3:]):
        raise InputError(
            f"{path}: a {len(shape)}D image ({dims}), expected one 3D volume per file "
            "(give each channel or time point as a file of its own)"
        )
    if 0 in shape[:3]:
        raise InputError(f"{path}: an empty image ({dims} voxels)")
    if header.dtype.kind == "c":
        raise InputError(f"{path}: complex voxels ({header.dtype}); give a real-valued image (e.g. the magnitude)")
    spacing = np.sqrt((header.affine[:3, :3] ** 2).sum(0))
    if not np.all(np.isfinite(header.affine)) or not np.all(spacing > 0):
        raise InputError(f"{path}: voxel size {tuple(round(float(v), 6) for v in spacing)} mm in its header: must be finite and positive")
    claimed = header.voxels * header.dtype.itemsize
    if header.stored_bytes is not None and path.stat().st_size < header.stored_bytes:
        raise InputError(
            f"{path}: its header claims {dims} {header.dtype} voxels ({size_text(claimed)}), more "
            f"than its {path.stat().st_size} bytes can hold: truncated or not an image"
        )
    needed, memory = header.voxels * 4, memory_bytes()
    if needed > MEMORY_SHARE * memory:
        raise InputError(
            f"{path}: {dims} voxels take {size_text(needed)} as float32, more than "
            f"{MEMORY_SHARE:.0%} of the {size_text(memory)} of memory this process may use"
        )


def read_header(path: Path) -> Header:
    """The header of an image file, checked by :func:`check_header`."""
    try:
        header = _nifti_header(path) if _is_nifti(path) else _itk_header(path)
    except InputError:
        raise
    except Exception as error:  # nibabel and SimpleITK raise many types for a corrupt file
        raise InputError(f"{path}: not a readable image ({reader_reason(error, path)})") from error
    check_header(path, header)
    return header


def read_grid(path: Path) -> Grid:
    """The spatial shape and the RAS voxel-to-world affine of an image file or DICOM series, from
    its headers (checked by :func:`check_header`)."""
    if is_series_reference(path):
        return series_grid(path)
    header = read_header(path)
    return header.shape[:3], header.affine


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes in mm along the array axes."""
    x, y, z = (float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0)))
    return x, y, z


def same_grid(a: Grid, b: Grid) -> bool:
    return a[0] == b[0] and bool(np.allclose(a[1], b[1], atol=AFFINE_TOLERANCE))


def read_array(path: Path) -> np.ndarray:
    """The voxels of an image file or DICOM series as one 3D array, axes in nibabel's (i, j, k) order
    whatever the format; the header is checked first."""
    if is_series_reference(path):
        return np.asarray(read_series(path).dataobj)
    shape = read_header(path).shape[:3]
    try:
        if _is_nifti(path):
            return np.asarray(load_nifti(path).dataobj).reshape(shape)
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0).reshape(shape)
    except Exception as error:
        raise InputError(f"{path}: not a readable image ({reader_reason(error, path)})") from error


def read_label_map(path: Path) -> np.ndarray:
    """The voxels of a label map as integers, refused when any is NaN, infinite or fractional (a
    probability map or a resampled label is not a label map)."""
    array = read_array(path)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{path}: label map holds {int((~finite).sum())} NaN or infinite voxel(s)")
        fractional = array != np.round(array)
        if fractional.any():
            raise InputError(f"{path}: label map holds non-integer values (e.g. {array[fractional][0]:g}); labels are whole numbers")
    return array.astype(np.int64)


def read_label_values(path: Path) -> np.ndarray:
    """The distinct values of a label map, refused when they are not integers."""
    return np.unique(read_label_map(path))


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
