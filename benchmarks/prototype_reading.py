"""The two readings of GMIM side by side: the method as described, and the prototype as it ran.

On random crops of real scans (the ICBM152 T1, grey- and white-matter maps from the PyPI package
nilearn; the ITK example T1 from the Debian package insighttoolkit5-examples), prints for
``masking.cells`` spatial and prototype: how often each grid is chosen, and the fraction of tokens
masked at a0–a3 when a point masks (docs/method.md §3, §9). Then, on the same crops, the ratio of
the prototype's reconstruction mean to the masked mean (the effective α_rec), and the share of the
ICBM152 T1 that the foreground crop keeps.

    python benchmarks/prototype_reading.py [--crops 10] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections import Counter

import nibabel as nib
import numpy as np
import torch

from gmim.pretraining.losses import reconstruction_loss
from gmim.pretraining.masking import APPLICATION_POINTS, GridMaskPlanner, voxel_mask
from gmim.sample_data import itk_example_paths, mni152


def scans() -> list[np.ndarray]:
    mni = mni152()
    volumes = [np.asarray(mni[name].get_fdata(), dtype=np.float32) for name in ("t1", "gm", "wm")]
    volumes.append(np.asarray(nib.load(itk_example_paths()["t1"]).get_fdata(), dtype=np.float32))
    return volumes


def random_crops(volumes: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``count`` crops of ``size`` (smaller along an axis the scan is too small for, in steps of 32)."""
    crops = []
    for i in range(count):
        volume = volumes[i % len(volumes)]
        shape = [min(size, n // 32 * 32) for n in volume.shape]
        start = [int(rng.integers(0, n - s + 1)) for n, s in zip(volume.shape, shape)]
        region = volume[tuple(slice(b, b + s) for b, s in zip(start, shape))]
        crops.append(torch.from_numpy(np.ascontiguousarray(region))[None, None])
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    volumes = scans()
    crops = random_crops(volumes, args.crops, args.size, np.random.default_rng(args.seed))
    print(f"{len(crops)} crops of up to {args.size}³ from the ICBM152 T1, GM and WM maps and the ITK T1")
    a0_masks = {}
    for cells in ("spatial", "prototype"):
        planner = GridMaskPlanner(cells=cells)
        grids: Counter[int] = Counter()
        fractions = np.zeros(len(APPLICATION_POINTS))
        generator = torch.Generator().manual_seed(args.seed)
        a0_masks[cells] = []
        for x in crops:
            plan = planner.plan(x)
            grids[int(plan.grid[0])] += 1
            for index, (_, stride) in enumerate(APPLICATION_POINTS):
                mask = plan.token_mask([n // stride for n in x.shape[2:]], ratio_scale=0.5**index, generator=generator)
                fractions[index] += float(mask.float().mean()) / len(crops)
                if index == 0:
                    a0_masks[cells].append(mask)
        chosen = ", ".join(f"grid {g}: {grids[g]}" for g in planner.grids)
        print(f"cells {cells:9s} chosen {chosen};  masked fraction a0–a3 when applied: " + "/".join(f"{f:.3f}" for f in fractions))
    ratios = []
    generator = torch.Generator().manual_seed(args.seed)
    for x, mask in zip(crops, a0_masks["spatial"]):
        prediction = x + torch.randn(x.shape, generator=generator) * x.std()
        voxels = voxel_mask(mask)
        ratios.append(float(reconstruction_loss(prediction, x, voxels, "prototype") / reconstruction_loss(prediction, x, voxels)))
    print(
        f"reconstruction: prototype mean / masked mean = {np.mean(ratios):.3f} (effective α_rec "
        f"{1 / np.mean(ratios):.2f}× smaller as run), range {min(ratios):.3f}–{max(ratios):.3f}"
    )
    t1 = volumes[0]
    box = [np.flatnonzero(np.any(t1 != 0, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    kept = np.prod([b[-1] - b[0] + 1 for b in box]) / t1.size
    print(f"foreground crop: keeps {kept:.0%} of the ICBM152 T1's voxels (its non-zero bounding box)")


if __name__ == "__main__":
    main()
