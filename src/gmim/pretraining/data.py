"""Pre-training data: unlabelled volumes, preprocessed once and cached, then two views per draw.

The deterministic part (read, reorient, resample, normalise, crop to the foreground, checks) runs
once per volume before training, in parallel, so that bad volumes are found before the first step
and a GPU never waits on decompression; the random part (flips, views, target augmentation) runs
in the loader's worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, CropForegroundd, EnsureTyped, RandFlipd

from gmim.data.caching import preload
from gmim.data.sources import Case
from gmim.data.transforms import load_transforms
from gmim.pretraining.views import SiameseViewsd, target_augmentation
from gmim.errors import InputError
from gmim.pretraining.config import PretrainConfig

__all__ = ["load_volumes", "view_transforms"]


def _nonzero(image: torch.Tensor) -> torch.Tensor:
    """Foreground after normalisation: CT windows map air to 0, MRI z-scoring keeps background at 0."""
    return image != 0


def _load_transform(config: PretrainConfig) -> Compose:
    steps = load_transforms(config.preprocessing, label=False)
    if config.data.crop_foreground:
        steps.append(CropForegroundd("image", source_key="image", select_fn=_nonzero, allow_smaller=True))
    return Compose(steps)


def load_volumes(
    cases: Sequence[Case], config: PretrainConfig, cache_dir: Path | None = None
) -> tuple[Sequence[dict[str, Any]], list[str]]:
    """The preprocessed volumes of ``cases``, each a dict with ``image``, ``id`` and ``index`` (the
    case's place in ``cases``, which seeds its masks), and the messages of the volumes skipped as
    bad. ``config.data.cache`` says where they are kept (see :func:`gmim.data.caching.preload`)."""
    records = [{**case.as_dict(), "index": i} for i, case in enumerate(cases)]
    volumes, skipped = preload(cases, records, _load_transform(config), config.data.cache, cache_dir,
                               config.train.workers, config.data.skip_bad)
    if len(volumes) == 0:
        raise InputError(f"no usable volume among {len(cases)} ({skipped[0] if skipped else 'none found'})")
    return volumes, skipped


def view_transforms(config: PretrainConfig, augment_target: bool = True) -> Compose:
    """The random part: flips on each axis (p 0.5, both views alike), the two views, and (unless
    the training step augments whole batches) the target view's intensity augmentation."""
    return Compose(
        [
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandFlipd("image", prob=0.5, spatial_axis=1),
            RandFlipd("image", prob=0.5, spatial_axis=2),
            SiameseViewsd(config.model.roi, config.data.margin, padding=config.data.padding),
            *([target_augmentation("y")] if augment_target else []),
            EnsureTyped(["x", "y"], dtype=torch.float32, track_meta=False),  # plain tensors: no metadata overhead per op
        ]
    )
