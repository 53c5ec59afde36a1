"""The prototype's masking algorithm as plain loops over cells (docs/method.md §2, §3): the reference the
vectorised planner is tested and benchmarked against. numpy and skimage only; slow on purpose."""

from __future__ import annotations

import numpy as np
from skimage.measure import shannon_entropy


def axis_slices(size: int, grid: int) -> list[slice]:
    """Cell k along an axis of ``size`` positions holds the i with floor(i·grid/size) = k."""
    index = np.arange(size) * grid // size
    slices = []
    for k in range(grid):
        members = np.nonzero(index == k)[0]
        slices.append(slice(members[0], members[-1] + 1) if members.size else slice(0, 0))
    return slices


def cell_entropies(volume: np.ndarray, grid: int) -> np.ndarray:
    """(grid³,) skimage entropies of the cells of a (C, D, H, W) volume, all channels together."""
    sd, sh, sw = (axis_slices(n, grid) for n in volume.shape[1:])
    return np.array([shannon_entropy(volume[:, a, b, c]) for a in sd for b in sh for c in sw])


def prototype_cell_entropies(volume: np.ndarray, grids) -> list[np.ndarray]:
    """Cell entropies as the prototype ran: the grids in order, one working array overwritten in the
    loop. Each grid's cell array, (cells, C, voxels per cell) with cells and their voxels in (z, y, x)
    C order, is flattened and re-read in C order as the (C, D, H, W) volume of the next grid."""
    entropies, work = [], volume
    for g in grids:
        sd, sh, sw = (axis_slices(n, g) for n in volume.shape[1:])
        cells = np.stack([work[:, a, b, c].reshape(volume.shape[0], -1) for a in sd for b in sh for c in sw])
        entropies.append(np.array([shannon_entropy(cell) for cell in cells]))
        work = cells.reshape(volume.shape)
    return entropies


def plan(volume: np.ndarray, grids=(4, 8, 16), base_ratio=0.5, scale=0.3, dynamic=True, cells="spatial"):
    """(grid, entropies, ratios) of one (C, D, H, W) volume, as the method states them (``cells``
    "spatial") or as the prototype ran ("prototype")."""
    if cells == "prototype":
        entropies = prototype_cell_entropies(volume, grids)
    else:
        entropies = [cell_entropies(volume, g) for g in grids]
    if all(not h.any() for h in entropies):  # constant crop: smallest grid, base ratio
        k = int(np.argmin(grids))
        return grids[k], entropies[k], np.full(grids[k] ** 3, base_ratio)
    scores = []
    for g, h in zip(grids, entropies):
        scores.append(g**-0.1 * np.std(h) / np.mean(h) if h.mean() > 0 else -1.0)
    k = int(np.argmax(scores))
    g, h = grids[k], entropies[k]
    if not dynamic:
        return g, h, np.full(g**3, base_ratio)
    rounded = np.round(h, 9)
    distinct = np.unique(rounded)
    levels = np.linspace(1 - scale, 1 + scale, len(distinct))
    ratios = np.array([base_ratio * levels[np.searchsorted(distinct, v)] for v in rounded])
    return g, h, ratios


def token_mask(ratios: np.ndarray, grid: int, token_shape, rng: np.random.Generator, ratio_scale=1.0):
    """A (nd, nh, nw) mask with floor(n·min(r·ratio_scale, 1)) random tokens masked in each cell."""
    mask = np.zeros(token_shape, dtype=bool)
    sd, sh, sw = (axis_slices(n, grid) for n in token_shape)
    k = 0
    for a in sd:
        for b in sh:
            for c in sw:
                cell = mask[a, b, c]
                n = cell.size
                count = int(np.floor(n * min(ratios[k] * ratio_scale, 1.0)))
                flat = np.zeros(n, dtype=bool)
                flat[rng.choice(n, count, replace=False)] = True
                mask[a, b, c] = flat.reshape(cell.shape)
                k += 1
    return mask


def cell_counts(mask: np.ndarray, grid: int) -> np.ndarray:
    """(grid³,) number of True tokens in each cell of a (nd, nh, nw) mask."""
    sd, sh, sw = (axis_slices(n, grid) for n in mask.shape)
    return np.array([int(mask[a, b, c].sum()) for a in sd for b in sh for c in sw])
