"""The training loop itself, with a method of a few parameters: intervals, validation at the start,
resume, ``train.stop_after``, Ctrl-C and a diverging loss, in seconds (the commands' end-to-end
tests cover the same loop with real networks, in minutes)."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from monai.transforms import Compose, Lambda

from gmim.engine.config import LoopConfig
from gmim.engine.loop import Trainer, Validation
from gmim.engine.sampling import SeededDataset
from gmim.engine.signals import Interrupted
from gmim.errors import InputError


@dataclass
class ToyConfig:
    train: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            steps=6,
            batch_size=2,
            lr=0.05,
            warmup_steps=0,
            workers=0,
            validate_every=2,
            checkpoint_every=3,
            log_every=1,
            mixed_precision=False,
            device="cpu",
        )
    )


class ToyMethod:
    """Fit y = 3x with one weight; ``events`` records what the loop asked for, and when."""

    name = "toy"
    keeps_best = True
    validates_at_start = True

    def __init__(self, trainer: Trainer, diverge_at: int | None = None, interrupt_at: int | None = None) -> None:
        self.trainer, self.diverge_at, self.interrupt_at = trainer, diverge_at, interrupt_at
        self.model = torch.nn.Linear(1, 1, bias=False)
        samples = [{"x": torch.tensor([float(i + 1)])} for i in range(8)]
        self.train_data = SeededDataset(samples, Compose([Lambda(lambda d: d)]), seed=0)
        self.events: list[tuple[str, int]] = []
        self.steps_done = 0

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    def train_step(self, model: torch.nn.Module, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        if step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the loop finishes this step, saves and stops
        x = batch["x"]
        loss = ((model(x) - 3 * x) ** 2).mean()
        if step == self.diverge_at:
            loss = loss * math.nan
        return {"loss": loss}

    def after_optimizer_step(self) -> None:
        self.steps_done += 1

    def validation_cost(self) -> float:
        return 0.1

    def validate(self, step: int) -> Validation:
        self.events.append(("validate", step))
        error = abs(float(self.model.weight.detach()) - 3)
        return Validation({"error": error}, f"error {error:.3f}", score=-error, record={"error": error})

    def export(self) -> None:
        self.events.append(("export", self.steps_done))

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        self.events.append(("finish", len(records)))
        return {"toy": True}


def fit(out, config: ToyConfig | None = None, resume: bool = False, **options: Any) -> tuple[ToyMethod, Any]:
    config = config or ToyConfig()
    with Trainer("toy", config, config.train, out, resume) as trainer:
        method = ToyMethod(trainer, **options)
        return method, trainer.fit(method)


def test_intervals_validation_at_the_start_and_the_files_of_a_run(tmp_path):
    method, summary = fit(tmp_path / "run")
    assert summary.completed and summary.steps == 6 and method.steps_done == 6
    assert [s for e, s in method.events if e == "validate"] == [0, 2, 4, 6]
    assert [s for e, s in method.events if e == "export"] == [3, 6]  # with each last.pt
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val/error" in r] == [0, 2, 4, 6]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["toy"] and saved["validations"] == 4 and saved["validation"]["val/error"] < 3
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 6
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["error"] == min(r["val/error"] for r in records if "val/error" in r)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["gmim"]


def test_stop_after_then_resume_equals_a_straight_run(tmp_path):
    straight, _ = fit(tmp_path / "straight")
    config = ToyConfig()
    config.train.stop_after = 3
    first, summary = fit(tmp_path / "split", config)
    assert not summary.completed and summary.steps == 3 and not any(e == "finish" for e, _ in first.events)
    resumed, summary = fit(tmp_path / "split", resume=True)
    assert summary.completed and summary.first_step == 3 and resumed.steps_done == 3
    assert torch.equal(straight.model.weight, resumed.model.weight)
    assert len(json.loads((tmp_path / "split" / "run.json").read_text())["resumed"]) == 1


def test_ctrl_c_saves_the_step_in_flight(tmp_path):
    with pytest.raises(Interrupted):
        fit(tmp_path / "run", interrupt_at=2)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2
    resumed, summary = fit(tmp_path / "run", resume=True)
    assert summary.completed and resumed.steps_done == 4


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(InputError, match=r"training diverged: the loss term is nan by step 5; stopped, last.pt holds step 3"):
        fit(tmp_path / "run", diverge_at=5)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
