"""Case discovery from folders, datalists, nnU-Net and BraTS layouts, on a real scan's crop, and what the
layouts say beside their cases."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmim.data.sources import BRATS_MODALITIES, Case, discover, discover_cases
from gmim.errors import InputError

NUMBERED = "files named like nnU-Net channel files"
ADVICE = "for channels of one case, use an nnU-Net dataset folder with dataset.json or a datalist"


@pytest.fixture(scope="module")
def scan(itk_t1) -> nib.Nifti1Image:
    return nib.Nifti1Image(itk_t1[40:56, 40:56, 20:28], np.diag([2.0, 2.0, 3.0, 1.0]))


def _save(image: nib.Nifti1Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def _notes(recwarn) -> list[str]:
    return [str(w.message) for w in recwarn.list if "nnU-Net" in str(w.message)]


def test_image_folder_recursive_and_nnunet_channel_grouping(tmp_path, scan, recwarn):
    _save(scan, tmp_path / "flat" / "a.nii.gz")
    _save(scan, tmp_path / "flat" / "sub" / "b.nii")
    cases = discover_cases([tmp_path / "flat"])
    assert [c.id for c in cases] == ["a", "b"]
    assert all(len(c.images) == 1 and c.label is None for c in cases)

    for cid in ("la_003", "la_004"):  # two cases with the same channels 0000, 0001: the layout says channels
        for channel in range(2):
            _save(scan, tmp_path / "grouped" / f"{cid}_{channel:04d}.nii.gz")
    found = discover([tmp_path / "grouped"])
    assert [c.id for c in found.cases] == ["la_003", "la_004"]
    assert [p.name for p in found.cases[0].images] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]
    assert found.channel_names is None and found.labels is None and found.source is None

    for cid in ("s_01", "s_02"):  # an nnU-Net imagesTs/ of one-channel cases keeps the nnU-Net case ids
        _save(scan, tmp_path / "imagesTs" / f"{cid}_0000.nii.gz")
    assert [c.id for c in discover_cases([tmp_path / "imagesTs"])] == ["s_01", "s_02"]
    assert not _notes(recwarn)


@pytest.mark.parametrize(
    "names, note",
    [
        ([f"ct_{i:04d}" for i in range(40)], f"40 {NUMBERED} (ct_0000 …) read as 40 one-channel cases"),
        (["amos_0001", "amos_0004", "amos_0005"], f"3 {NUMBERED} (amos_0001 …) read as 3 one-channel cases"),
        (["scan_0000", "scan_0001", "scan_0002"], f"3 {NUMBERED} (scan_0000 …) read as 3 one-channel cases"),
        (["a_0000", "a_0001", "b_0000"], f"3 {NUMBERED} (a_0000 …) read as 3 one-channel cases"),
        (["a_0000", "a_0001", "notes"], f"2 {NUMBERED} (a_0000 …) read as 2 one-channel cases"),
        (["only_0000"], "1 file named like an nnU-Net channel file (only_0000) read as a one-channel case"),
    ],
)
def test_numbered_files_that_are_not_clearly_channels_are_one_case_each_with_one_note(tmp_path, scan, recwarn, names, note):
    """One "case" of 40 channels, channel gaps, different channel sets or other files beside them: not nnU-Net channels."""
    for name in names:
        _save(scan, tmp_path / "scans" / f"{name}.nii.gz")
    cases = discover_cases([tmp_path / "scans"])
    assert [c.id for c in cases] == names and all(len(c.images) == 1 for c in cases)
    assert _notes(recwarn) == [f"{tmp_path / 'scans'}: {note}; {ADVICE}"]


def test_one_channel_case_per_sub_folder_is_not_grouped_and_repeated_ids_are_made_unique(tmp_path, scan, recwarn):
    for site in ("site1", "site2"):  # one "case" per folder: these may as well be scans
        for i in range(2):
            _save(scan, tmp_path / "sites" / site / f"ct_{i:04d}.nii.gz")
    _save(scan, tmp_path / "sites" / "ct_0000.nii.gz")
    cases = discover_cases([tmp_path / "sites"])  # the one directly in the folder keeps its name
    assert [c.id for c in cases] == ["ct_0000", "site1_ct_0000", "site1_ct_0001", "site2_ct_0000", "site2_ct_0001"]
    assert _notes(recwarn) == [f"{tmp_path / 'sites'}: 5 {NUMBERED} (ct_0000 …) read as 5 one-channel cases; {ADVICE}"]

    for cid in ("p", "q"):  # grouped cases named alike in two sub-folders
        for site in ("a", "b"):
            for channel in range(2):
                _save(scan, tmp_path / "grouped" / site / f"{cid}_{channel:04d}.nii.gz")
    assert sorted(c.id for c in discover_cases([tmp_path / "grouped"])) == ["a_p", "a_q", "b_p", "b_q"]

    _save(scan, tmp_path / "twice" / "x.nii.gz")
    _save(scan, tmp_path / "twice" / "x.nii")
    with pytest.raises(InputError, match=r"x\.nii\.gz: case id x is also .*x\.nii; rename one"):
        discover_cases([tmp_path / "twice"])


def test_the_dicom_scan_cache_is_passed_on(tmp_path, scan, monkeypatch):
    import gmim.data.dicom

    calls = []
    monkeypatch.setattr(gmim.data.dicom, "find_series", lambda folder, **kwargs: calls.append(kwargs) or ([], []))
    _save(scan, tmp_path / "flat" / "a.nii.gz")
    discover_cases([tmp_path / "flat"])
    discover([tmp_path / "flat"], scan_cache=tmp_path / "cache")
    assert calls == [{"cache": None}, {"cache": tmp_path / "cache"}]


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
    found = discover([tmp_path / "d" / "list.json"])
    assert found.channel_names is None and found.labels is None
    cases = found.cases
    assert [(c.id, c.fold, c.split) for c in cases] == [("x", 1, "training"), ("y", 0, "training"), ("z", None, "test")]
    assert cases[0].label == tmp_path / "d" / "img" / "x_seg.nii.gz"
    assert cases[0].as_dict()["image"][1].endswith("x_t2.nii.gz")
    assert [c.id for c in discover_cases([tmp_path / "d" / "list.json"], splits=("training",))] == ["x", "y"]


def _nnunet(root: Path, scan: nib.Nifti1Image, labels: dict) -> Path:
    (root / "labelsTr").mkdir(parents=True)
    channel_names = {"1": "T2", "0": "T1"}  # ordered by channel number, not as written
    (root / "dataset.json").write_text(json.dumps({"channel_names": channel_names, "labels": labels, "file_ending": ".nii.gz"}))
    for cid in ("b_001", "b_002"):
        for c in range(2):
            _save(scan, root / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        _save(scan, root / "labelsTr" / f"{cid}.nii.gz")
    return root


def _brats(folder: Path, scan: nib.Nifti1Image) -> Path:
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        _save(scan, folder / "BraTS2021_00000" / f"BraTS2021_00000_{m}.nii.gz")
    return folder


def test_nnunet_and_brats_layouts_combined(tmp_path, scan, recwarn):
    root = _nnunet(tmp_path / "Dataset001_Brain", scan, {"background": 0, "brain": 1})
    found = discover([root])
    assert [c.id for c in found.cases] == ["b_001", "b_002"] and found.cases[0].label.name == "b_001.nii.gz"
    assert found.channel_names == ("T1", "T2") and found.labels == {"background": 0, "brain": 1}
    assert found.source == root / "dataset.json"

    brats = _brats(tmp_path / "brats", scan)
    found = discover([brats])
    (case,) = found.cases
    assert [p.name.split("_")[-1] for p in case.images] == ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    assert case.label.name.endswith("_seg.nii.gz") and case.id == "BraTS2021_00000"
    assert found.channel_names == BRATS_MODALITIES == ("flair", "t1", "t1ce", "t2") and found.labels is None
    with pytest.raises(InputError, match="4 channel"):
        discover_cases([root, brats])
    # several DATA paths: the first layout naming channels gives them, the first naming labels gives those
    found = discover([tmp_path / "brats", root], same_channels=False)
    assert found.channel_names == BRATS_MODALITIES
    assert found.labels == {"background": 0, "brain": 1} and found.source == root / "dataset.json"

    datalist = {"training": [{"image": [str(p) for p in case.images], "label": str(case.label)}]}
    (tmp_path / "brats.json").write_text(json.dumps(datalist))
    assert discover([tmp_path / "brats.json"]).channel_names == BRATS_MODALITIES  # BraTS-named files in a datalist
    assert not _notes(recwarn)


def test_finetuning_takes_labels_and_channel_names_from_discovery(tmp_path, scan):
    from gmim.segmentation.config import FinetuneConfig
    from gmim.segmentation.method import resolve_config

    layout = discover([_nnunet(tmp_path / "Dataset001_Brain", scan, {"background": 0, "brain": 1})])
    config = resolve_config(FinetuneConfig(), layout.cases, layout)
    assert config.task.labels == {"background": 0, "brain": 1} and config.task.channels == ["T1", "T2"]
    assert config.model.in_channels == 2

    layout = discover([_brats(tmp_path / "brats", scan)])
    assert resolve_config(FinetuneConfig(), layout.cases, layout).task.channels == ["flair", "t1", "t1ce", "t2"]

    regions = _nnunet(tmp_path / "Dataset002_Regions", scan, {"background": 0, "whole": [1, 2], "core": 2})
    layout = discover([regions])
    assert layout.labels["whole"] == [1, 2]  # as written
    with pytest.raises(InputError, match=f"^{regions / 'dataset.json'}: region-based labels"):
        resolve_config(FinetuneConfig(), layout.cases, layout)


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
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"T1": 0}, "labels": {"background": 0}}))
    with pytest.raises(InputError, match=r"dataset.json: 'channel_names' keys must be channel numbers"):
        discover_cases([root])
    brats = tmp_path / "br" / "case1"
    _save(scan, brats / "case1_flair.nii.gz")
    with pytest.raises(InputError, match=r"\*_t1"):
        discover_cases([tmp_path / "br"])
    assert isinstance(Case("a", (Path("x"),)).as_dict(), dict)
