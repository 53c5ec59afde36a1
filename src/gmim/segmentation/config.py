"""The fine-tuning configuration; a run folder's ``config.yaml`` is this, resolved, and is all that
``gmim predict`` needs besides the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gmim.data.transforms import Preprocessing
from gmim.segmentation.task import Task

__all__ = ["DataConfig", "FinetuneConfig", "InferenceConfig", "ModelConfig", "TrainConfig"]


@dataclass
class ModelConfig:
    feature_size: int = 48
    roi: tuple[int, int, int] = (96, 96, 96)
    #: Input channels; null: from the data (the resolved config always has it).
    in_channels: int | None = None
    #: Recompute activations in the backward pass: less memory, about a third slower.
    gradient_checkpointing: bool = False


@dataclass
class TrainConfig:
    #: Length of training: ``steps`` (optimizer steps) or ``epochs`` (passes over the training cases), one of them.
    steps: int | None = None
    epochs: int | None = 100
    batch_size: int = 1
    #: Random crops per volume in a batch (half centred on foreground).
    samples_per_volume: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    #: The encoder's learning rate relative to ``lr`` (pre-trained layers often want less).
    encoder_lr_multiplier: float = 1.0
    freeze_encoder: bool = False
    grad_clip: float | None = 1.0
    mixed_precision: bool = True
    #: Validate every this many epochs (and at the end).
    validate_every: int = 1
    #: Save the resumable ``last.pt`` every this many steps (and at the end).
    checkpoint_every: int = 200
    #: Stop (with ``last.pt`` saved) after this many steps, to go on later with ``--resume``: for
    #: jobs with a time limit. The schedule still runs to the full length.
    stop_after: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 4


@dataclass
class DataConfig:
    #: Validation fold k of ``folds``, taken from the datalist's ``fold`` entries when present, else
    #: from a seeded split; ``null``: the datalist's ``validation`` section if any, else fold 0;
    #: ``all``: train on every case, no validation.
    fold: int | Literal["all"] | None = None
    folds: int = 5
    #: Fine-tune on this fraction of the training cases (label-efficiency runs) …
    label_fraction: float = 1.0
    #: … or on this many.
    labelled_cases: int | None = None
    #: Cache the preprocessed volumes: ``memory``, ``disk`` (in the run folder) or ``none``.
    cache: Literal["memory", "disk", "none"] = "memory"


@dataclass
class InferenceConfig:
    overlap: float = 0.5
    sw_batch_size: int = 2
    #: Average over the 8 mirrorings of the three axes.
    flip_tta: bool = False


@dataclass
class FinetuneConfig:
    task: Task = field(default_factory=Task)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
