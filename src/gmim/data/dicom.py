"""DICOM series as scans: found by SeriesInstanceUID in any folder layout, checked, then read.

A series is named by a path, like an image file: the folder that holds it when that folder (with
its sub-folders) holds no other image series, else ``<folder>/<SeriesInstanceUID>``. Headers are
read with pydicom, without pixel data, to find and check series; voxels are read with SimpleITK's
GDCM series reader, which applies RescaleSlope/RescaleIntercept (CT in HU). Geometry comes from
ImagePositionPatient and ImageOrientationPatient: slices are ordered by their position along the
normal, and the slice spacing is the distance between positions, never SliceThickness.

What a collection may hold besides image series is passed over: non-image objects (structure sets,
reports, segmentations) silently, localizers and single-slice series with a note. A series that
cannot be a volume (missing slices, gantry tilt, mixed sizes or orientations, a transfer syntax
nothing installed decodes) raises :class:`~gmim.errors.InputError` naming it.

Archives hold many thousands of files: headers are read in a pool of processes with a progress bar,
and :func:`find_series` can keep what it read in a scan cache, so a later scan reads only the files
that are new or changed.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
import stat
import warnings
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from gmim.atomic import atomic_path
from gmim.errors import InputError
from gmim.resources import usable_cores

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["Series", "find_series", "itk_ras_affine", "is_series_reference", "read_series", "series_at", "series_files", "series_grid"]

#: Modalities of DICOM objects that hold no image volume: passed over in a collection.
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "SEG", "PR", "KO", "REG", "DOC", "RWV", "FID", "PLAN"})
#: Transfer syntaxes SimpleITK's GDCM decodes: uncompressed, deflate, JPEG, JPEG-LS, JPEG 2000, RLE.
GDCM_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    }
)
#: Slice gaps may differ from their median by this share (plus 1 µm) before slices count as missing.
SPACING_TOLERANCE = 0.01
#: Slices count as stacked along their normal when each step leaves it by at most this share.
TILT_TOLERANCE = 1e-3
_HEADER_TAGS = [
    "SeriesInstanceUID",
    "Modality",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PatientID",
    "SeriesNumber",
]
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".json", ".txt", ".csv", ".yaml", ".png", ".jpg")
#: Headers are read by a pool of processes, not threads: pydicom parses in Python under the GIL, where two
#: threads read at half the speed of one (measured). The workers are spawned, so a script scanning a large
#: folder needs the usual ``if __name__ == "__main__":``. Their start (each imports pydicom and the caller's
#: main module: about half a CPU-second) pays off from about 1500 files to read on two free cores, sooner on
#: more; below this many, files are read in this process.
POOL_MIN_FILES = 2000
#: A scan reading more files than this shows a progress bar on stderr (small folders and tests stay quiet).
PROGRESS_MIN_FILES = 500
#: Format of the scan cache. Bump it whenever what _read_header makes of a file may change (the modalities
#: passed over, how a field is read); a change of Slice's or _Header's fields invalidates caches by itself.
SCAN_CACHE_VERSION = 1


@dataclass(frozen=True)
class Slice:
    path: Path
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None  #: PixelSpacing: between rows, between columns (mm)
    size: tuple[int, int]  #: rows, columns
    frames: int
    syntax: str


class _Header(NamedTuple):
    """What one image file says about its series: all that a scan keeps of it."""

    uid: str
    patient_id: str
    series_number: str
    localizer: bool
    slice: Slice  #: last: the scan cache keeps a header as its other fields, then the slice's but its path


_SLICE_FIELDS = tuple(f.name for f in fields(Slice))[1:]
#: What the scan cache keeps of a header, in this order (the slice's path is the entry's key).
_CACHED_FIELDS = _Header._fields[:-1] + _SLICE_FIELDS


@dataclass(frozen=True)
class Series:
    """The image files of one SeriesInstanceUID under a folder, and what names it."""

    uid: str
    folder: Path
    slices: tuple[Slice, ...]
    patient_id: str
    series_number: str
    localizer: bool

    @property
    def files(self) -> list[Path]:
        return [s.path for s in self.slices]

    def label(self) -> str:
        """How messages name the series."""
        return f"DICOM series {self.uid} in {self.folder}"

    def kind(self) -> str:
        """What a series that is not a volume is, for messages."""
        return "a localizer" if self.localizer else "a single slice (2D)"


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _floats(value: Iterable[Any] | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in value) if value is not None else None


def _read_header(path: Path) -> _Header | None:
    """What an image object says about its series; None for anything else."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception:  # not DICOM after all, or unreadable: not part of any series
        return None
    modality = str(ds.get("Modality", "")).upper()
    if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "SeriesInstanceUID" not in ds:
        return None
    image_type = [str(t).upper() for t in ds.get("ImageType", [])]
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if hasattr(ds, "file_meta") else "1.2.840.10008.1.2"
    item = Slice(
        path,
        _floats(ds.get("ImagePositionPatient")),
        _floats(ds.get("ImageOrientationPatient")),
        _floats(ds.get("PixelSpacing")),
        (int(ds.Rows), int(ds.Columns)),
        int(ds.get("NumberOfFrames", 1) or 1),
        syntax,
    )
    return _Header(
        str(ds.SeriesInstanceUID), str(ds.get("PatientID", "")), str(ds.get("SeriesNumber", "")), "LOCALIZER" in image_type, item
    )


