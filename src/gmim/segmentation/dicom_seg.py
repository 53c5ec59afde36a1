"""Predictions as DICOM Segmentation objects over their source series, so that they open over the
scan in standard viewers (written with highdicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmim import __version__
from gmim.atomic import atomic_path
from gmim.data.dicom import series_files

__all__ = ["write_segmentation"]


def write_segmentation(masks: np.ndarray, names: Sequence[str], series: Path, path: Path, description: str) -> None:
    """Write ``masks`` (K, i, j, k) bool, on the grid of the DICOM series ``series``, as a binary DICOM
    SEG with one segment per mask, named by ``names``, referencing every slice of the series."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in series_files(series)]
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
