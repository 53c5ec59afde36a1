"""Discover cases (a case = one volume with its channels and optional label) from DATA paths.

API::

    found = discover(["Dataset001/", "brats/", "datalist.json"])   # Collection
    found.cases, found.channel_names, found.labels, found.source   # what the layouts say beside their cases
    cases = discover_cases(["imagesTr/", "brats/", "datalist.json"])   # list[Case]: discover(...).cases
    cases[0].id, cases[0].images, cases[0].label, cases[0].fold, cases[0].split
    cases[0].as_dict()   # {"id", "image": [str, ...], "label"?: str} for MONAI dict transforms

A DATA path is one of, told apart in this order:

- an MSD/decathlon JSON datalist: ``training`` (and optional ``validation``, ``test``) lists of
  entries with ``image`` (a path or a list of channel paths), optional ``label`` and ``fold``, or
  bare paths (the MSD ``test`` list); relative paths are resolved against the JSON file's folder;
- an nnU-Net raw dataset folder: ``dataset.json`` (``channel_names``, ``labels``, ``file_ending``),
  ``imagesTr/CASE_0000.nii.gz`` … one file per channel, ``labelsTr/CASE.nii.gz``, optional
  ``imagesTs/``;
- a folder of BraTS-style case folders (or one such folder): ``*_flair``, ``*_t1``, ``*_t1ce``,
  ``*_t2`` and an optional ``*_seg`` file in each;
- a folder of images, searched recursively: every image file is a case of one channel, its id the
  file name without suffix (``ct_0000``, ``amos_0001``), unless the layout clearly says files are
  channels: they are grouped into nnU-Net channel cases (``CASE_0000``, ``CASE_0001`` … → case
  ``CASE``) only when in every sub-folder holding images every image file is named ``CASE_XXXX``
  and there are at least two cases, and every case has the same channels ``0000`` … ``k-1`` (k = 1
  too: an nnU-Net ``imagesTs/`` of single-channel ``CASE_0000`` files keeps the nnU-Net case ids).
  Numbered files that are not grouped (one "case" of 40 channels, gaps such as ``amos_0001``,
  ``amos_0004``, cases with different channels, one case per sub-folder) are read one case per
  file, with one note (a warning) saying so; channels of one case need an nnU-Net dataset folder
  with ``dataset.json`` or a datalist. When files (or grouped cases) in different sub-folders give
  the same id, each of them is named by its path under the folder with ``_`` for ``/``
  (``siteA/ct.nii.gz`` → ``siteA_ct``; one directly in the folder keeps its name); ids that still
  repeat (``ct.nii`` beside ``ct.nii.gz``) are refused. Every DICOM image series found in the
  folder, in any sub-folder layout, is a case of one channel too (:mod:`gmim.data.dicom`);
- a single image file, or a DICOM series named as ``<folder>/<SeriesInstanceUID>``.

Beside its cases a layout may say the channel names (an nnU-Net ``dataset.json``'s
``channel_names`` in the order of their keys; :data:`BRATS_MODALITIES` for a BraTS folder, or a
datalist whose every case is BraTS-named files) and the labels (``dataset.json``'s ``labels``, as
written, so region-based labels can be told apart); with several DATA paths, the first layout that
names channels gives the channel names, and the first that names labels gives the labels and
:attr:`Collection.source`.

Image files: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``, and DICOM series: in a datalist
a channel may be a series folder (or ``<folder>/<SeriesInstanceUID>``). Several DATA paths are
combined; every case must have the same number of channels. Anything unusable (a missing path, an
empty folder, a malformed datalist, inconsistent channels) raises :class:`~gmim.errors.InputError`
naming the path.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gmim.errors import InputError

if TYPE_CHECKING:
    from gmim.data.dicom import Series

__all__ = [
    "BRATS_MODALITIES",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "Case",
    "Collection",
    "case_id",
    "discover",
    "discover_cases",
    "is_image_file",
    "nnunet_dataset_json",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: Datalist sections, in the order they are read.
SPLITS = ("training", "validation", "test")
#: BraTS channel order (the order of the BraTS 2021 Swin UNETR datalists).
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One volume: its channel files in order, an optional label map, an optional fold."""

    id: str
    images: tuple[Path, ...]
    label: Path | None = None
    fold: int | None = None
    split: str = "training"

    def as_dict(self) -> dict[str, Any]:
        """The record for MONAI dictionary transforms: keys ``id``, ``image`` and maybe ``label``."""
        record: dict[str, Any] = {"id": self.id, "image": [str(p) for p in self.images]}
        if self.label is not None:
            record["label"] = str(self.label)
        return record


