"""The vectorised planner against the loop reference, on real scans (docs/method.md §2, §3)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import benchmarks.loop_masking as loop
from conftest import crop
from gmim.pretraining.entropy import cell_entropy
from gmim.pretraining.masking import APPLICATION_POINTS, GridMaskPlanner, voxel_mask

CROP_SIZES = [(32, 32, 32), (64, 64, 64), (96, 96, 96), (128, 128, 128), (128, 128, 64)]


COUNTINGS = ["table", "sort"]
DATA_DEPENDENT = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


_LOOP_PLANS: dict[tuple, tuple] = {}


def loop_plan(volume: np.ndarray, *settings) -> tuple:
    """``loop.plan(volume, *settings)``, worked out once per crop and settings in a test process: the
    loop reference is most of these tests' time, and both countings are held to the same plan."""
    key = (hashlib.sha256(volume.tobytes()).hexdigest(), volume.shape, volume.dtype.str, settings)
    if key not in _LOOP_PLANS:
        _LOOP_PLANS[key] = loop.plan(volume, *settings)
    return _LOOP_PLANS[key]


def assert_plan_matches_loop(x: torch.Tensor, planner: GridMaskPlanner, generator_seed: int = 0) -> None:
    """Same grid, entropies, ratios as the loop reference; exact per-cell masked counts at every point."""
    plan = planner.plan(x)
    generator = torch.Generator().manual_seed(generator_seed)
    for b in range(x.shape[0]):
        grid, entropy, ratio = loop_plan(x[b].numpy(), planner.grids, planner.base_ratio, planner.scale, planner.dynamic, planner.cells)
        chosen_grid, chosen_entropy, chosen_ratio = plan.chosen(b)
        assert chosen_grid == grid and int(plan.grid[b]) == grid
        np.testing.assert_allclose(chosen_entropy.numpy(), entropy, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(chosen_ratio.numpy(), ratio)
    for index, (_, stride) in enumerate(APPLICATION_POINTS):
        token_shape = tuple(n // stride for n in x.shape[2:])
        scale = 0.5**index
        masks = plan.token_mask(token_shape, ratio_scale=scale, generator=generator).numpy()
        for b in range(x.shape[0]):
            grid, _, ratio = plan.chosen(b)
            ones = np.ones(token_shape, dtype=bool)
            tokens = loop.cell_counts(ones, grid)
            expected = np.floor(tokens * np.minimum(ratio.numpy() * scale, 1.0)).astype(int)
            np.testing.assert_array_equal(loop.cell_counts(masks[b], grid), expected)


@pytest.mark.parametrize("counting", COUNTINGS)
@pytest.mark.parametrize("size", CROP_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_planner_matches_loop_on_t1_crops(mni_t1, size, counting):
    starts = [(30, 40, 20), (60, 80, 50)]
    x = torch.stack([crop(mni_t1, s, size) for s in starts])[:, None]
    assert_plan_matches_loop(x, GridMaskPlanner(counting=counting))


@pytest.mark.parametrize("counting", COUNTINGS)
def test_planner_matches_loop_on_itk_t1(itk_t1, counting):
    x = torch.stack([crop(itk_t1, (0, 0, 15), (128, 128, 32)), crop(itk_t1, (0, 0, 30), (128, 128, 32))])
    assert_plan_matches_loop(x[:, None], GridMaskPlanner(counting=counting))


@pytest.mark.parametrize("counting", COUNTINGS)
def test_planner_matches_loop_multichannel(mni, mni_t1, counting):
    gm = np.asarray(mni["gm"].get_fdata(), dtype=np.float32)
    start, size = (50, 60, 40), (64, 64, 64)
    x = torch.stack([crop(mni_t1, start, size), crop(gm, start, size)])[None]
    assert_plan_matches_loop(x, GridMaskPlanner(grids=(8, 4, 16), base_ratio=0.6, scale=0.2, counting=counting))


@pytest.mark.parametrize("counting", COUNTINGS)
def test_planner_matches_loop_on_grids_that_do_not_divide_the_crop(mni, mni_t1, counting):
    """Cells of unequal size (the sort count pads their rows); a grid finer than the a3 token grid."""
    gm = np.asarray(mni["gm"].get_fdata(), dtype=np.float32)
    start, size = (50, 60, 40), (96, 64, 32)
    x = torch.stack([crop(mni_t1, start, size), crop(gm, start, size)])[:, None]
    assert_plan_matches_loop(x, GridMaskPlanner(grids=(3, 5, 12), counting=counting))


@pytest.mark.parametrize("counting", COUNTINGS)
@pytest.mark.slow
def test_prototype_cells_match_the_as_run_reference(mni, mni_t1, itk_t1, counting):
    """cells="prototype": grids after the first read the previous grid's cell array as a volume.
    On real crops this picks grid 4 where spatial cells pick a finer grid, as the prototype did."""
    gm = np.asarray(mni["gm"].get_fdata(), dtype=np.float32)
    x = torch.stack([crop(mni_t1, (30, 40, 20), (64, 64, 64)), crop(gm, (60, 80, 50), (64, 64, 64))])[:, None]
    as_run = GridMaskPlanner(cells="prototype", counting=counting)
    assert_plan_matches_loop(x, as_run)
    assert_plan_matches_loop(
        torch.stack([crop(mni_t1, (50, 60, 40), (64, 64, 64)), crop(gm, (50, 60, 40), (64, 64, 64))])[None],
        GridMaskPlanner(grids=(8, 4, 16), cells="prototype", counting=counting),
    )
    spatial = GridMaskPlanner(counting=counting).plan(x)
    prototype = as_run.plan(x)
    np.testing.assert_array_equal(prototype.entropies[0].numpy(), spatial.entropies[0].numpy())  # first grid: the crop
    assert prototype.grid.tolist() == [4, 4] and spatial.grid.tolist() != [4, 4]
    itk = torch.stack([crop(itk_t1, (0, 0, 15), (128, 128, 32))])[:, None]
    assert_plan_matches_loop(itk, GridMaskPlanner(grids=(4, 8, 16), cells="prototype", counting=counting))


def test_prototype_cells_need_grids_that_divide_the_crop():
    with pytest.raises(ValueError, match="divide the crop"):
        GridMaskPlanner(grids=(4, 8, 12), cells="prototype").plan(torch.rand(1, 1, 64, 64, 32))


class DataDependentOps(TorchDispatchMode):
    """Records every op whose result depends on tensor values: on a GPU each waits for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(tag in func.tags for tag in DATA_DEPENDENT):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("grids", [(4, 8, 16), (3, 5, 12)])
def test_sort_count_plans_and_masks_without_reading_values_back(mni_t1, grids):
    """The counting a GPU takes: no .item(), nonzero, unique, bincount or boolean indexing anywhere in
    planning and masking, with one generator per batch or per sample. A control shows the counter
    sees such ops: the table count (a CPU's) reads the number of distinct values back."""
    x = torch.stack([crop(mni_t1, (30, 40, 20), (64, 64, 64)), crop(mni_t1, (60, 80, 50), (64, 64, 64))])[:, None]
    coins = torch.Generator().manual_seed(0)
    with DataDependentOps() as seen:
        plan = GridMaskPlanner(grids, counting="sort").plan(x)
        plan.hierarchical_masks(x.shape[2:], drop_probability=1.0, generator=torch.Generator(), coin_generator=coins)
        plan.hierarchical_masks(x.shape[2:], sample_generators=[torch.Generator(), torch.Generator()], coin_generator=coins)
        _ = plan.grid  # reading the chosen grids waits for nothing either
    assert seen.ops == []
    with DataDependentOps() as control:
        GridMaskPlanner(grids, counting="table").plan(x)
    assert "aten._local_scalar_dense.default" in control.ops


def test_planner_without_dynamic_ratios(mni_t1):
    x = crop(mni_t1, (40, 50, 30), (64, 64, 64))[None, None]
    plan = GridMaskPlanner(dynamic=False).plan(x)
    assert all(torch.all(r == 0.5) for r in plan.ratios)
    assert_plan_matches_loop(x, GridMaskPlanner(dynamic=False))


def test_constant_crop_falls_back_to_smallest_grid_at_base_ratio(mni_t1):
    x = torch.stack([torch.full((64, 64, 64), 0.25), crop(mni_t1, (40, 50, 30), (64, 64, 64))])[:, None]
    planner = GridMaskPlanner(grids=(8, 4, 16))
    plan = planner.plan(x)
    grid, entropy, ratio = plan.chosen(0)
    assert grid == 4 and torch.all(entropy == 0) and torch.all(ratio == 0.5)
    assert torch.isnan(plan.score[0]).all() and torch.isfinite(plan.score[1]).all()
    mask = plan.token_mask((32, 32, 32), generator=torch.Generator().manual_seed(1))
    assert int(mask[0].sum()) == 64 * math.floor(512 * 0.5)
    assert_plan_matches_loop(x, planner)


@pytest.mark.parametrize("counting", COUNTINGS)
def test_entropy_equals_skimage_for_continuous_values(mni_t1, counting):
    """Continuous values (every voxel distinct; the table count sorts them instead); still exact."""
    generator = torch.Generator().manual_seed(0)
    x = crop(mni_t1, (40, 50, 30), (32, 32, 32))[None, None] + torch.rand(1, 1, 32, 32, 32, generator=generator)
    x[0, 0, :4] = -0.0  # a -0.0/+0.0 mix in one cell counts as one value, as numpy sees it
    x[0, 0, :2, :2] = 0.0
    for grid in (4, 8, 16):
        expected = loop.cell_entropies(x[0].numpy(), grid)
        np.testing.assert_allclose(cell_entropy(x, grid, counting)[0].numpy(), expected, atol=1e-9)


def test_token_mask_is_deterministic_and_varies_with_seed(mni_t1):
    x = crop(mni_t1, (40, 50, 30), (64, 64, 64))[None, None]
    plan = GridMaskPlanner().plan(x)
    first = plan.token_mask((32, 32, 32), generator=torch.Generator().manual_seed(3))
    again = plan.token_mask((32, 32, 32), generator=torch.Generator().manual_seed(3))
    other = plan.token_mask((32, 32, 32), generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.dtype == torch.bool and first.shape == (1, 32, 32, 32)


@pytest.mark.slow
def test_hierarchical_masks_frequency_and_ratios(mni_t1):
    x = crop(mni_t1, (40, 50, 30), (64, 64, 64))[None, None]
    plan = GridMaskPlanner().plan(x)
    grid, _, ratio = plan.chosen(0)
    generator = torch.Generator().manual_seed(0)
    draws = 300
    applied = np.zeros(4)
    for _ in range(draws):
        masks = plan.hierarchical_masks((64, 64, 64), drop_probability=0.3, decay=0.5, generator=generator)
        assert len(masks) == 4 and masks[0] is not None
        for index, ((_, stride), mask) in enumerate(zip(APPLICATION_POINTS, masks)):
            if mask is None:
                continue
            applied[index] += 1
            assert mask.shape == (1, 64 // stride, 64 // stride, 64 // stride)
            tokens = loop.cell_counts(np.ones(mask.shape[1:], dtype=bool), grid)
            expected = np.floor(tokens * np.minimum(ratio.numpy() * 0.5**index, 1.0))
            np.testing.assert_array_equal(loop.cell_counts(mask[0].numpy(), grid), expected)
    frequency = applied / draws
    assert frequency[0] == 1.0
    sigma = math.sqrt(0.3 * 0.7 / draws)
    assert np.all(np.abs(frequency[1:] - 0.3) < 4 * sigma), frequency


def test_hierarchy_disabled_by_zero_decay_and_always_on_with_probability_one(mni_t1):
    x = crop(mni_t1, (40, 50, 30), (32, 32, 32))[None, None]
    plan = GridMaskPlanner().plan(x)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        masks = plan.hierarchical_masks((32, 32, 32), drop_probability=1.0, decay=0.0, generator=generator)
        assert masks[0] is not None and masks[1:] == [None, None, None]
    masks = plan.hierarchical_masks((32, 32, 32), drop_probability=1.0, decay=0.5, generator=generator)
    assert all(m is not None for m in masks)


def test_voxel_mask_follows_tokens():
    tokens = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    tokens[0, 1, 0, 1] = True
    voxels = voxel_mask(tokens)
    assert voxels.shape == (1, 1, 4, 4, 4)
    assert voxels[0, 0, 2:4, 0:2, 2:4].all() and int(voxels.sum()) == 8


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(1, 32, 32, 32), "shape"),
        (torch.zeros(1, 1, 32, 32, 48), "divisible by 32"),
        (torch.zeros(1, 1, 32, 32, 32, dtype=torch.int16), "floating-point"),
    ],
)
def test_bad_input_is_refused(x, message):
    with pytest.raises(ValueError, match=message):
        GridMaskPlanner().plan(x)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"base_ratio": 0.0}, "base_ratio"),
        ({"base_ratio": 1.5}, "base_ratio"),
        ({"scale": 1.0}, "scale"),
        ({"scale": -0.1}, "scale"),
        ({"grids": ()}, "grids"),
        ({"grids": (4, 0)}, "grids"),
        ({"grids": (4.0,)}, "grids"),
        ({"counting": "hash"}, "counting"),
        ({"cells": "voxels"}, "cells"),
    ],
)
def test_bad_planner_options_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GridMaskPlanner(**kwargs)


