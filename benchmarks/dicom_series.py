"""Write real test volumes as DICOM files with pydicom, so DICOM reading is tested (``tests/test_dicom*.py``)
and benchmarked (``dicom_scan.py``) on real scans; odd series too, as archives hold them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RTStructureSetStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

#: LPS = RAS with x and y negated; DICOM's patient coordinates are LPS, nibabel's affines RAS.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_STORAGE = {"CT": CTImageStorage, "MR": MRImageStorage}
ENHANCED_STORAGE = {"CT": EnhancedCTImageStorage, "MR": EnhancedMRImageStorage}
INT16 = np.iinfo(np.int16)


def oblique_affine(affine: np.ndarray, degrees: float, *, axis: int = 0) -> np.ndarray:
    """``affine`` turned by ``degrees`` about world axis ``axis`` (0: R-L, 1: A-P, 2: S-I) through the
    world origin: the same scan acquired on an oblique plane."""
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    a, b = [n for n in range(3) if n != axis]
    rotation = np.eye(4)
    rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
    return rotation @ np.asarray(affine, dtype=np.float64)


def write_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | Path,
    *,
    modality: str = "MR",
    series_number: int = 1,
    series_uid: str | None = None,
    patient_id: str = "GMIM-TEST",
    slope: float = 1.0,
    intercept: float = 0.0,
    reverse_order: bool = False,
    shuffle_names: bool = False,
    drop_slices: Iterable[int] = (),
    tilt_degrees: float = 0.0,
    study_uid: str | None = None,
    slice_thickness: float | None = None,
    suffix: str = ".dcm",
    prefix: str = "IM",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> str:
    """Write ``volume`` (indexed (i, j, k) like a NIfTI file, ``affine`` its RAS voxel-to-world
    matrix) as one single-frame CT or MR file per slice k; returns the SeriesInstanceUID.

    Pixel (row r, column c) of slice k is voxel (i=c, j=r, k). Files are named
    ``{prefix}{n:04d}{suffix}`` with n = k + 1 (a random permutation of that with ``shuffle_names``)
    and are never overwritten, so several series can share a folder under different prefixes. The
    options make what a reader meets in archives: InstanceNumber against the position order
    (``reverse_order``), lost slices (``drop_slices``), a wrong SliceThickness (``slice_thickness``),
    and a gantry tilt: positions shifted along the column direction by k·Δk·tan(tilt) while the
    orientation stays that of the untilted volume, so slices no longer stack along its normal.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_series needs a 3D volume, got shape {volume.shape}")
    stored = _stored_values(volume, slope, intercept)
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_direction, column_direction = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    if abs(row_direction @ column_direction) > 1e-6:
        raise ValueError("DICOM rows and columns are orthogonal: the affine's first two columns must be")
    shift = spacing[2] * math.tan(math.radians(tilt_degrees)) * column_direction
    study = _study(study_uid, patient_id)
    series_uid = series_uid or generate_uid()
    slices = volume.shape[2]
    numbers = np.random.default_rng(0).permutation(slices) + 1 if shuffle_names else np.arange(1, slices + 1)
    dropped = set(drop_slices)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        if k in dropped:
            continue
        ds = _image(IMAGE_STORAGE[modality], modality, study, series_uid, series_number)
        ds.ImageType = list(image_type)
        ds.InstanceNumber = slices - k if reverse_order else k + 1
        ds.ImagePositionPatient = _ds(lps[:3, 3] + k * lps[:3, 2] + k * shift)
        ds.ImageOrientationPatient = _ds([*row_direction, *column_direction])
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])  # between rows (along j), between columns (along i)
        ds.SliceThickness = _ds(spacing[2] if slice_thickness is None else slice_thickness)
        ds.update(_rescale(slope, intercept, modality))
        _set_pixels(ds, stored[:, :, k].T)
        _save(ds, folder / f"{prefix}{numbers[k]:04d}{suffix}")
    return series_uid


def write_localizer(
    volume_2d: np.ndarray,
    folder: str | Path,
    *,
    modality: str = "CT",
    spacing: tuple[float, float] = (1.0, 1.0),
    series_number: int = 100,
    study_uid: str | None = None,
    patient_id: str = "GMIM-TEST",
    slope: float = 1.0,
    intercept: float = 0.0,
) -> str:
    """Write ``volume_2d`` (indexed (i, j): i along a row) as a coronal scout image
    (ImageType LOCALIZER), a single-slice series a reader must not take for a volume; returns its
    SeriesInstanceUID. ``spacing`` is (along i, along j) in mm."""
    # Rows run to the patient's left, columns downwards (LPS (1, 0, 0) and (0, 0, -1)), in RAS.
    affine = np.array([[-spacing[0], 0, 0, 0], [0, 0, -1.0, 0], [0, -spacing[1], 0, 0], [0, 0, 0, 1]])
    return write_series(
        np.asarray(volume_2d)[:, :, None],
        affine,
        folder,
        modality=modality,
        series_number=series_number,
        study_uid=study_uid,
        patient_id=patient_id,
        slope=slope,
        intercept=intercept,
        prefix="LOC",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )


