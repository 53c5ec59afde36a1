"""The two views of each crop and their pretext targets (Tang et al., CVPR 2022; docs/swin-ssl.md §2).

Each crop of a step is seen twice. Each view is the crop turned by 0, 90, 180 or 270° in the plane
of its last two axes (the quarter turns are the rotation task's label), then corrupted by the
published local drop ("inpainting", :func:`corrupt`): regions of noise scaled to [0, 1] until a
random share of the crop is covered, then, from another crop of the batch chosen at random,
regions copied in. The network sees the corrupted view; the reconstruction target is the turned
view before the drop.

Every draw of a view comes from generators seeded by (seed, step, volume, crop, view), never from
a global random state: a resumed run repeats an uninterrupted one exactly, and neither the order
of the batch nor the other crops change a crop's draws (only the crop copied from, which is a place
in the batch, as published). The box geometry is drawn on the host (plain integers: nothing is read
back from the device), the noise on the batch's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gmim.engine.sampling import derived_seed
from gmim.swinssl.config import InpaintingConfig

__all__ = ["ROTATION_PLANE", "Views", "corrupt", "drop_boxes", "make_views", "rotate"]

#: The axes of a batch (B, C, D, H, W) that a quarter turn moves: the crop's last two, as published.
ROTATION_PLANE = (3, 4)
#: Noise regions are scaled by (max − min) of their values; a one-voxel region of one channel
#: (only on crops under 40 voxels on every axis, which gmim's crop rule refuses) would divide by 0.
_TINY = 1e-12

Box = tuple[slice, slice, slice]


def rotate(x: Tensor, turns: Sequence[int]) -> Tensor:
    """Each crop of ``x`` (B, C, D, H, W) turned by its number of quarter turns in :data:`ROTATION_PLANE`."""
    return torch.stack([crop.rot90(int(k), (ROTATION_PLANE[0] - 1, ROTATION_PLANE[1] - 1)) for crop, k in zip(x, turns)])


def drop_boxes(shape: Sequence[int], rng: np.random.Generator, config: InpaintingConfig) -> list[Box]:
    """The regions of one drop of a crop of spatial ``shape``: boxes drawn until they cover (with
    overlaps counted twice) a share of the crop drawn from [0, ``max_fraction``]. Each box starts
    anywhere but the last ``min_block`` share of each axis and spans [``min_block``,
    ``max_block``) of it, cut at the crop's edge."""
    target = rng.uniform(0, config.max_fraction) * float(np.prod(shape))
    least = [int(config.min_block * n) for n in shape]
    largest = [max(int(config.max_block * n), low + 1) for n, low in zip(shape, least)]  # never an empty range
    boxes: list[Box] = []
    covered = 0
    while covered < target:
        starts = [int(rng.integers(0, n - low)) for n, low in zip(shape, least)]
        stops = [min(int(rng.integers(low, high)) + start, n) for n, low, high, start in zip(shape, least, largest, starts)]
        boxes.append((slice(starts[0], stops[0]), slice(starts[1], stops[1]), slice(starts[2], stops[2])))
        covered += int(np.prod([stop - start for start, stop in zip(starts, stops)]))
    return boxes


def _fill_noise(crop: Tensor, boxes: Sequence[Box], generator: torch.Generator) -> None:
    """Each box of ``crop`` (C, D, H, W) replaced, in place, by Gaussian noise scaled to [0, 1]."""
    for box in boxes:
        region = crop[(slice(None),) + box]
        noise = torch.empty(region.shape, dtype=crop.dtype, device=crop.device).normal_(generator=generator)
        low, high = noise.min(), noise.max()
        region.copy_((noise - low) / (high - low).clamp_min(_TINY))


def corrupt(x: Tensor, rngs: Sequence[np.random.Generator], generators: Sequence[torch.Generator], config: InpaintingConfig) -> Tensor:
    """The published local drop of a batch ``x`` (B, C, D, H, W), crop by crop in the batch's order:
    a drop of noise (:func:`drop_boxes`), then a crop of the batch drawn at random and, unless it is
    this one, a second drop whose boxes are copied from it as it is by then (already corrupted when
    it comes earlier in the batch). ``rngs`` and ``generators`` are each crop's (host and device)."""
    out = x.detach().clone()
    count = out.shape[0]
    for i in range(count):
        _fill_noise(out[i], drop_boxes(out.shape[2:], rngs[i], config), generators[i])
        partner = int(rngs[i].integers(0, count))
        if partner != i:
            for box in drop_boxes(out.shape[2:], rngs[i], config):
                out[(i, slice(None)) + box] = out[(partner, slice(None)) + box]
    return out


@dataclass
class Views:
    """Both views of a batch of B crops, view 1 of every crop first, then view 2 (2B in all)."""

    inputs: Tensor  #: (2B, C, D, H, W) turned and corrupted: what the network sees
    targets: Tensor  #: (2B, C, D, H, W) turned only: what it reconstructs
    turns: Tensor  #: (2B,) int64 quarter turns: the rotation labels


def make_views(x: Tensor, keys: Sequence[Sequence[int]], seed: int, config: InpaintingConfig) -> Views:
    """The two views of the crops ``x`` (B, C, D, H, W); ``keys[i]`` identifies crop i in the run
    (step, volume, crop), and with ``seed`` and the view seeds all of its draws."""
    inputs, targets, turns = [], [], []
    for view in (1, 2):
        seeds = [derived_seed(seed, *key, view) for key in keys]
        rngs = [np.random.default_rng(s) for s in seeds]
        generators = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
        quarter_turns = [int(rng.integers(0, 4)) for rng in rngs]
        turned = rotate(x, quarter_turns)
        inputs.append(corrupt(turned, rngs, generators, config))
        targets.append(turned)
        turns += quarter_turns
    return Views(torch.cat(inputs), torch.cat(targets), torch.tensor(turns, dtype=torch.int64).to(x.device, non_blocking=True))
