"""The prepared store: every volume read, reoriented, resampled and checked once, kept for crop reads.

Pre-training draws two views from one region of a volume per sample, so a volume is never needed
whole after preparation. The store keeps each volume in one chunked, compressed blosc2 file (the
format of nnU-Net v2 and nnssl; docs/results.md compares it with zarr), from which a sample reads only
the chunks its region covers, and a small JSON entry beside it that holds what training needs
without opening the voxels. A run's memory therefore does not grow with the collection, and its
start-up reads the entries only.

Layout (version 1; docs/store.md)::

    STORE/store.json              {"format": "gmim-store", "version": 1, "settings": {...}}
    STORE/volumes/<key>.b2nd      (C, D, H, W) voxels in the modality's units, before normalisation
    STORE/volumes/<key>.json      the entry: id, split, sources (path, size, mtime), shape, spacing,
                                  affine, foreground box, per-channel statistics; or the error
    STORE/dicom_scan.json         the DICOM headers found in the source folders, so that a later
                                  run reads only new or changed files

Voxels are stored in the units intensity normalisation reads (CT in HU as int16, rounded to
0.5 HU; MRI as float16, a relative error under 0.05 % with non-zero voxels kept non-zero, or float32 beyond
float16's range), and
normalised on each crop (:func:`gmim.data.transforms.intensity_transform` with the stored
statistics), so the same store serves any CT window. The foreground box (voxels that normalise to
non-zero) is stored, not applied.

Preparation is resumable (each volume's file and then its entry are written atomically; a kill
loses the volumes in flight), incremental (a volume whose sources keep their size and modification
time is not prepared again), and sharded: under ``torchrun`` each process prepares its share and
then waits until every entry exists, by reading the store (a shared file system is all that
several machines need). A volume that fails is recorded with its error, so that processes waiting
for it learn of it; it is prepared again when its source changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from gmim.atomic import atomic_path, remove_stale_temporaries, write_json
from gmim.data.caching import describe_load_error
from gmim.data.checks import check_cases, voxel_spacing
from gmim.data.sources import Case
from gmim.errors import InputError
from gmim.resources import cores_per_process

__all__ = ["STORE_VERSION", "Entry", "Store", "default_store_root", "is_store", "read_region", "region_bounds"]

STORE_FORMAT = "gmim-store"
STORE_VERSION = 1
#: blosc2 chunk and block shapes: a 160³ region (two 128³ views and their margin) touches 27 to 64
#: chunks, and a block is what one read decompresses (docs/results.md, "The prepared store").
CHUNKS = (64, 64, 64)
BLOCKS = (32, 32, 32)
#: Temporaries older than this are left by a killed writer (no volume takes an hour to write).
STALE_TEMPORARY_S = 3600.0
#: Seconds between looks at the store while other processes prepare their shares.
POLL_S = 2.0
_FLOAT16_MAX = 65504.0
#: What a store folder holds besides temporaries.
_STORE_FILES = frozenset({"store.json", "volumes", "dicom_scan.json"})


def default_store_root() -> Path:
    """Where prepared stores live when ``data.store`` is unset: ``$XDG_CACHE_HOME/gmim/stores``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gmim" / "stores"


def is_store(path: Path) -> bool:
    return path.is_dir() and (path / "store.json").is_file()


def store_settings(preprocessing: Any) -> dict[str, Any]:
    """What the stored voxels and foreground boxes depend on; the CT window only through the box."""
    settings = {
        "modality": preprocessing.modality,
        "orientation": preprocessing.orientation.upper(),
        "spacing": list(preprocessing.spacing) if preprocessing.spacing is not None else None,
    }
    if preprocessing.modality == "ct":
        settings["foreground_above"] = float(preprocessing.window[0])
    return settings


def _source_stamp(path: Path) -> dict[str, Any]:
    """A source file's identity for incremental preparation; a DICOM series by its files."""
    from gmim.data.dicom import is_series_reference, series_at

    files = series_at(path).files if is_series_reference(path) else [path]  # as found: its geometry is checked later
    stats = [f.stat() for f in files]
    return {"path": str(path), "size": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats), "files": len(files)}


