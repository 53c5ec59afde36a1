"""DICOM series in: real scans written as DICOM series inside the tests (benchmarks/dicom_series.py), found
by SeriesInstanceUID, checked, read with the geometry of their source NIfTI, and refused in one line
when they cannot be a volume."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose

from benchmarks.dicom_series import (
    oblique_affine,
    write_localizer,
    write_multiframe,
    write_non_image,
    write_series,
)
from conftest import SMALL_PRETRAIN, cropped_image
from gmim.data.checks import read_grid
from gmim.data.dicom import series_at
from gmim.data.sources import discover_cases
from gmim.data.transforms import Preprocessing, load_transforms
from gmim.errors import InputError


@pytest.fixture(scope="module")
def t1(itk_paths) -> tuple[np.ndarray, np.ndarray]:
    """The ITK example T1 cropped to 64×64×32 (2×2×3 mm, LSA: a left-handed affine), with its affine."""
    return cropped_image(itk_paths["t1"], (20, 20, 10), (64, 64, 32))


@pytest.fixture(scope="module")
def icbm(mni) -> tuple[np.ndarray, np.ndarray]:
    """The ICBM152 T1 (1 mm, RAS: right-handed) cropped to 48×56×40, on a 0..1000 integer scale."""
    image = mni["t1"]
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([70, 80, 60])
    volume = np.asarray(image.dataobj, dtype=np.float32)[70:118, 80:136, 60:100]
    return np.round(volume / volume.max() * 1000), affine


def read(reference) -> nib.Nifti1Image:
    from gmim.data.dicom import read_series

    return read_series(reference)


def assert_same_scan(image: nib.Nifti1Image, volume: np.ndarray, affine: np.ndarray) -> None:
    """Voxel for voxel the same world positions and values (k may run the other way, see below)."""
    if np.linalg.det(affine[:3, :3]) > 0:
        np.testing.assert_allclose(image.affine, affine, atol=1e-3)
        np.testing.assert_array_equal(np.asarray(image.dataobj), volume)
        return
    # a left-handed grid: DICOM orders slices along row × column, the opposite of k
    flipped = affine.copy()
    flipped[:3, 2] *= -1
    flipped[:3, 3] += affine[:3, 2] * (volume.shape[2] - 1)
    np.testing.assert_allclose(image.affine, flipped, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume[:, :, ::-1])


@pytest.mark.parametrize("source", ["icbm", "t1"])
def test_series_reads_back_with_its_source_geometry(request, tmp_path, source):
    volume, affine = request.getfixturevalue(source)
    write_series(volume, affine, tmp_path / "series")
    assert_same_scan(read(tmp_path / "series"), volume, affine)
    shape, grid_affine = read_grid(tmp_path / "series")  # from the headers alone
    assert shape == volume.shape
    np.testing.assert_allclose(grid_affine, read(tmp_path / "series").affine, atol=1e-6)


def test_ct_in_hounsfield_units_through_rescale(tmp_path, icbm):
    volume, affine = icbm
    hu = np.round(volume * 2.5) - 1000  # -1000 … 1500 HU, whole numbers as stored
    write_series(hu, affine, tmp_path / "ct", modality="CT", intercept=-1024, slope=1.0)
    np.testing.assert_array_equal(np.asarray(read(tmp_path / "ct").dataobj), hu)
    write_series(volume * 0.25 - 2, affine, tmp_path / "scaled", slope=0.25, intercept=-2)
    np.testing.assert_allclose(np.asarray(read(tmp_path / "scaled").dataobj), volume * 0.25 - 2, atol=1e-5)


def test_oblique_reversed_shuffled_and_wrong_thickness(tmp_path, icbm):
    volume, affine = icbm
    oblique = oblique_affine(affine, 25, axis=0)
    write_series(volume, oblique, tmp_path / "oblique", reverse_order=True, shuffle_names=True, suffix="", slice_thickness=5.0)
    assert_same_scan(read(tmp_path / "oblique"), volume, oblique)


def test_a_tree_of_series_two_in_one_folder_and_what_is_not_a_volume(tmp_path, icbm, t1, recwarn):
    volume, affine = icbm
    root = tmp_path / "archive"
    write_series(volume, affine, root / "patient1" / "t1", patient_id="P1", series_number=3)
    write_series(volume, affine, root / "patient2" / "mixed", patient_id="P2", series_number=4, prefix="A")
    write_series(volume[:, :, :20], affine, root / "patient2" / "mixed", patient_id="P2", series_number=5, prefix="B")
    write_localizer(volume[:, 20], root / "patient2" / "mixed")
    write_series(volume[:, :, :1], affine, root / "patient3" / "one_slice")  # 2D only
    write_non_image(root / "patient1" / "t1", kind="RTSTRUCT")
    write_non_image(root / "patient2", kind="SR")
    (root / "README.txt").write_text("not an image")
    cases = discover_cases([root])
    by_id = {c.id: c.images[0] for c in cases}
    assert sorted(by_id) == ["P2_4", "P2_5", "t1"]  # a folder's name, else PatientID_SeriesNumber
    assert by_id["t1"] == root / "patient1" / "t1" and by_id["P2_4"].parent == root / "patient2" / "mixed"
    notes = [str(w.message) for w in recwarn.list]
    assert any("a localizer, not a volume; skipped" in n for n in notes)
    assert any("a single slice (2D), not a volume; skipped" in n for n in notes)
    assert read_grid(by_id["P2_5"])[0] == (48, 56, 20)
    with pytest.raises(InputError, match="2 DICOM series; name one as"):
        series_at(root / "patient2" / "mixed")
    localizer_only = tmp_path / "scout"
    write_localizer(volume[:, 20], localizer_only)
    with pytest.raises(InputError, match="localizer"):
        discover_cases([localizer_only])


@pytest.mark.parametrize(
    "damage, message",
    [({"drop_slices": [7]}, "uneven slice spacing .*about 1 missing slice"), ({"tilt_degrees": 15}, "gantry tilt")],
)
def test_a_series_that_is_not_a_regular_volume_is_refused_naming_it(tmp_path, icbm, damage, message):
    volume, affine = icbm
    uid = write_series(volume, affine, tmp_path / "bad", **damage)
    for action in (read, read_grid):
        with pytest.raises(InputError, match=message) as error:
            action(tmp_path / "bad")
        assert uid in str(error.value) and "\n" not in str(error.value)


def test_an_enhanced_multiframe_object_is_one_volume(tmp_path, icbm):
    volume, affine = icbm
    write_multiframe(volume, affine, tmp_path / "enhanced" / "volume.dcm")
    assert_same_scan(read(tmp_path / "enhanced"), volume, affine)


def test_series_in_a_datalist_load_through_the_pipeline(tmp_path, icbm):
    """Two series as the two channels of a case, through MONAI's loading with the DICOM reader."""
    volume, affine = icbm
    write_series(volume, affine, tmp_path / "case" / "t1")
    write_series(1000 - volume, affine, tmp_path / "case" / "t2")
    nib.save(nib.Nifti1Image((volume > 500).astype(np.uint8), affine), tmp_path / "case" / "label.nii.gz")
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": ["case/t1", "case/t2"], "label": "case/label.nii.gz"}]}))
    case = discover_cases([tmp_path / "list.json"])[0]
    loaded = Compose(load_transforms(Preprocessing(modality="mri")))(case.as_dict())
    assert loaded["image"].shape == (2, 48, 56, 40) and loaded["label"].shape == (1, 48, 56, 40)
    np.testing.assert_allclose(loaded["image"].affine.numpy(), loaded["label"].affine.numpy(), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from gmim.data.checks import check_cases

        check_cases([case])


@pytest.mark.slow
def test_pretrain_on_a_tree_of_series_a_bad_one_refused_or_skipped(tmp_path, icbm, t1, capsys):
    from gmim.cli import main

    root = tmp_path / "archive"
    write_series(*icbm, root / "subject1" / "series1")
    write_series(*t1, root / "subject2" / "series7", modality="MR")
    bad = write_series(*icbm, root / "subject3" / "broken", drop_slices=[5])
    out = tmp_path / "run"
    assert main(["pretrain", str(root), "--out", str(out), "--steps", "1", *SMALL_PRETRAIN, "--modality", "mri"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("gmim pretrain: error:") and bad in last and "missing slice" in last
    assert main(["pretrain", str(root), "--out", str(out), "--steps", "2", "--skip-bad", *SMALL_PRETRAIN, "--modality", "mri"]) == 0
    assert "skipped 1 bad volume" in capsys.readouterr().out
    assert (out / "encoder.pt").is_file()
    scan = json.loads((Path(os.environ["XDG_CACHE_HOME"]) / "gmim" / "stores" / "dicom_scan.json").read_text())
    assert str(bad) in json.dumps(scan)  # the tree's headers are kept for the next run


def test_predict_a_series_into_its_own_grid_and_as_dicom_seg(tmp_path, finetuned_run, t1, capsys):
    """The NIfTI has the series' geometry; the DICOM SEG references every slice and reads back (with
    highdicom) to the same label map, also from a series without the Patient and Study attributes it
    copies or a SliceThickness. A series without FrameOfReferenceUID is refused before any inference."""
    import highdicom as hd
    import pydicom

    from gmim.cli import main
    from gmim.segmentation.dicom_seg import COPIED_TAGS

    def strip(folder, tags):
        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            for tag in tags:
                if tag in ds:
                    delattr(ds, tag)
            ds.save_as(path)

    volume, affine = t1
    write_series(volume, affine, tmp_path / "unanchored" / "itk_t1")
    strip(tmp_path / "unanchored" / "itk_t1", ["FrameOfReferenceUID"])
    out = tmp_path / "out"
    assert (
        main(["predict", str(finetuned_run), str(tmp_path / "unanchored"), "--out", str(out), "--device", "cpu", "--format", "dicom-seg"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no FrameOfReferenceUID, which a DICOM SEG needs" in err[0] and "itk_t1" in err[0], err
    assert not list(out.iterdir())  # refused before any inference
    write_series(volume, affine, tmp_path / "scans" / "itk_t1")
    strip(tmp_path / "scans" / "itk_t1", [*COPIED_TAGS, "SliceThickness"])
    assert (
        main(["predict", str(finetuned_run), str(tmp_path / "scans"), "--out", str(out), "--device", "cpu", "--format", "dicom-seg"]) == 0
    )
    prediction = nib.load(out / "itk_t1.nii.gz")
    shape, series_affine = read_grid(tmp_path / "scans" / "itk_t1")
    assert prediction.shape == shape
    np.testing.assert_allclose(prediction.affine, series_affine, atol=1e-3)
    labels = np.asarray(prediction.dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1} and labels.any()

    from gmim.data.dicom import series_files

    seg = hd.seg.segread(out / "itk_t1_seg.dcm")
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["foreground"]
    sources = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series_files(tmp_path / "scans" / "itk_t1")]
    frames = seg.get_pixels_by_source_instance(sources, segment_numbers=[1], assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(frames[..., 0].transpose(2, 1, 0), labels == 1)

    references = tmp_path / "references"  # evaluate draws its overlays on the DICOM series
    references.mkdir()
    nib.save(prediction, references / "itk_t1.nii.gz")
    assert (
        main(
            [
                "evaluate",
                str(out),
                str(references),
                "--task",
                str(finetuned_run),
                "--overlays",
                "--images",
                str(tmp_path / "scans"),
                "--out",
                str(tmp_path / "scores"),
            ]
        )
        == 0
    )
    assert (tmp_path / "scores" / "overlays" / "itk_t1.png").is_file()

    nifti_input = tmp_path / "itk.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), nifti_input)
    assert main(["predict", str(finetuned_run), str(nifti_input), "--out", str(out), "--format", "dicom-seg"]) == 2
    assert "is not a DICOM series" in capsys.readouterr().err


def test_mixed_slices_and_undecodable_syntax_are_refused_naming_the_series(tmp_path, icbm):
    import pydicom

    volume, affine = icbm
    uid = write_series(volume, affine, tmp_path / "mixed", prefix="A")
    write_series(volume[:40], affine, tmp_path / "mixed", series_uid=uid, prefix="B")  # same series, other size
    with pytest.raises(InputError, match=f"{uid}.*different sizes"):
        read_grid(tmp_path / "mixed")
    uid = write_series(volume, oblique_affine(affine, 10), tmp_path / "turned", prefix="A")
    write_series(volume, affine, tmp_path / "turned", series_uid=uid, prefix="B")
    with pytest.raises(InputError, match=f"{uid}.*different orientations"):
        read_grid(tmp_path / "turned")
    uid = write_series(volume, affine, tmp_path / "htj2k")
    first = sorted((tmp_path / "htj2k").iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # High-Throughput JPEG 2000 (lossless)
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])  # not a real codestream: refused before decoding
    ds.save_as(first, enforce_file_format=True)
    with pytest.raises(InputError, match=f"{uid} in .*: transfer syntax High-Throughput .*not decoded by SimpleITK's GDCM; convert"):
        read(tmp_path / "htj2k")
