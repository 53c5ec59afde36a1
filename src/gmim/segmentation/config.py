"""The fine-tuning configuration; a run folder's ``config.yaml`` is this, resolved, and is all that
``gmim predict`` needs besides the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gmim.data.transforms import Preprocessing
from gmim.engine.config import LoopConfig
from gmim.rules import Rule, Section, at_least, between, setting
from gmim.segmentation.task import Task
from gmim.swin.config import SwinConfig

__all__ = ["DataConfig", "FinetuneConfig", "InferenceConfig", "ModelConfig", "TrainConfig"]


@dataclass
class ModelConfig(SwinConfig):
    """The Swin UNETR (:class:`gmim.swin.config.SwinConfig`), on 96³ crops."""


@dataclass
class TrainConfig(LoopConfig):
    """The loop's settings (:class:`gmim.engine.config.LoopConfig`) and fine-tuning's own."""

    epochs: int | None = 100
    batch_size: int = 1
    grad_clip: float | None = 1.0
    checkpoint_every: int = 200
    #: Random crops per volume in a batch (half centred on foreground).
    samples_per_volume: int = setting(2, at_least(1))
    #: The encoder's learning rate relative to ``lr`` (pre-trained layers often want less; 0 leaves
    #: the encoder as it is, as freeze_encoder does).
    encoder_lr_multiplier: float = setting(1.0, at_least(0))
    freeze_encoder: bool = False


@dataclass
class DataConfig(Section):
    #: Validation fold k of ``folds``, taken from the datalist's ``fold`` entries when present, else
    #: from a seeded split; ``null``: the datalist's ``validation`` section if any, else fold 0;
    #: ``all``: train on every case, no validation.
    fold: int | Literal["all"] | None = setting(None, Rule(">= 0, all or null", lambda v: v == "all" or v >= 0, outside=(-1,)))
    folds: int = setting(5, at_least(2))
    #: Fine-tune on this fraction of the training cases (label-efficiency runs) …
    label_fraction: float = setting(1.0, between(0, 1, low_open=True))
    #: … or on this many.
    labelled_cases: int | None = setting(None, at_least(1))
    #: Cache the preprocessed volumes: ``memory``, ``disk`` (in the run folder) or ``none``.
    cache: Literal["memory", "disk", "none"] = "memory"


@dataclass
class InferenceConfig(Section):
    #: Overlap of the sliding windows, a fraction of the window.
    overlap: float = setting(0.5, between(0, 1, high_open=True))
    #: Windows per forward pass.
    sw_batch_size: int = setting(2, at_least(1))
    #: Average over the 8 mirrorings of the three axes.
    flip_tta: bool = False


@dataclass
class FinetuneConfig(Section):
    #: The method (:mod:`gmim.methods`): config.yaml names it, so that any gmim command knows the run.
    method: Literal["finetune"] = "finetune"
    task: Task = field(default_factory=Task)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
