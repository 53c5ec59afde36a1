"""Masking speed: the vectorised planner against the prototype's loop algorithm, side by side.

Times, on two 128³ crops of the ICBM152 T1 (PyPI package nilearn), what one training step needs
from masking: cell entropies on every candidate grid, the grid choice, the per-cell ratios and the
a0 token mask. The loop version is the reference of the tests (tests/loop_masking.py).

    python benchmarks/masking_speed.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import loop_masking as loop  # noqa: E402

from gmim.pretraining.masking import GridMaskPlanner  # noqa: E402
from gmim.sample_data import mni152  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorised planner")
    parser.add_argument("--device", default="cpu", help="device of the vectorised planner (cpu, cuda)")
    args = parser.parse_args()
    planner = GridMaskPlanner()
    x = t1_crops()
    print(f"two {SIZE}³ crops of the ICBM152 T1, grids {planner.grids}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    loop_seconds = time_loop(x, planner)
    print(f"loop (prototype's algorithm, numpy/skimage):  {loop_seconds * 1e3:9.1f} ms")
    cpu = time_vectorised(x, planner, args.repeats)
    cpu_ms = statistics.median(cpu) * 1e3
    print(f"vectorised, cpu (median of {args.repeats}):          {cpu_ms:9.1f} ms   {loop_seconds * 1e3 / cpu_ms:6.1f}× faster")
    if args.device != "cpu":
        device_times = time_vectorised(x.to(args.device), planner, args.repeats)
        device_ms = statistics.median(device_times) * 1e3
        print(f"vectorised, {args.device} (median of {args.repeats}):         {device_ms:9.2f} ms   "
              f"{loop_seconds * 1e3 / device_ms:6.0f}× faster")


if __name__ == "__main__":
    main()
