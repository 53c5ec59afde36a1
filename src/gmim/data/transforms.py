"""Loading and preprocessing with MONAI dictionary transforms, and the CT/MRI intensity presets.

Intensity normalisation is decided here once, for pre-training and fine-tuning alike:

- CT: a HU window [a, b] mapped to [0, 1] and clipped (pre-training uses [-1000, 1000], AMOS
  fine-tuning [-175, 250]);
- MRI: z-score per channel over the non-zero voxels (the background stays 0).

Pipelines: :func:`read_transforms` (read, channels first, check, reorient, resample: what the
pre-training store keeps), :func:`load_transforms` (that and normalisation: the deterministic part
worth caching), :func:`augment_transforms` (random crops around labels, flips,
intensity jitter), and :class:`LabelsToRegionsd` / ``MapLabelValued`` to turn label maps into the
task's training targets.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelReader
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from gmim.data.dicom import is_series_reference, read_series
from gmim.errors import InputError
from gmim.rules import Rule, Section, each, positive, setting

__all__ = [
    "CT_PRETRAIN_WINDOW",
    "DicomSeriesReader",
    "LabelsToRegionsd",
    "Preprocessing",
    "RequireFinited",
    "augment_transforms",
    "intensity_transform",
    "load_transforms",
    "read_transforms",
]

# MONAI sets up its GPU DICOM decoder whenever pydicom is installed, and says on stderr that it is
# not there on every load pipeline built; gmim reads DICOM with its own reader.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

#: The HU window of GMIM pre-training on CT (docs/method.md §6).
CT_PRETRAIN_WINDOW = (-1000.0, 1000.0)


def _is_window(window: Sequence[float]) -> bool:
    low, high = window
    return math.isfinite(low) and math.isfinite(high) and low < high


def _is_orientation(code: str) -> bool:
    return len(code) == 3 and all(sum(c in pair for c in code.upper()) == 1 for pair in ("LR", "AP", "SI"))


@dataclass
class Preprocessing(Section):
    """How a scan becomes network input; stored with every run so that inference repeats it."""

    modality: Literal["ct", "mri"] = "mri"
    #: CT only: the HU window mapped to [0, 1].
    window: tuple[float, float] = setting(
        (-175.0, 250.0), Rule("a finite [low, high] with low < high", _is_window, outside=((1, 1), (250, -175)))
    )
    #: Voxel spacing in mm to resample to; null keeps each scan's own.
    spacing: tuple[float, float, float] | None = setting(None, each(positive(), empty_allowed=True))
    orientation: str = setting(
        "RAS", Rule("one of L/R, A/P and S/I per axis (e.g. RAS)", _is_orientation, outside=("RAX", "RRS", "RA", ""))
    )


class DicomSeriesReader(NibabelReader):
    """MONAI reader of DICOM series references (:mod:`gmim.data.dicom`), registered beside
    MONAI's own readers, which keep every image file."""

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(is_series_reference(Path(name)) for name in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: object) -> nib.Nifti1Image | list[nib.Nifti1Image]:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        self.filenames = names
        images = [read_series(Path(name)) for name in names]
        return images if len(images) > 1 else images[0]


class RequireFinited(MapTransform):
    """Refuse voxels that are NaN or infinite, naming the file: normalisation would spread them, and
    training would end with NaN weights, prediction with an empty mask, and nothing saying why."""

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(data):
            image = data[key]
            bad = ~torch.isfinite(torch.as_tensor(image))
            if bool(bad.any()):
                source = image.meta.get("filename_or_obj", key) if isinstance(image, MetaTensor) else key
                channels = [c for c in range(bad.shape[0]) if bool(bad[c].any())]
                where = f" (channel {channels[0]})" if bad.shape[0] > 1 else ""
                raise InputError(f"{source}: {int(bad.sum())} NaN or infinite voxel(s){where}")
        return data


def intensity_transform(
    keys: KeysCollection, preprocessing: Preprocessing, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> MapTransform:
    """The modality's intensity normalisation (see the module docstring). MRI statistics are the
    image's own, or ``mean`` and ``std`` per channel: those of the whole volume, for a crop of it."""
    if preprocessing.modality == "ct":
        low, high = preprocessing.window
        return ScaleIntensityRanged(keys, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    # MONAI's NormalizeIntensityd says arrays only, but the NormalizeIntensity it hands them to takes sequences
    return NormalizeIntensityd(keys, subtrahend=mean, divisor=std, nonzero=True, channel_wise=True)  # type: ignore[arg-type]


def read_transforms(preprocessing: Preprocessing, label: bool = True) -> list[Any]:
    """Read ``image`` (a list of channel files) and optionally ``label``, check, reorient, resample.

    The image is resampled linearly, the label with nearest neighbours. Each step is invertible
    (MONAI records it), which is how predictions go back to the input's grid.
    """
    keys = ["image", "label"] if label else ["image"]
    with warnings.catch_warnings():  # its GPU DICOM reader, as above
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        load = LoadImaged(keys, image_only=True)
    load.register(DicomSeriesReader())  # tried first, for DICOM series references only
    steps: list[Any] = [
        load,
        EnsureChannelFirstd(keys),
        RequireFinited(keys),
        Orientationd(keys, axcodes=preprocessing.orientation, labels=None),
    ]
    if preprocessing.spacing is not None:
        modes = ("bilinear", "nearest") if label else "bilinear"
        steps.append(Spacingd(keys, pixdim=preprocessing.spacing, mode=modes))
    return steps


def load_transforms(preprocessing: Preprocessing, label: bool = True) -> list[Any]:
    """:func:`read_transforms`, then the intensity normalisation, as float32."""
    keys = ["image", "label"] if label else ["image"]
    return [
        *read_transforms(preprocessing, label),
        intensity_transform("image", preprocessing),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
    ]


def augment_transforms(roi: Sequence[int], samples: int) -> list[Any]:
    """Random ``roi`` crops, half centred on foreground (label > 0), half on background, with flips
    and intensity jitter.

    Images smaller than ``roi`` are padded first. These are the Swin UNETR fine-tuning
    augmentations (random flips on each axis, intensity scale and shift by up to 10 %).
    """
    keys = ["image", "label"]
    return [
        SpatialPadd(keys, spatial_size=roi),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=samples),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandScaleIntensityd("image", factors=0.1, prob=1.0),
        RandShiftIntensityd("image", offsets=0.1, prob=1.0),
    ]


class LabelsToRegionsd(MapTransform):
    """A label map → one binary channel per region, each region a set of label values.

    BraTS: ``{"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}``. Regions may overlap, which is why they are
    trained with sigmoid outputs rather than softmax.
    """

    def __init__(self, keys: KeysCollection, regions: Mapping[str, Sequence[int]]) -> None:
        super().__init__(keys)
        self.regions = [torch.as_tensor(list(values)) for values in regions.values()]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            label = out[key]
            values = torch.as_tensor(label)[0]  # (1, D, H, W) → (D, H, W), without metadata
            regions = torch.stack([torch.isin(values, v.to(values.device)) for v in self.regions]).float()
            out[key] = MetaTensor(regions, meta=label.meta) if isinstance(label, MetaTensor) else regions
        return out
