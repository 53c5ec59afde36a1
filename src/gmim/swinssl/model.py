"""The network of Swin UNETR's self-supervised pre-training: the encoder and the three published heads.

From the encoder's final stage (16F channels, layer-normalised; F the feature size) the published
model reads three things (Tang et al., CVPR 2022; docs/swin-ssl.md §1):

- the **rotation** head, a linear map of the *first* final-stage token to 4 logits (0°, 90°, 180°, 270°);
- the **contrastive** head, a linear map of the *second* final-stage token to 512 values;
- the **reconstruction** head, the whole final stage back to voxels at the input's channels
  (:func:`reconstruction_head`).

Tokens are numbered in C order of the final-stage grid (d, h, w), as the published model flattens
them; a crop therefore needs at least two final-stage tokens (the crop rule of :mod:`gmim.swin.geometry`).
The encoder is MONAI's ``SwinUNETR(...).swinViT``, built as GMIM builds it
(:class:`gmim.pretraining.encoder.MaskedSwinEncoder`, never given masks here), so its state_dict
is ``encoder.pt`` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from gmim.pretraining.encoder import MaskedSwinEncoder
from gmim.swin.attention import fuse_window_attention
from gmim.swin.merging import patch_merging as merging_class
from gmim.swinssl.config import ModelConfig

__all__ = ["ROTATIONS", "SSLOutput", "SwinSSL", "build_model", "reconstruction_head"]

#: The rotation task's classes: 0, 1, 2 or 3 quarter turns.
ROTATIONS = 4


def reconstruction_head(kind: str, width: int, out_channels: int) -> nn.Module:
    """The published reconstruction heads from ``width`` (16F) final-stage channels to
    ``out_channels``, ×32 per axis. The layers and their order (hence the state_dict's keys) are
    the published ones, generalised from F = 48 to any feature size:

    - ``vae``: four times [3³ conv → InstanceNorm → LeakyReLU → ×2 trilinear], widths
      16F → 8F → 4F → 2F → F, once more at F, then a 1³ conv;
    - ``deconv``: five 2³ transposed convolutions of stride 2, 16F → 8F → 4F → 2F → F → out;
    - ``large_kernel_deconv``: one 32³ transposed convolution of stride 32.
    """
    if kind == "large_kernel_deconv":
        return nn.ConvTranspose3d(width, out_channels, kernel_size=32, stride=32)
    widths = (width, width // 2, width // 4, width // 8, width // 16)
    if kind == "deconv":
        return nn.Sequential(
            *(nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2) for cin, cout in zip(widths, (*widths[1:], out_channels)))
        )
    if kind != "vae":
        raise ValueError(f"unknown reconstruction head {kind!r}: vae, deconv or large_kernel_deconv")
    layers: list[nn.Module] = []
    for cin, cout in zip(widths, (*widths[1:], width // 16)):
        layers += [
            nn.Conv3d(cin, cout, kernel_size=3, stride=1, padding=1),
            nn.InstanceNorm3d(cout),
            nn.LeakyReLU(),
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
        ]
    layers.append(nn.Conv3d(width // 16, out_channels, kernel_size=1, stride=1))
    return nn.Sequential(*layers)


@dataclass
class SSLOutput:
    rotation: Tensor  #: (B, 4) logits of the quarter turns
    contrastive: Tensor  #: (B, P) projection of the second final-stage token
    reconstruction: Tensor  #: (B, C, D, H, W) the view's voxels before the drop


class SwinSSL(nn.Module):
    """MONAI's Swin UNETR encoder and the published rotation, contrastive and reconstruction heads."""

    def __init__(
        self,
        in_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        use_v2: bool = False,
        contrastive_dim: int = 512,
        upsample: str = "vae",
        use_checkpoint: bool = False,
        dropout_path_rate: float = 0.0,
        patch_merging: str = "monai",
    ) -> None:
        super().__init__()
        self.encoder = MaskedSwinEncoder(
            in_channels,
            feature_size,
            depths=depths,
            num_heads=num_heads,
            use_v2=use_v2,
            use_checkpoint=use_checkpoint,
            dropout_path_rate=dropout_path_rate,
            downsample=merging_class(patch_merging),
        )
        width = 16 * feature_size
        self.rotation_head = nn.Linear(width, ROTATIONS)
        self.contrastive_head = nn.Linear(width, contrastive_dim)
        self.reconstruction_head = reconstruction_head(upsample, width, in_channels)

    def forward(self, x: Tensor) -> SSLOutput:
        final = self.encoder(x.contiguous())[-1]  # (B, 16F, d, h, w)
        tokens = final.flatten(2).transpose(1, 2)  # (B, d·h·w, 16F)
        return SSLOutput(
            rotation=self.rotation_head(tokens[:, 0]),
            contrastive=self.contrastive_head(tokens[:, 1]),
            reconstruction=self.reconstruction_head(final),
        )


def build_model(model: ModelConfig) -> SwinSSL:
    """The network of a resolved ``model`` section, with the architecture, patch merging and fused
    attention that GMIM's build gives its encoder (:func:`gmim.pretraining.method.build_model`)."""
    if model.in_channels is None:
        raise ValueError("model.in_channels must be resolved before the model is built")
    architecture = model.architecture()
    network = SwinSSL(
        in_channels=model.in_channels,
        feature_size=architecture.feature_size,
        depths=architecture.depths,
        num_heads=architecture.num_heads,
        use_v2=architecture.use_v2,
        contrastive_dim=model.contrastive_dim,
        upsample=model.upsample,
        use_checkpoint=model.gradient_checkpointing,
        dropout_path_rate=model.dropout_path_rate,
        patch_merging=architecture.patch_merging or "monai",
    )
    return fuse_window_attention(network) if model.fused_attention else network
