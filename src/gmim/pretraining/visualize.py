"""Pictures of a view, its masks at each application point and its reconstruction."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from gmim.atomic import atomic_path  # noqa: E402
from gmim.pretraining.health import COLLAPSE_FRACTION  # noqa: E402
from gmim.pretraining.masking import APPLICATION_POINTS  # noqa: E402


def _slice_of(mask: Tensor, stride: int, depth_index: int) -> np.ndarray:
    """The voxel-resolution (H, W) slice at ``depth_index`` of a (d, h, w) token mask."""
    tokens = mask[depth_index // stride].float()
    return tokens.repeat_interleave(stride, 0).repeat_interleave(stride, 1).cpu().numpy()


def save_masking_figure(
    path: str | os.PathLike[str],
    view: Tensor,
    masks: Sequence[Tensor | None],
    grid: int,
    reconstruction: Tensor | None = None,
    title: str = "",
) -> None:
    """Write a PNG: the middle slice of ``view`` (C, D, H, W, first channel shown), each point's mask
    over it (grey where not applied), the grid's cell lines and, if given, the reconstruction twice:
    as the decoder gives it, and in the voxels that a0 masked with the view's own voxels elsewhere
    (what the loss scores, the way masked-image-modelling papers show it)."""
    image = view[0].detach().float().cpu()
    depth = image.shape[0] // 2
    slice_ = image[depth].numpy()
    panels = 1 + len(masks) + 2 * (reconstruction is not None)
    figure, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 3.0))
    low, high = np.percentile(slice_, [1, 99])
    show = dict(cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    axes[0].imshow(slice_, **show)
    axes[0].set_title(f"view, grid {grid}³", fontsize=9)
    for axis, (name, stride), mask in zip(axes[1:], APPLICATION_POINTS, masks):
        axis.imshow(slice_, **show)
        if mask is None:
            axis.set_title(f"{name}\nnot applied", fontsize=8)
        else:
            shown = _slice_of(mask, stride, depth)
            axis.imshow(np.ma.masked_where(shown == 0, shown), cmap="autumn", alpha=0.6, vmin=0, vmax=1)
            ratio = float(mask.float().mean())
            axis.set_title(f"{name}\n{ratio:.0%} of tokens masked", fontsize=8)
        rows = np.arange(1, grid) * slice_.shape[0] / grid - 0.5
        cols = np.arange(1, grid) * slice_.shape[1] / grid - 0.5
        axis.hlines(rows, -0.5, slice_.shape[1] - 0.5, colors="cyan", linewidths=0.3)
        axis.vlines(cols, -0.5, slice_.shape[0] - 0.5, colors="cyan", linewidths=0.3)
    if reconstruction is not None:
        predicted = reconstruction[0, depth].detach().float().cpu().numpy()
        axes[-2].imshow(predicted, **show)
        axes[-2].set_title("reconstruction", fontsize=9)
        masked = _slice_of(masks[0], APPLICATION_POINTS[0][1], depth) > 0 if masks and masks[0] is not None else np.zeros_like(slice_, bool)
        axes[-1].imshow(np.where(masked, predicted, slice_), **show)
        axes[-1].set_title(f"masked {masked.mean():.0%} filled in", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def save_loss_curve(path: str | os.PathLike[str], records: Sequence[Mapping[str, float]]) -> None:
    """Write a PNG of the training (and, where logged, validation) loss terms against the step, and
    beside them the representation health: each encoder stage's token variation as a fraction of
    its initial value (:mod:`gmim.pretraining.health`)."""
    panels = ("loss", "cross_correlation", "reconstruction")
    health = [r for r in records if "val/health/variation0" in r]
    figure, axes = plt.subplots(1, len(panels) + bool(health), figsize=(4.0 * (len(panels) + bool(health)), 3.0))
    for axis, term in zip(axes, panels):
        for split, style in (("train", "-"), ("val", "o-")):
            points = [(r["step"], r[f"{split}/{term}"]) for r in records if f"{split}/{term}" in r]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, label=split, markersize=3, linewidth=1)
        axis.set_title(term.replace("_", " "), fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.set_yscale("log")
        axis.legend(fontsize=7)
    if health:
        axis = axes[-1]
        for stage in range(5):
            initial = max(health[0][f"val/health/variation{stage}"], 1e-12)
            axis.plot(
                [r["step"] for r in health],
                [r[f"val/health/variation{stage}"] / initial for r in health],
                "o-",
                label=f"stage {stage}",
                markersize=3,
                linewidth=1,
            )
        axis.axhline(COLLAPSE_FRACTION, color="red", linestyle=":", linewidth=1, label="collapsed below")
        axis.set_title("token variation / initial", fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.set_ylim(
            0,
            max(
                1.2, *(r[f"val/health/variation{s}"] / max(health[0][f"val/health/variation{s}"], 1e-12) for r in health for s in range(5))
            ),
        )
        axis.legend(fontsize=6)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
