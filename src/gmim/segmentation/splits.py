"""Which labelled cases train and which validate: k folds, a datalist's own split, label fractions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gmim.data.sources import Case
from gmim.errors import InputError
from gmim.segmentation.config import DataConfig

__all__ = ["split_cases"]


def _folds(cases: Sequence[Case], config: DataConfig, seed: int) -> tuple[list[Case], list[Case]]:
    fold = 0 if config.fold is None else config.fold
    assert isinstance(fold, int)
    if any(case.fold is not None for case in cases):
        val = [c for c in cases if c.fold == fold]
        if not val:
            found = sorted({c.fold for c in cases if c.fold is not None})
            raise InputError(f"--fold {fold}: no case of the datalist is in fold {fold} (folds there: {found})")
        return [c for c in cases if c.fold != fold], val
    if not 0 <= fold < config.folds:
        raise InputError(f"--fold {fold}: must be between 0 and {config.folds - 1} (data.folds = {config.folds})")
    if len(cases) < config.folds:
        raise InputError(f"--fold {fold}: {len(cases)} labelled cases cannot make {config.folds} folds (set data.folds)")
    order = np.random.default_rng(seed).permutation(len(cases))
    held_out = set(np.array_split(order, config.folds)[fold].tolist())
    return [c for i, c in enumerate(cases) if i not in held_out], [c for i, c in enumerate(cases) if i in held_out]


def split_cases(cases: Sequence[Case], config: DataConfig, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases among labelled ``cases``, after the label fraction.

    The fold split and the labelled subset are seeded, so runs with the same seed, data and
    options use the same cases.
    """
    training = [c for c in cases if c.split == "training"]
    given = [c for c in cases if c.split == "validation"]
    if config.fold == "all":
        train, val = training + given, []
    elif config.fold is None and given:
        train, val = training, given
    else:
        train, val = _folds(training, config, seed)
    if config.labelled_cases is not None:
        if not 1 <= config.labelled_cases <= len(train):
            raise InputError(f"--labelled-cases {config.labelled_cases}: between 1 and the {len(train)} training cases")
        keep = config.labelled_cases
    else:
        keep = max(1, round(config.label_fraction * len(train)))
    chosen = set(np.random.default_rng(seed + 1).permutation(len(train))[:keep].tolist())
    return [c for i, c in enumerate(train) if i in chosen], val
