"""Fine-tuning a Swin UNETR as a method of the training loop (:mod:`gmim.engine.loop`), and ``finetune``.

A run folder holds ``config.yaml`` (resolved: task labels, preprocessing, input channels, the
initial weights), ``splits.json`` (training and validation case ids), ``weights_report.json`` (what
the initial weights filled), ``last.pt`` (the resumable training state), ``best.pt`` and
``best.json`` (the weights with the best mean validation Dice; the final weights when there is no
validation), ``metrics.jsonl``, ``summary.json`` and ``tensorboard/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import Compose, EnsureTyped

from gmim.atomic import write_json
from gmim.data.caching import preload, refuse_oversized_memory_cache
from gmim.data.checks import check_cases, read_grid, voxel_spacing
from gmim.data.sources import Case, Collection, discover
from gmim.data.transforms import augment_transforms, load_transforms
from gmim.engine.distributed import gather_objects
from gmim.engine.loop import RunSummary, Trainer, Validation
from gmim.engine.sampling import SeededDataset
from gmim.errors import InputError
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.inference import sliding_window, sliding_window_count
from gmim.segmentation.metrics import dice_scores
from gmim.segmentation.network import (
    build_network,
    parameter_groups,
)
from gmim.segmentation.splits import split_cases
from gmim.segmentation.task import DEFAULT_LABELS, Task
from gmim.swin.init import InitialWeights

__all__ = ["SegmentationFinetuning", "finetune", "resolve_config"]

#: Settings a resumed run may change besides the loop's: how it runs, not what it learns.
RESUMABLE_CHANGES = ("data.cache",)


def _resolve_task(task: Task, cases: Sequence[Case], layout: Collection) -> None:
    """Labels and channel names, when not given, from what discovery read in the data's layout (an
    nnU-Net ``dataset.json``, BraTS file names)."""
    n_channels = len(cases[0].images)
    if not task.labels:
        if layout.labels is not None:
            if not all(isinstance(v, int) for v in layout.labels.values()):
                raise InputError(f"{layout.source}: region-based labels; define task.kind regions and task.regions in a --config")
            task.labels = dict(layout.labels)
        else:
            task.labels = dict(DEFAULT_LABELS)
    if not task.channels:
        if layout.channel_names is not None:
            task.channels = list(layout.channel_names)
        else:
            task.channels = [f"channel{i}" for i in range(n_channels)]
    if len(task.channels) != n_channels:
        raise InputError(
            f"{cases[0].images[0]}: the data have {n_channels} channel(s), the task names {len(task.channels)} ({', '.join(task.channels)})"
        )
    task.require_complete(str(layout.source))


def resolve_config(config: FinetuneConfig, cases: Sequence[Case], layout: Collection) -> FinetuneConfig:
    """Fill what the data decide (task labels and channel names, input channels) and check the
    method's settings against the data, before any work (the loop checks ``train``); ``layout`` is the
    discovery the cases come from."""
    _resolve_task(config.task, cases, layout)
    n_channels = len(cases[0].images)
    if config.model.in_channels is None:
        config.model.in_channels = n_channels
    elif config.model.in_channels != n_channels:
        raise InputError(f"model.in_channels {config.model.in_channels}: the data have {n_channels} channel(s) ({cases[0].images[0]})")
    return config


def _loss(task: Task) -> torch.nn.Module:
    if task.kind == "regions":
        return DiceLoss(sigmoid=True) if task.loss == "dice" else DiceCELoss(sigmoid=True)
    return DiceLoss(to_onehot_y=True, softmax=True) if task.loss == "dice" else DiceCELoss(to_onehot_y=True, softmax=True)


def finetune(config: FinetuneConfig, data: Sequence[str | Path], out: Path, resume: bool = False) -> RunSummary:
    """Fine-tune, validate and checkpoint into ``out`` (``best.pt`` holds the weights to use), from
    ``config.model.init`` or from scratch."""
    paths = [Path(p) for p in data]
    layout = discover(paths, splits=("training", "validation"))
    cases = [c for c in layout.cases if c.label is not None]
    if not cases:
        raise InputError(f"{paths[0]}: no labelled cases; fine-tuning needs label maps")
    config = resolve_config(config, cases, layout)
    train_cases, val_cases = split_cases(cases, config.data, config.train.seed)
    check_cases(train_cases + val_cases, config.task.label_values, workers=config.train.loader_workers())
    if config.data.cache == "memory":
        refuse_oversized_memory_cache(train_cases + val_cases, config.preprocessing.spacing)
    with Trainer(
        SegmentationFinetuning.name, config, config.train, out, resume, RESUMABLE_CHANGES, init=InitialWeights(config.model)
    ) as trainer:
        return trainer.fit(SegmentationFinetuning(config, train_cases, val_cases, trainer))


class SegmentationFinetuning:
    """Supervised Swin UNETR training on random crops, validated by sliding-window Dice."""

    name = "finetune"
    keeps_best = True
    validates_at_start = False

    def __init__(self, config: FinetuneConfig, train_cases: list[Case], val_cases: list[Case], trainer: Trainer) -> None:
        self.config, self.trainer, self.val_cases = config, trainer, val_cases
        task, train, out = config.task, config.train, trainer.out
        self.model = build_network(config.model, task.out_channels)
        if trainer.is_main:
            write_json(out / "splits.json", {"training": [c.id for c in train_cases], "validation": [c.id for c in val_cases]})
        self.groups = parameter_groups(self.model, train.lr, train.encoder_lr_multiplier, train.freeze_encoder)
        self.loss_function = _loss(task)
        load = load_transforms(config.preprocessing, label=True)
        # Plain tensors for the network: MetaTensor's per-operation bookkeeping costs more than the model on a CPU.
        plain = EnsureTyped(["image", "label"], track_meta=False)
        cache, workers = config.data.cache, train.loader_workers()
        self.train_data = SeededDataset(
            preload(train_cases, [c.as_dict() for c in train_cases], Compose(load), cache, out / "cache", workers)[0],
            Compose([*augment_transforms(config.model.roi, train.samples_per_volume), task.target_transform(), plain]),
            seed=train.seed,
        )
        self.val_data = preload(
            val_cases, [c.as_dict() for c in val_cases], Compose([*load, task.target_transform(), plain]), cache, out / "cache", workers
        )[0]

    @property
    def init_module(self) -> torch.nn.Module:
        return self.model

    def after_init(self) -> None:
        pass

    def parameter_groups(self) -> list[dict[str, Any]]:
        return self.groups

    def train_step(self, model: Callable[..., Any], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        device = self.trainer.device
        image, target = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
        with self.trainer.precision.autocast():
            loss = self.loss_function(model(image), target)
        return {"loss": loss}

    def after_optimizer_step(self) -> None:
        pass

    def validation_cost(self) -> float:
        """Sliding windows over every validation case (one forward pass each, times the mirrorings),
        against a step's forward and backward passes (about 3 forward passes) per crop. Shapes come
        from the file headers and the training spacing: no voxel is read."""
        config = self.config
        spacing = config.preprocessing.spacing
        windows = 0
        for case in self.val_cases:
            shape, affine = read_grid(case.images[0])
            if spacing is not None:
                shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, voxel_spacing(affine), spacing))
            windows += sliding_window_count(shape, config.model.roi, config.inference.overlap)
        passes = windows * (8 if config.inference.flip_tta else 1)
        return passes / (3 * config.train.batch_size * config.train.samples_per_volume)

    def validate(self, step: int) -> Validation:
        """Dice per scored class or region of every validation case (all ranks' shards gathered)."""
        config, context = self.config, self.trainer.context
        task = config.task
        first = 1 if task.kind == "multiclass" else 0  # multiclass one-hot channel 0 is background
        results = {}
        self.model.eval()
        for index in range(context.rank, len(self.val_data), context.world_size):
            item = self.val_data[index]
            logits = sliding_window(self.model, item["image"][None].to(context.device), config, self.trainer.precision)
            prediction = task.onehot(task.probabilities(logits))[0]
            label = item["label"].to(context.device)
            if task.kind == "multiclass":
                label = torch.nn.functional.one_hot(label[0].long(), task.out_channels).movedim(-1, 0)
            results[item["id"]] = dice_scores(prediction[first:], label[first:]).cpu().tolist()
        self.model.train()
        merged: dict[str, list[float]] = {}
        for part in gather_objects(results, context):
            merged |= part
        scores = np.array(list(merged.values()), dtype=np.float64)
        per_class = dict(zip(task.scored, np.nanmean(scores, axis=0).tolist()))
        mean = float(np.nanmean(scores))
        return Validation(
            scalars={"mean_dice": mean, **{f"dice_{name}": value for name, value in per_class.items()}},
            summary=f"validation mean Dice {mean:.4f} ({', '.join(f'{n} {v:.3f}' for n, v in per_class.items())})",
            score=mean if math.isfinite(mean) else None,
            record={"mean_dice": mean, "dice": per_class},
            details={"cases": merged},
        )

    def export(self) -> None:
        pass

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {}
