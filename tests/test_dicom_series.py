"""The DICOM writer of the tests and benchmarks (benchmarks/dicom_series.py), checked by reading its files back with SimpleITK
(GDCM), which shares no code with ours: geometry to 1e-3 mm and voxel values exactly."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from benchmarks.dicom_series import (
    oblique_affine,
    write_localizer,
    write_multiframe,
    write_non_image,
    write_series,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def t1(itk_paths) -> tuple[np.ndarray, np.ndarray]:
    """The ITK example T1 (2×2×3 mm, LSA on disk) cropped to 64×64×32, with its affine."""
    image = nib.load(itk_paths["t1"])
    start = np.array([20, 20, 10])
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ start
    return np.asarray(image.dataobj, dtype=np.float64)[20:84, 20:84, 10:42], affine


@pytest.fixture(scope="module")
def ct(t1) -> np.ndarray:
    """Hounsfield-like values from the T1: a linear map onto -1000..1500, rounded."""
    volume = t1[0]
    return np.round(-1000 + 2500 * (volume - volume.min()) / (volume.max() - volume.min()))


def to_ras(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """A SimpleITK image (LPS geometry, array (z, y, x)) as a RAS affine and an (i, j, k) array."""
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps, np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def read_series(folder: Path, series_uid: str) -> tuple[np.ndarray, np.ndarray]:
    """One series of ``folder`` read by SimpleITK (GDCM sorts by position and applies the rescale)."""
    assert series_uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return to_ras(reader.Execute())


def read_all(folder: Path) -> dict[str, pydicom.Dataset]:
    """Every file of ``folder`` by name, read by pydicom as a conformant file (no ``force``)."""
    datasets = {path.name: pydicom.dcmread(path) for path in sorted(folder.iterdir())}
    assert all(ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian for ds in datasets.values())
    return datasets


def position_along_normal(ds: pydicom.Dataset) -> float:
    """Where a slice lies along its orientation's normal: the order a reader sorts slices in."""
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    return float(np.cross(orientation[:3], orientation[3:]) @ np.array(ds.ImagePositionPatient, dtype=float))


def assert_reads_back(folder: Path, series_uid: str, volume: np.ndarray, affine: np.ndarray) -> None:
    read_affine, read_volume = read_series(folder, series_uid)
    np.testing.assert_allclose(read_affine, affine, rtol=0, atol=1e-3)
    assert read_volume.shape == volume.shape
    np.testing.assert_array_equal(read_volume, volume)


def test_plain_series(t1, tmp_path):
    volume, affine = t1
    uid = write_series(volume, affine, tmp_path)
    datasets = read_all(tmp_path)
    assert sorted(datasets) == [f"IM{n:04d}.dcm" for n in range(1, 33)]
    first = datasets["IM0001.dcm"]
    assert first.SOPClassUID == MRImageStorage and first.Modality == "MR" and first.SeriesInstanceUID == uid
    assert (first.Rows, first.Columns) == (64, 64) and list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert len({ds.FrameOfReferenceUID for ds in datasets.values()}) == 1
    np.testing.assert_array_equal(first.pixel_array, volume[:, :, 0].T)  # rows along j, columns along i
    assert_reads_back(tmp_path, uid, volume, affine)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_oblique_series(t1, tmp_path, axis):
    volume, affine = t1
    oblique = oblique_affine(affine, 25.0, axis=axis)
    assert_reads_back(tmp_path, write_series(volume, oblique, tmp_path), volume, oblique)


def test_ct_in_hounsfield_units(t1, ct, tmp_path):
    uid = write_series(ct, t1[1], tmp_path, modality="CT", intercept=-1024.0)
    first = read_all(tmp_path)["IM0001.dcm"]
    assert first.SOPClassUID == CTImageStorage and first.Modality == "CT" and first.RescaleIntercept == -1024
    np.testing.assert_array_equal(first.pixel_array, ct[:, :, 0].T + 1024)  # stored values, before rescale
    assert_reads_back(tmp_path, uid, ct, t1[1])


def test_rescale_slope(t1, tmp_path):
    volume, affine = t1
    assert_reads_back(tmp_path, write_series(volume / 4, affine, tmp_path, slope=0.25, intercept=-2.0), volume / 4, affine)


def test_reversed_numbers_and_shuffled_names_without_suffix(t1, tmp_path):
    volume, affine = t1
    uid = write_series(volume, affine, tmp_path, reverse_order=True, shuffle_names=True, suffix="")
    datasets = read_all(tmp_path)
    assert all(name.startswith("IM") and "." not in name for name in datasets)
    by_position = sorted(datasets.values(), key=position_along_normal)
    assert [ds.InstanceNumber for ds in by_position] == list(range(32, 0, -1))
    assert [datasets[name].InstanceNumber for name in sorted(datasets)] != sorted(ds.InstanceNumber for ds in datasets.values())
    assert_reads_back(tmp_path, uid, volume, affine)


