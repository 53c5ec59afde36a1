"""gmim evaluate: Dice and HD95 with stated conventions for empty masks, pairing by name, outputs."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from gmim.cli import main
from gmim.segmentation.metrics import dice_scores, hd95_scores
from gmim.segmentation.task import Task


@pytest.fixture(scope="module")
def brain(itk_paths):
    """The ITK example's brain mask (skull strip > 0) and its affine: 2 × 2 × 3 mm voxels."""
    image = nib.load(itk_paths["skull_strip"])
    return (np.asarray(image.dataobj) > 0).astype(np.uint8), image.affine


def test_dice_and_hd95_conventions(brain):
    mask = torch.from_numpy(brain[0]).bool()
    shifted = torch.roll(mask, 2, dims=2)  # 2 voxels along the 3 mm axis
    empty = torch.zeros_like(mask)
    prediction = torch.stack([mask, shifted, empty, empty])
    reference = torch.stack([mask, mask, mask, empty])
    dice = dice_scores(prediction, reference)
    overlap = (shifted & mask).sum().item()
    expected = 2 * overlap / (shifted.sum().item() + mask.sum().item())
    assert dice.tolist() == pytest.approx([1.0, expected, 0.0, 1.0])
    hd95 = hd95_scores(prediction, reference, (2.0, 2.0, 3.0))
    assert hd95[0] == 0 and 0 < hd95[1] <= 6.0 + 1e-6 and torch.isnan(hd95[2]) and hd95[3] == 0


def test_task_label_maps_round_trip():
    brats = Task(kind="regions", labels={"background": 0, "ncr": 1, "ed": 2, "et": 4}, regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]})
    brats.check()
    labels = torch.tensor([[[0, 1, 2, 4]]])
    regions = brats.masks(labels).float()
    assert regions[:, 0, 0].tolist() == [[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]
    assert torch.equal(brats.to_label_map(regions), labels)
    amos_like = Task(labels={"background": 0, "liver": 6, "spleen": 1})
    assert list(amos_like.scored) == ["spleen", "liver"] and amos_like.out_channels == 3
    target = amos_like.target_transform()({"label": torch.tensor([[0, 6, 1]])})["label"]
    assert target.tolist() == [[0, 2, 1]]
    probabilities = torch.nn.functional.one_hot(torch.as_tensor(target[0]).long(), 3).T.float()
    assert amos_like.to_label_map(probabilities).tolist() == [0, 6, 1]


def _save(array, affine, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)


def test_cli_pairs_by_name_writes_table_csv_json_overlays(tmp_path, brain, itk_paths, capsys):
    mask, affine = brain
    _save(mask, affine, tmp_path / "ref" / "a.nii.gz")
    _save(mask, affine, tmp_path / "ref" / "b.nii.gz")
    _save(mask, affine, tmp_path / "ref" / "c.nii.gz")
    _save(mask, affine, tmp_path / "pred" / "a.nii.gz")
    _save(np.roll(mask, 3, axis=0), affine, tmp_path / "pred" / "b.nii.gz")
    _save(mask, affine, tmp_path / "pred" / "extra.nii.gz")
    _save(np.stack([mask, mask], -1), affine, tmp_path / "pred" / "probabilities" / "a.nii.gz")  # not a label map
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.nii.gz").write_bytes(itk_paths["t1"].read_bytes())
    code = main(
        [
            "evaluate",
            str(tmp_path / "pred"),
            str(tmp_path / "ref"),
            "--out",
            str(tmp_path / "eval"),
            "--overlays",
            "--images",
            str(tmp_path / "images"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and "no prediction for 1 reference(s): c" in captured.err
    assert "label1" in captured.out and "mean" in captured.out and "both empty" in captured.out
    assert "predictions without a reference (not scored): extra" in captured.out
    assert f"--images {tmp_path / 'images'}: no scan named b; 1 overlay(s) drawn without their scan" in captured.out
    rows = list(csv.DictReader((tmp_path / "eval" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b"] and float(rows[0]["label1_dice"]) == 1.0 and float(rows[0]["label1_hd95"]) == 0
    assert 0.8 < float(rows[1]["label1_dice"]) < 1.0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["missing_predictions"] == ["c"] and len(metrics["conventions"]) == 2
    assert metrics["summary"]["mean"]["dice"] == pytest.approx((1 + float(rows[1]["label1_dice"])) / 2)
    assert {p.name for p in (tmp_path / "eval" / "overlays").iterdir()} == {"a.png", "b.png"}


def test_cli_refuses_mismatched_grids_and_unknown_labels(tmp_path, brain, capsys):
    mask, affine = brain
    _save(mask, affine, tmp_path / "ref" / "a.nii.gz")
    _save(mask[:, :, :30], affine, tmp_path / "pred" / "a.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pred/a.nii.gz: not on the grid of its reference" in err[0]
    _save(mask * 5, affine, tmp_path / "pred" / "a.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--task", "brats2021"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label values [5] are not in the task" in err[0]
