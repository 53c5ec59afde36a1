"""Adaptive grid masking (docs/method.md §2) and hierarchical token masks (docs/method.md §3).

Everything here is batched PyTorch on the input's device. Cells and voxels are never iterated over;
the Python loops run over the candidate grids, the application points and the samples of a batch.

Cell entropies are counted in one of two ways, chosen per device. The *table* count (CPU default)
bins (cell, value) pairs into a dense table, whose size depends on how many distinct values the
batch holds. The *sort* count (GPU default) sorts each cell's values and measures the runs of equal
values; its shapes depend only on the crop's shape. With it, planning and masking read nothing back
to the host, so on a GPU they queue their kernels without waiting. The only host-side values are
the three coin flips of :meth:`GridMaskPlan.hierarchical_masks`, drawn from a CPU generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "APPLICATION_POINTS",
    "CELLS",
    "COUNTINGS",
    "GridMaskPlan",
    "GridMaskPlanner",
    "axis_cells",
    "cell_entropy",
    "mask_every_point",
    "voxel_mask",
]

#: Where masks act inside the encoder: name, token-grid stride relative to the crop.
APPLICATION_POINTS: tuple[tuple[str, int], ...] = (
    ("a0 patch embedding", 2),
    ("a1 positional dropout", 2),
    ("a2 layers1", 4),
    ("a3 layers2", 8),
)

#: Ways to count cell entropies: "auto" takes "table" on a CPU and "sort" elsewhere.
COUNTINGS = ("auto", "table", "sort")
#: Which voxels make a grid's cells: "spatial", the crop's (docs/method.md §2); "prototype", as the
#: authors' prototype ran: each grid after the first reads the previous grid's cell array as a
#: volume (docs/method.md §9).
CELLS = ("spatial", "prototype")

# Entropies equal to this many decimals (bits) count as one value when ranking cells. Cells with the
# same histogram have the same entropy; without rounding, summation order would split them.
_ENTROPY_DECIMALS = 9
_GRID_SCORE_EXPONENT = -0.1
# Odd multipliers for Fibonacci hashing, one per hash round (32-bit golden ratio first).
_HASH_MULTIPLIERS = (-1640531535, 1540483477, -862048943, 461845907)
_FIRST_TABLE_BITS = 20
# A dense (cell, value) count table is used up to this many entries per voxel of the batch (or up
# to _DENSE_TABLE_MIN entries): counting into it beats sorting the (cell, value) pairs.
_DENSE_TABLE_PER_VOXEL = 8
_DENSE_TABLE_MIN = 1 << 22


def axis_cells(size: int, grid: int, device: torch.device | str | None = None) -> Tensor:
    """Cell of each of ``size`` positions along an axis split into ``grid`` cells.

    Position i belongs to cell floor(i·grid/size): an even split when ``grid`` divides ``size``,
    and still defined (some cells empty) when the grid is finer than the token grid.
    """
    return torch.arange(size, device=device) * grid // size


def _axis_starts(size: int, grid: int) -> list[int]:
    """First position of each cell along an axis, then ``size``: cell k holds i from ceil(k·size/grid) on."""
    return [-(-k * size // grid) for k in range(grid + 1)]


def _axis_counts(size: int, grid: int) -> list[int]:
    """Positions in each cell along an axis."""
    starts = _axis_starts(size, grid)
    return [b - a for a, b in zip(starts, starts[1:])]


# The shapes of crops and token grids repeat every step: their geometry is built once per device.
@functools.lru_cache(maxsize=64)
def _grid_cells(shape: tuple[int, ...], grid: int, device: torch.device) -> Tensor:
    """(D, H, W) flat cell index of each position of a ``shape`` grid, cells in C order."""
    depth, height, width = shape
    d = axis_cells(depth, grid, device).view(-1, 1, 1)
    h = axis_cells(height, grid, device).view(1, -1, 1)
    w = axis_cells(width, grid, device).view(1, 1, -1)
    return (d * grid + h) * grid + w


@functools.lru_cache(maxsize=64)
def _cell_sizes(shape: tuple[int, ...], grid: int, device: torch.device) -> Tensor:
    """(grid³,) number of positions of a ``shape`` grid in each cell."""
    d, h, w = (_axis_counts(n, grid) for n in shape)
    return torch.tensor([a * b * c for a in d for b in h for c in w], dtype=torch.int64, device=device)


@functools.lru_cache(maxsize=16)
def _padded_cells(shape: tuple[int, ...], grid: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat position of each slot of grid³ equal-length rows, one row per cell, and which slots are real.

    For grids that do not divide the crop, where cells differ in size by one position per axis.
    """
    axes = []
    for n in shape:
        counts = _axis_counts(n, grid)
        length = max(counts)
        first = torch.tensor(_axis_starts(n, grid)[:-1]).view(-1, 1)
        slot = torch.arange(length).view(1, -1)
        axes.append(((first + slot).clamp_max(n - 1), slot < torch.tensor(counts).view(-1, 1)))
    (d, dv), (h, hv), (w, wv) = axes
    height, width = shape[1], shape[2]
    position = (d[:, None, None, :, None, None] * height + h[None, :, None, None, :, None]) * width
    position = position + w[None, None, :, None, None, :]
    real = dv[:, None, None, :, None, None] & hv[None, :, None, None, :, None] & wv[None, None, :, None, None, :]
    return position.reshape(-1).to(device), real.reshape(grid**3, -1).to(device)


