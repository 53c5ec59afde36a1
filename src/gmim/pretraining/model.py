"""The GMIM Siamese model: masked online branch, gradient-free target branch, heads and decoder (docs/method.md §4, §5)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from gmim.pretraining.encoder import MaskedSwinEncoder
from gmim.swin.geometry import MIN_FINAL_TOKENS, STRIDE, token_grid
from gmim.swin.merging import patch_merging as merging_class

__all__ = ["GMIM", "GMIMOutput", "ReconstructionDecoder"]


class ReconstructionDecoder(nn.Sequential):
    """Final-stage features back to voxels: five times [3³ conv → InstanceNorm → LeakyReLU → ×2
    trilinear upsample], channels 16F → 8F → 4F → 2F → F → F, then a 1³ conv to the input channels."""

    def __init__(self, feature_size: int, out_channels: int) -> None:
        f = feature_size
        widths = (16 * f, 8 * f, 4 * f, 2 * f, f, f)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers.append(Convolution(3, cin, cout, kernel_size=3, norm="instance", act="leakyrelu"))
            layers.append(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False))
        layers.append(Convolution(3, f, out_channels, kernel_size=1, conv_only=True))
        super().__init__(*layers)


@dataclass
class GMIMOutput:
    online: Tensor  #: (B, n, P) projected final-stage tokens of the masked view x
    target: Tensor  #: (B, n, P) projected final-stage tokens of the target view y
    reconstruction: Tensor  #: (B, C, D, H, W) reconstruction of x
    #: (B, n, 16F) the online branch's final-stage tokens before its head (layer-normalised)
    features: Tensor | None = None


def _tokens(features: Tensor) -> Tensor:
    """(B, C, d, h, w) → (B, d·h·w, C), tokens in C order of (d, h, w)."""
    return features.flatten(2).transpose(1, 2)


class GMIM(nn.Module):
    """Online branch: the encoder with masks on x, a projection head and the reconstruction decoder.
    Target branch: the same encoder weights, no gradient, no masks, on y, and a head of its own that
    is trained (docs/method.md §4).

    With ``target_momentum`` 0 (the prototype's choice) the target weights are the online weights at
    every step, so the target branch simply runs the online encoder under ``torch.no_grad``: the
    same result as copying the weights before each step, without the copy or its memory. With a
    momentum m > 0 a separate target encoder follows the online one by EMA (call
    :meth:`update_target` after each optimiser step).
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        use_v2: bool = False,
        projection_dim: int = 512,
        target_momentum: float = 0.0,
        learned_mask_token: bool = False,
        use_checkpoint: bool = False,
        dropout_path_rate: float = 0.0,
        patch_merging: str = "monai",
    ) -> None:
        super().__init__()
        if not 0.0 <= target_momentum < 1.0:
            raise ValueError(f"target_momentum must be in [0, 1), got {target_momentum}")
        if projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
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
        self.online_head = nn.Linear(width, projection_dim)
        self.target_head = nn.Linear(width, projection_dim)
        self.decoder = ReconstructionDecoder(feature_size, in_channels)
        self.target_momentum = target_momentum
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False) if target_momentum > 0 else None
        self.mask_tokens = (
            nn.ParameterList(nn.Parameter(torch.zeros(c)) for c in self.encoder.stage_channels) if learned_mask_token else None
        )

    def forward(self, x: Tensor, y: Tensor, masks: Sequence[Tensor | None]) -> GMIMOutput:
        """``x`` the online view, ``y`` the (augmented) target view, ``masks`` those of points a0–a3."""
        if x.shape != y.shape or x.dim() != 5 or any(n % STRIDE for n in x.shape[2:]):
            raise ValueError(f"views must be equal (B, C, D, H, W) shapes divisible by {STRIDE}, got {tuple(x.shape)} and {tuple(y.shape)}")
        if math.prod(token_grid(x.shape[2:])) < MIN_FINAL_TOKENS:
            raise ValueError(
                f"a {tuple(x.shape[2:])} crop leaves one final-stage token, and the reconstruction decoder's "
                "instance norm needs two: use a crop of at least 64 along one axis"
            )
        online = self.encoder(x, masks=masks, mask_tokens=self.mask_tokens)[-1]
        with torch.no_grad():
            target = (self.target_encoder or self.encoder)(y)[-1]
        features = _tokens(online)
        return GMIMOutput(
            online=self.online_head(features),
            target=self.target_head(_tokens(target)),
            reconstruction=self.decoder(online),
            features=features,
        )

    @torch.no_grad()
    def reset_target(self) -> None:
        """Make the EMA target encoder the online one (after the online one was loaded from weights)."""
        if self.target_encoder is not None:
            self.target_encoder.load_state_dict(self.encoder.state_dict())

    @torch.no_grad()
    def update_target(self) -> None:
        """Move the EMA target encoder towards the online one; nothing to do without momentum."""
        if self.target_encoder is None:
            return
        torch._foreach_lerp_(list(self.target_encoder.parameters()), list(self.encoder.parameters()), 1.0 - self.target_momentum)
