"""Window attention through ``torch.nn.functional.scaled_dot_product_attention``, in training too.

MONAI's ``WindowAttention`` computes ``softmax(q kᵀ · scale + bias + mask) · v`` by hand: the
attention matrix of every window is written to memory and read back several times, and each step
is its own kernel. :class:`FusedWindowAttention` gives the same function to PyTorch's fused
attention, the relative position bias and the shifted windows' mask as one additive ``attn_mask``,
so that the attention kernels of the device do the work (MONAI's own ``use_flash_attention`` does
this only without gradients). It only replaces ``forward``: parameters, buffers and the state_dict
stay MONAI's, and :func:`fuse_window_attention` switches a built network over in place.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import WindowAttention

__all__ = ["FusedWindowAttention", "fuse_window_attention"]

Network = TypeVar("Network", bound=torch.nn.Module)


class FusedWindowAttention(WindowAttention):
    """MONAI's window attention (same parameters and state_dict) computed by fused attention kernels."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        index = self.relative_position_index[:n, :n].reshape(-1)  # type: ignore[index]
        bias = self.relative_position_bias_table[index].reshape(n, n, heads).permute(2, 0, 1)  # (heads, n, n)
        if mask is not None:  # shifted windows: (windows, n, n), the same for every volume of the batch
            windows = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).unsqueeze(0).expand(b // windows, -1, -1, -1, -1)
            bias = bias.reshape(b, heads, n, n)
        else:
            bias = bias.unsqueeze(0)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
        )
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


def fuse_window_attention(network: Network) -> Network:
    """``network`` with every MONAI ``WindowAttention`` in it computed by :class:`FusedWindowAttention`
    (in place; returned for chaining)."""
    for module in network.modules():
        if type(module) is WindowAttention:
            module.__class__ = FusedWindowAttention
    return network
