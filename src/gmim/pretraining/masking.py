"""Adaptive grid masking (docs/method.md §2) and hierarchical token masks (docs/method.md §3).

Everything here is batched PyTorch on the input's device. Cells and voxels are never iterated over;
the Python loops run over the candidate grids, the application points and the samples of a batch.

Cells are ranked by the entropy of their voxel values (:mod:`gmim.pretraining.entropy`). With its
GPU count, planning and masking read nothing back to the host, so on a GPU they queue their kernels
without waiting. The only host-side values are the three coin flips of
:meth:`GridMaskPlan.hierarchical_masks`, drawn from a CPU generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gmim.pretraining.entropy import (
    cell_entropies,
    cell_sizes,
    grid_cells,
    prototype_cell_entropies,
    resolve_counting,
)
from gmim.swin.geometry import PATCH_SIZE, STRIDE, stage_stride, token_grid

__all__ = [
    "APPLICATION_POINTS",
    "CELLS",
    "GridMaskPlan",
    "GridMaskPlanner",
    "mask_every_point",
    "voxel_mask",
]

#: Where masks act inside the encoder: name, token-grid stride relative to the crop.
APPLICATION_POINTS: tuple[tuple[str, int], ...] = (
    ("a0 patch embedding", stage_stride(0)),
    ("a1 positional dropout", stage_stride(0)),
    ("a2 layers1", stage_stride(1)),
    ("a3 layers2", stage_stride(2)),
)

#: Which voxels make a grid's cells: "spatial", the crop's (docs/method.md §2); "prototype", as the
#: authors' prototype ran: each grid after the first reads the previous grid's cell array as a
#: volume (docs/method.md §9).
CELLS = ("spatial", "prototype")

# Entropies equal to this many decimals (bits) count as one value when ranking cells. Cells with the
# same histogram have the same entropy; without rounding, summation order would split them.
_ENTROPY_DECIMALS = 9
_GRID_SCORE_EXPONENT = -0.1


def _linspace_like_numpy(start: float, stop: float, count: Tensor, index: Tensor) -> Tensor:
    """Element ``index`` of ``numpy.linspace(start, stop, count)``, computed as numpy does."""
    divisor = (count - 1).clamp_min(1).double()
    step = torch.full_like(divisor, stop - start) / divisor  # not `scalar / tensor`: torch takes a reciprocal
    values = index.double() * step + start
    return torch.where((index == count - 1) & (count > 1), torch.full_like(values, stop), values)


def _dynamic_ratios(entropy: Tensor, base_ratio: float, scale: float) -> Tensor:
    """(B, cells) ratio per cell: higher-entropy cells masked more, by rank among distinct entropies."""
    rounded = torch.round(entropy, decimals=_ENTROPY_DECIMALS)
    ordered, order = torch.sort(rounded, dim=1, stable=True)
    is_new = torch.ones_like(ordered, dtype=torch.bool)
    is_new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank_sorted = torch.cumsum(is_new, dim=1) - 1
    rank = torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)
    n_distinct = rank_sorted[:, -1:] + 1
    return base_ratio * _linspace_like_numpy(1.0 - scale, 1.0 + scale, n_distinct, rank)


@dataclass(frozen=True)
class GridMaskPlan:
    """Where and how much to mask, per sample of a batch (docs/method.md §2).

    Every candidate grid keeps its entropies and ratios, and each sample's grid is an index tensor:
    masking never needs the choice on the host. :meth:`chosen` reads it back, for figures and tests.
    """

    grids: tuple[int, ...]  #: the candidate grids, cells per axis
    choice: Tensor  #: (B,) index into ``grids`` of each sample's grid
    entropies: tuple[Tensor, ...]  #: per candidate grid g, (B, g³) cell entropies in bits
    ratios: tuple[Tensor, ...]  #: per candidate grid g, (B, g³) mask ratio per cell
    score: Tensor  #: (B, len(grids)) grid scores; NaN where a crop is constant

    @property
    def grid(self) -> Tensor:
        """(B,) cells per axis of each sample's grid."""
        return _constant(self.grids, self.choice.device).index_select(0, self.choice)

    def chosen(self, index: int) -> tuple[int, Tensor, Tensor]:
        """Grid, (g³,) entropies and (g³,) ratios of sample ``index``; reads its choice back to the host."""
        k = int(self.choice[index])
        return self.grids[k], self.entropies[k][index], self.ratios[k][index]

    def sample(self, index: int) -> GridMaskPlan:
        """The plan of sample ``index`` alone, as a batch of one."""
        one = slice(index, index + 1)
        return GridMaskPlan(
            grids=self.grids,
            choice=self.choice[one],
            entropies=tuple(h[one] for h in self.entropies),
            ratios=tuple(r[one] for r in self.ratios),
            score=self.score[one],
        )

    def token_mask(
        self,
        token_shape: Sequence[int],
        ratio_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(B, nd, nh, nw) bool mask, True = masked, floor(n·min(r·ratio_scale, 1)) tokens per cell.

        Token i along an axis of N tokens belongs to cell floor(i·g/N), so every grid works on every
        token grid, including grids finer than the token grid (cells without tokens mask nothing).
        Positions are drawn uniformly without replacement in each cell, from ``generator``: tokens
        are sorted by (cell, random key) and the first n of each cell are masked.
        """
        if len(token_shape) != 3 or any(int(n) < 1 for n in token_shape):
            raise ValueError(f"token_shape must be three positive sizes, got {tuple(token_shape)}")
        if not (math.isfinite(ratio_scale) and ratio_scale >= 0):
            raise ValueError(f"ratio_scale must be a finite number >= 0, got {ratio_scale}")
        device = self.choice.device
        batch = self.choice.numel()
        shape = tuple(int(n) for n in token_shape)
        n_tokens = math.prod(shape)
        max_cells = max(self.grids) ** 3
        # each sample's cell of every token, masked count and first sorted position of every cell
        cells = torch.zeros(batch, n_tokens, dtype=torch.int64, device=device)
        n_masked = torch.zeros(batch, max_cells, dtype=torch.int64, device=device)
        cell_start = torch.zeros_like(n_masked)
        for k, (grid, ratio) in enumerate(zip(self.grids, self.ratios)):
            chosen = (self.choice == k).view(batch, 1)
            tokens = cell_sizes(shape, grid, device)
            padding = (0, max_cells - grid**3)
            count = torch.floor(tokens * (ratio * ratio_scale).clamp_max(1.0)).long()
            cells = torch.where(chosen, grid_cells(shape, grid, device).view(1, -1), cells)
            n_masked = torch.where(chosen, F.pad(count, padding), n_masked)
            cell_start = torch.where(chosen, F.pad(torch.cumsum(tokens, 0) - tokens, padding), cell_start)
        sample = torch.arange(batch, device=device).view(batch, 1)
        cells = (cells + sample * max_cells).view(-1)
        cell_start = (cell_start + sample * n_tokens).view(-1)

        noise = torch.randint(0, 1 << 31, (cells.numel(),), generator=generator, device=device)
        _, order = torch.sort((cells << 31) | noise, stable=True)
        sorted_cells = cells.index_select(0, order)
        rank_in_cell = torch.arange(cells.numel(), device=device) - cell_start.index_select(0, sorted_cells)
        masked = rank_in_cell < n_masked.view(-1).index_select(0, sorted_cells)
        return torch.empty_like(masked).scatter_(0, order, masked).view(batch, *shape)

    def hierarchical_masks(
        self,
        crop_shape: Sequence[int],
        drop_probability: float = 0.3,
        decay: float = 0.5,
        generator: torch.Generator | None = None,
        sample_generators: Sequence[torch.Generator] | None = None,
        coin_generator: torch.Generator | None = None,
    ) -> list[Tensor | None]:
        """Masks for the application points a0–a3 of a crop of ``crop_shape`` (docs/method.md §3).

        a0 is always masked at ratio r; a1–a3 each with probability ``drop_probability`` at ratio
        r·decay^i, and only when ``decay`` > 0. Like the prototype, the ratio decays at every point
        whether or not that point masked. None where a point does not mask.

        The three coin flips, one per batch, are the only values masking reads on the host: they
        come from ``coin_generator``, a CPU generator (by default ``generator`` when that is on the
        CPU, else torch's default one). Token positions come from ``generator`` (on the crop's
        device), or from one generator per sample in ``sample_generators``: then a sample's masks
        do not depend on its batch.
        """
        _check_probability("drop_probability", drop_probability)
        _check_probability("decay", decay)
        if sample_generators is not None and len(sample_generators) != self.choice.numel():
            raise ValueError(f"sample_generators has {len(sample_generators)} generators for {self.choice.numel()} samples")
        if coin_generator is None and generator is not None and generator.device.type == "cpu":
            coin_generator = generator
        flips = torch.rand(len(APPLICATION_POINTS) - 1, generator=coin_generator, dtype=torch.float64).tolist()
        masks: list[Tensor | None] = []
        for index, (_, stride) in enumerate(APPLICATION_POINTS):
            if index > 0 and (decay == 0 or flips[index - 1] >= drop_probability):
                masks.append(None)
                continue
            token_shape = token_grid(crop_shape, stride)
            if sample_generators is None:
                masks.append(self.token_mask(token_shape, ratio_scale=decay**index, generator=generator))
            else:
                masks.append(
                    torch.cat(
                        [
                            self.sample(b).token_mask(token_shape, ratio_scale=decay**index, generator=g)
                            for b, g in enumerate(sample_generators)
                        ]
                    )
                )
        return masks


@functools.lru_cache(maxsize=16)
def _constant(values: tuple[int, ...], device: torch.device) -> Tensor:
    """``values`` as an int64 tensor on ``device``, copied there once."""
    return torch.tensor(values, dtype=torch.int64, device=device)


def mask_every_point(masks: Sequence[Tensor | None], crop_shape: Sequence[int]) -> list[Tensor]:
    """``masks`` of points a0–a3 with an all-False mask (which changes nothing) for each None: every
    point is then in the graph, as DDP with learned mask tokens and a compiled model (one graph for
    every step) need."""
    first = masks[0]
    assert first is not None, "point a0 always masks"
    batch, device = first.shape[0], first.device
    return [
        m if m is not None else torch.zeros((batch, *token_grid(crop_shape, stride)), dtype=torch.bool, device=device)
        for m, (_, stride) in zip(masks, APPLICATION_POINTS)
    ]


def voxel_mask(token_mask: Tensor, patch_size: int = PATCH_SIZE) -> Tensor:
    """(B, 1, D, H, W) voxel mask from a (B, nd, nh, nw) token mask: a voxel is masked with its token."""
    mask = token_mask[:, None]
    for dim in (2, 3, 4):
        mask = mask.repeat_interleave(patch_size, dim=dim)
    return mask


def _check_probability(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


class GridMaskPlanner:
    """Chooses each sample's grid and per-cell mask ratios from its cell entropies (docs/method.md §2).

    >>> planner = GridMaskPlanner(grids=(4, 8, 16), base_ratio=0.5, scale=0.3, dynamic=True)
    >>> plan = planner.plan(x)                      # x: (B, C, D, H, W)
    >>> a0 = plan.token_mask((d // 2, h // 2, w // 2), generator=g)

    ``counting`` picks how cell entropies are counted (see the module's docstring); both give the
    same plans. ``cells="prototype"`` reproduces the prototype as it ran (see :data:`CELLS`); its
    grids must divide the crop.
    """

    def __init__(
        self,
        grids: Sequence[int] = (4, 8, 16),
        base_ratio: float = 0.5,
        scale: float = 0.3,
        dynamic: bool = True,
        counting: str = "auto",
        cells: str = "spatial",
    ) -> None:
        grids = tuple(grids)
        if not grids or any(not isinstance(g, int) or isinstance(g, bool) or g < 1 for g in grids):
            raise ValueError(f"grids must be a non-empty sequence of positive integers, got {grids!r}")
        if not (isinstance(base_ratio, (int, float)) and 0.0 < base_ratio <= 1.0):
            raise ValueError(f"base_ratio must be in (0, 1], got {base_ratio!r}")
        if not (isinstance(scale, (int, float)) and 0.0 <= scale < 1.0):
            raise ValueError(f"scale must be in [0, 1), got {scale!r}")
        resolve_counting(counting, torch.device("cpu"))
        if cells not in CELLS:
            raise ValueError(f"cells must be one of {', '.join(CELLS)}, got {cells!r}")
        self.grids = grids
        self.base_ratio = float(base_ratio)
        self.scale = float(scale)
        self.dynamic = bool(dynamic)
        self.counting = counting
        self.cells = cells

    def __repr__(self) -> str:
        return (
            f"GridMaskPlanner(grids={self.grids}, base_ratio={self.base_ratio}, "
            f"scale={self.scale}, dynamic={self.dynamic}, counting={self.counting!r}, cells={self.cells!r})"
        )

    def _check_input(self, x: Tensor) -> None:
        """Shapes and dtype only: reading values would wait for a GPU. The data loaders refuse
        volumes with NaN or infinite voxels, naming the file."""
        if not isinstance(x, Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, C, D, H, W) tensor, got shape {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        spatial = tuple(x.shape[2:])
        if x.shape[0] < 1 or x.shape[1] < 1 or any(n % STRIDE for n in spatial) or min(spatial) < STRIDE:
            raise ValueError(f"x must have B, C >= 1 and D, H, W divisible by {STRIDE}, got shape {tuple(x.shape)}")
        if max(self.grids) > min(spatial):
            raise ValueError(f"grid {max(self.grids)} is finer than the crop {spatial}: each cell needs a voxel")
        if self.cells == "prototype" and any(n % g for g in self.grids for n in spatial):
            raise ValueError(f"cells='prototype' needs grids that divide the crop; grids {self.grids}, crop {spatial}")

    def plan(self, x: Tensor) -> GridMaskPlan:
        """Plan the masks of a batch ``x`` (B, C, D, H, W)."""
        self._check_input(x)
        count = prototype_cell_entropies if self.cells == "prototype" else cell_entropies
        entropies = tuple(count(x, self.grids, self.counting))
        scores = torch.stack(
            [g**_GRID_SCORE_EXPONENT * h.std(dim=1, correction=0) / h.mean(dim=1) for g, h in zip(self.grids, entropies)],
            dim=1,
        )
        constant = torch.stack([h.amax(dim=1) == 0 for h in entropies], dim=1).all(dim=1)
        # argmax returns the first maximum, as the method's tie rule asks (docs/method.md §2); constant
        # crops take the (first) smallest grid, at the base ratio everywhere
        smallest = min(range(len(self.grids)), key=self.grids.__getitem__)
        choice = torch.where(constant, smallest, scores.nan_to_num(-1.0).argmax(1))
        if self.dynamic:
            ratios = tuple(
                torch.where(constant.view(-1, 1), self.base_ratio, _dynamic_ratios(h, self.base_ratio, self.scale)) for h in entropies
            )
        else:
            ratios = tuple(torch.full_like(h, self.base_ratio) for h in entropies)
        return GridMaskPlan(grids=self.grids, choice=choice, entropies=entropies, ratios=ratios, score=scores)
