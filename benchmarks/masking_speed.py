"""Masking speed: the vectorised planner against the prototype's loop algorithm, side by side.

Times, on two 128³ crops of the ICBM152 T1 (PyPI package nilearn), what one training step needs
from masking: cell entropies on every candidate grid, the grid choice, the per-cell ratios and the
a0 token mask. The loop version is the reference of the tests (benchmarks/loop_masking.py). Both ways of
counting cell entropies are timed ("table", a CPU's default; "sort", a GPU's). On a GPU it also
counts the host synchronisations of one plan and its masks a0–a3 (torch.cuda sync debug mode).

    python benchmarks/masking_speed.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import loop_masking as loop  # beside this script
from gmim.pretraining.masking import GridMaskPlanner
from gmim.sample_data import mni152

STARTS = ((30, 40, 20), (60, 80, 50))
SIZE = 128


def t1_crops() -> torch.Tensor:
    t1 = np.asarray(mni152()["t1"].get_fdata(), dtype=np.float32)
    return torch.stack([torch.from_numpy(t1[d : d + SIZE, h : h + SIZE, w : w + SIZE].copy()) for d, h, w in STARTS])[:, None]


def time_loop(x: torch.Tensor, planner: GridMaskPlanner) -> float:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for volume in x.numpy():
        grid, _, ratios = loop.plan(volume, planner.grids, planner.base_ratio, planner.scale, planner.dynamic)
        loop.token_mask(ratios, grid, tuple(n // 2 for n in volume.shape[1:]), rng)
    return time.perf_counter() - start


def time_vectorised(x: torch.Tensor, planner: GridMaskPlanner, repeats: int) -> list[float]:
    generator = torch.Generator(device=x.device).manual_seed(0)
    token_shape = tuple(n // 2 for n in x.shape[2:])
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        planner.plan(x).token_mask(token_shape, generator=generator)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:]


def count_syncs(x: torch.Tensor, planner: GridMaskPlanner) -> int:
    """Host synchronisations of one plan and its hierarchical masks on a CUDA batch, after a first
    call that copies the crop's geometry to the device."""
    generators = [torch.Generator(device=x.device).manual_seed(i) for i in range(x.shape[0])]
    coins = torch.Generator().manual_seed(0)

    def masks() -> None:
        planner.plan(x).hierarchical_masks(x.shape[2:], drop_probability=1.0, sample_generators=generators, coin_generator=coins)

    masks()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            masks()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorised planner")
    parser.add_argument("--device", default="cpu", help="device of the vectorised planner (cpu, cuda)")
    args = parser.parse_args()
    planner = GridMaskPlanner()
    x = t1_crops()
    print(f"two {SIZE}³ crops of the ICBM152 T1, grids {planner.grids}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    loop_seconds = time_loop(x, planner)
    print(f"loop (prototype's algorithm, numpy/skimage):  {loop_seconds * 1e3:9.1f} ms")
    devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]
    for device in devices:
        batch = x.to(device)
        for counting in ("table", "sort"):
            counted = GridMaskPlanner(counting=counting)
            ms = statistics.median(time_vectorised(batch, counted, args.repeats)) * 1e3
            syncs = f"   {count_syncs(batch, counted)} host syncs" if batch.is_cuda else ""
            print(
                f"vectorised, {device}, {counting} count (median of {args.repeats}): {ms:9.2f} ms   "
                f"{loop_seconds * 1e3 / ms:6.1f}× faster{syncs}"
            )


if __name__ == "__main__":
    main()
