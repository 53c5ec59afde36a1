"""The ``model`` section that pre-training and fine-tuning share: the Swin UNETR to build and the
weights to start it from.

The architecture's fields may stay null: a run that starts from weights (``model.init``) then takes
them from the weights (:mod:`gmim.swin.architecture`), any other run from :data:`DEFAULT`, and the
run's ``config.yaml`` records what was built. A value the user set that the weights contradict is
refused in one line naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gmim.errors import InputError
from gmim.rules import Section, SettingError, at_least, each, non_empty, plain, setting
from gmim.swin.architecture import DEFAULT, SwinArchitecture, heads_problem
from gmim.swin.geometry import FEATURE_SIZE, ROI
from gmim.swin.merging import MergingChoice, canonical_merging

__all__ = ["ARCHITECTURE_KEYS", "SwinConfig"]

#: The fields that a run starting from weights may take from them (``model.<name>``).
ARCHITECTURE_KEYS = ("feature_size", "depths", "num_heads", "use_v2", "patch_merging")


@dataclass
class SwinConfig(Section):
    #: Swin UNETR's feature size F (48 in the paper); null: from ``init``'s weights, else 48.
    feature_size: int | None = setting(None, FEATURE_SIZE)
    roi: tuple[int, int, int] = setting((96, 96, 96), ROI)
    #: Input channels; null: from the data (the resolved config always has it).
    in_channels: int | None = setting(None, at_least(1))
    #: Swin blocks per stage; null: from the weights, else (2, 2, 2, 2).
    depths: tuple[int, int, int, int] | None = setting(None, each(at_least(1), empty_allowed=True))
    #: Attention heads per stage; null: from the weights, else (3, 6, 12, 24).
    num_heads: tuple[int, int, int, int] | None = setting(None, each(at_least(1), empty_allowed=True))
    #: MONAI's Swin UNETR v2 (a residual convolution block before each stage); null: from the
    #: weights, else false.
    use_v2: bool | None = None
    #: Recompute activations in the backward pass: less memory, about a third slower.
    gradient_checkpointing: bool = False
    #: Window attention through PyTorch's fused ``scaled_dot_product_attention`` (the same function
    #: as MONAI's, up to float round-off; see :mod:`gmim.swin.attention`).
    fused_attention: bool = True
    #: Swin's patch merging: ``monai`` (MONAI ≥ 1.5's ``merging``, Swin UNETR's default), ``monai-v2``
    #: (MONAI's ``mergingv2``) or ``monai-legacy`` (MONAI < 1.5's ``merging``, which every public
    #: release and the GMIM prototype trained with; ``prototype`` is another name for it;
    #: :mod:`gmim.swin.merging`); null: what the weights record, else their source's
    #: (:mod:`gmim.swin.layouts`), else monai.
    patch_merging: Literal["monai", "monai-v2", "monai-legacy", "prototype"] | None = None
    #: Weights to start from: a gmim ``encoder.pt`` or run, an exported model folder, or a public
    #: Swin UNETR checkpoint (README, "Weights from elsewhere"); null: from scratch.
    init: str | None = setting(None, non_empty())
    #: Weights for another number of input channels: their input layers adapted (the sum over the
    #: file's channels spread over this model's, :func:`gmim.swin.weights.adapt_input_channels`), or,
    #: false, those layers start fresh.
    adapt_channels: bool = True

    def check(self) -> None:
        if self.patch_merging is not None:  # one name for one function, so that records compare
            self.patch_merging = canonical_merging(self.patch_merging)  # type: ignore[assignment]
        problem = heads_problem(self.feature_size or DEFAULT.feature_size, self.num_heads or DEFAULT.num_heads)
        if problem is not None:
            raise SettingError(
                "num_heads", self.num_heads or DEFAULT.num_heads, f"must fit the feature size ({problem})", related=["feature_size"]
            )

    def architecture(self) -> SwinArchitecture:
        """The architecture to build: the fields, :data:`DEFAULT` where they are null."""
        return SwinArchitecture(
            feature_size=self.feature_size or DEFAULT.feature_size,
            in_channels=self.in_channels,
            depths=tuple(self.depths or DEFAULT.depths),
            num_heads=tuple(self.num_heads or DEFAULT.num_heads),
            use_v2=bool(self.use_v2),
            patch_merging=self.patch_merging or "monai",
        )

    def take_architecture(self, found: SwinArchitecture | None, source: str, merging: MergingChoice | None = None) -> MergingChoice | None:
        """Fill the null architecture fields from ``found`` (the weights' architecture; None: no
        weights), then from :data:`DEFAULT`; refuse a field the user set that ``found`` contradicts.
        The patch merging, which the weights cannot show, is ``merging`` (what their record, layout or
        the rule says) unless the user set it; returns the merging built and why (None: no weights)."""
        if found is not None and found.window_size != DEFAULT.window_size:
            raise InputError(
                f"model.init {source}: attention windows of {found.window_size}³; gmim builds Swin UNETRs with MONAI's {DEFAULT.window_size}³"
            )
        user_merging = self.patch_merging
        for name in ARCHITECTURE_KEYS:
            theirs = getattr(found, name) if found is not None else None
            mine = getattr(self, name)
            if theirs is not None and mine is not None and plain(mine) != plain(theirs):
                raise InputError(
                    f"model.init {source}: the weights are a Swin UNETR with {name} {plain(theirs)}, but model.{name} is "
                    f"{plain(mine)}; leave model.{name} unset to take the weights', or choose other weights"
                )
            if mine is None:
                setattr(self, name, theirs if theirs is not None else getattr(self.architecture(), name))
        if merging is None:
            return None
        if user_merging is None:  # the loop filled in the default: the weights' merging is the better guess
            self.patch_merging = merging.name  # type: ignore[assignment]
            return merging
        if merging.reason == "record":  # and the loop found the setting agrees with it
            return merging
        return MergingChoice(user_merging, "setting", f"set by model.patch_merging (otherwise {merging.name}: {merging.why})")
