"""Shannon entropy of the voxel values in each cell of a grid over a crop (docs/method.md §2), and
the cells themselves: what adaptive grid masking ranks its cells by.

Everything here is batched PyTorch on the input's device. Entropies are counted in one of two ways,
chosen per device. The *table* count (CPU default) bins (cell, value) pairs into a dense table, whose
size depends on how many distinct values the batch holds. The *sort* count (GPU default) sorts each
cell's values and measures the runs of equal values; its shapes depend only on the crop's shape, so
on a GPU counting reads nothing back to the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "COUNTINGS",
    "axis_cells",
    "cell_entropies",
    "cell_entropy",
    "cell_sizes",
    "grid_cells",
    "prototype_cell_entropies",
    "resolve_counting",
]

#: Ways to count cell entropies: "auto" takes "table" on a CPU and "sort" elsewhere.
COUNTINGS = ("auto", "table", "sort")
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
def grid_cells(shape: tuple[int, ...], grid: int, device: torch.device) -> Tensor:
    """(D, H, W) flat cell index of each position of a ``shape`` grid, cells in C order."""
    depth, height, width = shape
    d = axis_cells(depth, grid, device).view(-1, 1, 1)
    h = axis_cells(height, grid, device).view(1, -1, 1)
    w = axis_cells(width, grid, device).view(1, 1, -1)
    return (d * grid + h) * grid + w


@functools.lru_cache(maxsize=64)
def cell_sizes(shape: tuple[int, ...], grid: int, device: torch.device) -> Tensor:
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
        spatial = grid_cells(self.shape[2:], grid, self.device).to(dtype) * self.n_values
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
        n = (cell_sizes(self.shape[2:], grid, self.device) * channels).double()
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
    n = (cell_sizes(tuple(keys.shape[2:]), grid, keys.device) * channels).double()
    return _entropy_bits(_run_c_log_c(_cell_rows(keys, grid)).view(batch, -1), n)


def resolve_counting(counting: str, device: torch.device) -> str:
    if counting not in COUNTINGS:
        raise ValueError(f"counting must be one of {', '.join(COUNTINGS)}, got {counting!r}")
    if counting == "auto":
        return "table" if device.type == "cpu" else "sort"
    return counting


def cell_entropies(x: Tensor, grids: Sequence[int], counting: str) -> list[Tensor]:
    """(B, g³) cell entropies in bits, float64, of a (B, C, D, H, W) batch for each grid g of ``grids``."""
    if resolve_counting(counting, x.device) == "table":
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


def prototype_cell_entropies(x: Tensor, grids: Sequence[int], counting: str) -> list[Tensor]:
    """Cell entropies as the prototype computed them: the first grid's on the crop, each later
    grid's on the previous grid's cell array read as a volume (docs/method.md §9)."""
    entropies = []
    for grid in grids:
        entropies.append(cell_entropies(x, (grid,), counting)[0])
        x = _cell_array_as_volume(x, grid)
    return entropies


def cell_entropy(x: Tensor, grid: int, counting: str = "auto") -> Tensor:
    """Shannon entropy in bits of the exact voxel values in each of grid³ cells, all channels pooled.

    Equals ``skimage.measure.shannon_entropy`` of each cell. ``x`` is (B, C, D, H, W); the result is
    (B, grid³) float64 with cells in C order of (grid, grid, grid).
    """
    return cell_entropies(x, (grid,), counting)[0]
