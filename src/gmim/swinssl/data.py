"""The crops of Swin UNETR's self-supervised pre-training, from gmim's prepared store (docs/swin-ssl.md §4).

Volumes are found, checked and prepared exactly as for GMIM (:mod:`gmim.pretraining.data`: one
store per preprocessing, shared by both methods' runs); what differs is the random part. Each
volume gives ``data.crops_per_volume`` crops of ``model.roi`` voxels at random places inside its
foreground box (as the published pipeline's foreground crop then random crop samples; padded
where the volume is smaller), each read from the store on its own
(:class:`gmim.pretraining.views.StoredRegiond`). No flips and no intensity augmentation: the
published pipeline has none; the views are made in the training step (:mod:`gmim.swinssl.views`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Compose, Randomizable, Transform
from monai.utils import convert_to_tensor

from gmim.data.transforms import Preprocessing
from gmim.pretraining.views import StoredRegiond

__all__ = ["SubVolumes", "crop_transforms"]


class SubVolumes(Randomizable, Transform):
    """A stored volume's record (as :func:`gmim.pretraining.data.volume_records` makes it) → a
    list of ``count`` crops, each ``{"image": (C, *roi) float32, "index": the volume's place,
    "crop": its number}``; the loader's collate puts every crop of a batch side by side."""

    def __init__(self, roi: Sequence[int], preprocessing: Preprocessing, count: int, padding: str = "zero") -> None:
        self.region = StoredRegiond(roi, preprocessing, padding=padding)
        self.count = count

    def set_random_state(self, seed: int | None = None, state: Any = None) -> SubVolumes:
        super().set_random_state(seed, state)
        self.region.set_random_state(state=self.R)  # one stream: crop after crop
        return self

    def randomize(self, data: Any = None) -> None:  # the crops are drawn by the region reader
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        crops = []
        for number in range(self.count):
            image = self.region(dict(data))["image"]
            crops.append({"image": convert_to_tensor(image, dtype=torch.float32, track_meta=False), "index": data["index"], "crop": number})
        return crops


def crop_transforms(roi: Sequence[int], preprocessing: Preprocessing, count: int, padding: str = "zero") -> Compose:
    """The random part of the pipeline, for :class:`gmim.engine.sampling.SeededDataset`."""
    return Compose([SubVolumes(roi, preprocessing, count, padding)])
