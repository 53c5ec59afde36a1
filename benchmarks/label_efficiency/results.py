"""The numbers: runs' records written as JSON, their scores gathered per test set, arm and label
count over seeds, and each arm's health and timing read back from its run folders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmim.atomic import atomic_path

from .presets import CONTEXT_CLASS, TEST_SETS


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, written atomically: an interrupted run leaves no half record for a
    rerun to take as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _stats(values: Sequence[float]) -> tuple[float, float]:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))


#: The arm the others are compared with, seed by seed.
BASELINE = "scratch"


#: What the tables show of a run's scores on a test set: its mean Dice and HD95 over test subjects
#: and classes, and the Dice of the class that needs context.
METRICS = {
    "dice": lambda scores: scores["mean_dice"],
    "hd95": lambda scores: scores["mean_hd95"],
    CONTEXT_CLASS: lambda scores: scores.get("class_dice", {}).get(CONTEXT_CLASS, float("nan")),
}
#: The metrics shown with their gain over :data:`BASELINE`.
GAINS = ("dice", CONTEXT_CLASS)


def aggregate(runs: list[dict[str, Any]], arms: Sequence[str], labels: Sequence[int]) -> dict[str, Any]:
    """Per test set, arm and label count: mean and std over seeds of each of :data:`METRICS`, and of
    the gain over :data:`BASELINE` with the same seed (so the same labelled subjects)."""
    table: dict[str, Any] = {}
    for test_set in TEST_SETS:
        table[test_set] = {}
        for arm in arms:
            table[test_set][arm] = {}
            for k in labels:
                chosen = {r["seed"]: r["test"][test_set] for r in runs if r["arm"] == arm and r["labels"] == k}
                baseline = {r["seed"]: r["test"][test_set] for r in runs if r["arm"] == BASELINE and r["labels"] == k}
                cell: dict[str, float] = {"seeds": len(chosen)}
                for metric, value in METRICS.items():
                    cell[metric], cell[f"{metric}_std"] = _stats([value(c) for c in chosen.values()])
                    if metric in GAINS:
                        cell[f"{metric}_gain"], cell[f"{metric}_gain_std"] = _stats(
                            [value(c) - value(baseline[seed]) for seed, c in chosen.items() if seed in baseline]
                        )
                table[test_set][arm][k] = cell
    return table


def health_history(out: Path, arms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per pre-trained arm, its health measurements as its run recorded them (``metrics.jsonl``):
    step, each stage's token variation, the final stage's effective rank, and for GMIM's arms C's
    rank and L_cc above its trivial value (None for a method without them)."""
    from gmim.engine.metrics import read_metrics

    history = {}
    for arm in arms:
        path = out / "pretrain" / arm / "metrics.jsonl"
        if path.is_file():
            history[arm] = [
                {
                    "step": r["step"],
                    "variation": [r[f"val/health/variation{i}"] for i in range(5)],
                    "effective_rank": r["val/health/effective_rank4"],
                    # GMIM's cross-correlation; None for a method without it (swin-ssl)
                    "correlation_rank": r.get("val/health/correlation_rank"),
                    "cc_above_trivial": r.get("val/health/cc_above_trivial"),
                }
                for r in read_metrics(path)
                if "val/health/variation4" in r
            ]
    return history


def timings(out: Path, runs: list[dict[str, Any]], probes: list[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: minutes of everything it ran, and the time of a pre-training step, a fine-tuning step
    (not counting the probe's cheaper frozen ones) and a prediction."""
    result = {}
    for arm in arms:
        done, summary = out / "pretrain" / arm / "done.json", out / "pretrain" / arm / "summary.json"
        pre = json.loads(done.read_text()) if done.is_file() else None
        health = json.loads(summary.read_text()).get("health") if pre and summary.is_file() else None
        mine = [r for r in runs if r["arm"] == arm]
        spent = sum(r["train_seconds"] + r["score_seconds"] for r in mine + [r for r in probes if r["arm"] == arm])
        result[arm] = {
            "minutes": ((pre["seconds"] if pre else 0.0) + spent) / 60,
            "pretrain_steps": pre["steps"] if pre else None,
            "pretrain_s_per_step": pre["seconds"] / pre["steps"] if pre else None,
            "weight_change": pre.get("weight_change") if pre else None,
            "health": health,
            "finetune_s_per_step": float(np.mean([r["train_seconds"] / r["steps"] for r in mine])) if mine else None,
            "predict_s_per_case": float(np.mean([t["predict_seconds_per_case"] for r in mine for t in r["test"].values()]))
            if mine
            else None,
        }
    return result