def _dense_ids(keys: Tensor) -> tuple[Tensor, int]:
    """Map int32 ``keys`` to int32 ids 0..U-1, equal ids exactly for equal keys, without sorting.

    Each round hashes the unresolved keys into a table and keeps every bucket whose smallest and
    largest key agree (a single distinct key); keys of shared buckets go to the next round with
    another hash. Images hold few distinct values, so the first round usually resolves everything.
    Continuous-valued data, where hashing cannot win, goes through :func:`torch.unique`.
    """
    ids = torch.empty(keys.shape, dtype=torch.int32, device=keys.device)
    todo: Tensor | None = None  # positions still unresolved; None means all of them
    pending = keys
    next_id = 0
    for round_index, multiplier in enumerate(_HASH_MULTIPLIERS):
        n = pending.numel()
        if round_index > 0 and n > keys.numel() // 8:
            break  # mostly distinct values: sorting is cheaper than more rounds
        bits = max(10, min((2 * n - 1).bit_length(), _FIRST_TABLE_BITS if round_index == 0 else 31))
        size = 1 << bits
        bucket = (((pending * multiplier) >> (32 - bits)) & (size - 1)).long()
        low = torch.full((size,), torch.iinfo(torch.int32).max, dtype=torch.int32, device=keys.device)
        high = torch.full((size,), torch.iinfo(torch.int32).min, dtype=torch.int32, device=keys.device)
        low.scatter_reduce_(0, bucket, pending, "amin")
        high.scatter_reduce_(0, bucket, pending, "amax")
        single = low == high  # empty buckets have low > high, shared ones low < high
        compact = (torch.cumsum(single, 0, dtype=torch.int32) - 1 + next_id).to(torch.int32)
        next_id += int(single.sum())
        if todo is None and not bool((low < high).any()):
            return compact.index_select(0, bucket), next_id
        resolved = single[bucket]
        positions = resolved.nonzero().squeeze(1) if todo is None else todo[resolved]
        ids[positions] = compact[bucket[resolved]]
        unresolved = ~resolved
        todo = unresolved.nonzero().squeeze(1) if todo is None else todo[unresolved]
        pending = pending[unresolved]
        if pending.numel() == 0:
            return ids, next_id
    unique, inverse = torch.unique(pending, return_inverse=True)
    ids[todo] = (inverse + next_id).to(torch.int32)
    return ids, next_id + unique.numel()


def _value_keys(x: Tensor) -> Tensor:
    """One int32 key per voxel, equal exactly when the voxel values are equal (-0.0 == 0.0)."""
    return (x.float() + 0.0).view(torch.int32)  # -0.0 + 0.0 is +0.0, so both zeros share a key


def _nests(spatial: Sequence[int], fine: int, coarse: int) -> bool:
    """True when every cell of the ``coarse`` grid is a union of whole cells of the ``fine`` one."""
    return fine % coarse == 0 and all(n % fine == 0 for n in spatial)


def _c_log_c(counts: Tensor) -> Tensor:
    """c·ln c of integer counts (0 for 0), float64, through a table of all counts up to the largest."""
    values = torch.arange(int(counts.max()) + 1, dtype=torch.float64, device=counts.device)
    return torch.xlogy(values, values)[counts]


def _entropy_bits(sum_c_log_c: Tensor, n: Tensor) -> Tensor:
    """Shannon entropy in bits from Σ c·ln c over a cell's value counts c and its size n."""
    return ((torch.log(n) - sum_c_log_c / n) / math.log(2.0)).clamp_min(0.0)


