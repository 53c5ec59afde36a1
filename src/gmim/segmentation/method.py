"""Fine-tuning a Swin UNETR on labelled cases, with validation, best/last checkpoints and exact resume.

A run folder holds ``config.yaml`` (resolved: task labels, preprocessing, input channels),
``splits.json`` (training and validation case ids), ``weights_report.json`` (what the pre-trained
weights filled), ``last.pt`` (the resumable training state), ``best.pt`` (the weights with the best
mean validation Dice; the final weights when there is no validation) and ``tensorboard/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import Compose, EnsureTyped

from gmim.atomic import atomic_path
from gmim.config import check_run_folder, dump_config
from gmim.data.caching import preload
from gmim.data.checks import check_cases
from gmim.data.sources import BRATS_MODALITIES, Case, discover_cases, nnunet_dataset_json
from gmim.data.transforms import augment_transforms, load_transforms
from gmim.engine.checkpoint import load_checkpoint, restore_training_state, save_checkpoint, training_state
from gmim.engine.device import seed_everything
from gmim.engine.distributed import DistributedContext, all_reduce_mean, gather_objects, init_distributed, wrap_ddp
from gmim.engine.optim import adamw, warmup_cosine
from gmim.engine.precision import MixedPrecision
from gmim.engine.progress import Progress
from gmim.engine.sampling import ResumableSampler, SeededDataset, epoch_loader
from gmim.errors import InputError
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.metrics import dice_scores
from gmim.segmentation.network import build_network, check_model_config, parameter_groups
from gmim.segmentation.splits import split_cases
from gmim.segmentation.task import DEFAULT_LABELS, Task
from gmim.weights import load_pretrained

__all__ = ["finetune", "resolve_config", "sliding_window"]

#: Settings that may change when a run is resumed; any other difference is refused.
_RESUMABLE_CHANGES = ("train.device", "train.workers", "train.stop_after")


def _nnunet_folder(paths: Sequence[Path]) -> Path | None:
    return next((p for p in paths if p.is_dir() and (p / "dataset.json").is_file() and (p / "imagesTr").is_dir()), None)


def _resolve_task(task: Task, paths: Sequence[Path], cases: Sequence[Case]) -> None:
    """Labels and channel names from an nnU-Net ``dataset.json`` or BraTS file names when not given."""
    n_channels = len(cases[0].images)
    nnunet = _nnunet_folder(paths)
    meta = nnunet_dataset_json(nnunet) if nnunet is not None else None
    if not task.labels:
        if meta is not None:
            if not all(isinstance(v, int) for v in meta["labels"].values()):
                raise InputError(f"{nnunet / 'dataset.json'}: region-based labels; define task.kind regions and task.regions in a --config")
            task.labels = dict(meta["labels"])
        else:
            task.labels = dict(DEFAULT_LABELS)
    if not task.channels:
        if meta is not None:
            task.channels = [str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int)]
        elif n_channels == len(BRATS_MODALITIES) and all(
            p.name.lower().split(".")[0].endswith(f"_{m}") for p, m in zip(cases[0].images, BRATS_MODALITIES)
        ):
            task.channels = list(BRATS_MODALITIES)
        else:
            task.channels = [f"channel{i}" for i in range(n_channels)]
    if len(task.channels) != n_channels:
        raise InputError(
            f"{cases[0].images[0]}: the data have {n_channels} channel(s), the task names {len(task.channels)} ({', '.join(task.channels)})"
        )
    task.check()


def resolve_config(config: FinetuneConfig, paths: Sequence[Path], cases: Sequence[Case]) -> FinetuneConfig:
    """Fill what the data decide (task labels and channel names, input channels) and check the whole
    configuration against the data, before any work."""
    _resolve_task(config.task, paths, cases)
    n_channels = len(cases[0].images)
    if config.model.in_channels is None:
        config.model.in_channels = n_channels
    elif config.model.in_channels != n_channels:
        raise InputError(f"model.in_channels {config.model.in_channels}: the data have {n_channels} channel(s) ({cases[0].images[0]})")
    check_model_config(config.model)
    train, overlap = config.train, config.inference.overlap
    if (train.steps is None) == (train.epochs is None):
        raise InputError("train.steps and train.epochs: set exactly one (--steps or --epochs)")
    checks = [
        ((train.steps or train.epochs or 0) > 0, "--steps/--epochs", "positive"),
        (train.batch_size > 0, "--batch-size", "positive"),
        (train.samples_per_volume > 0, "train.samples_per_volume", "positive"),
        (min(train.validate_every, train.checkpoint_every) > 0, "train.validate_every and train.checkpoint_every", "positive"),
        (train.workers >= 0, "--workers", ">= 0"),
        (config.inference.sw_batch_size > 0, "inference.sw_batch_size", "positive"),
        (config.data.folds >= 2, "data.folds", "at least 2"),
        (0 <= overlap < 1, "inference.overlap", "in [0, 1)"),
    ]
    for ok, key, what in checks:
        if not ok:
            raise InputError(f"{key} must be {what}")
    return config


def _loss(task: Task) -> torch.nn.Module:
    if task.kind == "regions":
        return DiceLoss(sigmoid=True) if task.loss == "dice" else DiceCELoss(sigmoid=True)
    return DiceLoss(to_onehot_y=True, softmax=True) if task.loss == "dice" else DiceCELoss(to_onehot_y=True, softmax=True)


def sliding_window(network: torch.nn.Module, image: torch.Tensor, config: FinetuneConfig, precision: MixedPrecision) -> torch.Tensor:
    """Logits of a whole volume (B, C, ...) from Gaussian-weighted overlapping ``roi`` windows."""
    with torch.no_grad(), precision.autocast():
        logits = sliding_window_inference(
            image, config.model.roi, config.inference.sw_batch_size, network, overlap=config.inference.overlap, mode="gaussian"
        )
    return logits.float()


def _validate(
    network: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    config: FinetuneConfig,
    context: DistributedContext,
    precision: MixedPrecision,
) -> dict[str, list[float]]:
    """Dice per scored class or region for every validation case (all ranks' shards gathered)."""
    task = config.task
    network.eval()
    first = 1 if task.kind == "multiclass" else 0  # multiclass one-hot channel 0 is background
    results = {}
    for index in range(context.rank, len(dataset), context.world_size):
        item = dataset[index]
        logits = sliding_window(network, item["image"][None].to(context.device), config, precision)
        prediction = task.onehot(task.probabilities(logits))[0]
        label = item["label"].to(context.device)
        if task.kind == "multiclass":
            label = torch.nn.functional.one_hot(label[0].long(), task.out_channels).movedim(-1, 0)
        results[item["id"]] = dice_scores(prediction[first:], label[first:]).cpu().tolist()
    network.train()
    merged: dict[str, list[float]] = {}
    for part in gather_objects(results, context):
        merged |= part
    return merged


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def finetune(config: FinetuneConfig, data: Sequence[str | Path], out: Path, pretrained: Path | None = None, resume: bool = False) -> Path:
    """Fine-tune, validate and checkpoint into ``out``; returns the path of ``best.pt``."""
    paths = [Path(p) for p in data]
    cases = [c for c in discover_cases(paths, splits=("training", "validation")) if c.label is not None]
    if not cases:
        raise InputError(f"{paths[0]}: no labelled cases; fine-tuning needs label maps")
    config = resolve_config(config, paths, cases)
    check_run_folder(config, out, resume, _RESUMABLE_CHANGES)
    if pretrained is not None and not Path(pretrained).is_file():
        raise InputError(f"--pretrained {pretrained}: file not found")
    train_cases, val_cases = split_cases(cases, config.data, config.train.seed)
    check_cases(train_cases + val_cases, config.task.label_values, workers=config.train.workers)
    context = init_distributed(config.train.device)
    try:
        return _run(config, train_cases, val_cases, out, pretrained, resume, context)
    finally:
        context.shutdown()


def _run(
    config: FinetuneConfig,
    train_cases: list[Case],
    val_cases: list[Case],
    out: Path,
    pretrained: Path | None,
    resume: bool,
    context: DistributedContext,
) -> Path:
    task, train = config.task, config.train
    seed_everything(train.seed)
    network = build_network(config.model, task.out_channels)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(config, out / "config.yaml")
        _write_json(out / "splits.json", {"training": [c.id for c in train_cases], "validation": [c.id for c in val_cases]})
    if pretrained is not None and not resume:
        report = load_pretrained(network, pretrained)
        if context.is_main:
            print(report)
            _write_json(out / "weights_report.json", report.as_dict())
    groups = parameter_groups(network, train.lr, train.encoder_lr_multiplier, train.freeze_encoder)
    trainable = [p for group in groups for p in group["params"]]
    model = wrap_ddp(network, context)
    optimizer = adamw(groups, train.lr, train.weight_decay)
    precision = MixedPrecision(context.device, train.mixed_precision)
    loss_function = _loss(task)

    load = load_transforms(config.preprocessing, label=True)
    # Plain tensors for the network: MetaTensor's per-operation bookkeeping costs more than the model on a CPU.
    plain = EnsureTyped(["image", "label"], track_meta=False)
    cache, workers = config.data.cache, train.workers
    train_data = SeededDataset(
        preload(train_cases, [c.as_dict() for c in train_cases], Compose(load), cache, out / "cache", workers)[0],
        Compose([*augment_transforms(config.model.roi, train.samples_per_volume), task.target_transform(), plain]),
        seed=train.seed,
    )
    val_data = preload(val_cases, [c.as_dict() for c in val_cases], Compose([*load, task.target_transform(), plain]), cache, out / "cache", workers)[0]
    sampler = ResumableSampler(len(train_data), context.rank, context.world_size, train.seed)
    per_epoch = math.ceil(len(sampler) / train.batch_size)
    total = train.steps if train.steps is not None else train.epochs * per_epoch
    scheduler = warmup_cosine(optimizer, min(train.warmup_steps, total // 2), total)

    step, best = 0, -math.inf
    if resume:
        checkpoint = load_checkpoint(out / "last.pt")
        step = restore_training_state(checkpoint, model, optimizer, scheduler, precision, context, str(out / "last.pt"))
        best = float(checkpoint.get("best_dice", -math.inf))
    progress = Progress(total, step, out / "tensorboard", context.is_main, desc="finetune")
    try:
        while step < total:
            epoch, start = divmod(step, per_epoch)
            loader = epoch_loader(
                train_data, sampler, epoch, start, train.batch_size, num_workers=train.workers, pin_memory=context.device.type == "cuda"
            )
            for batch in loader:
                image, target = batch["image"].to(context.device), batch["label"].to(context.device)
                with precision.autocast():
                    loss = loss_function(model(image), target)
                precision.step(loss, optimizer, trainable, train.grad_clip)
                scheduler.step()
                step += 1
                progress.step(step, {"train/loss": all_reduce_mean(loss.detach().float(), context).item(), "train/lr": optimizer.param_groups[0]["lr"]})
                validate = step == total or (step % per_epoch == 0 and (step // per_epoch) % train.validate_every == 0)
                if validate and val_cases:
                    best = _after_validation(network, val_data, config, context, precision, progress, step, best, out)
                stop = step == total or step == train.stop_after
                if stop or validate or step % train.checkpoint_every == 0:
                    state = training_state(model, optimizer, scheduler, precision, step, context)
                    if context.is_main:
                        save_checkpoint(out / "last.pt", {**state, "best_dice": best})
                if stop:
                    break
            if step == train.stop_after and step < total:
                progress.write(f"stopped after step {step} of {total} (train.stop_after); continue with --resume")
                return out / "last.pt"
        if not val_cases and context.is_main:
            save_checkpoint(out / "best.pt", {"model": network.state_dict(), "step": step})
            progress.write("no validation cases (--fold all): best.pt holds the final weights")
    finally:
        progress.close()
    context.barrier()
    return out / "best.pt"


def _after_validation(
    network: torch.nn.Module,
    val_data: Sequence[dict[str, Any]],
    config: FinetuneConfig,
    context: DistributedContext,
    precision: MixedPrecision,
    progress: Progress,
    step: int,
    best: float,
    out: Path,
) -> float:
    """Validate, log, and save ``best.pt`` when the mean Dice improved; returns the best mean Dice."""
    results = _validate(network, val_data, config, context, precision)
    scores = np.array(list(results.values()), dtype=np.float64)
    names = list(config.task.scored)
    per_class = dict(zip(names, np.nanmean(scores, axis=0).tolist()))
    mean = float(np.nanmean(scores))
    progress.scalars(step, {"val/mean_dice": mean, **{f"val/dice_{n}": v for n, v in per_class.items()}})
    progress.write(f"step {step}: validation mean Dice {mean:.4f} ({', '.join(f'{n} {v:.3f}' for n, v in per_class.items())})")
    if mean > best and context.is_main:
        save_checkpoint(out / "best.pt", {"model": network.state_dict(), "step": step, "mean_dice": mean, "dice": per_class})
        _write_json(out / "best.json", {"step": step, "mean_dice": mean, "dice": per_class, "cases": results})
    return max(best, mean)