@dataclass(frozen=True)
class Collection:
    """Cases with what their layout says beside them, so that users of the data need not detect layouts again."""

    cases: list[Case]
    channel_names: tuple[str, ...] | None = None
    labels: dict[str, Any] | None = None  # dataset.json's values as written: ints, or lists for region-based labels
    source: Path | None = None  # the dataset.json that gave the labels, for messages


def is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def case_id(path: str | os.PathLike[str]) -> str:
    """The file name without its image suffix: ``a/b/case_001.nii.gz`` → ``case_001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def discover(
    paths: Iterable[str | os.PathLike[str]],
    splits: Sequence[str] = SPLITS,
    same_channels: bool = True,
    scan_cache: Path | None = None,
) -> Collection:
    """All cases under ``paths`` whose ``split`` is in ``splits``, with the channel names and labels
    their layouts give (the first layout naming them wins); with ``same_channels``, refused unless all
    cases have the same number of channels. ``scan_cache`` is passed on to the DICOM folder scan."""
    cases: list[Case] = []
    channel_names, labels, source = None, None, None
    for raw in paths:
        path = Path(raw).expanduser()
        found = _discover(path, scan_cache)
        selected = [case for case in found.cases if case.split in splits]
        if not selected:
            raise InputError(f"{path}: no images found (splits {', '.join(splits)})")
        cases.extend(selected)
        channel_names = channel_names or found.channel_names
        if labels is None:
            labels, source = found.labels, found.source
    if not cases:
        raise InputError("no DATA paths given")
    if same_channels:
        _check_channels(cases)
    return Collection(cases, channel_names, labels, source)


def discover_cases(
    paths: Iterable[str | os.PathLike[str]],
    splits: Sequence[str] = SPLITS,
    same_channels: bool = True,
    scan_cache: Path | None = None,
) -> list[Case]:
    """The cases of :func:`discover`, for callers that need nothing else."""
    return discover(paths, splits, same_channels, scan_cache).cases


def _discover(path: Path, scan_cache: Path | None = None) -> Collection:
    from gmim.data.dicom import (  # numpy and pydicom: not for `gmim --help`
        is_series_reference,
        series_at,
    )

    if not path.exists():
        if is_series_reference(path):
            return Collection([Case(_series_id(path, series_at(path)), (path,))])
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _from_datalist(path)
        if is_image_file(path):
            return Collection([Case(case_id(path), (path,))])
        raise InputError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a JSON datalist")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(f"{path}: folder not readable")
    if (path / "dataset.json").is_file() and (path / "imagesTr").is_dir():
        return _from_nnunet(path)
    brats = _from_brats(path)
    if brats:
        return Collection(brats, BRATS_MODALITIES)
    return Collection(_from_image_folder(path, scan_cache))


def _resolve(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a file path, got {value!r}")
    from gmim.data.dicom import is_series_reference, series_at

    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_file():
        return path
    if is_series_reference(path):
        series_at(path)  # exactly one series there, or InputError naming the path
        return path
    raise InputError(f"{where}: file not found: {path}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from error


def _from_datalist(path: Path) -> Collection:
    data = _read_json(path)
    if not isinstance(data, dict) or not any(split in data for split in SPLITS):
        raise InputError(f"{path}: not a datalist (expected a JSON object with a 'training' list)")
    base = path.parent
    cases = []
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise InputError(f"{path}: '{split}' must be a list")
        for index, entry in enumerate(entries):
            where = f"{path}: {split}[{index}]"
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or "image" not in entry:
                raise InputError(f"{where}: expected an object with an 'image'")
            channels = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            if not channels:
                raise InputError(f"{where}: 'image' is an empty list")
            images = tuple(_resolve(base, c, where) for c in channels)
            label = _resolve(base, entry["label"], where) if entry.get("label") is not None else None
            fold = entry.get("fold")
            if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 0):
                raise InputError(f"{where}: 'fold' must be a non-negative integer, got {fold!r}")
            cases.append(Case(_channels_id(images), images, label, fold, split))
    return Collection(cases, BRATS_MODALITIES if cases and all(_brats_named(c.images) for c in cases) else None)


def _brats_named(images: Sequence[Path]) -> bool:
    """Whether a case's channel files are named ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2``, in that order."""
    return len(images) == len(BRATS_MODALITIES) and all(case_id(p).lower().endswith(f"_{m}") for p, m in zip(images, BRATS_MODALITIES))


