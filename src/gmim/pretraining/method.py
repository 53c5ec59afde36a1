"""The GMIM pre-training loop: one process or many (``torchrun``), exact resume, atomic outputs.

Run folder: ``config.yaml`` (resolved), ``encoder.pt`` (a plain state_dict of MONAI's
``SwinUNETR(...).swinViT``), ``last.pt`` (resumable), ``metrics.jsonl``, ``loss_curve.png``,
``pictures/`` (a view, its masks at a0–a3 and its reconstruction) and ``tensorboard/``.

Every random choice of a step is seeded by (seed, step, volume index): the views by the data
pipeline, the masks here. A resumed run therefore repeats an uninterrupted one exactly, and a run
over several processes draws the same samples and masks as one process with the same global batch.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gmim.atomic import atomic_path
from gmim.config import check_run_folder, dump_config
from gmim.data.sources import Case, discover_cases
from gmim.engine.checkpoint import load_checkpoint, restore_training_state, save_checkpoint, training_state
from gmim.engine.device import seed_everything
from gmim.engine.distributed import DistributedContext, all_reduce_mean, init_distributed, wrap_ddp
from gmim.engine.optim import adamw, warmup_cosine
from gmim.engine.precision import MixedPrecision
from gmim.engine.progress import Progress
from gmim.engine.sampling import ResumableSampler, SeededDataset, epoch_loader
from gmim.errors import InputError
from gmim.pretraining.losses import GMIMLoss
from gmim.pretraining.masking import APPLICATION_POINTS, GridMaskPlanner, voxel_mask
from gmim.pretraining.model import GMIM
from gmim.pretraining.config import PretrainConfig
from gmim.pretraining.data import load_volumes, view_transforms
from gmim.pretraining.visualize import save_loss_curve, save_masking_figure
from gmim.weights import load_pretrained

__all__ = ["build_model", "pretrain"]

#: Settings a resumed run may change: how long and how it runs, not what it learns.
_RESUMABLE_CHANGES = ("train.steps", "train.device", "train.deterministic", "train.workers", "train.validate_every",
                      "train.picture_every", "train.checkpoint_every", "data.cache", "data.skip_bad")


def build_model(config: PretrainConfig) -> GMIM:
    model = config.model
    if model.in_channels is None:
        raise ValueError("model.in_channels must be resolved before the model is built")
    return GMIM(
        in_channels=model.in_channels,
        feature_size=model.feature_size,
        projection_dim=model.projection_dim,
        target_momentum=model.target_momentum,
        learned_mask_token=model.learned_mask_token,
        use_checkpoint=model.gradient_checkpointing,
        dropout_path_rate=model.dropout_path_rate,
    )


def _seeded_generator(device: torch.device, *entropy: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def _split(cases: list[Case], config: PretrainConfig) -> tuple[list[Case], list[Case]]:
    """Training and validation volumes: the datalist's ``validation`` section, else the last
    ``data.validation_volumes`` of the collection."""
    validation = [c for c in cases if c.split == "validation"]
    if validation:
        return [c for c in cases if c.split != "validation"], validation
    held_out = config.data.validation_volumes
    if held_out < 0 or held_out >= len(cases):
        raise InputError(f"data.validation_volumes={held_out}: must be in [0, {len(cases) - 1}] for {len(cases)} volumes")
    return cases[: len(cases) - held_out], cases[len(cases) - held_out :]


def _check_config(config: PretrainConfig, world_size: int) -> None:
    """Refuse values that are out of range, before any work (types are checked when loading)."""
    model, train, masking = config.model, config.train, config.masking
    checks = [
        (model.feature_size > 0 and model.feature_size % 12 == 0, "model.feature_size", "a positive multiple of 12"),
        (all(n >= 32 and n % 32 == 0 for n in model.roi), "model.roi", "sizes divisible by 32"),
        (math.prod(model.roi) >= 2 * 32**3, "model.roi", "at least 64 along one axis (the decoder needs two final tokens)"),
        (all(m >= 0 for m in config.data.margin), "data.margin", "sizes >= 0"),
        (train.steps > 0, "train.steps", "positive"),
        (train.batch_size > 0 and train.batch_size % world_size == 0, "train.batch_size",
         f"a positive multiple of the number of processes ({world_size})"),
        (train.lr > 0, "train.lr", "positive"),
        (train.weight_decay >= 0, "train.weight_decay", ">= 0"),
        (train.warmup_steps >= 0, "train.warmup_steps", ">= 0"),
        (train.grad_clip is None or train.grad_clip > 0, "train.grad_clip", "positive or null"),
        (train.workers >= 0, "train.workers", ">= 0"),
        (min(train.validate_every, train.picture_every, train.checkpoint_every) >= 0, "train.*_every", ">= 0"),
        (0 <= masking.drop_probability <= 1, "masking.drop_probability", "in [0, 1]"),
        (0 <= masking.decay <= 1, "masking.decay", "in [0, 1]"),
    ]
    for ok, key, what in checks:
        if not ok:
            raise InputError(f"{key} must be {what}")
    GridMaskPlanner(masking.grids, masking.base_ratio, masking.scale, masking.dynamic)
    GMIMLoss(config.loss.alpha_cc, config.loss.alpha_rec, config.loss.off_diagonal_weight)
    if not 0 <= model.target_momentum < 1:
        raise InputError(f"model.target_momentum must be in [0, 1), got {model.target_momentum}")
    if max(masking.grids) > min(model.roi):
        raise InputError(f"masking.grids: grid {max(masking.grids)} is finer than the roi {model.roi}")


def pretrain(config: PretrainConfig, data: Sequence[str | Path], out: Path, resume: bool = False) -> Path:
    """Pre-train on the volumes under ``data`` into the run folder ``out``; returns ``encoder.pt``."""
    cases = discover_cases([Path(p) for p in data], splits=("training", "validation"))
    channels = len(cases[0].images)
    if config.model.in_channels not in (None, channels):
        raise InputError(f"model.in_channels is {config.model.in_channels} but the data has {channels} channel(s)")
    config.model.in_channels = channels
    if config.model.init is not None and not Path(config.model.init).is_file():
        raise InputError(f"model.init {config.model.init}: file not found")
    train_cases, val_cases = _split(cases, config)
    context = init_distributed(config.train.device)
    deterministic = config.train.deterministic
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(context.device.type == "cpu" if deterministic is None else deterministic, warn_only=True)
    try:
        _check_config(config, context.world_size)
        check_run_folder(config, out, resume, _RESUMABLE_CHANGES)
        return _run(config, train_cases, val_cases, out, resume, context)
    finally:
        torch.use_deterministic_algorithms(previous)
        context.shutdown()


#: Seeds the validation's masks apart from any training step's.
_VALIDATION_KEY = 2**40


def _step_masks(
    planner: GridMaskPlanner, x: torch.Tensor, indices: Sequence[int], config: PretrainConfig, key: int
) -> tuple[list[torch.Tensor | None], int]:
    """The masks of points a0–a3 for a batch: coin flips seeded by the step ``key``, positions by the
    step and each sample's volume index. Returns them with the grid of the first sample."""
    seed, masking = config.train.seed, config.masking
    plan = planner.plan(x)
    masks = plan.hierarchical_masks(
        x.shape[2:],
        masking.drop_probability,
        masking.decay,
        generator=_seeded_generator(x.device, seed, key),
        sample_generators=[_seeded_generator(x.device, seed, key, index) for index in indices],
    )
    if config.model.learned_mask_token:  # every point in the graph, so that DDP sees every mask token used
        masks = [
            m if m is not None else torch.zeros((x.shape[0], *(n // stride for n in x.shape[2:])), dtype=torch.bool, device=x.device)
            for m, (_, stride) in zip(masks, APPLICATION_POINTS)
        ]
    return masks, int(plan.grid[0])


@contextmanager
def _interrupt_at_step_end() -> Iterator[threading.Event]:
    """Turn a first Ctrl-C into a request that the loop honours after the step in flight (so the
    checkpoint it writes is consistent); a second Ctrl-C stops at once."""
    requested = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


class _History:
    """``metrics.jsonl``: one line per logged step, kept consistent with the checkpoint on resume."""

    def __init__(self, path: Path, start: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if enabled and path.is_file():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.records = [r for r in lines if r["step"] <= start]
        if enabled:
            self._write()

    def add(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.records.append(record)
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def _write(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def _run(config: PretrainConfig, train_cases: list[Case], val_cases: list[Case], out: Path, resume: bool,
         context: DistributedContext) -> Path:
    train = config.train
    seed_everything(train.seed)
    model_module = build_model(config)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(config, out / "config.yaml")
    if config.model.init is not None and not resume:
        report = load_pretrained(model_module.encoder, Path(config.model.init))
        if context.is_main:
            print(report)
    channels = config.model.in_channels
    assert channels is not None
    shared_cache = config.data.cache == "disk" and context.is_distributed
    if shared_cache and not context.is_main:
        context.barrier()  # rank 0 fills the disk cache first, the others then read it
    volumes, skipped = load_volumes(train_cases, config, channels, out / "cache")
    if shared_cache and context.is_main:
        context.barrier()
    val_volumes, val_skipped = (load_volumes(val_cases, config, channels, out / "cache")
                                if val_cases and context.is_main else ([], []))
    skipped += val_skipped

    per_rank = train.batch_size // context.world_size
    if len(volumes) < train.batch_size:
        raise InputError(f"train.batch_size {train.batch_size} is larger than the {len(volumes)} training volume(s)")
    dataset = SeededDataset(volumes, view_transforms(config), seed=train.seed)
    sampler = ResumableSampler(len(dataset), context.rank, context.world_size, train.seed)
    per_epoch = len(sampler) // per_rank
    model = wrap_ddp(model_module, context)
    optimizer = adamw(model.parameters(), train.lr, train.weight_decay)
    scheduler = warmup_cosine(optimizer, train.warmup_steps, train.steps)
    precision = MixedPrecision(context.device, train.mixed_precision)
    planner = GridMaskPlanner(config.masking.grids, config.masking.base_ratio, config.masking.scale, config.masking.dynamic)
    loss_function = GMIMLoss(**vars(config.loss))

    step = 0
    if resume:
        step = restore_training_state(load_checkpoint(out / "last.pt"), model, optimizer, scheduler, precision,
                                      context, str(out / "last.pt"))
    history = _History(out / "metrics.jsonl", step, context.is_main)
    progress = Progress(train.steps, step, out / "tensorboard", context.is_main, desc="pretrain")

    def every(period: int) -> bool:
        return step == train.steps or (period > 0 and step % period == 0)

    def checkpoint() -> None:
        state = training_state(model, optimizer, scheduler, precision, step, context)
        if context.is_main:
            save_checkpoint(out / "last.pt", state)
            save_checkpoint(out / "encoder.pt", model_module.encoder.state_dict())

    with _interrupt_at_step_end() as interrupt:
        try:
            tick = time.perf_counter()
            while step < train.steps:
                epoch, start = divmod(step, per_epoch)
                loader = epoch_loader(dataset, sampler, epoch, start, per_rank, num_workers=train.workers,
                                      pin_memory=context.device.type == "cuda", drop_last=True)
                for batch in loader:
                    x = batch["x"].to(context.device, non_blocking=True)
                    y = batch["y"].to(context.device, non_blocking=True)
                    masks, grid = _step_masks(planner, x, batch["index"].tolist(), config, step)
                    with precision.autocast():
                        output = model(x, y, masks)
                    terms = loss_function(output, x, voxel_mask(masks[0]), batch["offset"])
                    precision.step(terms["loss"], optimizer, model.parameters(), train.grad_clip)
                    scheduler.step()
                    model_module.update_target()
                    step += 1
                    scalars = {f"train/{k}": all_reduce_mean(v.detach().float(), context).item() for k, v in terms.items()}
                    scalars["train/lr"] = optimizer.param_groups[0]["lr"]
                    now = time.perf_counter()
                    scalars["train/volumes_per_s"] = train.batch_size / (now - tick)
                    tick = now
                    progress.step(step, scalars)
                    history.add({"step": step, **scalars})
                    if context.is_main and every(train.picture_every):
                        first = [m[0] if m is not None else None for m in masks]
                        save_masking_figure(out / "pictures" / f"step{step:06d}.png", x[0], first, grid,
                                            output.reconstruction[0].float(), title=f"step {step}")
                    if val_volumes and every(train.validate_every):
                        _validate(model_module, val_volumes, planner, loss_function, config, precision, context, step,
                                  progress, history)
                    stop = bool(all_reduce_mean(torch.tensor(float(interrupt.is_set()), device=context.device), context) > 0)
                    if every(train.checkpoint_every) or stop:
                        checkpoint()
                    if stop:
                        progress.write(f"interrupted: step {step} saved in {out / 'last.pt'}; continue with --resume")
                        raise KeyboardInterrupt
                    if step == train.steps:
                        break
        finally:
            progress.close()
    if context.is_main:
        save_loss_curve(out / "loss_curve.png", history.records)
        if skipped:
            print(f"skipped {len(skipped)} bad volume(s):\n  " + "\n  ".join(skipped))
    context.barrier()
    return out / "encoder.pt"


def _validate(model: GMIM, volumes: Sequence[dict[str, Any]], planner: GridMaskPlanner, loss_function: GMIMLoss,
              config: PretrainConfig, precision: MixedPrecision, context: DistributedContext, step: int,
              progress: Progress, history: _History) -> None:
    """Mean loss terms on the held-out volumes, with the same views and masks at every validation."""
    views = SeededDataset(volumes, view_transforms(config), seed=config.train.seed + 1)
    totals: dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        for i in range(len(views)):
            item = views[i]
            x, y = item["x"][None].to(context.device), item["y"][None].to(context.device)
            masks, _ = _step_masks(planner, x, [i], config, _VALIDATION_KEY)
            with precision.autocast():
                output = model(x, y, masks)
            for key, value in loss_function(output, x, voxel_mask(masks[0]), item["offset"][None]).items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(views)
    model.train()
    scalars = {f"val/{k}": v for k, v in totals.items()}
    progress.scalars(step, scalars)
    progress.write(f"step {step}: validation loss {totals['loss']:.4f} "
                   f"(cross-correlation {totals['cross_correlation']:.3f}, reconstruction {totals['reconstruction']:.4f})")
    history.add({"step": step, **scalars})
