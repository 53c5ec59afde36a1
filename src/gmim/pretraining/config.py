"""The pre-training configuration. Defaults are the prototype's for a CT collection;
the presets ``brats2021``, ``ct`` and ``cpu-small`` ship in ``gmim/presets/pretrain/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gmim.data.transforms import CT_PRETRAIN_WINDOW, Preprocessing
from gmim.engine.config import LoopConfig
from gmim.rules import (
    Section,
    SettingError,
    at_least,
    between,
    each,
    non_empty,
    setting,
)
from gmim.swin.config import SwinConfig

__all__ = ["AS_RUN", "CollectionConfig", "DataConfig", "LossConfig", "MaskingConfig", "ModelConfig", "PretrainConfig", "TrainConfig"]

#: Where the prototype as its code ran differs from the method as the paper describes it
#: (docs/method.md §9), as settings: the ``prototype`` presets are ``ct`` and ``brats2021`` with these.
AS_RUN: dict[str, str | bool] = {
    "masking.cells": "prototype",
    "loss.reconstruction": "prototype",
    "model.patch_merging": "monai-legacy",
    "data.padding": "symmetric",
    "data.crop_foreground": False,
    "data.target_augmentation": "batch",
}


@dataclass
class ModelConfig(SwinConfig):
    """The Swin UNETR encoder (:class:`gmim.swin.config.SwinConfig`) and GMIM's heads."""

    roi: tuple[int, int, int] = (128, 128, 128)
    projection_dim: int = setting(512, at_least(1))
    #: 0: the target encoder is the online one at every step (the prototype); m > 0: an EMA of it.
    target_momentum: float = setting(0.0, between(0, 1, high_open=True))
    #: Fill masked tokens with a learned vector per application point instead of zeros.
    learned_mask_token: bool = False
    dropout_path_rate: float = setting(0.0, between(0, 1))


@dataclass
class MaskingConfig(Section):
    #: Cells per axis of each grid a sample's masks may be drawn on.
    grids: tuple[int, ...] = setting((4, 8, 16), each(at_least(1)))
    base_ratio: float = setting(0.5, between(0, 1, low_open=True))
    #: Spread s of the per-cell ratios base·(1 ± s) by entropy rank.
    scale: float = setting(0.3, between(0, 1, high_open=True))
    dynamic: bool = True
    #: Probability that each of a1, a2, a3 masks in a step.
    drop_probability: float = setting(0.3, between(0, 1))
    #: Hierarchical factor h: the ratio at a_i is r·h^i; 0 masks at a0 only.
    decay: float = setting(0.5, between(0, 1))
    #: Which voxels make each grid's cells: ``spatial``, the crop's (docs/method.md §2); ``prototype``,
    #: as the prototype ran: each grid after the first reads the previous grid's cell array as a
    #: volume, which nearly always picks the first grid (§9). Its grids must divide the roi.
    cells: Literal["spatial", "prototype"] = "spatial"


@dataclass
class LossConfig(Section):
    alpha_cc: float = setting(0.005, at_least(0))
    alpha_rec: float = setting(1.0, at_least(0))
    #: λ, the weight of the off-diagonal cross-correlation terms.
    off_diagonal_weight: float = setting(0.005, at_least(0))
    #: Reconstruction loss on the voxels of masked a0 tokens only (the prototype's choice).
    masked_only: bool = True
    #: How the masked voxels' squared errors are averaged: ``masked_mean``, per sample over its
    #: masked voxels (docs/method.md §5); ``prototype``, over all the batch's voxels, as the
    #: prototype ran (an effective α_rec about 2× smaller at the default ratios; §9).
    reconstruction: Literal["masked_mean", "prototype"] = "masked_mean"
    #: Standardise each projected dimension along the tokens before correlating (Barlow Twins).
    standardize: bool = False
    #: Correlate tokens at the same anatomical place, over the two crops' overlap, rather than
    #: tokens at the same index (the prototype's choice).
    align_overlap: bool = False
    #: Weight of a VICReg-style variance term on the online branch's final-stage tokens, which keeps
    #: them from collapsing to one vector (0: off, as the paper; ``gmim.pretraining.losses.variance_loss``).
    variance_weight: float = setting(0.0, at_least(0))


@dataclass
class CollectionConfig(Section):
    """How any pre-training method reads its collection from the prepared stores."""

    #: Draw views inside each volume's foreground (non-zero after normalisation) box, so that they
    #: fall on the body rather than on air (the GMIM prototype does not; docs/method.md §9).
    crop_foreground: bool = True
    #: How a volume smaller than the view region is padded: ``zero``, or ``symmetric`` (mirrored,
    #: [1,2,3,4] → [2,1,1,2,3,4,4,3]: the GMIM prototype's).
    padding: Literal["zero", "symmetric"] = "zero"
    #: The folder of prepared stores that DATA paths are prepared into, one store per preprocessing,
    #: shared by later runs of any method (null: ``$XDG_CACHE_HOME/gmim/stores``, i.e. ``~/.cache/gmim/stores``).
    store: str | None = setting(None, non_empty())
    #: Volumes held out for the validation loss: the datalist's ``validation`` section when it has
    #: one, else this many volumes of the collection (0: no validation).
    validation_volumes: int = setting(0, at_least(0))
    #: Go on past unreadable or invalid volumes, with a warning and a count at the end.
    skip_bad: bool = False


@dataclass
class DataConfig(CollectionConfig):
    """GMIM's views: two overlapping crops of a region."""

    #: The view region is roi + margin per axis; BraTS-like MRI uses (32, 32, 0).
    margin: tuple[int, int, int] = setting((32, 32, 32), each(at_least(0), empty_allowed=True))
    #: The target view's intensity augmentation drawn per ``sample`` (in the loader), or once per
    #: ``batch`` with the contrast range from the batch's minimum and maximum (the prototype's; in
    #: the training step, per process).
    target_augmentation: Literal["sample", "batch"] = "sample"


@dataclass
class TrainConfig(LoopConfig):
    """The loop's settings (:class:`gmim.engine.config.LoopConfig`) at the prototype's values, and pictures."""

    steps: int | None = 4000
    batch_size: int = 2
    lr: float = 4e-4
    warmup_steps: int = 500
    #: Save a picture of a view, its masks and its reconstruction every this many steps (0: at the end).
    picture_every: int = setting(500, at_least(0))


@dataclass
class PretrainConfig(Section):
    #: The method (:mod:`gmim.methods`): config.yaml names it, so that any gmim command knows the run.
    method: Literal["gmim"] = "gmim"
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing(modality="ct", window=CT_PRETRAIN_WINDOW))
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        """The masks' grids against the crop: every cell needs a voxel, and the prototype's cells
        need grids that divide it."""
        grids, roi = self.masking.grids, self.model.roi
        if max(grids) > min(roi):
            raise SettingError(
                "masking.grids",
                grids,
                f"must be no finer than the crop model.roi {list(roi)} (each cell needs a voxel)",
                related=["model.roi"],
            )
        if self.masking.cells == "prototype" and any(n % g for g in grids for n in roi):
            raise SettingError(
                "masking.grids",
                grids,
                f"must divide the crop model.roi {list(roi)}, as masking.cells prototype needs",
                related=["model.roi", "masking.cells"],
            )