def _channels_id(images: Sequence[Path]) -> str:
    """One id for a case's channel files: the name they share (``BraTS2021_00000_flair`` … →
    ``BraTS2021_00000``, ``la_003_0000`` → ``la_003``), else the first file's name."""
    ids = [case_id(p) for p in images]
    match = _NNUNET_CHANNEL.match(ids[0])
    if match and all((m := _NNUNET_CHANNEL.match(i)) and m["case"] == match["case"] for i in ids):
        return match["case"]
    if len(set(ids)) > 1:
        common = os.path.commonprefix(ids)
        cut = max(common.rfind(sep) for sep in "_-.")
        if cut > 0:
            return common[:cut]
    return ids[0]


def nnunet_dataset_json(folder: Path) -> dict[str, Any]:
    """The ``dataset.json`` of an nnU-Net raw dataset, checked for ``channel_names`` (keyed by channel number) and ``labels``."""
    path = folder / "dataset.json"
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object")
    for key in ("channel_names", "labels"):
        if not isinstance(meta.get(key), dict) or not meta[key]:
            raise InputError(f"{path}: missing or empty '{key}'")
    if not all(k.isdigit() for k in meta["channel_names"]):
        keys = list(meta["channel_names"])
        raise InputError(f'{path}: \'channel_names\' keys must be channel numbers ("0", "1", …), got {keys}')
    return meta


def _from_nnunet(folder: Path) -> Collection:
    meta = nnunet_dataset_json(folder)
    names = meta["channel_names"]
    ending = meta.get("file_ending", ".nii.gz")
    n_channels = len(names)
    cases = []
    for images_dir, labels_dir, split in (("imagesTr", "labelsTr", "training"), ("imagesTs", None, "test")):
        grouped = _group_channels(folder / images_dir, ending)
        for cid, channels in sorted(grouped.items()):
            expected = [f"{cid}_{c:04d}{ending}" for c in range(n_channels)]
            if sorted(channels) != list(range(n_channels)):
                raise InputError(
                    f"{folder / images_dir}: case {cid} has channels {sorted(channels)}, "
                    f"dataset.json names {n_channels} ({', '.join(expected)})"
                )
            label = None
            if labels_dir is not None and (folder / labels_dir).is_dir():  # no labelsTr/: unlabelled images
                label = folder / labels_dir / f"{cid}{ending}"
                if not label.is_file():
                    raise InputError(f"{folder / labels_dir}: label missing for case {cid}: {label.name}")
            images = tuple(folder / images_dir / name for name in expected)
            cases.append(Case(cid, images, label, None, split))
    channel_names = tuple(str(names[k]) for k in sorted(names, key=int))
    return Collection(cases, channel_names, dict(meta["labels"]), folder / "dataset.json")


def _group_channels(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    if not folder.is_dir():
        return grouped
    for path in folder.iterdir():
        if not path.name.endswith(ending):
            continue
        match = _NNUNET_CHANNEL.match(path.name[: -len(ending)])
        if match is None:
            raise InputError(f"{path}: not named CASE_XXXX{ending} (nnU-Net channel files)")
        grouped[match["case"]][int(match["channel"])] = path
    return grouped


def _brats_case(folder: Path) -> Case | None:
    files = {case_id(p).lower(): p for p in folder.iterdir() if p.is_file() and is_image_file(p)}
    matches = {key: [p for name, p in files.items() if name.endswith(f"_{key}")] for key in (*BRATS_MODALITIES, "seg")}
    if not matches["flair"]:
        return None  # not a BraTS case: a plain folder may well hold several *_t1 files
    found = {}
    for key, paths in matches.items():
        if len(paths) > 1:
            raise InputError(f"{folder}: several *_{key} files")
        if paths:
            found[key] = paths[0]
    missing = [m for m in BRATS_MODALITIES if m not in found]
    if missing:
        raise InputError(f"{folder}: BraTS case without its {', '.join('*_' + m for m in missing)} file")
    return Case(folder.name, tuple(found[m] for m in BRATS_MODALITIES), found.get("seg"))


def _from_brats(folder: Path) -> list[Case]:
    single = _brats_case(folder)
    if single is not None:
        return [single]
    cases = [c for sub in sorted(folder.iterdir()) if sub.is_dir() and (c := _brats_case(sub)) is not None]
    return cases


def _from_image_folder(folder: Path, scan_cache: Path | None = None) -> list[Case]:
    from gmim.data.dicom import find_series

    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    # The cache keyword is passed only when asked for, so this works with find_series before it has one.
    series, notes = find_series(folder, cache=scan_cache)
    cases, reading = _from_image_files(folder, files)
    for note in [*notes, *reading]:
        warnings.warn(note, stacklevel=2)
    if not files and not series:
        if notes:
            raise InputError(notes[0].removesuffix("; skipped"))
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) or DICOM series in this folder")
    return cases + _series_cases(series)


