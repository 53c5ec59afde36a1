"""The run's plan and time window (:mod:`benchmarks.time_window`) from the preset and the device
it runs on."""

from __future__ import annotations

from collections.abc import Sequence

from gmim.errors import InputError

from ..time_window import PARTS, Plan, Window
from .presets import Preset, check_budget


def device_kind(device: str, kinds: Sequence[str]) -> str:
    """The kind of device a run's figures are for: ``cpu``, or the first of ``kinds`` that a GPU's
    name holds (``h100`` in "NVIDIA H100 80GB HBM3"), else that name."""
    import torch

    from gmim.engine.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved.type
    name = torch.cuda.get_device_name(resolved)
    return next((kind for kind in kinds if kind.lower() in name.lower()), name)


def window_for(preset: Preset, kind: str, budget_minutes: float | None) -> tuple[Window, str]:
    """The run's time window with the preset's figures for ``kind`` (else its first kind's, said so)."""
    budget = check_budget(budget_minutes, "--budget-minutes") if budget_minutes is not None else preset.budget_minutes
    if not preset.seconds:
        if budget is not None:
            raise InputError(f"--budget-minutes {budget}: the preset has no timing figures (seconds) to plan with")
        return Window(dict.fromkeys(PARTS, 0.0), None), "no device kind: the preset has no timing figures"
    used = kind if kind in preset.seconds else next(iter(preset.seconds))
    note = used if used == kind else f"{used} (this is a {kind}, which the preset has no figures for)"
    return Window(preset.seconds[used], budget * 60 if budget is not None else None), note


def plan_for(preset: Preset, arms: Sequence[str]) -> Plan:
    """The work of a run of ``arms`` of ``preset``, as the preset gives it (a time window may shorten it)."""
    tests = preset.test_icbm152 + preset.test_itk
    return Plan(
        subjects=preset.unlabelled + preset.labelled + tests,
        test_subjects=tests,
        probe_subjects=preset.labelled + tests,
        arms=list(arms),
        pretrained=[a for a in arms if preset.all_arms[a] is not None],
        labels=list(preset.labels),
        probe_labels=list(preset.probe_labels),
        seeds=list(preset.seeds),
        pretrain_steps=preset.pretrain["train"]["steps"],
        finetune_steps=preset.finetune["train"]["steps"],
    )
