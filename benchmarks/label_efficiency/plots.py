"""The plots: Dice against the number of labelled subjects, and a slice of each test set's first
subject with each arm's prediction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from gmim.atomic import atomic_path

from .presets import CONTEXT_CLASS, CONTEXT_NAME, TASK_LABELS, TEST_SETS
from .results import BASELINE
from .runs import Benchmark


def plot_dice(path: Path, table: dict[str, Any], labels: Sequence[int], context: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"dice": "mean Dice (all classes)", **({CONTEXT_CLASS: f"Dice of {CONTEXT_NAME}"} if context else {})}
    figure, axes = plt.subplots(len(rows), len(TEST_SETS), figsize=(6 * len(TEST_SETS), 4 * len(rows)), squeeze=False)
    for axes_row, (metric, ylabel) in zip(axes, rows.items(), strict=True):
        for ax, test_set in zip(axes_row, TEST_SETS, strict=True):
            for index, (arm, row) in enumerate(table[test_set].items()):
                shift = 1 + 0.015 * (index - len(table[test_set]) / 2)  # arms side by side, error bars apart
                ax.errorbar(
                    [k * shift for k in labels],
                    [row[k][metric] for k in labels],
                    yerr=[row[k][f"{metric}_std"] for k in labels],
                    marker="o",
                    capsize=3,
                    label=arm,
                    linestyle="--" if arm == BASELINE else "-",
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(labels), [str(k) for k in labels])
            ax.set_xlabel("labelled subjects")
            ax.set_ylabel(ylabel)
            ax.set_title(f"test set {test_set}")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def _axial(path: Path, index: int | None = None) -> tuple[np.ndarray, float, int]:
    """An axial slice of a volume in RAS orientation (for a label map, when ``index`` is None, the
    slice with the most of the context class, or the middle of the labels' extent), with its aspect
    ratio (voxels need not be square) and the slice index."""
    image = nib.as_closest_canonical(nib.load(path))
    volume = np.asarray(image.dataobj)
    if index is None:
        context = (volume == TASK_LABELS[CONTEXT_CLASS]).sum(axis=(0, 1))
        occupied = np.nonzero(volume.any(axis=(0, 1)))[0]
        index = int(np.argmax(context)) if context.any() else int(occupied.mean()) if len(occupied) else volume.shape[2] // 2
    zooms = image.header.get_zooms()
    return np.rot90(volume[:, :, index]), float(zooms[1] / zooms[0]), index


def plot_examples(path: Path, benchmark: Benchmark, arms: Sequence[str], labels: int, seed: int) -> None:
    """Per test set, its first subject: image, reference and each arm's prediction (fewest labels, first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    tissue = ListedColormap(["tab:blue", "gold", "tab:red"])  # grey matter, white matter, deep CSF
    columns = ["image", "reference", *arms]
    figure, axes = plt.subplots(len(TEST_SETS), len(columns), figsize=(2.2 * len(columns), 2.4 * len(TEST_SETS)), squeeze=False)
    for row, test_set in zip(axes, TEST_SETS, strict=True):
        datalist = benchmark.datalists[test_set]
        entry = json.loads(datalist.read_text())["training"][0]
        _, _, index = _axial(datalist.parent / entry["label"])
        image, aspect, _ = _axial(datalist.parent / entry["image"], index)
        name = entry["image"].removesuffix(".nii.gz")
        for ax, column in zip(row, columns, strict=True):
            ax.imshow(image, cmap="gray", aspect=aspect)
            if column != "image":
                source = (
                    datalist.parent / entry["label"]
                    if column == "reference"
                    else benchmark.run_folder(column, labels, seed) / f"pred_{test_set}" / f"{name}.nii.gz"
                )
                if source.is_file():
                    ax.imshow(
                        np.ma.masked_equal(_axial(source, index)[0], 0),
                        cmap=tissue,
                        vmin=1,
                        vmax=3,
                        alpha=0.6,
                        interpolation="nearest",
                        aspect=aspect,
                    )
            ax.set_title(column if test_set == next(iter(TEST_SETS)) else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(test_set)
    figure.suptitle(
        f"{labels} labelled subject(s), seed {seed}: grey matter (blue), white matter (gold)"
        + (", deep CSF (red)" if benchmark.preset.context_class else ""),
        fontsize=10,
    )
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
