"""The label-efficiency benchmark's time window: its plan and estimate before it starts, each
phase's share of the budget, and what the remaining phases give up when a phase runs long.

A phase's estimate is a sum of counts times per-part seconds (:data:`PARTS`), the preset's figures
for the device kind it runs on. Each phase that ends corrects the figures it used by how far it was
off (measured / estimated), so later estimates are the machine's own. With a budget, each phase's
share is its estimate times the budget left over the estimate of all that remains; a phase that
takes longer than its share is reported, and when what remains no longer fits in what is left, it
is shortened (:meth:`Plan.give_up`, one unit at a time).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from gmim.errors import InputError

#: The parts a phase is made of, each a figure in seconds in a preset's ``seconds`` table.
PARTS = {
    "startup": "process start to the first phase (imports; on a fresh machine, installing carried wheels too)",
    "subject": "making one subject from a real brain (deformation, skull-stripping, writing)",
    "pretrain_start": "a pre-training's fixed cost (reading and caching its volumes, checkpoints, weight change)",
    "pretrain_step": "one pre-training step",
    "finetune_start": "a fine-tuning's fixed cost (network, data, final checkpoint, loading it to predict)",
    "finetune_step": "one fine-tuning step",
    "predict": "predicting and scoring one test subject",
    "probe_subject": "the linear probe: one subject's hidden states",
    "probe_fit": "the linear probe: one classifier's fit and scores",
    "report": "tables and plots",
}


def check_figures(seconds: dict[str, dict[str, float]], where: str) -> None:
    """Refuse a preset's ``seconds`` table unless every device kind gives every part, in seconds ≥ 0."""
    for kind, figures in seconds.items():
        missing = sorted(set(PARTS) - set(figures or {}))
        unknown = sorted(set(figures or {}) - set(PARTS))
        bad = [k for k, v in (figures or {}).items() if not isinstance(v, int | float) or v < 0]
        if missing or unknown or bad:
            what = f"misses {missing}" if missing else f"has unknown parts {unknown}" if unknown else f"{bad[0]} must be seconds >= 0"
            raise InputError(f"{where}: seconds.{kind} {what} (parts: {', '.join(PARTS)})")


@dataclasses.dataclass
class Plan:
    """The work of a run, in the order it runs: subjects, pre-trainings, the linear probe,
    fine-tuning rounds (one per seed: every arm and label count, frozen probes too), the report."""

    subjects: int
    test_subjects: int
    probe_subjects: int
    arms: list[str]
    pretrained: list[str]
    labels: list[int]
    probe_labels: list[int]
    seeds: list[int]
    pretrain_steps: int
    finetune_steps: int

    def phases(self) -> dict[str, dict[str, float]]:
        """Phase name → its parts' counts."""
        runs = len(self.arms) * (len(self.labels) + len(self.probe_labels))
        phases = {"subjects": {"subject": self.subjects}}
        for arm in self.pretrained:
            phases[f"pre-training {arm}"] = {"pretrain_start": 1, "pretrain_step": self.pretrain_steps}
        phases["linear probe"] = {"probe_subject": len(self.arms) * self.probe_subjects, "probe_fit": len(self.arms)}
        for seed in self.seeds:
            phases[f"fine-tuning seed {seed}"] = {
                "finetune_start": runs,
                "finetune_step": runs * self.finetune_steps,
                "predict": runs * self.test_subjects,
            }
        phases["report"] = {"report": 1}
        return phases

    def describe(self) -> list[str]:
        runs = len(self.arms) * len(self.labels)
        frozen = len(self.arms) * len(self.probe_labels)
        return [
            f"subjects: {self.subjects} made from two real brains, {self.test_subjects} of them test subjects",
            f"pre-training: {', '.join(self.pretrained) or 'none'}, {self.pretrain_steps} steps each",
            f"linear probe: {len(self.arms)} frozen encoders, {self.probe_subjects} subjects' hidden states each",
            (
                f"fine-tuning: {len(self.seeds)} round(s), seeds {', '.join(map(str, self.seeds))}; each {runs} runs "
                f"({len(self.arms)} arms × labels {', '.join(map(str, self.labels))})"
                + (f" and {frozen} with the encoder frozen" if frozen else "")
                + f", {self.finetune_steps} steps, then {self.test_subjects} test subjects predicted"
            )
            if self.seeds
            else "fine-tuning: none",
        ]

    def give_up(self, done: Sequence[str]) -> bool:
        """One unit less of the phases not in ``done``: the last fine-tuning round to come (every arm
        keeps the same runs; the first round stays), else a step of the fine-tuning rounds to come,
        else a step of the pre-trainings to come (those arms then differ from the others; each
        pre-training records its steps). False when nothing more can go."""
        rounds = [s for s in self.seeds[1:] if f"fine-tuning seed {s}" not in done]
        if rounds:
            self.seeds.remove(rounds[-1])
        elif self.finetune_steps > 1 and any(f"fine-tuning seed {s}" not in done for s in self.seeds):
            self.finetune_steps -= 1
        elif self.pretrain_steps > 1 and any(f"pre-training {a}" not in done for a in self.pretrained):
            self.pretrain_steps -= 1
        else:
            return False
        return True