def _series_id(reference: Path, series: Series) -> str:
    """A series folder's name, else PatientID_SeriesNumber (or the UID when they are missing)."""
    if reference.is_dir():
        return reference.name
    return f"{series.patient_id}_{series.series_number}" if series.patient_id and series.series_number else series.uid


def _series_cases(series: list[tuple[Path, Series]]) -> list[Case]:
    ids = [_series_id(reference, s) for reference, s in series]
    return [Case(i if ids.count(i) == 1 else f"{i}_{s.uid}", (reference,)) for i, (reference, s) in zip(ids, series)]


def _from_image_files(folder: Path, files: list[Path]) -> tuple[list[Case], list[str]]:
    """The cases of a folder's image files (sorted), and a note on how numbered files were read when
    they look like nnU-Net channel files but are not grouped."""
    grouped = _channel_groups(files)
    if grouped is not None:
        named = [(parent, cid, tuple(channels[c] for c in sorted(channels))) for (parent, cid), channels in grouped.items()]
        return _unique_ids(folder, named), []
    cases = _unique_ids(folder, [(p.parent, case_id(p), (p,)) for p in files])
    numbered = [case_id(p) for p in files if _NNUNET_CHANNEL.match(case_id(p))]
    if not numbered:
        return cases, []
    n = len(numbered)
    files_named = f"{n} files named like nnU-Net channel files ({numbered[0]} …) read as {n} one-channel cases"
    if n == 1:
        files_named = f"1 file named like an nnU-Net channel file ({numbered[0]}) read as a one-channel case"
    advice = "for channels of one case, use an nnU-Net dataset folder with dataset.json or a datalist"
    return cases, [f"{folder}: {files_named}; {advice}"]


def _channel_groups(files: list[Path]) -> dict[tuple[Path, str], dict[int, Path]] | None:
    """The files as channels of nnU-Net cases, by (folder, case), when the layout clearly says so: every
    file named ``CASE_XXXX``, at least two cases in each folder, each with the same channels 0000 … k-1;
    else None. One case per folder is not enough: ``site1/ct_0000`` … beside ``site2/ct_0000`` … may be scans."""
    grouped: dict[tuple[Path, str], dict[int, Path]] = defaultdict(dict)
    for path in files:
        match = _NNUNET_CHANNEL.match(case_id(path))
        if match is None:
            return None
        grouped[(path.parent, match["case"])][int(match["channel"])] = path
    channel_sets = {tuple(sorted(channels)) for channels in grouped.values()}
    fewest_cases = min(Counter(parent for parent, _ in grouped).values(), default=0)
    if fewest_cases < 2 or len(channel_sets) != 1 or sum(map(len, grouped.values())) != len(files):
        return None  # one case, cases with different channels, or one channel in two files (.nii beside .nii.gz)
    (channels,) = channel_sets
    return grouped if channels == tuple(range(len(channels))) else None


def _unique_ids(folder: Path, named: list[tuple[Path, str, tuple[Path, ...]]]) -> list[Case]:
    """Cases from (sub-folder, id, channel files), an id given more than once named by its path under
    ``folder`` (``siteA/ct`` → ``siteA_ct``) so that ids stay unique; refused when ids still repeat."""
    counts = Counter(cid for _, cid, _ in named)
    cases: dict[str, Case] = {}
    for parent, cid, images in named:
        if counts[cid] > 1:
            cid = "_".join((*parent.relative_to(folder).parts, cid))
        if cid in cases:
            raise InputError(f"{images[0]}: case id {cid} is also {cases[cid].images[0]}; rename one of them")
        cases[cid] = Case(cid, images)
    return list(cases.values())


def _check_channels(cases: Sequence[Case]) -> None:
    first = cases[0]
    for case in cases:
        if len(case.images) != len(first.images):
            raise InputError(
                f"{case.images[0]}: case {case.id} has {len(case.images)} channel(s), "
                f"case {first.id} ({first.images[0]}) has {len(first.images)}"
            )
