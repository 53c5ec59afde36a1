"""Scoring predicted label maps against references, paired by case name."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gmim.data.checks import read_grid, read_label_map, same_grid, voxel_spacing
from gmim.data.sources import case_id, discover_cases, is_image_file
from gmim.errors import InputError
from gmim.segmentation.metrics import dice_scores, hd95_scores
from gmim.segmentation.task import Task

__all__ = ["Evaluation", "evaluate", "infer_task", "pair_cases"]


@dataclass
class Evaluation:
    """Dice and HD95 per case and per scored class or region."""

    names: list[str]
    dice: dict[str, list[float]] = field(default_factory=dict)
    hd95: dict[str, list[float]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per class and overall: mean Dice, mean HD95 over the cases where it is defined, and that count."""
        if not self.dice:
            return {}
        dice = np.array(list(self.dice.values()), dtype=np.float64)
        hd95 = np.array(list(self.hd95.values()), dtype=np.float64)
        out = {}
        for index, name in enumerate([*self.names, "mean"]):
            d = dice[:, index] if name != "mean" else np.nanmean(dice, axis=1)
            h = hd95[:, index] if name != "mean" else _nanmean_rows(hd95)
            defined = h[~np.isnan(h)]
            out[name] = {
                "dice": float(np.mean(d)),
                "dice_std": float(np.std(d)),
                "hd95": float(np.mean(defined)) if len(defined) else math.nan,
                "hd95_cases": int(len(defined)),
            }
        return out


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(values)).sum(1)
    return np.where(counts > 0, np.nansum(values, 1) / np.maximum(counts, 1), np.nan)


def _unique(pairs: list[tuple[str, Path]], where: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for key, path in pairs:
        if key in out:
            raise InputError(f"{where}: two files for case {key} ({out[key]}, {path})")
        out[key] = path
    return out


def _predictions(path: Path) -> dict[str, Path]:
    """Label maps directly in a folder (``probabilities/`` beside them is not one), or a datalist's images."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise InputError(f"{path}: no label maps in this folder")
        return _unique([(case_id(p), p) for p in files], path)
    return _unique([(c.id, c.images[0]) for c in discover_cases([path])], path)


def _references(path: Path) -> dict[str, Path]:
    cases = discover_cases([path])
    if any(c.label is not None for c in cases):  # a datalist or nnU-Net dataset: its labels
        return _unique([(c.id, c.label) for c in cases if c.label is not None], path)
    return _unique([(c.id, c.images[0]) for c in cases if len(c.images) == 1], path)  # a folder of label maps


def pair_cases(predictions: Path, references: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """(id, prediction, reference) pairs, references without a prediction, predictions without a reference."""
    preds = _predictions(predictions)
    refs = _references(references)
    pairs = [(i, preds[i], refs[i]) for i in sorted(refs) if i in preds]
    if not pairs:
        raise InputError(f"{predictions}: no prediction is named like a reference in {references} (e.g. {next(iter(refs))}.nii.gz)")
    return pairs, sorted(set(refs) - set(preds)), sorted(set(preds) - set(refs))


def infer_task(references: list[Path]) -> Task:
    """A multiclass task with the label values found in the references (when no task is given)."""
    values = sorted(set().union(*(np.unique(read_label_map(p)).tolist() for p in references)) - {0})
    if not values:
        raise InputError(f"{references[0]}: references hold no foreground; give the task with --task")
    return Task(name="labels", labels={"background": 0, **{f"label{v}": v for v in values}})


def evaluate(predictions: Path, references: Path, task: Task | None = None) -> tuple[Evaluation, list[tuple[str, Path, Path]]]:
    """Score every paired case; returns the scores and the pairs."""
    pairs, missing, unpaired = pair_cases(predictions, references)
    task = task or infer_task([r for _, _, r in pairs])
    allowed = set(task.label_values)
    result = Evaluation(list(task.scored), missing=missing, unpaired=unpaired)
    for name, pred_path, ref_path in pairs:
        pred_grid, ref_grid = read_grid(pred_path), read_grid(ref_path)
        if not same_grid(pred_grid, ref_grid):
            raise InputError(f"{pred_path}: not on the grid of its reference {ref_path} (shape {pred_grid[0]} vs {ref_grid[0]}, or affine)")
        arrays = []
        for path in (pred_path, ref_path):
            array = read_label_map(path)
            unknown = sorted(set(np.unique(array).tolist()) - allowed)
            if unknown:
                raise InputError(f"{path}: label values {unknown} are not in the task (known: {sorted(allowed)})")
            arrays.append(task.masks(torch.from_numpy(array)))
        prediction, reference = arrays
        result.dice[name] = dice_scores(prediction, reference).tolist()
        result.hd95[name] = hd95_scores(prediction, reference, voxel_spacing(ref_grid[1])).tolist()
    return result, pairs
