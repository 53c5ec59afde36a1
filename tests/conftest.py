"""Shared fixtures: real scans from packages, cropped small.

Missing test data skips a test on a developer's machine with the reason shown, and fails it in CI
(CI=true), so the suite never passes there without having run on real scans.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch

from gmim.errors import InputError
from gmim.sample_data import itk_example_paths, mni152


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"test data missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def itk_paths():
    """Paths of the ITK example T1 (128×128×62), its label map and its skull-strip mask."""
    try:
        return itk_example_paths()
    except InputError as error:
        _missing(str(error))


@pytest.fixture(scope="session")
def mni():
    """The ICBM152 template images (nibabel): t1, gm, wm, brain_mask."""
    try:
        return mni152()
    except InputError as error:
        _missing(str(error))


@pytest.fixture(scope="session")
def mni_t1(mni) -> np.ndarray:
    """The ICBM152 T1 as float32, 197×233×189."""
    return np.asarray(mni["t1"].get_fdata(), dtype=np.float32)


@pytest.fixture(scope="session")
def itk_t1(itk_paths) -> np.ndarray:
    """The ITK example T1 as float32, 128×128×62 (raw intensities)."""
    return np.asarray(nib.load(itk_paths["t1"]).get_fdata(), dtype=np.float32)


def crop(volume: np.ndarray, start: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """A (D, H, W) crop as a tensor, zero-padded where it runs past the volume."""
    out = np.zeros(size, dtype=np.float32)
    region = tuple(slice(s, min(s + n, v)) for s, n, v in zip(start, size, volume.shape))
    part = volume[region]
    out[tuple(slice(0, n) for n in part.shape)] = part
    return torch.from_numpy(out)
