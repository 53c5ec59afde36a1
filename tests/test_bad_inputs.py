"""Crafted and odd inputs (issue 14): each refused by every command that reads it, before any work,
with one line that names the file or option and says what is wrong (exit 2, no traceback)."""

from __future__ import annotations

import gzip
import json
import pathlib
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from conftest import SMALL_FINETUNE, SMALL_PRETRAIN
from gmim.cli import main
from gmim.config import dump_config
from gmim.data.caching import preload
from gmim.data.checks import MEMORY_SHARE, Header, check_header
from gmim.data.sources import Case
from gmim.data.transforms import Preprocessing, load_transforms
from gmim.errors import InputError
from gmim.pretraining.config import PretrainConfig
from gmim.segmentation.config import FinetuneConfig

#: No step is taken in any of these runs: every input is refused while it is checked.
PRETRAIN = [*SMALL_PRETRAIN, "--steps", "1", "--batch-size", "1"]
FINETUNE = [*SMALL_FINETUNE, "--steps", "1", "--fold", "all"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory, itk_paths) -> dict[str, Path | np.ndarray]:
    """A 64×64×32 crop of the ITK example T1 and a label map of it, with their affine."""
    root = tmp_path_factory.mktemp("scan")
    t1 = nib.load(itk_paths["t1"])
    image = np.asarray(t1.dataobj, dtype=np.float32)[32:96, 32:96, 16:48]
    label = (image > np.percentile(image, 60)).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, t1.affine), root / "image.nii.gz")
    nib.save(nib.Nifti1Image(label, t1.affine), root / "label.nii.gz")
    return {
        "root": root,
        "image": root / "image.nii.gz",
        "label": root / "label.nii.gz",
        "array": image,
        "labels": label,
        "affine": t1.affine,
    }


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _datalist(path: Path, image: Path, label: Path) -> Path:
    path.write_text(json.dumps({"training": [{"image": str(image), "label": str(label)}] * 2}))
    return path


def _one_line_error(capsys, argv: list[str], command: str) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and last.startswith(f"gmim {command}: error:"), err
    return last


def _evaluate(capsys, tmp_path: Path, prediction: Path, reference: Path, name: str) -> str:
    """``gmim evaluate`` of one prediction against one reference, both named ``name``."""
    folders = []
    for kind, path in (("predictions", prediction), ("references", reference)):
        folder = tmp_path / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(path.read_bytes())
        folders.append(folder)
    return _one_line_error(capsys, ["evaluate", *folders, "--out", tmp_path / "scores"], "evaluate")


