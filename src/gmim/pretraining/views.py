"""The two overlapping views of a volume that GMIM's Siamese branches see (docs/method.md §4).

From each volume (read from the prepared store a region at a time, :class:`StoredRegiond`) one region of ``roi + margin`` voxels per axis is taken at random (the volume
padded symmetrically where it is smaller), then two ``roi`` crops at random inside that region: x
for the online branch and y for the target branch. They overlap by at least ``roi - margin`` voxels
per axis; ``offset`` = start of y − start of x is kept with the sample, so that tokens can be
matched over the overlap. The target view then gets the prototype's intensity augmentation.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandGaussianNoised,
    Randomizable,
    RandShiftIntensityd,
    SpatialPad,
)
from monai.utils import convert_to_tensor

from gmim.data.store import read_region, region_bounds
from gmim.data.transforms import Preprocessing, intensity_transform

__all__ = ["SiameseViewsd", "StoredRegiond", "target_augmentation"]


class StoredRegiond(Randomizable, MapTransform):
    """A stored volume's record (``path``, ``extent``, ``mean``, ``std``) → ``image`` (C, *size): a
    random region of ``size`` voxels inside ``extent`` (the foreground box, or the whole volume),
    read from the store, normalised, and padded as :class:`SiameseViewsd` pads a volume smaller
    than its region; the same distribution of regions as drawing from the whole volume in memory."""

    def __init__(self, size: Sequence[int], preprocessing: Preprocessing, padding: str = "zero") -> None:
        MapTransform.__init__(self, "image", allow_missing_keys=True)
        self.size = tuple(int(n) for n in size)
        self.preprocessing = preprocessing
        self.mode: Literal["constant", "symmetric"] = "constant" if padding == "zero" else "symmetric"

    # MONAI's stub says randomize returns None; its subclasses may return what they drew, as these do
    def randomize(self, extent: Sequence[Sequence[int]]) -> list[int]:  # type: ignore[override]
        return [self.R.randint(0, max(stop - start, n) - n + 1) for (start, stop), n in zip(extent, self.size)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        extent, path = out.pop("extent"), out.pop("path")
        bounds = [region_bounds(tuple(e), start, n) for e, start, n in zip(extent, self.randomize(extent), self.size)]
        region = torch.from_numpy(read_region(path, [slice(lo, hi) for lo, hi, _, _ in bounds]))
        normalise = intensity_transform("image", self.preprocessing, out.pop("mean"), out.pop("std"))
        region = convert_to_tensor(normalise({"image": region})["image"], track_meta=False)
        padding = [(0, 0)] + [(before, after) for _, _, before, after in bounds]
        out["image"] = torch.from_numpy(np.pad(region.numpy(), padding, mode=self.mode)) if any(map(any, padding)) else region
        return out


class SiameseViewsd(Randomizable, MapTransform):
    """``image`` (C, D, H, W) → ``x`` and ``y``, each (C, *roi), and ``offset`` (3,) int64.

    ``margin`` is the extra size of the region per axis: 32 in the prototype, and (32, 32, 0) for
    BraTS-like MRI, whose views then share their depth range. A smaller volume is padded with zeros,
    or mirrored with ``padding="symmetric"`` (the prototype's).
    """

    def __init__(self, roi: Sequence[int], margin: Sequence[int] = (32, 32, 32), key: str = "image", padding: str = "zero") -> None:
        MapTransform.__init__(self, key)
        if len(roi) != 3 or len(margin) != 3 or min(roi) < 1 or min(margin) < 0:
            raise ValueError(f"roi must be three positive sizes and margin three sizes >= 0, got {roi} and {margin}")
        self.key = key
        self.roi = tuple(int(n) for n in roi)
        self.margin = tuple(int(n) for n in margin)
        self.region = tuple(r + m for r, m in zip(self.roi, self.margin))
        if padding not in ("zero", "symmetric"):
            raise ValueError(f"padding must be zero or symmetric, got {padding!r}")
        # centred either way; "symmetric" mirrors the edge ([1,2,3,4] → [2,1,1,2,3,4,4,3])
        self._pad = SpatialPad(self.region, method="symmetric", mode="constant" if padding == "zero" else "symmetric")

    # MONAI's stub says randomize returns None; its subclasses may return what they drew, as these do
    def randomize(self, spatial: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[override]
        region_start = np.array([self.R.randint(0, n - r + 1) for n, r in zip(spatial, self.region)])
        x_start = np.array([self.R.randint(0, m + 1) for m in self.margin])
        y_start = np.array([self.R.randint(0, m + 1) for m in self.margin])
        return region_start, x_start, y_start

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        image = convert_to_tensor(self._pad(out.pop(self.key)), track_meta=False)
        region_start, x_start, y_start = self.randomize(image.shape[1:])

        def crop(start: np.ndarray) -> torch.Tensor:
            begin = region_start + start
            return image[(slice(None),) + tuple(slice(b, b + r) for b, r in zip(begin, self.roi))].clone()

        out["x"] = crop(x_start)
        out["y"] = crop(y_start)
        out["offset"] = torch.as_tensor(y_start - x_start, dtype=torch.int64)
        return out


def target_augmentation(key: str = "y") -> Compose:
    """The prototype's intensity augmentation of the target view: contrast gamma in 0.7–1.5
    (p 0.7), intensity shift up to ±0.4 (p 0.4), Gaussian noise of mean 0.05 and std 0.05 (p 0.5)."""
    return Compose(
        [
            RandAdjustContrastd(key, gamma=(0.7, 1.5), prob=0.7),
            RandShiftIntensityd(key, offsets=0.4, prob=0.4),
            RandGaussianNoised(key, prob=0.5, mean=0.05, std=0.05),
        ]
    )
