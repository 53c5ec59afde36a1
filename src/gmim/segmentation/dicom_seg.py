"""Predictions as DICOM Segmentation objects over their source series, so that they open over the
scan in standard viewers (written with highdicom).

What the SEG takes from its source series:

- StudyInstanceUID, FrameOfReferenceUID and Modality (Type 1): without them a SEG cannot lie over
  its series, so ``gmim predict --format dicom-seg`` refuses such a series up front, in one line,
  before any inference (:func:`check_source`); NIfTI output remains;
- the Patient and Study attributes it copies (PatientID, PatientName, PatientBirthDate, PatientSex,
  StudyDate, StudyTime, StudyID, AccessionNumber, ReferringPhysicianName; Type 2, so they may be
  empty): written empty where the source lacks them;
- SliceThickness, where the source lacks it: the distance between slice positions;
- PixelSpacing, ImageOrientationPatient and ImagePositionPatient: a series without them is not
  read as a volume at all (:mod:`gmim.data.dicom` names it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmim import __version__
from gmim.atomic import atomic_path
from gmim.data.dicom import series_at, series_files, series_grid
from gmim.errors import InputError

__all__ = ["REQUIRED_SOURCE_TAGS", "check_source", "write_segmentation"]

#: What a SEG shares with its source series to lie over it.
REQUIRED_SOURCE_TAGS = ("StudyInstanceUID", "FrameOfReferenceUID", "Modality")
#: The Patient and Study attributes a SEG copies from its source (Type 2: present, possibly empty).
COPIED_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def check_source(series: Path) -> None:
    """Refuse, in one line naming the series, a source a DICOM SEG cannot lie over (from its first
    file's header, before any inference)."""
    import pydicom

    header = pydicom.dcmread(series_at(series).files[0], stop_before_pixels=True)
    missing = [tag for tag in REQUIRED_SOURCE_TAGS if not header.get(tag)]
    if missing:
        raise InputError(
            f"--format dicom-seg: {series} has no {' or '.join(missing)}, which a DICOM SEG needs to lie over its "
            "series; leave out --format dicom-seg for the NIfTI label map alone"
        )


def write_segmentation(masks: np.ndarray, names: Sequence[str], series: Path, path: Path, description: str) -> None:
    """Write ``masks`` (K, i, j, k) bool, on the grid of the DICOM series ``series``, as a binary DICOM
    SEG with one segment per mask, named by ``names``, referencing every slice of the series."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in series_files(series)]
    slice_spacing = float(np.linalg.norm(series_grid(series)[1][:3, 2]))
    for source in sources:  # copies in memory: the series on disk is left as it is
        for tag in COPIED_TAGS:
            if tag not in source:
                setattr(source, tag, "")
        if not source.get("SliceThickness"):
            source.SliceThickness = slice_spacing
    frames = np.ascontiguousarray(masks.transpose(3, 2, 1, 0))  # (slices, rows, columns, segments)
    algorithm = hd.AlgorithmIdentificationSequence(name="gmim", version=__version__, family=codes.DCM.ArtificialIntelligence)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(names, start=1)
    ]
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="gmim",
        manufacturer_model_name="gmim",
        software_versions=__version__,
        device_serial_number="none",
        series_description=description[:64],
    )
    with atomic_path(path) as tmp:
        segmentation.save_as(tmp)