def _crafted_nifti(path: Path, shape: tuple[int, ...]) -> Path:
    """A .nii.gz of a few hundred bytes whose header claims ``shape`` int16 voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    with gzip.open(path, "wb") as file:
        file.write(header.binaryblock + b"\0" * 68)
    return path


def test_header_claiming_more_than_the_file_holds_is_refused_before_reading(scan, tmp_path, capsys):
    """A 2000³ claim used to take 16 GB of memory before its error; now no voxel is read."""
    huge = _crafted_nifti(tmp_path / "huge.nii.gz", (2000, 2000, 2000))
    expected = "huge.nii.gz: its header claims 2000×2000×2000 int16 voxels (16.0 GB), more than its"
    assert expected in _one_line_error(capsys, ["pretrain", huge, "--out", tmp_path / "p", *PRETRAIN], "pretrain")
    datalist = _datalist(tmp_path / "huge.json", huge, scan["label"])
    assert expected in _one_line_error(capsys, ["finetune", datalist, "--out", tmp_path / "f", *FINETUNE], "finetune")
    assert expected in _evaluate(capsys, tmp_path, scan["label"], huge, "huge.nii.gz")
    raw = _save(tmp_path / "cut.nii", scan["array"], scan["affine"])
    raw.write_bytes(raw.read_bytes()[:20_000])
    assert "cut.nii: its header claims 64×64×32 float32 voxels (524.3 KB), more than its 20000 bytes can hold" in _one_line_error(
        capsys, ["pretrain", raw, "--out", tmp_path / "p", *PRETRAIN], "pretrain"
    )
    assert not (tmp_path / "p" / "last.pt").exists() and not (tmp_path / "f" / "last.pt").exists()


def test_volume_larger_than_the_memory_share_is_refused():
    claim = Header((4000, 4000, 4000), np.dtype(np.float32), np.eye(4))
    with pytest.raises(InputError, match=rf"big.nii: 4000×4000×4000 voxels take 256.0 GB as float32, more than {MEMORY_SHARE:.0%}"):
        check_header(Path("big.nii"), claim)
    check_header(Path("fine.nii"), Header((512, 512, 400), np.dtype(np.int16), np.eye(4)))


def test_volumes_that_are_not_one_real_3d_grid_are_named(scan, tmp_path, capsys):
    image, affine = scan["array"], scan["affine"]
    four_d = _save(tmp_path / "two_channels.nii.gz", np.stack([image, image], -1), affine)
    last = _one_line_error(
        capsys, ["finetune", _datalist(tmp_path / "a.json", four_d, scan["label"]), "--out", tmp_path / "a", *FINETUNE], "finetune"
    )
    assert "two_channels.nii.gz: a 4D image (64×64×32×2), expected one 3D volume per file" in last
    labels_4d = _save(tmp_path / "labels_4d.nii.gz", np.stack([scan["labels"]] * 2, -1), affine)
    last = _one_line_error(
        capsys, ["finetune", _datalist(tmp_path / "b.json", scan["image"], labels_4d), "--out", tmp_path / "b", *FINETUNE], "finetune"
    )
    assert "labels_4d.nii.gz: a 4D image" in last
    complex_image = _save(tmp_path / "complex.nii.gz", image.astype(np.complex64) * (1 + 1j), affine)
    for argv in (
        ["pretrain", complex_image, "--out", tmp_path / "c", *PRETRAIN],
        ["finetune", _datalist(tmp_path / "c.json", complex_image, scan["label"]), "--out", tmp_path / "c", *FINETUNE],
    ):
        assert "complex.nii.gz: complex voxels (complex64)" in _one_line_error(capsys, argv, argv[0])
    empty = _save(tmp_path / "empty.nii.gz", np.zeros((64, 0, 32), np.float32), affine)
    assert "empty.nii.gz: an empty image (64×0×32 voxels)" in _one_line_error(
        capsys, ["pretrain", empty, "--out", tmp_path / "d", *PRETRAIN], "pretrain"
    )
    header = nib.Nifti1Image(image, np.diag([1.5, 1.5, 1.5, 1.0])).header  # a crafted header: the second axis has no extent
    header["srow_y"], header["sform_code"], header["qform_code"] = 0, 1, 0
    flat = tmp_path / "flat.nii"
    flat.write_bytes(header.binaryblock + b"\0" * 4 + image.tobytes())
    assert "flat.nii: voxel size (1.5, 0.0, 1.5) mm in its header: must be finite and positive" in _one_line_error(
        capsys, ["pretrain", flat, "--out", tmp_path / "e", *PRETRAIN], "pretrain"
    )


def test_evaluate_refuses_what_is_not_a_3d_label_map(scan, tmp_path, capsys):
    labels, affine = scan["labels"], scan["affine"]
    four_d = _save(tmp_path / "four_d.nii.gz", np.stack([labels] * 2, -1), affine)
    assert "a 4D image (64×64×32×2)" in _evaluate(capsys, tmp_path / "pred_4d", four_d, scan["label"], "case.nii.gz")
    assert "a 4D image (64×64×32×2)" in _evaluate(capsys, tmp_path / "ref_4d", scan["label"], four_d, "case.nii.gz")
    # probabilities are not labels: 0.6 was scored as background and 1.4 as class 1
    soft = _save(tmp_path / "soft.nii.gz", np.where(labels > 0, 0.6, 1.4).astype(np.float32), affine)
    assert "label map holds non-integer values (e.g. 0.6)" in _evaluate(capsys, tmp_path / "soft", soft, scan["label"], "case.nii.gz")
    nan = labels.astype(np.float32)
    nan[0, 0, 0] = np.nan
    nan_path = _save(tmp_path / "nan.nii.gz", nan, affine)
    assert "label map holds 1 NaN or infinite voxel(s)" in _evaluate(capsys, tmp_path / "nan", nan_path, scan["label"], "case.nii.gz")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("preprocessing.window=[1, 1]", "'preprocessing.window' must be a finite [low, high] with low < high, got [1.0, 1.0]"),
        ("preprocessing.spacing=[0, 0, 0]", "'preprocessing.spacing' must be each value positive and finite, got [0.0, 0.0, 0.0]"),
        ("preprocessing.orientation=RAX", "'preprocessing.orientation' must be one of L/R, A/P and S/I per axis"),
    ],
)
def test_preprocessing_settings_are_checked(scan, tmp_path, capsys, setting, expected):
    datalist = _datalist(tmp_path / "d.json", scan["image"], scan["label"])
    for argv in (
        ["pretrain", scan["image"], "--out", tmp_path / "p", *PRETRAIN, "--set", setting],
        ["finetune", datalist, "--out", tmp_path / "f", *FINETUNE, "--set", "preprocessing.modality=ct", "--set", setting],
    ):
        assert expected in _one_line_error(capsys, argv, argv[0])


@pytest.mark.parametrize(
    ("command", "setting", "expected"),
    [
        (
            "pretrain",
            ["--set", "model.dropout_path_rate=2"],
            "--set model.dropout_path_rate=2: 'model.dropout_path_rate' must be in [0, 1], got 2.0",
        ),
        ("pretrain", ["--set", "train.seed=-1"], "'train.seed' must be in [0, 4294967295], got -1"),
        ("finetune", ["--set", "train.seed=-1"], "'train.seed' must be in [0, 4294967295], got -1"),
        ("finetune", ["--lr", "nan"], "--lr nan: 'train.lr' must be positive and finite, got nan"),
    ],
)
def test_settings_out_of_range_name_their_key(scan, tmp_path, capsys, command, setting, expected):
    data = scan["image"] if command == "pretrain" else _datalist(tmp_path / "d.json", scan["image"], scan["label"])
    options = PRETRAIN if command == "pretrain" else FINETUNE
    assert _one_line_error(capsys, [command, data, "--out", tmp_path / "run", *options, *setting], command).endswith(expected)


def _run_folder(path: Path, config: object) -> Path:
    """A run folder as ``config``'s command leaves it (the checks read config.yaml before last.pt)."""
    path.mkdir(parents=True)
    dump_config(config, path / "config.yaml")
    (path / "last.pt").write_bytes(b"")
    return path