def test_two_series_in_one_folder(t1, ct, tmp_path):
    volume, affine = t1
    study = pydicom.uid.generate_uid()
    mr = write_series(volume, affine, tmp_path, study_uid=study, prefix="MR")
    ct_uid = write_series(
        ct, oblique_affine(affine, 10.0), tmp_path, modality="CT", intercept=-1024.0, series_number=2, study_uid=study, prefix="CT"
    )
    assert sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path))) == sorted([mr, ct_uid])
    assert len({ds.FrameOfReferenceUID for ds in read_all(tmp_path).values()}) == 1
    assert_reads_back(tmp_path, mr, volume, affine)
    assert_reads_back(tmp_path, ct_uid, ct, oblique_affine(affine, 10.0))
    with pytest.raises(FileExistsError):
        write_series(volume, affine, tmp_path, prefix="MR")


def test_dropped_slice(t1, tmp_path):
    uid = write_series(*t1, tmp_path, drop_slices=[7])
    assert len(read_all(tmp_path)) == 31 and not (tmp_path / "IM0008.dcm").exists()
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path), uid)) == 31


def test_wrong_slice_thickness_is_not_the_spacing(t1, tmp_path):
    """SimpleITK takes the slice spacing from the positions, as a reader should."""
    volume, affine = t1
    uid = write_series(volume, affine, tmp_path, slice_thickness=1.0)
    assert read_all(tmp_path)["IM0001.dcm"].SliceThickness == 1.0
    assert_reads_back(tmp_path, uid, volume, affine)


def test_gantry_tilt_shifts_positions_along_the_columns(t1, tmp_path):
    volume, affine = t1
    write_series(volume, affine, tmp_path, tilt_degrees=15.0)
    datasets = list(read_all(tmp_path).values())
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    assert all(np.array_equal(ds.ImageOrientationPatient, orientation) for ds in datasets)
    lps = LPS_TO_RAS @ affine
    for ds in datasets:
        k = ds.InstanceNumber - 1
        untilted = lps[:3, 3] + k * lps[:3, 2]
        shift = np.array(ds.ImagePositionPatient, dtype=float) - untilted
        np.testing.assert_allclose(shift, k * 3.0 * math.tan(math.radians(15.0)) * orientation[3:], atol=1e-6)


def test_left_handed_affine_reads_back_with_k_reversed(t1, tmp_path):
    """GDCM stacks slices along the orientation's normal (row × column): a left-handed grid comes
    back as the same voxels in the world with k reversed."""
    volume, affine = t1
    left_handed = affine @ np.diag([1.0, -1.0, 1.0, 1.0])
    assert np.linalg.det(left_handed) < 0
    flip_k = np.eye(4)
    flip_k[2, 2], flip_k[2, 3] = -1.0, volume.shape[2] - 1
    assert_reads_back(tmp_path, write_series(volume, left_handed, tmp_path), volume[:, :, ::-1], left_handed @ flip_k)


def test_localizer_and_non_image_objects_beside_a_series(t1, ct, tmp_path):
    volume, affine = t1
    study = pydicom.uid.generate_uid()
    uid = write_series(ct, affine, tmp_path, modality="CT", intercept=-1024.0, study_uid=study)
    scout = write_localizer(ct[:, 30, :], tmp_path, spacing=(2.0, 3.0), intercept=-1024.0, study_uid=study)
    structures = write_non_image(tmp_path, kind="RTSTRUCT", study_uid=study)
    report = write_non_image(tmp_path, kind="SR", study_uid=study)
    datasets = read_all(tmp_path)
    assert len(datasets) == 32 + 3 and len({ds.StudyInstanceUID for ds in datasets.values()}) == 1
    localizer = datasets["LOC0001.dcm"]
    assert localizer.SeriesInstanceUID == scout and localizer.Modality == "CT"
    assert list(localizer.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    np.testing.assert_array_equal(localizer.pixel_array, ct[:, 30, :].T + 1024)
    for name, series, modality in [("RTSTRUCT0001.dcm", structures, "RTSTRUCT"), ("SR0001.dcm", report, "SR")]:
        ds = datasets[name]
        assert ds.SeriesInstanceUID == series and ds.Modality == modality and "PixelData" not in ds
    assert_reads_back(tmp_path, uid, ct, affine)
    with pytest.raises(ValueError, match="kind"):
        write_non_image(tmp_path, kind="SEG")


@pytest.mark.parametrize(("modality", "sop_class"), [("MR", EnhancedMRImageStorage), ("CT", EnhancedCTImageStorage)])
def test_multiframe(t1, ct, tmp_path, modality, sop_class):
    volume = t1[0] if modality == "MR" else ct
    affine = oblique_affine(t1[1], 15.0, axis=1)
    path = tmp_path / "enhanced.dcm"
    write_multiframe(volume, affine, path, modality=modality, intercept=-1024.0 if modality == "CT" else 0.0)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == sop_class and ds.NumberOfFrames == 32 and "PixelData" in ds
    read_affine, read_volume = to_ras(sitk.ReadImage(str(path)))
    np.testing.assert_allclose(read_affine, affine, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(read_volume, volume)


def test_values_beyond_int16_raise(t1, tmp_path):
    with pytest.raises(ValueError, match="int16"):
        write_series(t1[0] + 40000, t1[1], tmp_path)
