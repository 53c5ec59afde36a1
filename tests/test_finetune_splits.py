"""Which cases train and validate: datalist folds and validation sections, seeded k folds, label fractions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmim.data.sources import Case
from gmim.errors import InputError
from gmim.segmentation.config import DataConfig
from gmim.segmentation.splits import split_cases


def _cases(n: int, split: str = "training", folds: list[int] | None = None) -> list[Case]:
    return [
        Case(f"{split}{i}", (Path(f"{split}{i}.nii.gz"),), Path(f"{split}{i}_seg.nii.gz"), folds[i] if folds else None, split)
        for i in range(n)
    ]


def test_seeded_k_folds_partition_the_cases():
    cases = _cases(11)
    validation = [split_cases(cases, DataConfig(fold=k, folds=5))[1] for k in range(5)]
    ids = [c.id for v in validation for c in v]
    assert sorted(ids) == sorted(c.id for c in cases) and [len(v) for v in validation] == [3, 2, 2, 2, 2]
    train, val = split_cases(cases, DataConfig(fold=2, folds=5))
    assert not {c.id for c in train} & {c.id for c in val} and len(train) == 9
    assert split_cases(cases, DataConfig(fold=2, folds=5), seed=1)[1] != val  # the seed decides


def test_datalist_folds_validation_section_all_and_label_fractions():
    folded = _cases(6, folds=[0, 1, 2, 0, 1, 2])
    train, val = split_cases(folded, DataConfig(fold=1))
    assert [c.id for c in val] == ["training1", "training4"] and len(train) == 4
    given = _cases(4) + _cases(2, "validation")
    assert [c.id for c in split_cases(given, DataConfig())[1]] == ["validation0", "validation1"]
    assert len(split_cases(given, DataConfig(fold=0, folds=2))[1]) == 2  # an explicit fold splits the training cases
    train, val = split_cases(given, DataConfig(fold="all"))
    assert len(train) == 6 and val == []
    assert len(split_cases(_cases(20), DataConfig(fold=0, label_fraction=0.25))[0]) == 4
    few = split_cases(_cases(20), DataConfig(fold=0, labelled_cases=3))[0]
    assert len(few) == 3 and few == split_cases(_cases(20), DataConfig(fold=0, labelled_cases=3))[0]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (DataConfig(fold=5, folds=5), "--fold 5: must be between 0 and 4"),
        (DataConfig(fold=0, folds=10), "4 labelled cases cannot make 10 folds"),
        (DataConfig(fold=0, folds=2, labelled_cases=9), "--labelled-cases 9: between 1 and the 2 training cases"),
    ],
)
def test_bad_splits(config, message):
    with pytest.raises(InputError, match=message):
        split_cases(_cases(4), config)
    with pytest.raises(InputError, match="no case of the datalist is in fold 3"):
        split_cases(_cases(3, folds=[0, 1, 1]), DataConfig(fold=3))