def test_a_run_folder_of_the_other_command_is_named(scan, tmp_path, capsys):
    pretrained = _run_folder(tmp_path / "pretrained", PretrainConfig())
    finetuned = _run_folder(tmp_path / "finetuned", FinetuneConfig())
    datalist = _datalist(tmp_path / "d.json", scan["image"], scan["label"])
    last = _one_line_error(capsys, ["finetune", datalist, "--out", pretrained, *FINETUNE, "--resume"], "finetune")
    assert last.endswith(f"--resume: {pretrained} holds a gmim pretrain --method gmim run; resume it with gmim pretrain --method gmim")
    last = _one_line_error(capsys, ["pretrain", scan["image"], "--out", finetuned, *PRETRAIN, "--resume"], "pretrain")
    assert last.endswith(f"--resume: {finetuned} holds a gmim finetune run; resume it with gmim finetune")
    last = _one_line_error(capsys, ["predict", pretrained, scan["image"], "--out", tmp_path / "out"], "predict")
    assert f"{pretrained}: a gmim pretrain --method gmim run (encoder), not a segmentation model" in last and "--pretrained" in last


def test_itk_reader_errors_say_what_failed(scan, tmp_path, capsys):
    cut = tmp_path / "cut.mha"
    cut.write_text("ObjectType = Image\nNDims = 3\nDimSize = 10 10 10\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    for argv in (["pretrain", cut, "--out", tmp_path / "p", *PRETRAIN], None):
        last = _one_line_error(capsys, argv, "pretrain") if argv else _evaluate(capsys, tmp_path, cut, cut, "cut.mha")
        assert "cut.mha" in last and "MetaImageIO: File cannot be read" in last and ".cxx" not in last


def test_a_checkpoint_that_would_run_code_is_refused_and_says_why(scan, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return pathlib.Path.touch, (marker,)

    torch.save({"model": Payload()}, tmp_path / "payload.pt")
    last = _one_line_error(
        capsys, ["pretrain", scan["image"], "--out", tmp_path / "p", *PRETRAIN, "--init", tmp_path / "payload.pt"], "pretrain"
    )
    assert "payload.pt: refused: it holds getattr, not only tensors and plain values" in last
    assert "weights_only" not in last and not marker.exists()


def test_a_truncated_disk_cache_entry_is_named_and_rebuilt(scan, tmp_path):
    case = Case(id="image", images=(scan["image"],))
    transform = Compose(load_transforms(Preprocessing(), label=False))
    records = [case.as_dict()]
    first, _ = preload([case], records, transform, "disk", tmp_path / "cache")
    expected = first[0]["image"]
    entry = next((tmp_path / "cache").glob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])  # a write cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, _ = preload([case], records, transform, "disk", tmp_path / "cache")
        volume = again[0]["image"]
    assert any(f"{entry}: unreadable disk-cache entry" in str(w.message) for w in caught)
    torch.testing.assert_close(torch.as_tensor(volume), torch.as_tensor(expected))
    assert entry.stat().st_size > 100  # rebuilt whole


def test_a_2d_metaimage_and_a_header_without_its_voxels_file_are_named(scan, tmp_path):
    import SimpleITK as sitk

    from gmim.data.checks import read_header

    sitk.WriteImage(sitk.GetImageFromArray(scan["array"][:, :, 10].astype(np.float32)), str(tmp_path / "slice.mha"))
    with pytest.raises(InputError, match=r"slice.mha: a 2D image \(\d+×\d+\), expected 3D"):
        read_header(tmp_path / "slice.mha")
    sitk.WriteImage(sitk.GetImageFromArray(scan["array"].astype(np.float32)), str(tmp_path / "scan.mhd"))
    assert read_header(tmp_path / "scan.mhd").shape[:3] == scan["array"].shape[::-1]
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(InputError, match=r"scan.mhd: its voxels' file scan.raw is missing"):
        read_header(tmp_path / "scan.mhd")


def test_a_memory_cache_that_cannot_fit_is_refused_before_any_volume_is_read(scan, monkeypatch):
    import gmim.data.caching as caching

    case = Case(id="image", images=(scan["image"],), label=scan["image"])
    caching.refuse_oversized_memory_cache([case] * 3, (1.0, 1.0, 1.0))  # fits
    monkeypatch.setattr(caching, "memory_bytes", lambda: 1000)
    with pytest.raises(
        InputError,
        match=r"data.cache=memory: the 3 volumes take about .* as float32, more than 50% of the "
        r"1.0 KB this process may use; set data.cache=disk or none",
    ):
        caching.refuse_oversized_memory_cache([case] * 3, (1.0, 1.0, 1.0))


def test_an_output_folder_that_cannot_be_one_is_refused_before_any_work(scan, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "label.nii.gz").write_bytes(scan["label"].read_bytes())
    for out, expected in ((taken, f"--out {taken}: is a file, not a folder"), (taken / "sub", f"--out {taken / 'sub'}: cannot be created")):
        last = _one_line_error(capsys, ["evaluate", tmp_path / "predictions", scan["root"], "--out", out], "evaluate")
        assert expected in last
