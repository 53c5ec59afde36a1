"""PNG overlays of a prediction and its reference on three orthogonal slices, for a quick look."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gmim.atomic import atomic_path  # noqa: E402

__all__ = ["save_overlay"]


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice ``index`` across ``axis``, transposed so that the first remaining axis runs across."""
    return np.take(volume, index, axis=axis).T


def save_overlay(
    path: Path,
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float, float],
    image: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Slices through the reference's foreground centre: reference contours green, prediction red,
    on the image (or the reference in grey when no image is given), in true proportions."""
    foreground = np.argwhere(reference > 0)
    centre = foreground.mean(0).round().astype(int) if len(foreground) else np.array(reference.shape) // 2
    background = image if image is not None else reference
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, ax in enumerate(axes):
        columns, rows = (spacing[a] for a in range(3) if a != axis)
        ax.imshow(_slice(background, axis, centre[axis]), cmap="gray", origin="lower", aspect=rows / columns)
        for data, colour in ((reference, "lime"), (prediction, "red")):
            section = _slice(data, axis, centre[axis])
            for value in np.unique(section[section > 0]):
                ax.contour(section == value, levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"axis {axis}, slice {centre[axis]}")
        ax.axis("off")
    figure.suptitle(f"{title}  (reference green, prediction red)")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=80, format="png", bbox_inches="tight")
    plt.close(figure)
