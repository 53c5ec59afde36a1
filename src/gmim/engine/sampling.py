"""Reproducible, resumable data order and augmentation.

A run at step s is in epoch s // len(loader), batch s % len(loader). :class:`ResumableSampler`
gives this rank's shard of a per-epoch permutation (PyTorch's ``DistributedSampler``, seeded by
seed + epoch) starting at any batch; :class:`SeededDataset` seeds the random transforms of each
sample from (seed, epoch, index), independently of which worker loads it. A resumed run therefore
sees the very batches, crops and flips an uninterrupted one would. :func:`epoch_loader` puts the
two together, with a generator of its own so that building a loader leaves the global RNG alone
(MONAI's ``DataLoader`` otherwise re-seeds it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.transforms import Compose, apply_transform
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["ResumableSampler", "SeededDataset", "epoch_loader"]


class ResumableSampler(Sampler[int]):
    """Indices of this rank's shard for one epoch, from sample ``start`` on (see :meth:`set_epoch`)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        self._inner = DistributedSampler(range(length), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self._start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self._inner.set_epoch(epoch)
        self._start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._inner)[self._start :])

    def __len__(self) -> int:
        return len(self._inner) - self._start


class SeededDataset(Dataset):
    """``transform`` applied to ``data[i]`` with its random state seeded from (seed, epoch, i).

    ``data`` can be a list of records or a MONAI cache dataset holding the deterministic part of the
    pipeline; ``transform`` is the random part.
    """

    def __init__(self, data: Sequence[Any], transform: Compose, seed: int = 0) -> None:
        self.data = data
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        self.transform.set_random_state(seed=seed)
        return apply_transform(self.transform, self.data[index])


def epoch_loader(
    dataset: SeededDataset, sampler: ResumableSampler, epoch: int, start_batch: int, batch_size: int, **kwargs: Any
) -> DataLoader:
    """The loader for ``epoch`` from batch ``start_batch`` on (``kwargs`` go to MONAI's DataLoader)."""
    dataset.set_epoch(epoch)
    sampler.set_epoch(epoch, start_batch * batch_size)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([dataset.seed, epoch]).generate_state(1)[0]))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
