"""The benchmark's presets (``benchmarks/presets/<name>.yaml``), its arms and the task's classes and
test sets: what a run may ask for, checked before anything runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gmim.errors import InputError
from gmim.methods import METHODS
from gmim.pretraining.config import AS_RUN

from ..time_window import check_figures

PRESETS = Path(__file__).resolve().parents[1] / "presets"


#: Each arm's pre-training settings on top of the preset's (``None``: no pre-training).
ARMS: dict[str, list[str] | None] = {
    "scratch": None,
    "gmim": [],
    "random": ["masking.grids=[1]", "masking.dynamic=false", "masking.decay=0"],
    "standardized": ["loss.standardize=true"],
    "aligned": ["loss.align_overlap=true"],
    "ema": ["model.target_momentum=0.99"],
    "mask_token": ["model.learned_mask_token=true"],
    # against collapse: VICReg's variance term on the final-stage tokens, alone and with standardisation
    "variance": ["loss.variance_weight=1.0"],
    "standardized_variance": ["loss.standardize=true", "loss.variance_weight=1.0"],
    # the prototype as its code ran (docs/method.md §9); fine-tuned with its patch merging too
    "prototype": [f"{key}={json.dumps(value)}" for key, value in AS_RUN.items()],
    # Swin UNETR's own self-supervision (gmim pretrain --method swin-ssl) on GMIM's budget: one crop
    # per volume (published: 2), seen in two views, so that a step puts batch_size × 2 crops of
    # model.roi through the encoder, as GMIM's x and y do (runs.method_section has the other rules)
    "swin-ssl": ["method=swin-ssl", "data.crops_per_volume=1"],
}
#: The method an arm's pre-training runs unless its overrides name another (``method=NAME``, a
#: name of :data:`gmim.methods.METHODS`): the one the presets' ``pretrain`` sections are written for.
DEFAULT_METHOD = "gmim"

#: The fine-tuning task's classes; label files hold these values (``other`` brain tissue counts as
#: background, and so does deep CSF unless the preset asks for the context class).
TASK_LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "deep_csf": 3}
#: The class that needs context, reported on its own, and its name in tables.
CONTEXT_CLASS, CONTEXT_NAME = "deep_csf", "deep CSF"
TEST_SETS = {"icbm152": "ICBM152, other seeds (the brain the labels come from)", "itk": "ITK example brain and copies (another brain)"}


@dataclasses.dataclass
class Preset:
    """A benchmark preset (``benchmarks/presets/<name>.yaml``): data sizes, arms, label counts, seeds,
    and the ``pretrain`` / ``finetune`` configs (the layout of ``gmim pretrain/finetune --config``)."""

    unlabelled: int
    labelled: int
    test_icbm152: int
    test_itk: int
    arms: list[str]
    labels: list[int]
    #: Fine-tuning seeds; none: pre-training, its health and the linear probe only.
    seeds: list[int]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    #: ICBM152 voxels kept per axis when subjects are made: 1 (1 mm, slower to make) or 2 (2 mm).
    icbm152_stride: int = 2
    #: Arms of the preset's own: name → pre-training overrides on top of the preset's.
    extra_arms: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Label counts at which each arm is also fine-tuned with its encoder frozen (the probe).
    probe_labels: list[int] = dataclasses.field(default_factory=list)
    #: Whether deep CSF, the class that needs context, is a class of the task.
    context_class: bool = False
    #: Device kind (``cpu``, ``h100``, …) → seconds of each part of a run
    #: (:data:`time_window.PARTS`) at this preset's sizes: the plan's estimate.
    seconds: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    #: The run's time window, start-up included; None: no budget (``--budget-minutes`` sets one).
    budget_minutes: float | None = None

    @property
    def task_labels(self) -> dict[str, int]:
        return {name: value for name, value in TASK_LABELS.items() if name != CONTEXT_CLASS or self.context_class}

    @classmethod
    def load(cls, name_or_path: str) -> tuple[Preset, Path]:
        path = Path(name_or_path)
        if not path.suffix:
            path = PRESETS / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
            raise InputError(f"--preset {name_or_path}: neither a preset ({names}) nor a YAML file")
        data = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if unknown or missing:
            raise InputError(f"{path}: unknown keys {unknown}" if unknown else f"{path}: missing keys {missing}")
        preset = cls(**data)
        preset.check(path)
        return preset, path

    def check(self, where: Path) -> None:
        counts = {"unlabelled": self.unlabelled, "labelled": self.labelled, "test_icbm152": self.test_icbm152, "test_itk": self.test_itk}
        bad = [k for k, v in {**counts, "icbm152_stride": self.icbm152_stride}.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise InputError(f"{where}: {bad[0]} must be a positive integer")
        if (self.seeds and not self.labels) or any(not 1 <= k <= self.labelled for k in self.labels):
            raise InputError(f"{where}: labels {self.labels} must lie between 1 and labelled ({self.labelled})")
        if not isinstance(self.context_class, bool):
            raise InputError(f"{where}: context_class must be true or false, got {self.context_class!r}")
        if any(not 1 <= k <= self.labelled for k in self.probe_labels):
            raise InputError(f"{where}: probe_labels {self.probe_labels} must lie between 1 and labelled ({self.labelled})")
        for section, train in (("pretrain", self.pretrain.get("train") or {}), ("finetune", self.finetune.get("train") or {})):
            steps = train.get("steps")
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise InputError(f"{where}: {section}.train.steps must be a positive integer (the plan counts them), got {steps!r}")
        check_figures(self.seconds, str(where))
        if self.budget_minutes is not None:
            check_budget(self.budget_minutes, f"{where}: budget_minutes")
            if not self.seconds:
                raise InputError(f"{where}: budget_minutes needs the timing figures (seconds) to plan with")
        clash = sorted(set(self.extra_arms) & set(ARMS))
        if clash:
            raise InputError(f"{where}: extra_arms {clash} are built-in arms")
        self.arms = check_arms(self.arms, self.all_arms, str(where))
        for arm in self.all_arms:
            method = METHODS.get(self.method(arm))
            if method is None or method.command != "pretrain" or method.produces != "encoder":
                names = ", ".join(m.name for m in METHODS.values() if m.command == "pretrain" and m.produces == "encoder")
                raise InputError(f"{where}: arm {arm!r}: method {self.method(arm)!r} is not a pre-training method ({names})")

    @property
    def all_arms(self) -> dict[str, list[str] | None]:
        return {**ARMS, **self.extra_arms}

    def method(self, arm: str) -> str:
        """The registered pre-training method of ``arm`` (``scratch``: GMIM's, whose initial weights
        every arm shares): the ``method=NAME`` of its overrides, else :data:`DEFAULT_METHOD`."""
        settings = dict(item.split("=", 1) for item in self.all_arms[arm] or [])
        return str(yaml.safe_load(settings.get("method", DEFAULT_METHOD)))

    def patch_merging(self, arm: str) -> str:
        """The patch merging ``arm``'s encoder is pre-trained with, which its fine-tuning must share."""
        settings = dict(item.split("=", 1) for item in self.all_arms[arm] or [])
        return str(yaml.safe_load(settings.get("model.patch_merging", "monai")))


def check_budget(minutes: float, where: str) -> float:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        raise InputError(f"{where} {minutes}: must be a positive number of minutes")
    return float(minutes)


def check_arms(arms: Sequence[str], known: dict[str, Any], where: str) -> list[str]:
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise InputError(f"{where}: unknown arm {unknown[0]!r} (arms: {', '.join(known)})")
    return list(dict.fromkeys(arms))