@dataclasses.dataclass
class Phase:
    """One phase as it ran: its estimate and share when it started, its seconds, whether it reused
    earlier work (then its seconds say nothing of the machine)."""

    name: str
    estimate: float
    share: float
    seconds: float = 0.0
    reused: bool = False

    @property
    def over(self) -> bool:
        return not self.reused and self.seconds > self.share


class Window:
    """A run's clock against its budget in seconds (None: phases are measured and reported, never
    shortened), with the preset's per-part ``figures`` for this device kind."""

    def __init__(self, figures: dict[str, float], budget: float | None) -> None:
        self.figures = figures
        self.budget = budget
        #: Measured / estimated, per part, from the phases that used it.
        self.factor: dict[str, float] = {}
        self.phases: list[Phase] = []
        self.start = time.perf_counter() - figures["startup"]  # the start-up is spent before the first phase

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def done(self) -> list[str]:
        return [phase.name for phase in self.phases]

    def seconds(self, counts: dict[str, float]) -> float:
        return sum(n * self.figures[part] * self.factor.get(part, 1.0) for part, n in counts.items())

    def remaining(self, plan: Plan) -> dict[str, float]:
        """Each phase not yet run, with its estimate in seconds."""
        return {name: self.seconds(counts) for name, counts in plan.phases().items() if name not in self.done}

    def describe(self, plan: Plan, kind: str) -> str:
        """The plan with each phase's estimate, the total and the budget."""
        remaining = self.remaining(plan)
        total = self.figures["startup"] + sum(remaining.values())
        lines = [f"plan, estimated from the preset's figures for {kind}:", f"  {'start-up':<24} {self.figures['startup']:7.0f} s"]
        lines += [f"  {name:<24} {seconds:7.0f} s" for name, seconds in remaining.items()]
        lines += [f"  {line}" for line in plan.describe()]
        budget = f" of a budget of {self.budget / 60:.1f} min" if self.budget is not None else " (no budget: nothing is shortened)"
        lines.append(f"estimate: {total / 60:.1f} min{budget}")
        return "\n".join(lines)

    @contextmanager
    def phase(self, name: str, plan: Plan) -> Iterator[Phase]:
        """Time the phase ``name`` of ``plan``; after it, correct the figures it used and, with a
        budget, report an over-run and shorten what remains so that it fits in what is left."""
        remaining = self.remaining(plan)
        estimate, counts = remaining[name], plan.phases()[name]
        share = estimate
        if self.budget is not None and sum(remaining.values()) > 0:
            share = estimate * max(self.budget - self.elapsed(), 0.0) / sum(remaining.values())
        phase = Phase(name, estimate, share)
        started = time.perf_counter()
        yield phase
        phase.seconds = time.perf_counter() - started
        if not phase.reused and estimate > 0:
            for part in counts:
                self.factor[part] = self.factor.get(part, 1.0) * phase.seconds / estimate
        self.phases.append(phase)
        print(
            f"[window] {name}: {phase.seconds:.0f} s (estimated {estimate:.0f} s"
            + (f", share {share:.0f} s; {self.elapsed() / 60:.1f} of {self.budget / 60:.1f} min spent)" if self.budget is not None else ")")
            + (" (reused)" if phase.reused else ""),
            flush=True,
        )
        if self.budget is None:
            return
        if phase.over:
            print(f"[window] {name} ran over its share by {phase.seconds - share:.0f} s", flush=True)
        self.fit(plan)

    def fit(self, plan: Plan) -> None:
        """Shorten what remains of ``plan`` until its estimate fits in the budget left, and say how."""
        before = (list(plan.seeds), plan.finetune_steps, plan.pretrain_steps)
        while sum(self.remaining(plan).values()) > self.budget - self.elapsed() and plan.give_up(self.done):
            pass
        changes = (
            [f"fine-tuning seeds {', '.join(str(s) for s in before[0] if s not in plan.seeds)} dropped"] if plan.seeds != before[0] else []
        )
        if plan.finetune_steps != before[1]:
            changes.append(f"fine-tuning steps {before[1]} → {plan.finetune_steps}")
        if plan.pretrain_steps != before[2]:
            changes.append(f"pre-training steps {before[2]} → {plan.pretrain_steps} for the arms still to pre-train")
        work, left = sum(self.remaining(plan).values()), self.budget - self.elapsed()
        if changes:
            print(f"[window] {work / 60:.1f} min of work left for {left / 60:.1f} min: " + "; ".join(changes), flush=True)
        if work > left:
            print(
                f"[window] even at its shortest, what remains is estimated at {work / 60:.1f} min, over the "
                f"{max(left, 0) / 60:.1f} min left",
                flush=True,
            )

    def record(self) -> list[dict[str, float | str | bool]]:
        return [dataclasses.asdict(phase) for phase in self.phases]
