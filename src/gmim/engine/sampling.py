"""Reproducible, resumable data order and augmentation, with one loader for the whole run.

The samples of a run form one stream: epoch after epoch, each a permutation of the training
volumes seeded by (seed, epoch). Step s takes the global batch at stream positions
[s·B, (s+1)·B), and rank r of W takes its consecutive B/W of them, so the same global batch B
draws the same samples with 1 or W processes, and a run resumed at step s draws exactly what an
uninterrupted one would. :class:`StepSampler` yields these samples as (epoch, index) keys;
:class:`SeededDataset` seeds each sample's random transforms from (seed, epoch, index), whichever
worker loads it. :func:`run_loader` builds the run's only loader over them: its workers start
once and prefetch across epoch boundaries.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import Compose, apply_transform
from torch.utils.data import DataLoader, Dataset, Sampler

from gmim.data.caching import Items

__all__ = ["SampleKey", "SeededDataset", "StepSampler", "derived_seed", "run_loader"]

#: A sample of the stream: (epoch, index of the volume).
SampleKey = tuple[int, int]


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed mixed from integers (NumPy's SeedSequence): nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


class StepSampler(Sampler[SampleKey]):
    """This rank's samples for steps ``start`` … ``stop - 1`` of the stream (see the module doc)."""

    def __init__(self, length: int, batch_size: int, start: int, stop: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if length < 1 or batch_size % world_size:
            raise ValueError(f"{length} volumes, global batch {batch_size} over {world_size} process(es)")
        self.length, self.batch_size, self.start, self.stop = length, batch_size, start, stop
        self.rank, self.per_rank, self.seed = rank, batch_size // world_size, seed
        self._epoch = -1
        self._order: list[int] = []

    def key(self, position: int) -> SampleKey:
        """The sample at a position of the stream."""
        epoch, place = divmod(position, self.length)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            self._epoch, self._order = epoch, torch.randperm(self.length, generator=generator).tolist()
        return epoch, self._order[place]

    def __iter__(self) -> Iterator[SampleKey]:
        for step in range(self.start, self.stop):
            first = step * self.batch_size + self.rank * self.per_rank
            for position in range(first, first + self.per_rank):
                yield self.key(position)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.per_rank


class SeededDataset(Dataset):
    """``transform`` applied to ``data[index]`` with its random state seeded from (seed, epoch, index).

    ``data`` can be a list of records or a MONAI dataset holding the deterministic part of the
    pipeline (cached); ``transform`` is the random part. Items are read by (epoch, index) keys.
    """

    def __init__(self, data: Items, transform: Compose, seed: int = 0) -> None:
        self.data = data
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: SampleKey) -> Any:
        epoch, index = key
        self.transform.set_random_state(seed=derived_seed(self.seed, epoch, index))
        return apply_transform(self.transform, self.data[index])


def _worker_ignores_interrupts(worker_id: int) -> None:
    """Ctrl-C and SIGTERM are the training process's to handle: it finishes the step, saves, and
    then ends the workers; a worker that died of the signal first would lose the step in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def end_workers(batches: Iterator[Any]) -> None:
    """End a loader iterator's worker processes now. Left to garbage collection, a traceback that
    holds the iterator (an error raised in a worker) keeps them alive, and since they ignore SIGTERM
    the interpreter's exit then waits for them forever."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # PyTorch's own clean-up, run by its __del__
    if shutdown is not None:
        shutdown()


def run_loader(dataset: SeededDataset, sampler: StepSampler, workers: int, pin_memory: bool) -> DataLoader:
    """The one loader of a run: batches of this rank's ``sampler.per_rank`` volumes (lists of crops
    per volume are flattened into the batch by MONAI's collate), prefetched by ``workers`` processes
    that live as long as the run."""
    return DataLoader(
        dataset,
        batch_size=sampler.per_rank,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_ignores_interrupts if workers else None,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(derived_seed(dataset.seed)),  # leaves the global RNG alone
    )
