"""Fine-tuning's cases preprocessed once, before training, and which file a failure came from.

MONAI wraps what a reader raises in ``RuntimeError("applying transform ...")``, and a cache built
in a pool of threads does not say which item failed. :func:`preload` loads item by item, so that a
corrupt file stops the run with one line naming it (or is skipped, with ``skip_bad``). Without a
cache, files are read during training, in the loader's workers: :class:`NamedErrorsDataset` names
the file there.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose
from torch.utils.data import Subset

from gmim.data.checks import (
    MEMORY_SHARE,
    check_cases,
    read_grid,
    reader_reason,
    size_text,
    voxel_spacing,
)
from gmim.data.sources import Case
from gmim.errors import InputError
from gmim.resources import memory_bytes

__all__ = ["Items", "NamedErrorsDataset", "SelfHealingPersistentDataset", "describe_load_error", "preload", "refuse_oversized_memory_cache"]


def describe_load_error(case: Case, error: BaseException) -> InputError:
    """One line for a case that failed to load: our own message, or its reader's first words."""
    cause: BaseException = error
    while not isinstance(cause, InputError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, InputError):
        return cause
    return InputError(f"{case.images[0]}: cannot be loaded ({reader_reason(cause, case.images[0])})")


class SelfHealingPersistentDataset(PersistentDataset):
    """MONAI's disk cache, except that an entry it cannot read (a write cut short, a full disk) is
    named, deleted and rebuilt from its source. MONAI rebuilds only entries with a bad pickle and
    re-raises the rest, which then reads as a fault of the source image in every later run."""

    def _cachecheck(self, item_transformed: Any) -> Any:
        try:
            return super()._cachecheck(item_transformed)
        except Exception as error:
            if self.cache_dir is None:
                raise  # no disk cache: the source itself failed
            entry = self.cache_dir / f"{self.hash_func(item_transformed).decode('utf-8')}{self.transform_hash}.pt"
            if not entry.is_file():
                raise  # the source itself failed: not the cache's fault
            warnings.warn(f"{entry}: unreadable disk-cache entry ({reader_reason(error)}); rebuilding it", stacklevel=2)
            entry.unlink(missing_ok=True)
            return super()._cachecheck(item_transformed)


class NamedErrorsDataset(Dataset):
    """A MONAI Dataset whose load failures are :func:`describe_load_error`'s one line naming the file."""

    def __init__(self, cases: Sequence[Case], records: Sequence[dict[str, Any]], transform: Compose) -> None:
        super().__init__(list(records), transform)
        self.cases = list(cases)

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as error:  # a corrupt file raises whatever its reader raises
            raise describe_load_error(self.cases[index], error) from error


def refuse_oversized_memory_cache(cases: Sequence[Case], spacing: Sequence[float] | None) -> None:
    """One line, before any volume is read, when ``data.cache=memory`` cannot hold ``cases``: their
    float32 voxels (after resampling to ``spacing``), estimated from the headers, against the memory
    this process may use."""
    total = 0.0
    for case in cases:
        shape, affine = read_grid(case.images[0])
        voxels = float(np.prod(shape))
        if spacing is not None:
            voxels *= float(np.prod(voxel_spacing(affine)) / np.prod(spacing))
        total += voxels * 4 * (len(case.images) + (case.label is not None))
    memory = memory_bytes()
    if total > MEMORY_SHARE * memory:
        raise InputError(
            f"data.cache=memory: the {len(cases)} volumes take about {size_text(total)} as float32, more than "
            f"{MEMORY_SHARE:.0%} of the {size_text(memory)} this process may use; set data.cache=disk or none"
        )


class Items(Protocol):
    """What :class:`SeededDataset` reads: a length and items by index (a list of records, a MONAI dataset, a Subset of one)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


def preload(
    cases: Sequence[Case],
    records: Sequence[dict[str, Any]],
    transform: Compose,
    cache: Literal["memory", "disk", "none"],
    cache_dir: Path | None = None,
    workers: int = 1,
    skip_bad: bool = False,
) -> tuple[Items, list[str]]:
    """``transform`` applied to each of ``records`` (one per case): kept in memory, written to
    ``cache_dir`` (MONAI's PersistentDataset), or — ``none`` — left to be done on the fly after only
    the files' headers are checked. Returns the data and the messages of the cases skipped."""
    if cache == "none":
        check_cases(cases, workers=workers)
        return NamedErrorsDataset(cases, records, transform), []
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("the disk cache needs a cache_dir")
        source: Dataset = SelfHealingPersistentDataset(list(records), transform, cache_dir=cache_dir)
    else:
        source = Dataset(list(records), transform)

    def load(index: int) -> Any:
        try:
            check_cases([cases[index]], workers=1)  # a crafted header is refused before its voxels are read
            return source[index]
        except Exception as error:  # a corrupt file raises whatever its reader raises
            return describe_load_error(cases[index], error)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(load, range(len(records))))
    skipped = [str(r) for r in results if isinstance(r, InputError)]
    if skipped and not skip_bad:
        raise next(r for r in results if isinstance(r, InputError))
    for message in skipped:
        warnings.warn(f"skipped: {message}", stacklevel=2)
    kept = [i for i, r in enumerate(results) if not isinstance(r, InputError)]
    if cache == "memory":
        return [results[i] for i in kept], skipped
    return (source if not skipped else Subset(source, kept)), skipped
