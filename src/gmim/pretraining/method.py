"""GMIM pre-training as a method of the training loop (:mod:`gmim.engine.loop`), and ``pretrain``.

Run folder: ``config.yaml`` (resolved), ``encoder.pt`` (a plain state_dict of MONAI's
``SwinUNETR(...).swinViT``), ``last.pt`` (resumable), ``metrics.jsonl``, ``summary.json``,
``loss_curve.png``, ``pictures/`` (a view, its masks at a0–a3 and its reconstruction) and
``tensorboard/``.

Every random choice of a step is seeded by (seed, step, volume): the views by the data pipeline,
the masks here. A resumed run therefore repeats an uninterrupted one exactly, and a run over
several processes draws the same samples and masks as one process with the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import convert_to_tensor

from gmim.engine.checkpoint import save_checkpoint
from gmim.engine.loop import RunSummary, Trainer, Validation
from gmim.engine.sampling import SeededDataset, derived_seed
from gmim.errors import InputError
from gmim.pretraining.config import PretrainConfig
from gmim.pretraining.data import (
    Volumes,
    open_collection,
    prepare_volumes,
    split_places,
    view_transforms,
    volume_records,
)
from gmim.pretraining.health import (
    Health,
    HealthMeter,
    collapse_warning,
    final_health,
    recorded_initial_health,
    trivial_cross_correlation,
)
from gmim.pretraining.losses import GMIMLoss
from gmim.pretraining.masking import GridMaskPlanner, mask_every_point, voxel_mask
from gmim.pretraining.model import GMIM
from gmim.pretraining.views import target_augmentation
from gmim.pretraining.visualize import save_loss_curve, save_masking_figure
from gmim.swin.attention import fuse_window_attention
from gmim.swin.init import InitialWeights

__all__ = ["GMIMPretraining", "build_model", "pretrain"]

#: Settings a resumed run may change besides the loop's: how it runs, not what it learns.
RESUMABLE_CHANGES = ("train.picture_every", "data.store", "data.skip_bad")

#: Seeds the validation's masks apart from any training step's.
_VALIDATION_KEY = 2**40
#: Without validation volumes, representation health is measured on views of this many training volumes.
HEALTH_VOLUMES = 2


def build_model(config: PretrainConfig) -> GMIM:
    model = config.model
    if model.in_channels is None:
        raise ValueError("model.in_channels must be resolved before the model is built")
    architecture = model.architecture()
    network = GMIM(
        in_channels=model.in_channels,
        feature_size=architecture.feature_size,
        depths=architecture.depths,
        num_heads=architecture.num_heads,
        use_v2=architecture.use_v2,
        projection_dim=model.projection_dim,
        target_momentum=model.target_momentum,
        learned_mask_token=model.learned_mask_token,
        use_checkpoint=model.gradient_checkpointing,
        dropout_path_rate=model.dropout_path_rate,
        patch_merging=architecture.patch_merging or "monai",
    )
    return fuse_window_attention(network) if model.fused_attention else network


def pretrain(config: PretrainConfig, data: Sequence[str | Path], out: Path, resume: bool = False) -> RunSummary:
    """Pre-train on the volumes under ``data`` (image folders, datalists, dataset folders or prepared
    stores) into the run folder ``out`` (``out / "encoder.pt"``)."""
    volumes = open_collection(data, config)  # in_channels from the data; a bad split refused before any work
    with Trainer(GMIMPretraining.name, config, config.train, out, resume, RESUMABLE_CHANGES, init=InitialWeights(config.model)) as trainer:
        return trainer.fit(GMIMPretraining(config, volumes, trainer))


class GMIMPretraining:
    """The GMIM method: grid masks, the Siamese model and its two losses (see :mod:`gmim.pretraining`)."""

    name = "gmim"
    keeps_best = False
    validates_at_start = True  # the initial encoder's health is the baseline of every later one

    def __init__(self, config: PretrainConfig, volumes: Volumes, trainer: Trainer) -> None:
        self.config, self.trainer = config, trainer
        self.model = build_model(config)
        context = trainer.context
        prepared, self.skipped = prepare_volumes(volumes, config, context.rank, context.world_size)
        train_places, val_places = split_places([entry.split for entry, _ in prepared], config.data.validation_volumes)
        if not train_places:
            raise InputError(f"no usable training volume among {len(volumes)}")
        volume_data = volume_records([prepared[i] for i in train_places], config)
        self.val_volumes = volume_records([prepared[i] for i in val_places], config) if context.is_main else []
        # Health is measured on the validation volumes, else on a few training volumes: it asks
        # whether features still tell places apart, which needs no held-out data.
        self.health_volumes = self.val_volumes or (volume_data[:HEALTH_VOLUMES] if context.is_main else [])
        self.health_count = len(val_places) or min(HEALTH_VOLUMES, len(volume_data))  # the same on every rank
        self.health: Health | None = None
        self.trivial = trivial_cross_correlation(config.model.projection_dim, config.loss.off_diagonal_weight)
        self.initial_health = (
            recorded_initial_health(trainer.out / "metrics.jsonl", self.trivial) if trainer.resume and trainer.is_main else None
        )
        self.warned = False
        per_batch = config.data.target_augmentation == "batch"
        self.train_data = SeededDataset(volume_data, view_transforms(config, augment_target=not per_batch), seed=config.train.seed)
        self.batch_augmentation = target_augmentation("y") if per_batch else None
        masking = config.masking
        self.planner = GridMaskPlanner(masking.grids, masking.base_ratio, masking.scale, masking.dynamic, cells=masking.cells)
        self.loss_function = GMIMLoss(**vars(config.loss))

    @property
    def init_module(self) -> torch.nn.Module:
        return self.model.encoder

    def after_init(self) -> None:
        self.model.reset_target()

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    def masks(self, x: torch.Tensor, indices: Sequence[int], key: int) -> tuple[Sequence[torch.Tensor | None], torch.Tensor]:
        """The masks of points a0–a3 for a batch: coin flips seeded by the step ``key`` (on the CPU,
        the only values masking reads back), positions by the step and each sample's volume index,
        on the batch's device. Returns them with the grids chosen."""
        seed, masking, device = self.config.train.seed, self.config.masking, x.device
        plan = self.planner.plan(x)
        masks: Sequence[torch.Tensor | None] = plan.hierarchical_masks(
            x.shape[2:],
            masking.drop_probability,
            masking.decay,
            sample_generators=[torch.Generator(device=device).manual_seed(derived_seed(seed, key, i)) for i in indices],
            coin_generator=torch.Generator().manual_seed(derived_seed(seed, key)),
        )
        if self.config.model.learned_mask_token or self.config.train.compile:
            masks = mask_every_point(masks, x.shape[2:])
        return masks, plan.grid

    def train_step(self, model: Callable[..., Any], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        device, precision = self.trainer.device, self.trainer.precision
        x = batch["x"].to(device, non_blocking=True)
        y = batch["y"].to(device, non_blocking=True)
        if self.batch_augmentation is not None:  # the prototype's: one draw for the batch (validation: per volume)
            self.batch_augmentation.set_random_state(seed=derived_seed(self.config.train.seed, step, self.trainer.context.rank, 1))
            y = convert_to_tensor(self.batch_augmentation({"y": y})["y"], track_meta=False)
        masks, grids = self.masks(x, batch["index"].tolist(), step)
        with precision.autocast():
            output = model(x, y, masks)
        assert masks[0] is not None, "point a0 always masks"
        terms = self.loss_function(output, x, voxel_mask(masks[0]), batch["offset"])
        if self.trainer.is_main and self.trainer.due(step, self.config.train.picture_every):
            save_masking_figure(
                self.trainer.out / "pictures" / f"step{step:06d}.png",
                x[0],
                [m[0] if m is not None else None for m in masks],
                int(grids[0]),
                output.reconstruction[0].float(),
                title=f"step {step}",
            )
        return terms

    def after_optimizer_step(self) -> None:
        self.model.update_target()

    def validation_cost(self) -> float:
        """Each view: the two branches' forward passes and one more of the encoder (about 3 of a
        step's 4 passes per volume)."""
        return self.health_count * 3 / (4 * self.config.train.batch_size)

    def validate(self, step: int) -> Validation:
        """Mean loss terms on the held-out volumes and representation health, with the same views
        and masks at every validation (rank 0; without validation volumes, health alone on a few
        training volumes). Warns once when the encoder collapses."""
        if not self.health_volumes:
            return Validation({}, "")
        device, precision = self.trainer.device, self.trainer.precision
        views = SeededDataset(self.health_volumes, view_transforms(self.config), seed=self.config.train.seed + 1)
        totals: dict[str, float] = {}
        meter = HealthMeter(self.trivial)
        self.model.eval()
        with torch.no_grad():
            for i in range(len(views)):
                item = views[0, i]
                x, y = item["x"][None].to(device), item["y"][None].to(device)
                masks, _ = self.masks(x, [i], _VALIDATION_KEY)
                offset = item["offset"][None]
                with precision.autocast():
                    output = self.model(x, y, masks)
                    meter.add_states(self.model.encoder(x))
                assert masks[0] is not None, "point a0 always masks"
                terms = self.loss_function(output, x, voxel_mask(masks[0]), offset)
                meter.add_correlation(self.loss_function.correlation(output, x, offset)[0], float(terms["cross_correlation"]))
                for key, value in terms.items():
                    totals[key] = totals.get(key, 0.0) + float(value) / len(views)
        self.model.train()
        health = meter.result()
        if step == 0 or self.initial_health is None:
            self.initial_health = health
        summary = f"health: {health.line(self.initial_health)}"
        if self.val_volumes:
            summary = (
                f"validation loss {totals['loss']:.4f} (cross-correlation {totals['cross_correlation']:.3f}, "
                f"reconstruction {totals['reconstruction']:.4f}); {summary}"
            )
        else:
            totals = {}
        if not self.warned and health.collapsed(self.initial_health):
            self.trainer.write(collapse_warning(health, self.initial_health))
            self.warned = True
        self.health = health
        return Validation(totals | health.scalars(), summary)

    def export(self) -> None:
        save_checkpoint(self.trainer.out / "encoder.pt", self.model.encoder.state_dict())

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The loss and health curves, and the representation health of the final encoder against the
        initial one (printed, and returned for ``summary.json``)."""
        save_loss_curve(self.trainer.out / "loss_curve.png", records)
        if self.skipped:
            print(f"skipped {len(self.skipped)} bad volume(s):\n  " + "\n  ".join(self.skipped))
        return final_health(self.health, self.initial_health)
