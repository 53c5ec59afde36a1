"""A clinical-size CT collection made from a real scan, for the data-path benchmarks.

The ICBM152 T1 template (PyPI package nilearn) is upsampled to 512×512×200 voxels of 0.5×0.5×1 mm
and its intensities mapped to CT-like Hounsfield units (air -1000, tissue 0–100), then each copy
gets its own flips, a shift of up to 20 voxels per axis and Gaussian noise of 15 HU: int16
``.nii.gz`` files of about the size of a clinical CT. With ``--files`` fewer than ``--count``, the
rest are hard links to the first files (a thousand volumes without a thousand files' disk).

    python benchmarks/ct_collection.py --out /tmp/ct --count 100
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (512, 512, 200)
SPACING = (0.5, 0.5, 1.0)


def base_volume() -> np.ndarray:
    """The ICBM152 T1 at :data:`SHAPE`, in HU-like int16."""
    from scipy.ndimage import zoom

    from gmim.sample_data import mni152

    t1 = np.asarray(mni152()["t1"].get_fdata(), dtype=np.float32)
    t1 = zoom(t1, [n / s for n, s in zip(SHAPE, t1.shape)], order=1)
    scale = float(np.percentile(t1[t1 > 0], 99))
    return np.where(t1 > 0.02 * scale, np.clip(t1 / scale, 0, 1.5) * 100, -1000).astype(np.int16)


def make_collection(out: Path, count: int, files: int | None = None, seed: int = 0) -> list[Path]:
    """``count`` CT volumes ``ct_0000.nii.gz`` … in ``out`` (``files`` of them real files, the rest
    hard links); already written files are kept."""
    out.mkdir(parents=True, exist_ok=True)
    files = count if files is None else min(files, count)
    paths = [out / f"ct_{i:04d}.nii.gz" for i in range(count)]
    affine = np.diag([*SPACING, 1.0])
    base = None
    nib.openers.Opener.default_compresslevel = 1  # as fast to write as a scanner's archive is to copy
    for i, path in enumerate(paths[:files]):
        if path.is_file():
            continue
        base = base_volume() if base is None else base
        rng = np.random.default_rng(seed + i)
        volume = base
        for axis in range(3):
            if rng.random() < 0.5:
                volume = np.flip(volume, axis)
        volume = np.roll(volume, tuple(rng.integers(-20, 21, size=3)), axis=(0, 1, 2))
        noisy = volume + rng.normal(0, 15, size=volume.shape).astype(np.int16)
        image = nib.Nifti1Image(noisy.astype(np.int16), affine)
        image.header.set_data_dtype(np.int16)
        tmp = path.with_name(f".{path.name}.tmp.nii.gz")
        nib.save(image, tmp)
        os.replace(tmp, path)
        print(f"wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    for i, path in enumerate(paths[files:], start=files):
        if not path.exists():
            os.link(paths[i % files], path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--files", type=int, help="real files among them (the rest are hard links)")
    args = parser.parse_args()
    make_collection(args.out, args.count, args.files)


if __name__ == "__main__":
    main()
