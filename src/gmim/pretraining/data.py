"""Pre-training data: volumes prepared once into a store, then two views per draw, a region at a time.

The deterministic part (read, reorient, resample, check) runs once per volume, in a pool of
processes, into a prepared store (:mod:`gmim.data.store`), so that bad volumes are found before the
first step and later runs with the same preprocessing start at once. The random part (a region of a
volume read from the store, its normalisation, flips, the two views, the target augmentation) runs
in the loader's worker processes. Nothing holds a whole volume during training: memory does not
grow with the collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from monai.transforms import Compose, EnsureTyped, RandFlipd

from gmim.data.sources import Case, discover_cases
from gmim.data.store import Entry, Store, default_store_root, is_store
from gmim.data.transforms import Preprocessing
from gmim.errors import InputError
from gmim.pretraining.config import CollectionConfig, PretrainConfig
from gmim.pretraining.views import SiameseViewsd, StoredRegiond, target_augmentation
from gmim.resources import cores_per_process

__all__ = ["StoreSettings", "Volumes", "open_collection", "prepare_volumes", "split_places", "view_transforms", "volume_records"]


class StoreSettings(Protocol):
    """What finding, preparing and recording volumes read of a run's configuration: GMIM's
    (:class:`PretrainConfig`) or that of another pre-training method on the same store."""

    @property
    def preprocessing(self) -> Preprocessing: ...
    @property
    def data(self) -> CollectionConfig: ...


class Volumes:
    """What a run trains on: cases still to prepare (from DATA paths) and entries of given stores."""

    def __init__(self, paths: Sequence[Path], config: StoreSettings) -> None:
        sources = [p for p in paths if not is_store(p)]
        self.root = Path(config.data.store).expanduser() if config.data.store else default_store_root()
        scan_cache = self.root / "dicom_scan.json"  # DICOM trees are scanned again only where files changed
        self.cases: list[Case] = discover_cases(sources, splits=("training", "validation"), scan_cache=scan_cache) if sources else []
        #: The entries of the given stores, each with the path of its voxels.
        self.stored: list[tuple[Entry, Path]] = []
        for path in paths:
            if is_store(path):
                store = Store.open(path)
                store.check_settings(config.preprocessing)
                entries = store.entries()
                if not entries:
                    raise InputError(f"{path}: a store without prepared volumes")
                self.stored += [(e, store.array_path(e.key)) for e in entries]
        channels = {len(c.images) for c in self.cases} | {e.shape[0] for e, _ in self.stored}
        if len(channels) > 1:
            raise InputError(f"the DATA paths hold volumes of {sorted(channels)} channels; give volumes of one kind")
        self.channels = channels.pop()

    def __len__(self) -> int:
        return len(self.cases) + len(self.stored)

    def splits(self) -> list[str]:
        """Each volume's datalist split, in the run's order."""
        return [c.split for c in self.cases] + [e.split for e, _ in self.stored]


def split_places(splits: list[str], held_out: int) -> tuple[list[int], list[int]]:
    """The places of the training and validation volumes: the datalist's ``validation`` section,
    else the last ``held_out`` volumes of the collection (``data.validation_volumes``)."""
    if "validation" in splits:
        return [i for i, s in enumerate(splits) if s != "validation"], [i for i, s in enumerate(splits) if s == "validation"]
    count = len(splits)
    if held_out < 0 or held_out >= count:
        raise InputError(f"data.validation_volumes={held_out}: must be in [0, {count - 1}] for {count} volumes")
    return list(range(count - held_out)), list(range(count - held_out, count))


def open_collection(data: Sequence[str | Path], config: Any) -> Volumes:
    """The volumes under ``data`` for a pre-training run of any method: ``model.in_channels`` taken
    from them (a set one that differs is refused), and the validation split checked before any work."""
    volumes = Volumes([Path(p).expanduser() for p in data], config)
    if config.model.in_channels not in (None, volumes.channels):
        raise InputError(f"model.in_channels is {config.model.in_channels} but the data has {volumes.channels} channel(s)")
    config.model.in_channels = volumes.channels
    split_places(volumes.splits(), config.data.validation_volumes)
    return volumes


def prepare_volumes(
    volumes: Volumes, config: StoreSettings, rank: int = 0, world_size: int = 1
) -> tuple[list[tuple[Entry, Path]], list[str]]:
    """Every volume of the run with the path of its voxels: the DATA cases prepared into the
    shared store under ``data.store`` (only those not prepared from their current sources; under
    ``torchrun`` each process a share), then the given stores' entries. Returns them with the
    messages of the volumes skipped as bad."""
    prepared: list[tuple[Entry, Path]] = []
    skipped: list[str] = []
    if volumes.cases:
        store = Store.shared(volumes.root, config.preprocessing)
        entries, skipped = store.prepare(
            volumes.cases, config.preprocessing, cores_per_process(), config.data.skip_bad, rank, world_size, show=rank == 0
        )
        prepared = [(e, store.array_path(e.key)) for e in entries]
    prepared += volumes.stored
    if not prepared:
        raise InputError(f"no usable volume among {len(volumes)} ({skipped[0] if skipped else 'none found'})")
    return prepared, skipped


def volume_records(prepared: Sequence[tuple[Entry, Path]], config: StoreSettings, first_index: int = 0) -> list[dict[str, Any]]:
    """The loader's record of each volume: where its voxels are, the box views are drawn from (its
    foreground with ``data.crop_foreground``), its normalisation statistics, and its ``index`` (its
    place in the run, which seeds its masks)."""
    records = []
    for i, (entry, path) in enumerate(prepared, start=first_index):
        extent = entry.foreground if config.data.crop_foreground else tuple((0, n) for n in entry.shape[1:])
        records.append(
            {
                "id": entry.id,
                "index": i,
                "path": str(path),
                "extent": [list(e) for e in extent],
                "mean": list(entry.mean) if entry.mean is not None else None,
                "std": list(entry.std) if entry.std is not None else None,
            }
        )
    return records


def view_transforms(config: PretrainConfig, augment_target: bool = True) -> Compose:
    """The random part: a region of the volume read from the store, flips on each axis (p 0.5, both
    views alike), the two views, and (unless the training step augments whole batches) the target
    view's intensity augmentation."""
    region = [r + m for r, m in zip(config.model.roi, config.data.margin)]
    return Compose(
        [
            StoredRegiond(region, config.preprocessing, padding=config.data.padding),
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandFlipd("image", prob=0.5, spatial_axis=1),
            RandFlipd("image", prob=0.5, spatial_axis=2),
            SiameseViewsd(config.model.roi, config.data.margin, padding=config.data.padding),
            *([target_augmentation("y")] if augment_target else []),
            EnsureTyped(["x", "y"], dtype=torch.float32, track_meta=False),  # plain tensors: no metadata overhead per op
        ]
    )
