"""Multi-order correlation (MCG) block of MHHN ("multi-order high-precision hourglass network", eqs. 7-9).

With P an hourglass unit's input and O its output, both (B, C, H, W) read as (B, N, C) with N = H*W:

* eq. 7: Z = P·Pᵀ + O·Oᵀ + P·Oᵀ, an N×N correlation (the paper omits O·Pᵀ; so do we);
* eq. 8: Ẑ = softmax(Z);
* eq. 9: P′ = γ·(Ẑ·O) + O, γ a learnable scalar initialised to 0, so a fresh block is the identity on O.

Choices that are ours, not the paper's:

* the softmax runs row-wise (over the last index of Z, i.e. over the positions being attended to);
* Z = [P, O]·[P + O, O]ᵀ (features concatenated), so the block is one attention call with query cat(P, O),
  key cat(P + O, O) and value O, computed by ``F.scaled_dot_product_attention``; memory-efficient backends
  then never materialise the N×N matrix (67 MB per image in fp32 at 64x64). The value is zero-padded to
  2C features (and the output sliced back) because fused kernels require equal query/key/value widths;
* ``scaled=True`` divides Z by √C, a stabiliser (the paper has neither this scaling nor projection convs).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MultiOrderCorrelation(nn.Module):
    """MCG block: ``forward(p, o)`` returns γ·softmax(P·Pᵀ + O·Oᵀ + P·Oᵀ)·O + O with O's shape and dtype.

    Args:
        channels: C, the feature channels of P and O (checked in ``forward``).
        scaled: divide Z by √C before the softmax (not in the paper).
    """

    def __init__(self, channels: int, scaled: bool = False) -> None:
        super().__init__()
        self.channels, self.scaled = channels, scaled
        self.gamma = nn.Parameter(torch.zeros(()))  # eq. 9's γ: the block starts as the identity

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scaled={self.scaled}"

    def forward(self, p: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        if p.shape != o.shape or o.dim() != 4 or o.shape[1] != self.channels:
            raise ValueError(f"p and o must both be (B, {self.channels}, H, W), got {tuple(p.shape)} and "
                             f"{tuple(o.shape)}")
        b, c, h, w = o.shape
        dtype = torch.promote_types(p.dtype, o.dtype)  # SDPA needs one dtype (autocast may then lower it)
        p_, o_ = (t.to(dtype).flatten(2).transpose(1, 2).unsqueeze(1) for t in (p, o))  # (B, 1, N, C)
        query = torch.cat((p_, o_), dim=-1)  # (B, 1, N, 2C)
        key = torch.cat((p_ + o_, o_), dim=-1)  # query·keyᵀ = P·Pᵀ + P·Oᵀ + O·Oᵀ
        value = F.pad(o_, (0, c))  # (B, 1, N, 2C): O then zeros, so fused kernels accept it
        scale = 1 / math.sqrt(c) if self.scaled else 1.0
        attended = F.scaled_dot_product_attention(query, key, value, scale=scale)[..., :c]  # Ẑ·O: (B, 1, N, C)
        attended = attended.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return o + self.gamma * attended.to(o.dtype)
