"""Case discovery from folders, datalists, nnU-Net and BraTS layouts, on a real scan's crop."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmim.data.sources import Case, discover_cases
from gmim.errors import InputError


@pytest.fixture(scope="module")
def scan(itk_t1) -> nib.Nifti1Image:
    return nib.Nifti1Image(itk_t1[40:56, 40:56, 20:28], np.diag([2.0, 2.0, 3.0, 1.0]))


def _save(image: nib.Nifti1Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def test_image_folder_recursive_and_nnunet_channel_grouping(tmp_path, scan):
    _save(scan, tmp_path / "flat" / "a.nii.gz")
    _save(scan, tmp_path / "flat" / "sub" / "b.nii")
    cases = discover_cases([tmp_path / "flat"])
    assert [c.id for c in cases] == ["a", "b"]
    assert all(len(c.images) == 1 and c.label is None for c in cases)

    for channel in range(2):
        _save(scan, tmp_path / "grouped" / f"la_003_{channel:04d}.nii.gz")
    (case,) = discover_cases([tmp_path / "grouped"])
    assert case.id == "la_003" and [p.name for p in case.images] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]


def test_datalist_relative_paths_folds_and_splits(tmp_path, scan):
    for name in ("x_t1", "x_t2", "y_t1", "y_t2", "x_seg", "z_t1", "z_t2"):
        _save(scan, tmp_path / "d" / "img" / f"{name}.nii.gz")
    datalist = {
        "training": [
            {"image": ["img/x_t1.nii.gz", "img/x_t2.nii.gz"], "label": "img/x_seg.nii.gz", "fold": 1},
            {"image": ["img/y_t1.nii.gz", "img/y_t2.nii.gz"], "label": "img/x_seg.nii.gz", "fold": 0},
        ],
        "test": [{"image": ["img/z_t1.nii.gz", "img/z_t2.nii.gz"]}],
    }
    (tmp_path / "d" / "list.json").write_text(json.dumps(datalist))
    cases = discover_cases([tmp_path / "d" / "list.json"])
    assert [(c.id, c.fold, c.split) for c in cases] == [("x", 1, "training"), ("y", 0, "training"), ("z", None, "test")]
    assert cases[0].label == tmp_path / "d" / "img" / "x_seg.nii.gz"
    assert cases[0].as_dict()["image"][1].endswith("x_t2.nii.gz")
    assert [c.id for c in discover_cases([tmp_path / "d" / "list.json"], splits=("training",))] == ["x", "y"]


def test_nnunet_and_brats_layouts_combined(tmp_path, scan):
    root = tmp_path / "Dataset001_Brain"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "brain": 1}, "file_ending": ".nii.gz"})
    )
    for cid in ("b_001", "b_002"):
        for c in range(2):
            _save(scan, root / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        _save(scan, root / "labelsTr" / f"{cid}.nii.gz")
    cases = discover_cases([root])
    assert [c.id for c in cases] == ["b_001", "b_002"] and cases[0].label.name == "b_001.nii.gz"

    brats = tmp_path / "brats"
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        _save(scan, brats / "BraTS2021_00000" / f"BraTS2021_00000_{m}.nii.gz")
    (case,) = discover_cases([brats])
    assert [p.name.split("_")[-1] for p in case.images] == ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    assert case.label.name.endswith("_seg.nii.gz") and case.id == "BraTS2021_00000"
    with pytest.raises(InputError, match="4 channel"):
        discover_cases([root, brats])


def test_bad_sources_name_the_path(tmp_path, scan):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        discover_cases([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        discover_cases([tmp_path / "missing"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        discover_cases([tmp_path / "bad.json"])
    (tmp_path / "gone.json").write_text(json.dumps({"training": [{"image": "nope.nii.gz"}]}))
    with pytest.raises(InputError, match="nope.nii.gz"):
        discover_cases([tmp_path / "gone.json"])
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a", "1": "b"}, "labels": {"background": 0}}))
    _save(scan, root / "imagesTr" / "c_0000.nii.gz")
    with pytest.raises(InputError, match="case c has channels"):
        discover_cases([root])
    brats = tmp_path / "br" / "case1"
    _save(scan, brats / "case1_flair.nii.gz")
    with pytest.raises(InputError, match=r"\*_t1"):
        discover_cases([tmp_path / "br"])
    assert isinstance(Case("a", (Path("x"),)).as_dict(), dict)
