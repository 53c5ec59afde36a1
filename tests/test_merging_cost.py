"""The patch-merging cost benchmark's pure helpers (its runs are the library's, tested elsewhere)."""

from __future__ import annotations

import pytest
import torch

import benchmarks.merging_cost as bench
from gmim.config import dump_config, load_config
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.inference import find_run


def test_relative_difference_per_stage():
    right = [torch.ones(2, 3), torch.full((4,), 2.0)]
    wrong = [torch.ones(2, 3), torch.tensor([2.0, 2.0, 2.0, 0.0])]
    assert bench.relative_difference(wrong, right) == pytest.approx([0.0, 0.5])  # ‖(0,0,0,−2)‖ / ‖(2,2,2,2)‖


def test_read_with_changes_only_the_merging_and_keeps_the_weights(tmp_path):
    run = tmp_path / "labels2_seed0"
    run.mkdir()
    config = load_config(FinetuneConfig, None, ["model.patch_merging=monai-legacy", "task.labels={background: 0, grey_matter: 1}"])
    dump_config(config, run / "config.yaml")
    (run / "best.pt").write_bytes(b"weights")
    folder = bench.read_with(run, "monai")
    assert bench.read_with(run, "monai") == folder  # again: the same folder, no error
    read, original = load_config(FinetuneConfig, folder / "config.yaml"), load_config(FinetuneConfig, run / "config.yaml")
    assert (read.model.patch_merging, original.model.patch_merging) == ("monai", "monai-legacy")
    read.model.patch_merging = "monai-legacy"
    assert read == original  # nothing else changed
    config_path, weights = find_run(folder)  # a run folder that gmim predict takes
    assert config_path == folder / "config.yaml" and weights.read_bytes() == b"weights"
    assert bench.other("legacy") == "monai" and bench.other("monai") == "legacy"