def _read_files(paths: list[Path]) -> list[_Header | None]:
    """The header of each DICOM image object among ``paths``, None for other files: one task of a scan."""
    return [_read_header(path) if _is_dicom(path) else None for path in paths]


def _read_all(paths: list[Path], workers: int | None) -> list[_Header | None]:
    """:func:`_read_files` over ``paths``, in their order: by a pool of ``workers`` processes (default: the
    usable cores) when there are enough files, with a progress bar (files/s, time left) when there are many."""
    from tqdm.auto import tqdm

    workers = usable_cores() if workers is None else workers
    if multiprocessing.current_process().daemon:  # a DataLoader worker: daemons may not start processes
        workers = 1
    size = max(1, min(128, len(paths) // (8 * workers)))  # chunks: a few per worker, and a bar that moves
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    results: list[list[_Header | None]] = [[] for _ in chunks]
    with tqdm(
        total=len(paths), desc="reading DICOM headers", unit="file", dynamic_ncols=True, disable=len(paths) <= PROGRESS_MIN_FILES
    ) as bar:
        if workers < 2 or len(paths) < POOL_MIN_FILES:
            for n, chunk in enumerate(chunks):
                results[n] = _read_files(chunk)
                bar.update(len(chunk))
        else:
            # spawn, not fork: the caller may run threads (torch, a thread pool), which fork can deadlock
            pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"))
            try:
                futures = {pool.submit(_read_files, chunk): n for n, chunk in enumerate(chunks)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(len(chunks[futures[future]]))
            finally:
                pool.shutdown(cancel_futures=True)  # on an error or Ctrl-C, do not read the rest first
    return [header for result in results for header in result]


def _files(folder: Path) -> list[tuple[str, os.stat_result]]:
    """The files under ``folder`` that may be DICOM (not named as another format), by their path relative
    to it, in path order, with their stat. As ``folder.rglob("*")`` finds them (hidden ones too, links to
    folders not followed), with one stat per file and no Path made for what is passed over."""
    found = []
    folders = [""]
    while folders:
        relative = folders.pop()
        try:
            with os.scandir(os.path.join(folder, relative)) as entries:
                for entry in entries:
                    name = os.path.join(relative, entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(name)
                    elif not entry.name.lower().endswith(_IMAGE_SUFFIXES):
                        try:
                            status = entry.stat()  # of what a link points to
                        except OSError:  # a broken link, or gone since it was listed
                            continue
                        if stat.S_ISREG(status.st_mode):
                            found.append((name, status))
        except OSError:  # an unreadable folder: passed over, as rglob does
            continue
    return sorted(found, key=lambda item: item[0].split(os.sep))  # the order of their Paths


def _encode(header: _Header | None) -> list[Any] | None:
    return None if header is None else [*header[:-1], *(getattr(header.slice, f) for f in _SLICE_FIELDS)]


def _decode(path: Path, row: list[Any] | None) -> _Header | None:
    """The header a cache row holds for ``path``; TypeError or ValueError for a row not of this format."""
    if row is None:
        return None
    values: list[Any] = [tuple(v) if type(v) is list else v for v in row]
    naming = len(_Header._fields) - 1
    return _Header._make([*values[:naming], Slice(path, *values[naming:])])


def _load_cache(cache: Path) -> dict[str, Any]:
    """The entries of a scan cache by path; none when it is missing, unreadable, corrupt or of another format
    (the scan then reads every file and writes it anew)."""
    try:
        data = json.loads(cache.read_bytes())
        if data["version"] == SCAN_CACHE_VERSION and data["fields"] == list(_CACHED_FIELDS) and isinstance(data["files"], dict):
            return data["files"]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return {}


def _scan(folder: Path, workers: int | None, cache: Path | None) -> list[_Header | None]:
    """The header of each file under ``folder`` (None: not a DICOM image object), in path order.

    With a ``cache``, only files it does not hold at their size and modification time are read, and it is
    rewritten (atomically, only when something changed) without the files under ``folder`` that are gone;
    entries of other folders stay. It is JSON rather than sqlite3: one file replaced in one rename by
    :func:`gmim.atomic.atomic_path`, so an interrupted or concurrent run never leaves a torn cache, without
    relying on sqlite's file locking, which is unreliable on the network filesystems archives live on; and
    a whole archive's entries load in a fraction of a second (benchmarks/dicom_scan.py).
    """
    files = _files(folder)
    paths = [folder / name for name, _ in files]
    if cache is None:
        return _read_all(paths, workers)
    root = folder.resolve()
    keys = [os.path.join(root, name) for name, _ in files]
    stored = _load_cache(cache)
    headers: list[_Header | None] = []
    unread: list[int] = []
    for n, (path, (_, status), key) in enumerate(zip(paths, files, keys)):
        try:
            size, mtime, row = stored[key]
            if (size, mtime) != (status.st_size, status.st_mtime_ns):
                raise KeyError(key)  # changed since: as if not in the cache
            headers.append(_decode(path, row))
        except (KeyError, ValueError, TypeError):  # new, changed, or an entry not of this format: read it
            headers.append(None)
            unread.append(n)
    for n, header in zip(unread, _read_all([paths[n] for n in unread], workers)):
        headers[n] = header
    inside = os.path.join(root, "")
    kept = {key: entry for key, entry in stored.items() if not key.startswith(inside)}
    if unread or len(stored) - len(kept) != len(files):
        entries = {key: [status.st_size, status.st_mtime_ns, _encode(header)] for key, (_, status), header in zip(keys, files, headers)}
        try:
            with atomic_path(cache) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"version": SCAN_CACHE_VERSION, "fields": _CACHED_FIELDS, "files": {**kept, **entries}}, separators=(",", ":")
                    )
                )
        except OSError as error:
            warnings.warn(f"{cache}: DICOM scan cache not written ({error.strerror or error})", stacklevel=2)
    return headers


@functools.lru_cache(maxsize=256)
def _index(folder: Path, workers: int | None = None, cache: Path | None = None) -> tuple[Series, ...]:
    """Every image series with a file under ``folder``, by SeriesInstanceUID (scanned once per process)."""
    slices: dict[str, list[Slice]] = defaultdict(list)
    first: dict[str, _Header] = {}
    for header in _scan(folder, workers, cache):
        if header is not None:
            slices[header.uid].append(header.slice)
            first.setdefault(header.uid, header)
    return tuple(
        Series(uid, folder, tuple(slices[uid]), first[uid].patient_id, first[uid].series_number, first[uid].localizer)
        for uid in sorted(slices)
    )


def _is_volume(series: Series) -> bool:
    return not series.localizer and (len(series.slices) > 1 or series.slices[0].frames > 1)


def find_series(folder: Path, *, workers: int | None = None, cache: Path | None = None) -> tuple[list[tuple[Path, Series]], list[str]]:
    """The volume series under ``folder``, each with the path that names it, and a note for each
    series passed over (localizers, single slices).

    Headers are read by ``workers`` processes (default: the cores this process may use). With ``cache``
    (a ``.json`` file, so that it is never taken for a DICOM file if it lies in ``folder``; see
    :func:`_scan`), a later scan reads only the files that are new or changed.
    """
    index = _index(folder, workers, cache)
    found, notes = [], []
    for series in index:
        if not _is_volume(series):
            notes.append(f"{series.label()}: {series.kind()}, not a volume; skipped")
            continue
        found.append(series)
    by_folder: dict[Path, list[Series]] = defaultdict(list)
    for series in found:
        by_folder[_common_folder(series)].append(series)
    under: dict[Path, list[Series]] = defaultdict(list)  # each folder, the series with a file under it
    for series in index:
        parents = {s.path.parent for s in series.slices}
        for parent in parents.union(*(p.parents for p in parents)):
            under[parent].append(series)
    named = []
    for parent, group in by_folder.items():
        for series in group:
            named.append((parent if len(group) == 1 and _alone(parent, series, under[parent]) else parent / series.uid, series))
    return sorted(named, key=lambda item: str(item[0])), notes


def _common_folder(series: Series) -> Path:
    return Path(os.path.commonpath([p.parent for p in series.files]))


def _alone(folder: Path, series: Series, candidates: list[Series]) -> bool:
    """Whether ``series`` is the only volume series under ``folder``, judged on the files under it as a scan
    of that folder would, from ``candidates`` (the series with a file there) rather than by a second scan."""
    inside = [
        s if _common_folder(s).is_relative_to(folder) else replace(s, slices=tuple(x for x in s.slices if x.path.is_relative_to(folder)))
        for s in candidates
    ]
    return [s.uid for s in inside if _is_volume(s)] == [series.uid]


def is_series_reference(path: Path) -> bool:
    """Whether ``path`` names a DICOM series: a folder, or ``<folder>/<SeriesInstanceUID>``."""
    return path.is_dir() or (not path.exists() and path.parent.is_dir() and bool(_UID.match(path.name)))


def series_at(reference: Path) -> Series:
    """The series a path names (see the module docstring); InputError when there is not exactly one."""
    reference = Path(reference)
    if reference.is_dir():
        volumes = [s for s in _index(reference) if _is_volume(s)]
        if len(volumes) != 1:
            what = "no DICOM image series" if not volumes else f"{len(volumes)} DICOM series; name one as {reference}/<SeriesInstanceUID>"
            skipped = [s for s in _index(reference) if not _is_volume(s)]
            if not volumes and skipped:
                what = f"only {skipped[0].kind()}, not a volume"
            raise InputError(f"{reference}: {what}")
        return volumes[0]
    for series in _index(reference.parent):
        if series.uid == reference.name:
            if not _is_volume(series):
                raise InputError(f"{series.label()}: {series.kind()}, not a volume")
            return series
    raise InputError(f"{reference}: no DICOM series {reference.name} in {reference.parent}")


@dataclass(frozen=True)
class _Geometry:
    files: list[Path]  #: in slice order (ascending along the normal)
    shape: tuple[int, int, int]  #: columns, rows, slices: the (i, j, k) of the voxel array
    affine: np.ndarray  #: RAS voxel-to-world


def _geometry(series: Series) -> _Geometry:
    """Checked geometry of a series of single-frame slices (see the module docstring)."""
    name, slices = series.label(), series.slices
    if any(s.position is None or s.orientation is None or s.spacing is None for s in slices):
        raise InputError(f"{name}: slices without ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
    if len({s.size for s in slices}) > 1:
        raise InputError(f"{name}: slices of different sizes {sorted({s.size for s in slices})}")
    orientation = np.array([s.orientation for s in slices])
    if np.abs(orientation - orientation[0]).max() > 1e-4:
        raise InputError(f"{name}: slices of different orientations (ImageOrientationPatient)")
    if len({s.spacing for s in slices}) > 1:
        raise InputError(f"{name}: slices of different pixel spacings")
    row, column = orientation[0, :3], orientation[0, 3:]
    normal = np.cross(row, column)
    positions = np.array([s.position for s in slices])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    steps = np.diff(positions, axis=0)
    gaps = steps @ normal
    if (gaps < 1e-3).any():
        raise InputError(f"{name}: several slices at one position (echoes, phases or time points in one series?)")
    off_normal = np.linalg.norm(steps - gaps[:, None] * normal, axis=1)
    if (off_normal > TILT_TOLERANCE * gaps).any():
        angle = np.degrees(np.arctan(float((off_normal / gaps).max())))
        raise InputError(
            f"{name}: slices not stacked along their normal (gantry tilt or non-parallel slices, "
            f"{angle:.1f}°); resample it to an orthogonal grid first"
        )
    median = float(np.median(gaps))
    if np.abs(gaps - median).max() > SPACING_TOLERANCE * median + 1e-3:
        missing = int(np.round(gaps / median).sum() - len(gaps))
        raise InputError(
            f"{name}: uneven slice spacing ({gaps.min():.3g}–{gaps.max():.3g} mm"
            + (f", about {missing} missing slice(s))" if missing > 0 else ")")
        )
    row_spacing, column_spacing = slices[0].spacing  # type: ignore[misc]
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing  # i: along a row, one column to the next
    lps[:3, 1] = column * row_spacing  # j: down a column, one row to the next
    lps[:3, 2] = normal * (float((positions[-1] - positions[0]) @ normal) / (len(positions) - 1))
    lps[:3, 3] = positions[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    rows, columns = slices[0].size
    return _Geometry([slices[i].path for i in order], (columns, rows, len(slices)), ras)


def _check_syntax(series: Series) -> None:
    unknown = sorted({s.syntax for s in series.slices} - GDCM_SYNTAXES)
    if unknown:
        import pydicom.uid

        name = pydicom.uid.UID(unknown[0]).name
        raise InputError(
            f"{series.label()}: transfer syntax {name} ({unknown[0]}) is not decoded by SimpleITK's GDCM; "
            "convert the series to an uncompressed transfer syntax first (e.g. dcmtk's dcmdjpeg or gdcmconv --raw)"
        )


def series_files(reference: Path) -> list[Path]:
    """The files of the single-frame series ``reference`` names, in the order of the voxel array's k."""
    series = series_at(reference)
    if len(series.slices) == 1:
        raise InputError(f"{series.label()}: an enhanced multi-frame object, not a series of slices")
    return _geometry(series).files


def series_grid(reference: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Spatial shape and RAS affine of the series ``reference`` names, from its headers."""
    series = series_at(reference)
    _check_syntax(series)
    if len(series.slices) == 1:  # one enhanced multi-frame object: GDCM reads its functional groups
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(series.files[0]))
        reader.ReadImageInformation()
        return tuple(int(n) for n in reader.GetSize()[:3]), itk_ras_affine(reader)  # type: ignore[return-value]
    geometry = _geometry(series)
    return geometry.shape, geometry.affine


def itk_ras_affine(image: object) -> np.ndarray:
    """The RAS affine of the first three axes of a SimpleITK image or image reader (ITK's world is LPS)."""
    dim = image.GetDimension()  # type: ignore[attr-defined]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]  # type: ignore[attr-defined]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])  # type: ignore[attr-defined]
    affine[:3, 3] = image.GetOrigin()[:3]  # type: ignore[attr-defined]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_series(reference: Path) -> nib.Nifti1Image:
    """The voxels of a series (rescaled: CT in HU), as an in-memory NIfTI image in RAS world."""
    import nibabel as nib
    import SimpleITK as sitk

    series = series_at(reference)
    _check_syntax(series)
    if len(series.slices) == 1:
        image = sitk.ReadImage(str(series.files[0]))
        return nib.Nifti1Image(sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32), itk_ras_affine(image))
    geometry = _geometry(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in geometry.files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{series.label()}: cannot be read ({str(error).strip().splitlines()[-1][:200]})") from error
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (slices, rows, columns) → (i, j, k)
    if array.shape != geometry.shape:
        raise InputError(f"{series.label()}: read as {array.shape}, its headers say {geometry.shape}")
    return nib.Nifti1Image(array.astype(np.float32), geometry.affine)