class _TableCounter:
    """Counts of each distinct voxel value per cell, for entropies on several grids of one batch.

    The fastest count on a CPU, but its table is sized by the number of distinct values, which
    has to be read back to the host: on a GPU that waits for the queued work (use the sort count).
    """

    def __init__(self, x: Tensor) -> None:
        self.shape = tuple(x.shape)
        self.device = x.device
        self.value_ids, self.n_values = _dense_ids(_value_keys(x).reshape(-1))
        self._tables: dict[int, Tensor] = {}  # grid -> (B, g, g, g, U) dense counts

    def _cell_value_keys(self, grid: int, dtype: torch.dtype) -> Tensor:
        """(B·C·D·H·W,) key cell·U + value id of each voxel, samples' cells numbered one after the other."""
        batch = self.shape[0]
        spatial = _grid_cells(self.shape[2:], grid, self.device).to(dtype) * self.n_values
        sample = torch.arange(batch, device=self.device, dtype=dtype).view(-1, 1, 1, 1, 1) * (grid**3 * self.n_values)
        return (self.value_ids.view(self.shape).to(dtype) + spatial + sample).reshape(-1)

    def _dense_table(self, grid: int) -> Tensor | None:
        batch = self.shape[0]
        if batch * grid**3 * self.n_values > max(_DENSE_TABLE_PER_VOXEL * self.value_ids.numel(), _DENSE_TABLE_MIN):
            return None
        for fine, table in self._tables.items():
            if _nests(self.shape[2:], fine, grid):
                f = fine // grid
                table = table.view(batch, grid, f, grid, f, grid, f, self.n_values)
                return table.sum(6).sum(4).sum(2)  # one axis at a time: several times faster on a CPU
        counts = torch.bincount(self._cell_value_keys(grid, torch.int32), minlength=batch * grid**3 * self.n_values)
        return counts.view(batch, grid, grid, grid, self.n_values)

    def entropy(self, grid: int) -> Tensor:
        """(B, grid³) cell entropies in bits, float64."""
        batch, channels = self.shape[:2]
        n_cells = batch * grid**3
        table = self._dense_table(grid)
        if table is not None:
            self._tables[grid] = table
            sum_c_log_c = _c_log_c(table.reshape(n_cells, self.n_values)).sum(1)
        else:  # too many distinct values for a dense table: count only the (cell, value) pairs present
            pairs, counts = torch.unique(self._cell_value_keys(grid, torch.int64), return_counts=True)
            sum_c_log_c = torch.bincount(pairs // self.n_values, weights=_c_log_c(counts), minlength=n_cells)
        n = (_cell_sizes(self.shape[2:], grid, self.device) * channels).double()
        return _entropy_bits(sum_c_log_c.view(batch, grid**3), n)


def _cell_rows(keys: Tensor, grid: int) -> Tensor:
    """(B·g³, L) value keys of each cell, one row per cell in C order, all channels pooled.

    Where cells differ in size, short rows are padded with keys above every int32 key, a different
    one per slot: each pad is a run of one and adds nothing to Σ c·ln c.
    """
    batch, channels, *spatial = keys.shape
    if all(n % grid == 0 for n in spatial):
        d, h, w = (n // grid for n in spatial)
        cells = keys.view(batch, channels, grid, d, grid, h, grid, w).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return cells.reshape(batch * grid**3, -1)
    position, real = _padded_cells(tuple(spatial), grid, keys.device)
    rows = keys.reshape(batch, channels, -1).index_select(2, position).view(batch, channels, grid**3, -1)
    rows = rows.transpose(1, 2).long()  # (B, g³, C, L)
    pad = (1 << 32) + torch.arange(channels * real.shape[1], device=keys.device).view(channels, -1)
    return torch.where(real[:, None, :], rows, pad).reshape(batch * grid**3, -1)


def _run_c_log_c(rows: Tensor) -> Tensor:
    """(R,) Σ c·ln c over the counts c of the distinct keys of each row, float64: sort, then runs."""
    ordered = rows.sort(dim=1).values
    position = torch.arange(ordered.shape[1], device=rows.device)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    run_start = torch.where(starts, position, 0).cummax(dim=1).values
    count = (position - run_start + 1).double()
    return torch.where(ends, torch.xlogy(count, count), 0.0).sum(dim=1)


def _sorted_entropy(keys: Tensor, grid: int) -> Tensor:
    """(B, grid³) cell entropies in bits, float64, by the sort count."""
    batch, channels = keys.shape[:2]
    n = (_cell_sizes(tuple(keys.shape[2:]), grid, keys.device) * channels).double()
    return _entropy_bits(_run_c_log_c(_cell_rows(keys, grid)).view(batch, -1), n)


def _resolve_counting(counting: str, device: torch.device) -> str:
    if counting not in COUNTINGS:
        raise ValueError(f"counting must be one of {', '.join(COUNTINGS)}, got {counting!r}")
    if counting == "auto":
        return "table" if device.type == "cpu" else "sort"
    return counting


def _cell_entropies(x: Tensor, grids: Sequence[int], counting: str) -> list[Tensor]:
    """(B, g³) cell entropies in bits, float64, of a (B, C, D, H, W) batch for each grid g of ``grids``."""
    if _resolve_counting(counting, x.device) == "table":
        counter = _TableCounter(x)
        # finest grid first, so coarser ones can be summed from its count table
        by_grid = {g: counter.entropy(g) for g in sorted(set(grids), reverse=True)}
        return [by_grid[g] for g in grids]
    keys = _value_keys(x)
    by_grid = {g: _sorted_entropy(keys, g) for g in set(grids)}
    return [by_grid[g] for g in grids]


def _cell_array_as_volume(x: Tensor, grid: int) -> Tensor:
    """The prototype's cell array of ``x`` (B, C, D, H, W) — per sample (cells, C, voxels per cell),
    cells and their voxels in (z, y, x) C order — flattened and re-read as a (B, C, D, H, W) volume."""
    batch, channels, depth, height, width = x.shape
    d, h, w = depth // grid, height // grid, width // grid
    cells = x.view(batch, channels, grid, d, grid, h, grid, w).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return cells.reshape(x.shape)


def _prototype_cell_entropies(x: Tensor, grids: Sequence[int], counting: str) -> list[Tensor]:
    """Cell entropies as the prototype computed them: the first grid's on the crop, each later
    grid's on the previous grid's cell array read as a volume (docs/method.md §9)."""
    entropies = []
    for grid in grids:
        entropies.append(_cell_entropies(x, (grid,), counting)[0])
        x = _cell_array_as_volume(x, grid)
    return entropies


def cell_entropy(x: Tensor, grid: int, counting: str = "auto") -> Tensor:
    """Shannon entropy in bits of the exact voxel values in each of grid³ cells, all channels pooled.

    Equals ``skimage.measure.shannon_entropy`` of each cell. ``x`` is (B, C, D, H, W); the result is
    (B, grid³) float64 with cells in C order of (grid, grid, grid).
    """
    return _cell_entropies(x, (grid,), counting)[0]


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
            tokens = _cell_sizes(shape, grid, device)
            padding = (0, max_cells - grid**3)
            count = torch.floor(tokens * (ratio * ratio_scale).clamp_max(1.0)).long()
            cells = torch.where(chosen, _grid_cells(shape, grid, device).view(1, -1), cells)
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
            token_shape = [int(n) // stride for n in crop_shape]
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
    batch, device = masks[0].shape[0], masks[0].device
    return [
        m if m is not None else torch.zeros((batch, *(int(n) // stride for n in crop_shape)), dtype=torch.bool, device=device)
        for m, (_, stride) in zip(masks, APPLICATION_POINTS)
    ]


def voxel_mask(token_mask: Tensor, patch_size: int = 2) -> Tensor:
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
        _resolve_counting(counting, torch.device("cpu"))
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
        if x.shape[0] < 1 or x.shape[1] < 1 or any(n % 32 for n in spatial) or min(spatial) < 32:
            raise ValueError(f"x must have B, C >= 1 and D, H, W divisible by 32, got shape {tuple(x.shape)}")
        if max(self.grids) > min(spatial):
            raise ValueError(f"grid {max(self.grids)} is finer than the crop {spatial}: each cell needs a voxel")
        if self.cells == "prototype" and any(n % g for g in self.grids for n in spatial):
            raise ValueError(f"cells='prototype' needs grids that divide the crop; grids {self.grids}, crop {spatial}")

    def plan(self, x: Tensor) -> GridMaskPlan:
        """Plan the masks of a batch ``x`` (B, C, D, H, W)."""
        self._check_input(x)
        count = _prototype_cell_entropies if self.cells == "prototype" else _cell_entropies
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
                torch.where(constant.view(-1, 1), self.base_ratio, _dynamic_ratios(h, self.base_ratio, self.scale))
                for h in entropies
            )
        else:
            ratios = tuple(torch.full_like(h, self.base_ratio) for h in entropies)
        return GridMaskPlan(grids=self.grids, choice=choice, entropies=entropies, ratios=ratios, score=scores)