def test_bad_mask_options_are_refused(mni_t1):
    plan = GridMaskPlanner().plan(crop(mni_t1, (40, 50, 30), (32, 32, 32))[None, None])
    with pytest.raises(ValueError, match="drop_probability"):
        plan.hierarchical_masks((32, 32, 32), drop_probability=1.2)
    with pytest.raises(ValueError, match="decay"):
        plan.hierarchical_masks((32, 32, 32), decay=-0.5)
    with pytest.raises(ValueError, match="ratio_scale"):
        plan.token_mask((16, 16, 16), ratio_scale=float("nan"))
    with pytest.raises(ValueError, match="grid 64"):
        GridMaskPlanner(grids=(4, 64)).plan(torch.rand(1, 1, 32, 32, 32))


def test_sample_generators_make_masks_independent_of_the_batch(mni_t1):
    x = torch.stack([crop(mni_t1, (40, 50, 30), (64, 64, 64)), crop(mni_t1, (70, 60, 40), (64, 64, 64))])[:, None]
    plan = GridMaskPlanner().plan(x)
    seeds = (11, 12)

    def masks_of(plan, seeds):
        return plan.hierarchical_masks(
            (64, 64, 64),
            drop_probability=1.0,
            generator=torch.Generator().manual_seed(0),
            sample_generators=[torch.Generator().manual_seed(s) for s in seeds],
        )

    together = masks_of(plan, seeds)
    alone = masks_of(GridMaskPlanner().plan(x[1:]), seeds[1:])
    for both, single in zip(together, alone):
        assert torch.equal(both[1:], single)
    with pytest.raises(ValueError, match="sample_generators"):
        masks_of(plan, seeds[:1])
