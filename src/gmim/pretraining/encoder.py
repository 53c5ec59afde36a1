"""MONAI's Swin UNETR encoder with GMIM's token masks applied inside it (docs/method.md §1, §3).

:class:`MaskedSwinEncoder` *is* MONAI's ``SwinTransformer``, built with the arguments that
``monai.networks.nets.SwinUNETR`` gives its ``swinViT``; only ``forward`` differs, taking the masks.
Its state_dict therefore moves both ways between this project and ``SwinUNETR(...).swinViT`` with
``strict=True`` and no renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer
from monai.utils import ensure_tuple_rep, look_up_option
from torch import Tensor, nn

__all__ = ["MaskedSwinEncoder", "apply_token_mask"]


def apply_token_mask(x: Tensor, mask: Tensor | None, fill: Tensor | None = None) -> Tensor:
    """Replace the masked tokens of ``x`` (B, C, d, h, w) by ``fill`` (C,), or by zeros.

    ``mask`` is (B, d, h, w), True = masked; None leaves ``x`` as it is.
    """
    if mask is None:
        return x
    if mask.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit tokens of shape {tuple(x.shape)}")
    keep = (~mask).unsqueeze(1).to(x.dtype)
    if fill is None:
        return x * keep
    return x * keep + fill.to(x.dtype).view(1, -1, 1, 1, 1) * (1 - keep)


class MaskedSwinEncoder(SwinTransformer):
    """Swin UNETR's encoder ("SwinViT"), masks applied at a0 (patch embedding), a1 (positional
    dropout), a2 (after ``layers1``) and a3 (after ``layers2``); nothing after ``layers3``.

    Arguments mirror ``monai.networks.nets.SwinUNETR`` (3D only).
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] | int = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        downsample: str | type[nn.Module] = "merging",
        use_v2: bool = False,
    ) -> None:
        if feature_size % 12 != 0:
            raise ValueError(f"feature_size must be divisible by 12, got {feature_size}")
        super().__init__(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=ensure_tuple_rep(window_size, 3),
            patch_size=ensure_tuple_rep(patch_size, 3),
            depths=depths,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=dropout_path_rate,
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            downsample=look_up_option(downsample, MERGING_MODE) if isinstance(downsample, str) else downsample,
            use_v2=use_v2,
        )
        self.in_channels = in_channels
        self.feature_size = feature_size

    def forward(
        self,
        x: Tensor,
        normalize: bool = True,
        masks: Sequence[Tensor | None] | None = None,
        mask_tokens: Sequence[Tensor | None] | None = None,
    ) -> list[Tensor]:
        """The five hidden states of ``SwinTransformer.forward``, with ``masks[i]`` applied at point a_i.

        ``masks`` holds up to four (B, d, h, w) bool masks or None (see
        :meth:`gmim.pretraining.masking.GridMaskPlan.hierarchical_masks`); ``mask_tokens`` optional learned
        fill vectors, one per point (zeros otherwise, as in the prototype).
        """
        masks = list(masks or []) + [None] * (4 - len(masks or []))
        fills = list(mask_tokens or []) + [None] * (4 - len(mask_tokens or []))
        x0 = apply_token_mask(self.patch_embed(x), masks[0], fills[0])
        x0 = apply_token_mask(self.pos_drop(x0), masks[1], fills[1])
        x0_out = self.proj_out(x0, normalize)
        if self.use_v2:
            x0 = self.layers1c[0](x0.contiguous())
        x1 = apply_token_mask(self.layers1[0](x0.contiguous()), masks[2], fills[2])
        x1_out = self.proj_out(x1, normalize)
        if self.use_v2:
            x1 = self.layers2c[0](x1.contiguous())
        x2 = apply_token_mask(self.layers2[0](x1.contiguous()), masks[3], fills[3])
        x2_out = self.proj_out(x2, normalize)
        if self.use_v2:
            x2 = self.layers3c[0](x2.contiguous())
        x3 = self.layers3[0](x2.contiguous())
        x3_out = self.proj_out(x3, normalize)
        if self.use_v2:
            x3 = self.layers4c[0](x3.contiguous())
        x4 = self.layers4[0](x3.contiguous())
        x4_out = self.proj_out(x4, normalize)
        return [x0_out, x1_out, x2_out, x3_out, x4_out]

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the tokens at a0, a1, a2, a3 (F, F, 2F, 4F)."""
        f = self.feature_size
        return (f, f, 2 * f, 4 * f)
