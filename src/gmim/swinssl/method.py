"""Swin UNETR's self-supervised pre-training as a method of the training loop (:mod:`gmim.engine.loop`), and ``pretrain``.

Run folder: ``config.yaml`` (resolved), ``encoder.pt`` (a plain state_dict of MONAI's
``SwinUNETR(...).swinViT``), ``last.pt`` (resumable), ``metrics.jsonl``, ``summary.json`` (with
the encoder's representation health, docs/swin-ssl.md §6) and ``tensorboard/``.

Every random choice of a step is seeded by (seed, step, volume): the crops by the data pipeline,
the views' turns and drops here (:mod:`gmim.swinssl.views`). A resumed run therefore repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gmim.engine.checkpoint import save_checkpoint
from gmim.engine.loop import RunSummary, Trainer, Validation
from gmim.engine.sampling import SeededDataset
from gmim.errors import InputError
from gmim.pretraining.data import Volumes, open_collection, prepare_volumes, split_places, volume_records
from gmim.pretraining.health import Health, HealthMeter, collapse_warning, final_health, recorded_initial_health
from gmim.swin.init import InitialWeights
from gmim.swinssl.config import SwinSSLConfig
from gmim.swinssl.data import crop_transforms
from gmim.swinssl.losses import SwinSSLLoss
from gmim.swinssl.model import SwinSSL, build_model
from gmim.swinssl.views import make_views

__all__ = ["SwinSSLPretraining", "pretrain"]

#: Settings a resumed run may change besides the loop's: how it runs, not what it learns.
RESUMABLE_CHANGES = ("data.store", "data.skip_bad")
#: Seeds the validation's views apart from any training step's.
_VALIDATION_KEY = 2**40
#: Without validation volumes, representation health is measured on crops of this many training volumes.
HEALTH_VOLUMES = 2
#: What to try when the encoder collapses (the end of the warning's line).
ADVICE = "a lower train.lr, or a larger model.roi (more final-stage tokens) may help"


def pretrain(config: SwinSSLConfig, data: Sequence[str | Path], out: Path, resume: bool = False) -> RunSummary:
    """Pre-train on the volumes under ``data`` (image folders, datalists, dataset folders or prepared
    stores) into the run folder ``out`` (``out / "encoder.pt"``)."""
    volumes = open_collection(data, config)  # in_channels from the data; a bad split refused before any work
    with Trainer(
        SwinSSLPretraining.name, config, config.train, out, resume, RESUMABLE_CHANGES, init=InitialWeights(config.model)
    ) as trainer:
        return trainer.fit(SwinSSLPretraining(config, volumes, trainer))


class SwinSSLPretraining:
    """Rotation, contrastive coding and inpainting on two views of each crop (see :mod:`gmim.swinssl`)."""

    name = "swin-ssl"
    keeps_best = False
    validates_at_start = True  # the initial encoder's health is the baseline of every later one

    def __init__(self, config: SwinSSLConfig, volumes: Volumes, trainer: Trainer) -> None:
        self.config, self.trainer = config, trainer
        self._model = build_model(config.model)
        context = trainer.context
        prepared, self.skipped = prepare_volumes(volumes, config, context.rank, context.world_size)
        train_places, val_places = split_places([entry.split for entry, _ in prepared], config.data.validation_volumes)
        if not train_places:
            raise InputError(f"no usable training volume among {len(volumes)}")
        volume_data = volume_records([prepared[i] for i in train_places], config)
        self.val_volumes = volume_records([prepared[i] for i in val_places], config) if context.is_main else []
        # Health asks whether features still tell places apart, which needs no held-out data.
        self.health_volumes = self.val_volumes or (volume_data[:HEALTH_VOLUMES] if context.is_main else [])
        self.health_count = len(val_places) or min(HEALTH_VOLUMES, len(volume_data))  # the same on every rank
        self.health: Health | None = None
        self.initial_health = recorded_initial_health(trainer.out / "metrics.jsonl") if trainer.resume and trainer.is_main else None
        self.warned = False
        data = config.data
        self.train_data = SeededDataset(
            volume_data,
            crop_transforms(config.model.roi, config.preprocessing, data.crops_per_volume, data.padding),
            seed=config.train.seed,
        )
        self.loss_function = SwinSSLLoss(config.loss)

    @property
    def model(self) -> SwinSSL:
        return self._model

    @property
    def init_module(self) -> torch.nn.Module:
        return self._model.encoder

    def after_init(self) -> None:
        pass

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self._model.parameters())}]

    def _terms(self, model: Callable[..., Any], x: torch.Tensor, keys: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """The loss terms of the crops ``x`` on the device, their views drawn by ``keys``. Both views
        go through the network as one batch: every layer works on each crop alone (layer and instance
        norms), so this is the published two calls in one."""
        views = make_views(x, keys, self.config.train.seed, self.config.inpainting)
        with self.trainer.precision.autocast():
            output = model(views.inputs)
        terms = self.loss_function(output, views)
        terms["rotation_accuracy"] = self.loss_function.rotation_accuracy(output, views)
        return terms

    def train_step(self, model: Callable[..., Any], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        x = batch["image"].to(self.trainer.device, non_blocking=True)
        keys = [(step, int(index), int(crop)) for index, crop in zip(batch["index"].tolist(), batch["crop"].tolist())]  # on the host
        return self._terms(model, x, keys)

    def after_optimizer_step(self) -> None:
        pass

    def validation_cost(self) -> float:
        """Per health volume one crop: an encoder pass, and with validation volumes the network on
        its two views (about 3 passes), against a step's 2 views × 3 passes (forward and backward)
        per crop."""
        crops = self.config.train.batch_size * self.config.data.crops_per_volume
        return self.health_count * 3 / (6 * crops)

    def validate(self, step: int) -> Validation:
        """Representation health of the encoder on one crop of each health volume, and the mean loss
        terms on the validation volumes' crops, with the same crops and views at every validation
        (rank 0). Warns once when the encoder collapses."""
        if not self.health_volumes:
            return Validation({}, "")
        device, precision = self.trainer.device, self.trainer.precision
        config = self.config
        crops = SeededDataset(
            self.health_volumes, crop_transforms(config.model.roi, config.preprocessing, 1, config.data.padding), seed=config.train.seed + 1
        )
        meter = HealthMeter()
        images = []
        self._model.eval()
        with torch.no_grad():
            for i in range(len(crops)):
                image = crops[0, i][0]["image"][None].to(device)
                with precision.autocast():
                    meter.add_states(self._model.encoder(image))
                images.append(image)
            totals: dict[str, float] = {}
            if self.val_volumes:
                x = torch.cat(images)
                per_batch = config.train.batch_size * config.data.crops_per_volume
                chunks = range(0, len(x), per_batch)
                for start in chunks:
                    keys = [(_VALIDATION_KEY, i, 0) for i in range(start, min(start + per_batch, len(x)))]
                    for key, value in self._terms(self._model, x[start : start + per_batch], keys).items():
                        totals[key] = totals.get(key, 0.0) + float(value) / len(chunks)
        self._model.train()
        health = meter.result()
        if step == 0 or self.initial_health is None:
            self.initial_health = health
        summary = f"health: {health.line(self.initial_health)}"
        if totals:
            summary = (
                f"validation loss {totals['loss']:.4f} (rotation {totals['rotation']:.3f}, contrastive {totals['contrastive']:.3f}, "
                f"reconstruction {totals['reconstruction']:.4f}); {summary}"
            )
        if not self.warned and health.collapsed(self.initial_health):
            self.trainer.write(collapse_warning(health, self.initial_health, ADVICE))
            self.warned = True
        self.health = health
        return Validation(totals | health.scalars(), summary)

    def export(self) -> None:
        save_checkpoint(self.trainer.out / "encoder.pt", self._model.encoder.state_dict())

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The representation health of the final encoder against the initial one (printed, and
        returned for ``summary.json``)."""
        if self.skipped:
            print(f"skipped {len(self.skipped)} bad volume(s):\n  " + "\n  ".join(self.skipped))
        return final_health(self.health, self.initial_health)
