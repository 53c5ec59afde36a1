"""A linear probe of a frozen Swin encoder: what did pre-training put into the encoder's features?

The standard test of self-supervised pre-training (a linear classifier on frozen features), per
voxel. MONAI's ``SwinTransformer`` (Swin UNETR's ``swinViT`` alone, docs/method.md §1: no UNETR
decoder, no full-resolution convolution on the raw image) gives five hidden states at 1/2 … 1/32
of the voxel grid (F, 2F, 4F, 8F and 16F channels, each layer-normalised). Each is upsampled
trilinearly to the voxel grid, they are concatenated (31·F channels), standardised with the
training voxels' mean and spread, and a multinomial logistic regression maps them to the classes.
What the classifier cannot find, the features do not hold linearly: unlike fine-tuning, no decoder
can make up for the encoder.

Features come from Gaussian-weighted sliding windows of the fine-tuning crop over the whole
preprocessed volume (MONAI's ``sliding_window_inference``, which stitches outputs at each scale):
the encoder sees crops of the size it was trained on, as fine-tuning and prediction give it, and
every voxel of a subject gets features. The hidden states are kept at their own resolution and
upsampled only at the voxels asked for (trilinear ``grid_sample``, the same values as upsampling
the whole map and picking those voxels), so 31·F channels of a whole volume never sit in memory.

The classifier is fitted to convergence with full-batch L-BFGS (a small L2 penalty keeps it unique)
on a random subsample of the labelled voxels, every class as it comes (no reweighting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

__all__ = ["LinearProbe", "all_voxels", "hidden_states", "sample_features"]

#: The encoder's coarsest stage is 1/32 of the voxel grid: volumes are padded to a multiple of it.
STRIDE = 32


def hidden_states(encoder: nn.Module, image: Tensor, roi: Sequence[int], overlap: float, batch_size: int = 1) -> list[Tensor]:
    """The encoder's five hidden states (each (1, C_i, D/2^(i+1), ...)) over a whole (1, C, D, H, W)
    volume, from Gaussian-weighted ``roi`` windows; the volume is zero-padded at its far end to a
    multiple of 32 and at least ``roi``, so that every scale's grid is an exact fraction of it.

    ``encoder`` must be in eval mode; autocast, if any, is the caller's."""
    size = [max(r, -(-n // STRIDE) * STRIDE) for n, r in zip(image.shape[2:], roi, strict=True)]
    padded = F.pad(image, [p for n, s in zip(reversed(image.shape[2:]), reversed(size), strict=True) for p in (0, s - n)])
    with torch.no_grad():
        states = sliding_window_inference(padded, list(roi), batch_size, lambda x: tuple(encoder(x)), overlap=overlap, mode="gaussian")
    return [state.float() for state in states]


def all_voxels(shape: Sequence[int]) -> Tensor:
    """The (N, 3) indices of every voxel of a grid of ``shape``, in C order."""
    return torch.stack(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"), -1).view(-1, 3)


def sample_features(states: Sequence[Tensor], grid: Sequence[int], voxels: Tensor) -> Tensor:
    """Features (N, ΣC_i) at ``voxels`` (N, 3) of the padded voxel ``grid``: each hidden state
    upsampled trilinearly (``align_corners=False``, edges clamped, as ``F.interpolate`` does) and
    concatenated."""
    size = torch.tensor(list(grid), device=voxels.device, dtype=torch.float32)
    normalised = (2 * voxels.float() + 1) / size - 1  # voxel centres in [-1, 1]
    where = normalised.flip(-1).view(1, 1, 1, -1, 3)  # grid_sample reads (x, y, z) = (W, H, D)
    parts = [F.grid_sample(state, where.to(state.dtype), mode="bilinear", padding_mode="border", align_corners=False) for state in states]
    return torch.cat([part.view(part.shape[1], -1) for part in parts]).T


@dataclasses.dataclass
class LinearProbe:
    """Standardisation and a multinomial logistic regression on voxel features."""

    mean: Tensor
    std: Tensor
    linear: nn.Linear

    @classmethod
    def fit(cls, features: Tensor, targets: Tensor, classes: int, l2: float = 1e-4, iterations: int = 300) -> LinearProbe:
        """Fit on (N, C) ``features`` and (N,) class indices ``targets`` by L-BFGS to convergence."""
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        x = (features - mean) / std
        linear = nn.Linear(x.shape[1], classes).to(x.device)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        optimizer = torch.optim.LBFGS(
            linear.parameters(),
            max_iter=iterations,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
        )

        def loss() -> Tensor:
            optimizer.zero_grad()
            value = F.cross_entropy(linear(x), targets) + l2 * linear.weight.pow(2).sum()
            value.backward()
            return value

        with torch.enable_grad():
            optimizer.step(loss)
        return cls(mean, std, linear.requires_grad_(False))

    def predict(self, features: Tensor) -> Tensor:
        """Class indices (N,) of (N, C) features."""
        return self.linear((features - self.mean) / self.std).argmax(1)