@dataclass(frozen=True)
class Entry:
    """One prepared volume, as its JSON entry says."""

    key: str
    id: str
    split: str
    sources: tuple[dict[str, Any], ...]
    #: (C, D, H, W) of the stored array; spacing in mm; the RAS voxel-to-world affine.
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...]
    #: [start, stop) per spatial axis of the voxels that normalise to non-zero.
    foreground: tuple[tuple[int, int], ...]
    #: Per channel, the mean and standard deviation of the non-zero voxels (MRI z-scoring), else None.
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    dtype: str

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Entry:
        nested = {"sources", "shape", "spacing", "affine", "foreground", "mean", "std"}
        fields = {k: (_tuples(v) if k in nested and v is not None else v) for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**fields)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


class Store:
    """A folder of prepared volumes, all prepared with the same settings (see the module doc)."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder, self.settings = Path(folder), settings
        self.volumes = self.folder / "volumes"

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path) -> Store:
        """An existing store; InputError when ``folder`` is none or of another version."""
        path = Path(folder) / "store.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{folder}: not a gmim store (no readable store.json: {error})") from error
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise InputError(f"{path}: not a gmim store description")
        if meta.get("version") != STORE_VERSION:
            raise InputError(
                f"{folder}: a version {meta.get('version')} store; this gmim reads version {STORE_VERSION} "
                "(prepare it again with gmim prepare)"
            )
        return cls(Path(folder), meta["settings"])

    @classmethod
    def create(cls, folder: Path, preprocessing: Any) -> Store:
        """The store at ``folder`` for ``preprocessing``: made if new, refused if it holds other settings."""
        settings = store_settings(preprocessing)
        if is_store(folder):
            store = cls.open(folder)
            if store.settings != settings:
                raise InputError(
                    f"{folder}: a store prepared with {_describe(store.settings)}; these settings ask "
                    f"{_describe(settings)}: prepare into another folder"
                )
            return store
        # Several processes may create the same store at once (torchrun): what they write is no stranger.
        if folder.exists() and (
            not folder.is_dir() or any(not p.name.startswith(".") and p.name not in _STORE_FILES for p in folder.iterdir())
        ):
            raise InputError(f"{folder}: exists and is not a gmim store; give a new or empty folder")
        store = cls(folder, settings)
        store.volumes.mkdir(parents=True, exist_ok=True)
        write_json(folder / "store.json", {"format": STORE_FORMAT, "version": STORE_VERSION, "settings": settings})
        return store

    @classmethod
    def shared(cls, root: Path, preprocessing: Any) -> Store:
        """The store for ``preprocessing`` under a folder of stores (one sub-folder per settings)."""
        settings = store_settings(preprocessing)
        digest = hashlib.sha1(json.dumps({**settings, "version": STORE_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
        return cls.create(Path(root) / f"{settings['modality']}-{digest}", preprocessing)

    @property
    def scan_cache(self) -> Path:
        """The DICOM header scan of the folders prepared into this store (:func:`gmim.data.dicom.find_series`)."""
        return self.folder / "dicom_scan.json"

    def check_settings(self, preprocessing: Any) -> None:
        """Refuse a run whose preprocessing differs from the store's, naming both."""
        wanted = store_settings(preprocessing)
        if wanted != self.settings:
            raise InputError(
                f"{self.folder}: prepared with {_describe(self.settings)}, but the run's preprocessing asks "
                f"{_describe(wanted)}: prepare again with these settings, or set the store's"
            )

    # -- entries ---------------------------------------------------------------------------------

    @staticmethod
    def key(case: Case) -> str:
        """A volume's name in the store: its id and a digest of its sources' resolved paths."""
        digest = hashlib.sha1("\n".join(str(p.resolve()) for p in case.images).encode()).hexdigest()[:10]
        return f"{case.id}-{digest}"

    def array_path(self, key: str) -> Path:
        return self.volumes / f"{key}.b2nd"

    def entry_path(self, key: str) -> Path:
        return self.volumes / f"{key}.json"

    def _read_entry(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.entry_path(key).read_text())
        except (OSError, ValueError):
            return None

    def entries(self) -> list[Entry]:
        """Every prepared volume, in the order of its first source's path (as a folder lists them)."""
        records = []
        for path in self.volumes.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # written atomically: only a foreign file can be unreadable
            if "error" not in record and self.array_path(record.get("key", "")).is_file():
                records.append(record)
        return [Entry.from_record(r) for r in sorted(records, key=lambda r: (r["sources"][0]["path"], r["key"]))]

    def _current(self, key: str, stamps: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The entry of ``key`` when it was prepared from these very sources, else None."""
        record = self._read_entry(key)
        if record is None or record.get("sources") != stamps:
            return None
        if "error" not in record and not self.array_path(key).is_file():
            return None
        return record

    # -- preparation -----------------------------------------------------------------------------

    def prepare(
        self,
        cases: Sequence[Case],
        preprocessing: Any,
        workers: int | None = None,
        skip_bad: bool = False,
        rank: int = 0,
        world_size: int = 1,
        show: bool = True,
    ) -> tuple[list[Entry], list[str]]:
        """The entries of ``cases`` (in their order), preparing those not prepared from their current
        sources; with several processes, this one's share, then a wait for the others'. Returns the
        entries and the messages of the volumes that failed (refused unless ``skip_bad``)."""
        self.check_settings(preprocessing)
        remove_stale_temporaries(self.volumes, older_than=STALE_TEMPORARY_S)
        keys = [self.key(case) for case in cases]
        if len(set(keys)) != len(keys):
            duplicate = next(case for case, key in zip(cases, keys) if keys.count(key) > 1)
            raise InputError(f"{duplicate.images[0]}: given twice")
        stamps = [[_source_stamp(p) for p in case.images] for case in cases]
        current = [self._current(key, stamp) for key, stamp in zip(keys, stamps)]  # each entry read once
        todo = [i for i, record in enumerate(current) if record is None]
        mine = [i for i in todo if i % world_size == rank]  # by place, not by what is left: the processes may look at different times
        share = f", {len(mine)} by this process of {world_size}" if world_size > 1 else ""
        if show:
            print(
                f"store {self.folder}: {len(cases)} volume(s), {len(cases) - len(todo)} prepared already, {len(todo)} to prepare{share}",
                flush=True,
            )
        failure = self._prepare_share(
            [cases[i] for i in mine], [keys[i] for i in mine], [stamps[i] for i in mine], preprocessing, workers, skip_bad, show
        )
        if failure is not None:
            raise failure
        prepared = self._wait_for([keys[i] for i in todo], [stamps[i] for i in todo], show and world_size > 1)
        entries, skipped = [], []
        for key, record in zip(keys, current):
            record = record or prepared[key]
            if "error" in record:
                skipped.append(record["error"])
            else:
                entries.append(Entry.from_record(record))
        if skipped and not skip_bad:
            raise InputError(skipped[0])
        for message in skipped:
            warnings.warn(f"skipped: {message}", stacklevel=2)
        return entries, skipped

    def _prepare_share(
        self,
        cases: list[Case],
        keys: list[str],
        stamps: list[list[dict[str, Any]]],
        preprocessing: Any,
        workers: int | None,
        skip_bad: bool,
        show: bool,
    ) -> InputError | None:
        """Prepare ``cases`` in a pool of processes, with a progress bar; the first failure when it
        stops the preparation (not ``skip_bad``)."""
        if not cases:
            return None
        from tqdm.auto import tqdm

        workers = min(workers or cores_per_process(), len(cases))
        bar = tqdm(total=len(cases), desc="prepare", unit="volume", disable=not show, dynamic_ncols=True, mininterval=1.0)
        bar.refresh()  # shown from the first second, before the first volume is done
        # fork: the workers share the imported libraries; each holds one volume at a time.
        pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_quiet_worker)
        failure: InputError | None = None
        try:
            futures = [
                pool.submit(_prepare_volume, case, self.folder, self.settings, preprocessing, key, stamp)
                for case, key, stamp in zip(cases, keys, stamps)
            ]
            for future in as_completed(futures):
                error = future.result()
                bar.update(1)
                if error is not None and not skip_bad:
                    failure = InputError(error)
                    break  # the volumes in flight finish; the rest wait for the next run
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return failure

    def _wait_for(self, keys: list[str], stamps: list[list[dict[str, Any]]], show: bool) -> dict[str, dict[str, Any]]:
        """The entries of ``keys``, waiting while other processes still prepare some of them."""
        found: dict[str, dict[str, Any]] = {}
        announced = False
        while True:
            for key, stamp in zip(keys, stamps):
                if key not in found:
                    record = self._read_entry(key)
                    if record is not None and record.get("sources") == stamp:
                        found[key] = record
            if len(found) == len(keys):
                return found
            if show and not announced:
                print(f"waiting for {len(keys) - len(found)} volume(s) that other processes prepare", flush=True)
                announced = True
            time.sleep(POLL_S)


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def _quiet_worker() -> None:
    """One thread per preparing process: the pool already uses every core."""
    import torch

    torch.set_num_threads(1)


def _prepare_volume(
    case: Case, folder: Path, settings: dict[str, Any], preprocessing: Any, key: str, stamps: list[dict[str, Any]]
) -> str | None:
    """Read, check, reorient and resample one case, and write its voxels and entry; the error's
    one line when the case cannot be used (recorded in its entry too)."""
    store = Store(folder, settings)
    entry_path = store.entry_path(key)
    try:
        record = _write_volume(case, store, preprocessing, key)
    except Exception as error:  # a corrupt file raises whatever its reader raises
        message = str(describe_load_error(case, error))
        write_json(entry_path, {"key": key, "id": case.id, "split": case.split, "sources": stamps, "error": message})
        return message
    write_json(entry_path, {**record, "sources": stamps})  # the entry last: it says the volume is complete
    return None


def _write_volume(case: Case, store: Store, preprocessing: Any, key: str) -> dict[str, Any]:
    import blosc2
    import torch
    from monai.transforms import Compose

    from gmim.data.transforms import read_transforms

    check_cases([case], workers=1)  # a crafted header is refused before its voxels are read
    image = Compose(read_transforms(preprocessing, label=False))(case.as_dict())["image"]
    affine = np.asarray(image.affine, dtype=np.float64)
    volume = torch.as_tensor(image).numpy()
    if preprocessing.modality == "ct":
        foreground = (volume > preprocessing.window[0]).any(0)
        mean = std = None
        stored = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    else:
        foreground = (volume != 0).any(0)
        values = [channel[channel != 0].astype(np.float64) for channel in volume]
        mean = [float(v.mean()) if v.size else 0.0 for v in values]
        std = [(float(v.std()) or 1.0) if v.size else 1.0 for v in values]  # MONAI's: a constant channel divides by 1
        finite_max = float(np.abs(volume).max()) if volume.size else 0.0
        stored = volume.astype(np.float16 if finite_max <= _FLOAT16_MAX else np.float32)
        underflow = (stored == 0) & (volume != 0)  # would turn into background: keep the smallest value instead
        stored[underflow] = np.copysign(np.finfo(stored.dtype).smallest_subnormal, volume[underflow])
    if not foreground.any():
        what = f"at or below {preprocessing.window[0]:g} HU" if preprocessing.modality == "ct" else "0"
        raise InputError(f"{case.images[0]}: every voxel is {what}: an empty scan")
    box = _bounding_box(foreground)
    chunks = tuple(min(c, n) for c, n in zip((stored.shape[0], *CHUNKS), stored.shape))
    blocks = tuple(min(b, c) for b, c in zip((1, *BLOCKS), chunks))
    with atomic_path(store.array_path(key)) as tmp:
        blosc2.asarray(
            np.ascontiguousarray(stored),
            urlpath=str(tmp),
            mode="w",
            chunks=chunks,
            blocks=blocks,
            cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1},
        )
    return {
        "key": key,
        "id": case.id,
        "split": case.split,
        "shape": list(stored.shape),
        "spacing": list(voxel_spacing(affine)),
        "affine": affine.tolist(),
        "foreground": box,
        "mean": mean,
        "std": std,
        "dtype": str(stored.dtype),
    }


def _bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) per axis of the True voxels of a 3D mask (which has some)."""
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def read_region(path: Path, region: Sequence[slice]) -> np.ndarray:
    """The voxels of ``region`` (three slices inside the stored shape) of a stored volume as float32,
    (C, ...): only the chunks the region covers are read, with one thread (the loader's workers are
    the parallelism)."""
    import blosc2

    array = blosc2.open(str(path), mode="r", mmap_mode="r", dparams={"nthreads": 1})
    return np.asarray(array[(slice(None),) + tuple(region)], dtype=np.float32)


def region_bounds(extent: tuple[int, int], start: int, size: int) -> tuple[int, int, int, int]:
    """Where a region of ``size`` starting at ``start`` of an axis padded symmetrically to at least
    ``size`` (as MONAI's SpatialPad does) lies in stored coordinates: the voxels to read [lo, hi)
    and the padding before and after them."""
    first, stop = extent
    length = stop - first
    before = max(size - length, 0) // 2
    lo = first + start - before
    hi = lo + size
    return max(lo, first), min(hi, stop), max(first - lo, 0), max(hi - stop, 0)