def write_non_image(folder: str | Path, *, kind: str = "RTSTRUCT", study_uid: str | None = None, patient_id: str = "GMIM-TEST") -> str:
    """Write a minimal RT Structure Set (``kind="RTSTRUCT"``) or Basic Text SR (``kind="SR"``): an
    object without pixels that archives mix with the images, which a reader must skip. Returns its
    SeriesInstanceUID."""
    study = _study(study_uid, patient_id)
    series_uid = generate_uid()
    if kind == "RTSTRUCT":
        ds = _common(RTStructureSetStorage, "RTSTRUCT", study, series_uid, 1)
        ds.StructureSetLabel = "BODY"
        ds.StructureSetDate, ds.StructureSetTime = ds.StudyDate, ds.StudyTime
        ds.ReferencedFrameOfReferenceSequence = DicomSequence([_item(FrameOfReferenceUID=study.FrameOfReferenceUID)])
        ds.StructureSetROISequence = DicomSequence(
            [_item(ROINumber=1, ReferencedFrameOfReferenceUID=study.FrameOfReferenceUID, ROIName="BODY", ROIGenerationAlgorithm="MANUAL")]
        )
        ds.ROIContourSequence = DicomSequence(
            [
                _item(
                    ReferencedROINumber=1,
                    ROIDisplayColor=[255, 0, 0],
                    ContourSequence=DicomSequence(
                        [_item(ContourGeometricType="POINT", NumberOfContourPoints=1, ContourData=["0", "0", "0"])]
                    ),
                )
            ]
        )
        ds.RTROIObservationsSequence = DicomSequence(
            [_item(ObservationNumber=1, ReferencedROINumber=1, RTROIInterpretedType="EXTERNAL", ROIInterpreter="")]
        )
        ds.ApprovalStatus = "UNAPPROVED"
    elif kind == "SR":
        ds = _common(BasicTextSRStorage, "SR", study, series_uid, 1)
        title = _item(CodeValue="11528-7", CodingSchemeDesignator="LN", CodeMeaning="Radiology Report")
        ds.ValueType, ds.ConceptNameCodeSequence = "CONTAINER", DicomSequence([title])
        ds.ContinuityOfContent, ds.CompletionFlag, ds.VerificationFlag = "SEPARATE", "COMPLETE", "UNVERIFIED"
        finding = _item(CodeValue="121071", CodingSchemeDesignator="DCM", CodeMeaning="Finding")
        ds.ContentSequence = DicomSequence(
            [
                _item(
                    RelationshipType="CONTAINS",
                    ValueType="TEXT",
                    ConceptNameCodeSequence=DicomSequence([finding]),
                    TextValue="Test report: no pixels here.",
                )
            ]
        )
        ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
        ds.PerformedProcedureCodeSequence = DicomSequence()
    else:
        raise ValueError(f"kind must be RTSTRUCT or SR, got {kind!r}")
    ds.InstanceNumber = 1
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(ds, folder / f"{kind}0001.dcm")
    return series_uid


