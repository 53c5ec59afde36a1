"""The configuration of Swin UNETR's own self-supervised pre-training (``gmim pretrain --method swin-ssl``).

Defaults are the published code's single-GPU defaults (Tang et al., CVPR 2022, and its public
training script; docs/swin-ssl.md §5): a CT collection scaled from [-1000, 1000] HU to
[0, 1], 96³ sub-volumes, two per volume, AdamW at 4e-4 with decay 0.1, 500 warm-up steps, mixed
precision. The presets ``published`` (the multi-GPU command that trained MONAI's
``model_swinvit.pt``) and ``cpu-small`` ship in ``gmim/presets/swin-ssl/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gmim.data.transforms import CT_PRETRAIN_WINDOW, Preprocessing
from gmim.engine.config import LoopConfig
from gmim.pretraining.config import CollectionConfig
from gmim.rules import Section, SettingError, at_least, between, positive, setting
from gmim.swin.config import SwinConfig

__all__ = ["DataConfig", "InpaintingConfig", "LossConfig", "ModelConfig", "SwinSSLConfig", "TrainConfig"]


@dataclass
class ModelConfig(SwinConfig):
    """The Swin UNETR encoder (:class:`gmim.swin.config.SwinConfig`) and the published heads."""

    roi: tuple[int, int, int] = (96, 96, 96)
    #: Width of the contrastive projection of the second final-stage token.
    contrastive_dim: int = setting(512, at_least(1))
    #: The reconstruction head: ``vae`` (five 3³ convolutions with instance norm, LeakyReLU and ×2
    #: trilinear upsampling, then a 1³ convolution: the published default), ``deconv`` (five ×2
    #: transposed convolutions) or ``large_kernel_deconv`` (one ×32 transposed convolution).
    upsample: Literal["vae", "deconv", "large_kernel_deconv"] = "vae"
    dropout_path_rate: float = setting(0.0, between(0, 1))


@dataclass
class InpaintingConfig(Section):
    """The published local-region drop applied to each view (docs/swin-ssl.md §2): regions of
    random noise until a random share of the crop is covered, then regions copied from another crop
    of the batch."""

    #: Each drop covers a share of the crop drawn uniformly from [0, this].
    max_fraction: float = setting(0.3, between(0, 1))
    #: The largest region per axis, as a share of the crop's size.
    max_block: float = setting(0.25, between(0, 1, low_open=True))
    #: The smallest region per axis, as a share of the crop's size (below ``max_block``).
    min_block: float = setting(0.05, between(0, 1))

    def check(self) -> None:
        if self.min_block >= self.max_block:
            raise SettingError("min_block", self.min_block, f"must be below inpainting.max_block ({self.max_block})", related=["max_block"])


@dataclass
class LossConfig(Section):
    """L = rotation·L_rot + contrastive·L_contrast + reconstruction·L_rec (all 1 as published)."""

    rotation: float = setting(1.0, at_least(0))
    contrastive: float = setting(1.0, at_least(0))
    reconstruction: float = setting(1.0, at_least(0))
    #: τ of the NT-Xent contrastive loss.
    temperature: float = setting(0.5, positive())


@dataclass
class DataConfig(CollectionConfig):
    """The collection as every pre-training method reads it, and the crops drawn from each volume."""

    #: Sub-volumes drawn from each volume per step (the published ``sw_batch_size``): a step trains
    #: on ``train.batch_size × crops_per_volume`` crops, each seen in two views.
    crops_per_volume: int = setting(2, at_least(1))


@dataclass
class TrainConfig(LoopConfig):
    """The loop's settings (:class:`gmim.engine.config.LoopConfig`) at the published script's defaults."""

    steps: int | None = 100000
    batch_size: int = 2
    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500


@dataclass
class SwinSSLConfig(Section):
    method: Literal["swin-ssl"] = "swin-ssl"
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(modality="ct", window=CT_PRETRAIN_WINDOW))
    model: ModelConfig = field(default_factory=ModelConfig)
    inpainting: InpaintingConfig = field(default_factory=InpaintingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        """The rotation turns the crop in the plane of its last two axes, which must be equally long."""
        roi = self.model.roi
        if roi[1] != roi[2]:
            raise SettingError("model.roi", roi, "must have equal last two sizes: the rotation task turns the crop by 90° in their plane")
