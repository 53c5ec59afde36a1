"""gmim predict: outputs in each input's own grid (not RAS, not at the training spacing), flip TTA,
probabilities, and a folder with bad cases predicted past them."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Compose

from gmim.cli import main
from gmim.data.checks import read_grid
from gmim.data.sources import Case
from gmim.data.transforms import load_transforms
from gmim.segmentation.inference import Predictor


@pytest.mark.slow
def test_prediction_has_the_input_grid(tmp_path, finetuned_run, itk_paths):
    source = nib.load(itk_paths["t1"])
    assert nib.aff2axcodes(source.affine) != ("R", "A", "S") and source.header.get_zooms() == (2.0, 2.0, 3.0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(source, inputs / "itk.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(itk_paths["t1"])), str(inputs / "itk_mha.mha"))
    out, tta = tmp_path / "out", tmp_path / "tta"
    assert main(["predict", str(finetuned_run), str(inputs), "--out", str(out), "--device", "cpu"]) == 0
    assert (
        main(["predict", str(finetuned_run), str(inputs / "itk.nii.gz"), "--out", str(tta), "--device", "cpu", "--tta", "--probabilities"])
        == 0
    )

    for prediction in (nib.load(out / "itk.nii.gz"), nib.load(tta / "itk.nii.gz")):
        assert prediction.shape == source.shape and np.array_equal(prediction.affine, source.affine)
        assert prediction.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1}
    probabilities = np.asarray(nib.load(tta / "probabilities" / "itk.nii.gz").dataobj)
    assert probabilities.shape == (*source.shape, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-4)
    assert np.array_equal(probabilities.argmax(-1), np.asarray(nib.load(tta / "itk.nii.gz").dataobj))

    prediction = nib.load(out / "itk.nii.gz")
    shape, affine = read_grid(inputs / "itk_mha.mha")  # ITK's LPS header, read back as RAS
    from_mha = nib.load(out / "itk_mha.nii.gz")
    assert from_mha.shape == shape and np.allclose(from_mha.affine, affine, atol=1e-4)
    assert np.allclose(from_mha.affine, source.affine, atol=1e-4)
    agreement = np.mean(np.asarray(from_mha.dataobj) == np.asarray(prediction.dataobj))
    assert agreement > 0.99  # same scan through another reader: same labels on the same grid


def test_inversion_restores_the_reference(finetuned_run, itk_paths, brain_extraction):
    """The reference mask, preprocessed like a training label (reoriented to RAS, resampled to 4 mm) and
    sent back by the predictor's inversion, lands on the input's grid where it was."""
    predictor = Predictor(finetuned_run, torch.device("cpu"))
    mask = brain_extraction / "itk_t1_mask.nii.gz"
    case = Case("itk", (itk_paths["t1"],), mask)
    data = predictor.transform(case.as_dict())
    label = Compose(load_transforms(predictor.config.preprocessing, label=True))(case.as_dict())["label"]
    assert data["image"].shape[1:] == label.shape[1:] != nib.load(mask).shape
    onehot = torch.cat([1 - label, label]).float()
    restored = predictor.task.to_label_map(predictor.to_input_grid(data, onehot)).numpy()
    reference = np.asarray(nib.load(mask).dataobj)
    dice = 2 * np.sum((restored == 1) & (reference == 1)) / (np.sum(restored == 1) + np.sum(reference == 1))
    assert restored.shape == reference.shape and dice > 0.95


def test_bad_cases_are_reported_at_the_end(tmp_path, finetuned_run, brain_extraction, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + b"broken" * 10)
    itk = brain_extraction / "itk_t1.nii.gz"
    (folder / "good.nii.gz").write_bytes(itk.read_bytes())
    (folder / "truncated.nii.gz").write_bytes(itk.read_bytes()[:100_000])  # a readable header, broken voxels
    image = nib.load(itk)
    holes = np.asarray(image.dataobj, dtype=np.float32)
    holes.flat[::997] = np.nan  # 0.1 % NaN: refused, not predicted as background
    nib.save(nib.Nifti1Image(holes, image.affine), folder / "with_nan.nii.gz")
    (tmp_path / "two.json").write_text(json.dumps({"training": [{"image": [str(itk), str(itk)]}]}))
    code = main(["predict", str(finetuned_run), str(folder), str(tmp_path / "two.json"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert (tmp_path / "out" / "good.nii.gz").is_file() and "1 of 5 case(s) predicted" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("gmim predict: error:")]
    assert len(errors) == 4
    assert "corrupt: " in errors[0] and "corrupt.nii.gz: not a readable image" in errors[0]
    assert "truncated: " in errors[1] and "truncated.nii.gz: cannot be loaded" in errors[1]
    assert "with_nan: " in errors[2] and f"with_nan.nii.gz: {holes.size // 997 + 1} NaN or infinite voxel(s)" in errors[2]
    assert "itk_t1: " in errors[3] and "has 2 channel(s), the model takes 1" in errors[3]  # named after its channel file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{tmp}/nothing", "{tmp}", "--out", "{tmp}/o"], "nothing: no such model folder or file"),
        (["predict", "{tmp}", "{tmp}", "--out", "{tmp}/o"], "no best.pt or last.pt in this folder"),
        (
            ["predict", "{run}", "{tmp}/x.nii.gz", "--out", "{tmp}/o", "--overlap", "1.5"],
            "--overlap 1.5: 'inference.overlap' must be in [0, 1), got 1.5",
        ),
    ],
)
def test_bad_model_or_options(tmp_path, finetuned_run, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, run=finetuned_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_an_output_that_cannot_take_the_predictions_is_refused_before_inference(tmp_path, finetuned_run, itk_paths, capsys):
    (tmp_path / "taken").write_text("a file")
    code = main(["predict", str(finetuned_run), str(itk_paths["t1"]), "--out", str(tmp_path / "taken"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.strip().splitlines() == [f"gmim predict: error: --out {tmp_path / 'taken'}: is a file, not a folder"]
    assert "predict" not in captured.out  # no case was predicted