def write_multiframe(
    volume: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    modality: str = "MR",
    slope: float = 1.0,
    intercept: float = 0.0,
    study_uid: str | None = None,
    patient_id: str = "GMIM-TEST",
) -> str:
    """Write ``volume`` (as for :func:`write_series`) as one Enhanced MR or CT object, one frame per
    slice k, with the geometry in functional groups as scanners now store it: orientation, pixel
    spacing and rescale shared, a position per frame. Returns the SeriesInstanceUID.

    It holds what a reader needs, not every Type 1 attribute of the enhanced IODs."""
    volume = np.asarray(volume)
    stored = _stored_values(volume, slope, intercept)
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    study = _study(study_uid, patient_id)
    series_uid = generate_uid()
    ds = _image(ENHANCED_STORAGE[modality], modality, study, series_uid, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentQualification = "RESEARCH"
    ds.AcquisitionDateTime = ds.StudyDate + ds.StudyTime
    ds.NumberOfFrames = volume.shape[2]
    frame_type = _item(
        FrameType=ds.ImageType, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE"
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [
            _item(
                PixelMeasuresSequence=DicomSequence(
                    [
                        _item(
                            PixelSpacing=_ds([spacing[1], spacing[0]]), SliceThickness=_ds(spacing[2]), SpacingBetweenSlices=_ds(spacing[2])
                        )
                    ]
                ),
                PlaneOrientationSequence=DicomSequence(
                    [_item(ImageOrientationPatient=_ds([*lps[:3, 0] / spacing[0], *lps[:3, 1] / spacing[1]]))]
                ),
                PixelValueTransformationSequence=DicomSequence([_rescale(slope, intercept, modality)]),
                **{"CTImageFrameTypeSequence" if modality == "CT" else "MRImageFrameTypeSequence": DicomSequence([frame_type])},
            )
        ]
    )
    stack = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=stack)])
    ds.DimensionIndexSequence = DicomSequence(
        [_item(DimensionOrganizationUID=stack, DimensionIndexPointer=0x00209057, FunctionalGroupPointer=0x00209111)]
    )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [
            _item(
                PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=_ds(lps[:3, 3] + k * lps[:3, 2]))]),
                FrameContentSequence=DicomSequence([_item(StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[k + 1])]),
            )
            for k in range(volume.shape[2])
        ]
    )
    _set_pixels(ds, np.transpose(stored, (2, 1, 0)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ds, path)
    return series_uid


def _stored_values(volume: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The int16 values whose rescale gives ``volume``; out-of-range values raise rather than wrap."""
    stored = np.round((volume.astype(np.float64) - intercept) / slope)
    if stored.min() < INT16.min or stored.max() > INT16.max:
        raise ValueError(f"values {volume.min()}..{volume.max()} do not fit int16 with slope {slope}, intercept {intercept}")
    return stored.astype("<i2")


def _study(study_uid: str | None, patient_id: str) -> Dataset:
    """Patient and study attributes; the FrameOfReferenceUID follows from the study, so series
    written separately into one study share their frame of reference."""
    study_uid = study_uid or generate_uid()
    return _item(
        PatientName=f"Test^{patient_id}",
        PatientID=patient_id,
        PatientBirthDate="",
        PatientSex="O",
        StudyInstanceUID=study_uid,
        StudyDate="20240101",
        StudyTime="120000",
        StudyID="1",
        AccessionNumber="",
        ReferringPhysicianName="",
        FrameOfReferenceUID=generate_uid(entropy_srcs=[study_uid, "frame of reference"]),
        PositionReferenceIndicator="",
    )


def _common(sop_class: str, modality: str, study: Dataset, series_uid: str, series_number: int) -> Dataset:
    """SOP common, patient, study, series and equipment attributes with a file meta."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.update(study)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
    ds.SeriesDate, ds.SeriesTime, ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime, ds.StudyDate, ds.StudyTime
    ds.SeriesDescription = f"gmim test {modality}"
    ds.Manufacturer = "gmim tests"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _image(sop_class: str, modality: str, study: Dataset, series_uid: str, series_number: int) -> Dataset:
    """:func:`_common` plus the acquisition attributes the CT and MR image modules require."""
    ds = _common(sop_class, modality, study, series_uid, series_number)
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    if modality == "CT":
        ds.KVP = "120"
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "2000", "3", 1, "1.5"
    return ds


def _rescale(slope: float, intercept: float, modality: str) -> Dataset:
    """The rescale from stored values to Hounsfield units (CT) or unspecified units (MR)."""
    return _item(RescaleIntercept=_ds(intercept), RescaleSlope=_ds(slope), RescaleType="HU" if modality == "CT" else "US")


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image pixel attributes for signed 16-bit monochrome ``pixels`` (rows, columns last)."""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()


def _save(ds: Dataset, path: Path) -> None:
    """Write a DICOM file (preamble and file meta); an existing file is an error, not overwritten."""
    if path.exists():
        raise FileExistsError(f"{path} exists: give series sharing a folder different prefixes")
    ds.save_as(path, enforce_file_format=True)


def _ds(values: float | Iterable[float]) -> str | list[str]:
    """Decimal strings within DICOM's 16 characters (a float's repr can be longer)."""
    if isinstance(values, Iterable):
        return [format_number_as_ds(float(v)) for v in values]
    return format_number_as_ds(float(values))


def _item(**attributes: object) -> Dataset:
    """A dataset (a sequence item) from keywords."""
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds
