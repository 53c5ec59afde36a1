"""The results as markdown (``results.md``, and with ``--docs`` a section of ``docs/results.md``)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmim.atomic import atomic_path

from .presets import CONTEXT_CLASS, CONTEXT_NAME, TEST_SETS, Preset
from .results import BASELINE, GAINS
from .runs import PROBE_VOXELS


def markdown(
    table: dict[str, Any] | None,
    preset: Preset,
    command: str,
    timing: dict[str, Any],
    cases: dict[str, int],
    probe: dict[str, Any] | None = None,
    linear: dict[str, Any] | None = None,
    window: list[dict[str, Any]] | None = None,
    health: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """The results as markdown: per test set, tables of the mean Dice, the context class's Dice and
    HD95, the probe's Dice beside the fine-tuned one, the linear probe's Dice per class, how they
    were made, timings and the phases of the time window."""
    labels = preset.labels
    classes = [name for name in preset.task_labels if name != "background"]
    lines = [
        "## Label efficiency on real brain MRI",
        "",
        f"Produced by `{command}`.",
        "",
        (
            f"Task: tissue segmentation of skull-stripped T1 brains ({', '.join(c.replace('_', ' ') for c in classes)}). "
            f"Pre-training: {preset.unlabelled} unlabelled ICBM152 subjects; fine-tuning: {', '.join(map(str, labels))} of "
            f"{preset.labelled} labelled ICBM152 subjects, seeds {', '.join(map(str, preset.seeds))} (the seed draws the subjects "
            f"and the initialisation). Each cell: mean ± std over seeds of the run's mean over test subjects and the "
            f"{len(classes)} classes"
            + (f" (in the tables of {CONTEXT_NAME} alone, the class that needs context, only that class)" if preset.context_class else "")
            + "; best mean in bold. In brackets, for Dice: the gain "
            f"over `{BASELINE}` with the same seed (the same labelled subjects), mean ± std over seeds."
        ),
        "",
    ]
    shown = (
        ("dice", max, "Dice"),
        *([(CONTEXT_CLASS, max, f"Dice of {CONTEXT_NAME} alone")] if preset.context_class else []),
        ("hd95", min, "HD95 (mm)"),
    )
    for test_set, description in TEST_SETS.items():
        for metric, better, unit in shown if table else ():
            lines += [
                f"### {unit}, test set `{test_set}`: {description} ({cases[test_set]} subjects)",
                "",
                "| arm | " + " | ".join(f"{k} label{'s' * (k > 1)}" for k in labels) + " |",
                "| --- |" + " --- |" * len(labels),
            ]
            best = {
                k: better((row[k][metric] for row in table[test_set].values() if not np.isnan(row[k][metric])), default=None)
                for k in labels
            }
            for arm, row in table[test_set].items():
                cells = []
                for k in labels:
                    digits = 1 if metric == "hd95" else 3
                    text = f"{row[k][metric]:.{digits}f} ± {row[k][metric + '_std']:.{digits}f}"
                    text = f"**{text}**" if row[k][metric] == best[k] and len(table[test_set]) > 1 else text
                    if metric in GAINS and arm != BASELINE and not np.isnan(row[k][f"{metric}_gain"]):
                        text += f" ({row[k][f'{metric}_gain']:+.3f} ± {row[k][f'{metric}_gain_std']:.3f})"
                    cells.append(text)
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
            lines.append("")
    if probe:
        lines += probe_markdown(probe, table, preset.probe_labels, cases, preset.context_class)
    if linear:
        lines += linear_probe_markdown(linear, cases, preset.labelled)
    if health:
        lines += health_markdown(health)
    if table:
        lines += [
            "![Dice against the number of labelled subjects](dice_vs_labels.png)",
            "",
            "![A slice of a test subject: reference and predictions](examples.png)",
            "",
        ]
    lines += [
        "### Pre-training's reach and time (this run's machine)",
        "",
        "How far pre-training moved the encoder from its initial weights: ‖w − w₀‖ / ‖w₀‖; its representation "
        "health at the end (`gmim.pretraining.health`): the final stage's token variation as a share of the "
        "initial encoder's (under 10 %: collapsed), and L_cc on the health views beside its trivial value "
        "(GMIM's arms; – for a method without GMIM's cross-correlation).",
        "",
        "| arm | pre-training steps | encoder moved | final-stage variation | L_cc (trivial) | pre-training s/step "
        "| fine-tuning s/step | prediction s/subject |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, t in timing.items():
        pre = f"{t['pretrain_s_per_step']:.2f}" if t["pretrain_s_per_step"] is not None else "–"
        moved = f"{t['weight_change']:.1%}" if t.get("weight_change") is not None else "–"
        steps = t.get("pretrain_steps") or "–"
        health = t.get("health")
        variation = (
            (
                f"{health['final']['variation'][-1]:.3f} ({health['final_stage_relative']:.0%})"
                + (" collapsed" if health["collapsed"] else "")
            )
            if health
            else "–"
        )
        final = health["final"] if health else {}
        cc = f"{final['cross_correlation']:.1f} ({final['trivial']:.1f})" if final.get("cross_correlation") is not None else "–"
        tuned = [f"{t[k]:.2f}" if t[k] is not None else "–" for k in ("finetune_s_per_step", "predict_s_per_case")]
        lines.append(f"| {arm} | {steps} | {moved} | {variation} | {cc} | {pre} | {' | '.join(tuned)} |")
    total = sum(t["minutes"] for t in timing.values())
    lines += ["", f"All runs together: {total:.1f} min of pre-training, fine-tuning, prediction and scoring."]
    if window:
        lines += [
            "",
            "### The run's phases (this run's machine)",
            "",
            "Each phase's estimate from the preset's figures (corrected by the phases before it), its share of "
            "the time window when it started (its estimate, without a budget) and its time.",
            "",
            "| phase | estimate (s) | share (s) | took (s) |",
            "| --- | --- | --- | --- |",
        ]
        for phase in window:
            took = f"{phase['seconds']:.0f}" + (" (reused)" if phase["reused"] else " (over)" if phase["seconds"] > phase["share"] else "")
            lines.append(f"| {phase['name']} | {phase['estimate']:.0f} | {phase['share']:.0f} | {took} |")
    return "\n".join(lines) + "\n"


def health_markdown(history: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A table of each arm's final-stage token variation over its steps, as a share of the initial
    encoder's, and one of each stage's at the end."""
    steps = sorted({h["step"] for records in history.values() for h in records})
    lines = [
        "### Representation health over pre-training",
        "",
        "The final stage's token variation as a share of the initial encoder's (`gmim.pretraining.health`: "
        "under 10 % the run has collapsed), at each step it was measured; then L_cc above its trivial value "
        "(GMIM's arms) "
        "and the final stage's effective rank at the end.",
        "",
        "| arm | " + " | ".join(f"step {s}" for s in steps) + " | L_cc − trivial | effective rank |",
        "| --- |" + " --- |" * (len(steps) + 2),
    ]
    for arm, records in history.items():
        if not records:
            continue
        initial = max(records[0]["variation"][-1], 1e-12)
        by_step = {h["step"]: h for h in records}
        cells = [f"{by_step[s]['variation'][-1] / initial:.0%}" if s in by_step else "–" for s in steps]
        above = records[-1]["cc_above_trivial"]  # None: a method without GMIM's cross-correlation
        above_cell = f"{above:+.1f}" if above is not None else "–"
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {above_cell} | {records[-1]['effective_rank']:.1f} |")
    lines += [
        "",
        "Each stage's token variation at the end (as a share of the initial):",
        "",
        "| arm | " + " | ".join(f"stage {i}" for i in range(5)) + " |",
        "| --- |" + " --- |" * 5,
    ]
    for arm, records in history.items():
        if records:
            first, last = records[0]["variation"], records[-1]["variation"]
            lines.append(f"| {arm} | " + " | ".join(f"{b:.3f} ({b / max(a, 1e-12):.0%})" for a, b in zip(first, last)) + " |")
    return lines + [""]


def linear_probe_markdown(linear: dict[str, Any], cases: dict[str, int], labelled: int) -> list[str]:
    """Per test set: each arm's linear-probe Dice per class and their mean, with the mean's gain
    over :data:`BASELINE`."""
    lines = [
        "### Linear probe of frozen encoder features",
        "",
        f"Each arm's frozen Swin encoder (no decoder, no full-resolution convolution): its five hidden states "
        f"upsampled to the voxel grid, standardised, and a multinomial logistic regression fitted on "
        f"{PROBE_VOXELS:,} voxels of each of the {labelled} labelled subjects; Dice on the preprocessed grid, "
        f"mean over test subjects. `{BASELINE}`: the initial weights every arm starts from.",
        "",
    ]
    for test_set in TEST_SETS:
        names = next(iter(linear.values()))["test"][test_set]["names"]
        baseline = linear[BASELINE]["test"][test_set]["mean_dice"] if BASELINE in linear else None
        lines += [
            f"#### Linear probe, test set `{test_set}` ({cases[test_set]} subjects)",
            "",
            "| arm | " + " | ".join(n.replace("_", " ").replace("deep csf", CONTEXT_NAME) for n in names) + " | mean |",
            "| --- |" + " --- |" * (len(names) + 1),
        ]
        for arm, result in linear.items():
            scores = result["test"][test_set]
            mean = f"{scores['mean_dice']:.3f}"
            if baseline is not None and arm != BASELINE:
                mean += f" ({scores['mean_dice'] - baseline:+.3f})"
            lines.append(f"| {arm} | " + " | ".join(f"{scores['class_dice'][n]:.3f}" for n in names) + f" | {mean} |")
        lines.append("")
    return lines


def probe_markdown(
    probe: dict[str, Any], table: dict[str, Any], labels: Sequence[int], cases: dict[str, int], context: bool = False
) -> list[str]:
    """Per test set: each arm's mean Dice (and with ``context`` its context class's) with its encoder
    frozen beside the same fine-tuned (where run)."""
    metrics = {"dice": "mean", **({CONTEXT_CLASS: CONTEXT_NAME} if context else {})}
    lines = []
    for test_set in TEST_SETS:
        lines += [
            f"### Probe: Dice with the encoder frozen, test set `{test_set}` ({cases[test_set]} subjects)",
            "",
            "| arm | "
            + " | ".join(
                f"{k} label{'s' * (k > 1)}: {what}, {how}" for k in labels for what in metrics.values() for how in ("frozen", "fine-tuned")
            )
            + " |",
            "| --- |" + " --- |" * 2 * len(metrics) * len(labels),
        ]
        for arm, row in probe[test_set].items():
            cells = []
            for k in labels:
                tuned = table[test_set][arm].get(k)
                for metric in metrics:
                    cells += [
                        f"{row[k][metric]:.3f} ± {row[k][f'{metric}_std']:.3f}",
                        f"{tuned[metric]:.3f} ± {tuned[f'{metric}_std']:.3f}" if tuned else "–",
                    ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


#: Where ``--docs`` puts the tables in ``results.md``, so that other sections of that file stay.
DOCS_BEGIN, DOCS_END = "<!-- label_efficiency:begin -->", "<!-- label_efficiency:end -->"


def write_docs(docs: Path, out: Path, text: str) -> None:
    """``docs/results.md`` with this section (replacing the one between the markers) and the plots."""
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("dice_vs_labels.png", "examples.png"):
        shutil.copyfile(out / name, docs / name)
    target = docs / "results.md"
    section = f"{DOCS_BEGIN}\n{text}{DOCS_END}\n"
    existing = target.read_text() if target.is_file() else "# Results\n\n"
    if DOCS_BEGIN in existing and DOCS_END in existing:
        head, rest = existing.split(DOCS_BEGIN, 1)
        updated = head + section + rest.split(DOCS_END, 1)[1].lstrip("\n")
    else:
        updated = existing.rstrip("\n") + "\n\n" + section
    with atomic_path(target) as tmp:
        tmp.write_text(updated)
