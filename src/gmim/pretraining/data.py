"""Pre-training data: unlabelled volumes, preprocessed once and cached, then two views per draw.

The deterministic part (read, reorient, resample, normalise, crop to the foreground, checks) runs
once per volume before training, in parallel, so that bad volumes are found before the first step
and a GPU never waits on decompression; the random part (flips, views, target augmentation) runs
in the loader's worker processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, CropForegroundd, EnsureTyped, MapTransform, RandFlipd
from tqdm.auto import tqdm

from gmim.data.checks import check_cases
from gmim.data.sources import Case
from gmim.data.transforms import load_transforms
from gmim.data.views import SiameseViewsd, target_augmentation
from gmim.errors import InputError
from gmim.pretraining.config import PretrainConfig

__all__ = ["CheckVolumed", "load_volumes", "view_transforms"]


def _nonzero(image: torch.Tensor) -> torch.Tensor:
    """Foreground after normalisation: CT windows map air to 0, MRI z-scoring keeps background at 0."""
    return image != 0


class CheckVolumed(MapTransform):
    """Refuse a volume that is not (C, D, H, W) with ``channels`` channels and finite voxels."""

    def __init__(self, channels: int, key: str = "image") -> None:
        super().__init__(key)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(data):
            image = data[key]
            where = data.get("id", key)
            if image.dim() != 4:
                raise InputError(f"{where}: a volume of {image.dim() - 1} spatial dimensions, expected 3")
            if image.shape[0] != self.channels:
                raise InputError(f"{where}: {image.shape[0]} channels, expected {self.channels}")
            if not bool(torch.isfinite(image).all()):
                raise InputError(f"{where}: contains NaN or infinite voxels")
        return data


def _load_transform(config: PretrainConfig, channels: int) -> Compose:
    steps = [*load_transforms(config.preprocessing, label=False), CheckVolumed(channels)]
    if config.data.crop_foreground:
        steps.append(CropForegroundd("image", source_key="image", select_fn=_nonzero, allow_smaller=True))
    return Compose(steps)


def _describe(case: Case, error: BaseException) -> str:
    """One line for a volume that failed to load: our own message, or the reader's first words."""
    while not isinstance(error, InputError) and error.__cause__ is not None:  # MONAI wraps what readers raise
        error = error.__cause__
    if isinstance(error, InputError):
        return str(error)
    text = str(error).strip()
    reason = text.splitlines()[0][:200] if text else type(error).__name__
    return f"{case.images[0]}: cannot be loaded ({reason})"


def load_volumes(
    cases: Sequence[Case], config: PretrainConfig, channels: int, cache_dir: Path | None = None, progress: bool = True
) -> tuple[Sequence[dict[str, Any]], list[str]]:
    """The preprocessed volumes of ``cases`` (each a dict with ``image``, ``id`` and ``index``) and
    the messages of the volumes skipped as bad.

    ``config.data.cache``: ``memory`` keeps every volume in memory, ``disk`` writes them under
    ``cache_dir`` (MONAI's PersistentDataset, reused by later runs); both load every volume before
    training, and a bad one stops the run with its message unless ``config.data.skip_bad`` is set.
    ``none`` loads on the fly and checks only the files' headers beforehand.
    """
    transform = _load_transform(config, channels)
    records = [{**case.as_dict(), "index": i} for i, case in enumerate(cases)]
    mode = config.data.cache
    if mode == "none":
        check_cases(cases, workers=config.train.workers)
        return Dataset(records, transform), []
    if mode == "disk":
        if cache_dir is None:
            raise ValueError("the disk cache needs a cache_dir")
        source: Dataset = PersistentDataset(records, transform, cache_dir=cache_dir)
    else:
        source = Dataset(records, transform)

    def load(i: int) -> dict[str, Any] | Exception:
        try:
            return source[i]
        except Exception as error:  # a corrupt file raises whatever its reader raises
            return error

    with ThreadPoolExecutor(max(1, config.train.workers)) as pool:
        results = list(tqdm(pool.map(load, range(len(records))), total=len(records), desc="preprocess",
                            disable=not progress or len(records) < 2, leave=False))
    skipped: list[str] = []
    kept: list[int] = []
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            message = _describe(cases[i], result)
            if not config.data.skip_bad:
                raise InputError(message) from result
            warnings.warn(f"skipped: {message}", stacklevel=2)
            skipped.append(message)
        else:
            kept.append(i)
    if not kept:
        raise InputError(f"no usable volume among {len(cases)} ({skipped[0] if skipped else 'none found'})")
    if mode == "memory":
        volumes: list[dict[str, Any]] = []
        for position, i in enumerate(kept):
            volumes.append({**results[i], "index": position})
        return volumes, skipped
    return _Reindexed(source, kept), skipped


class _Reindexed(torch.utils.data.Dataset):
    """The volumes ``kept`` of a lazily loading dataset, renumbered 0..n-1."""

    def __init__(self, source: Dataset, kept: Sequence[int]) -> None:
        self.source = source
        self.kept = list(kept)

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {**self.source[self.kept[position]], "index": position}


def view_transforms(config: PretrainConfig) -> Compose:
    """The random part: flips on each axis (p 0.5, both views alike), the two views, and the target
    view's intensity augmentation."""
    return Compose(
        [
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandFlipd("image", prob=0.5, spatial_axis=1),
            RandFlipd("image", prob=0.5, spatial_axis=2),
            SiameseViewsd(config.model.roi, config.data.margin),
            target_augmentation("y"),
            EnsureTyped(["x", "y"], dtype=torch.float32, track_meta=False),  # plain tensors: no metadata overhead per op
        ]
    )
