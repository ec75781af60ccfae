"""Anti-aliased down-sampling (Zhang, ICML 2019; ``adobe/antialiased-cnns``; IMPLEMENTATION_NOTES §0.5).

:class:`BlurPool` low-passes every channel with a normalised binomial filter and keeps every second pixel.
PropNet replaces each down-sampling of its hourglasses with it (filter size 3, "AC-3", Table 6):

- average pool 2 → ``BlurPool`` alone (:func:`blur_pool`);
- max pool 2 → max pool (kernel 2, stride 1) then ``BlurPool`` (:func:`max_blur_pool`).

Padding is reflective, ``(k - 1) // 2`` pixels before and ``ceil((k - 1) / 2)`` after, as the reference code.
With ``k = 2`` the filter is [1, 1] / 2 and BlurPool equals a 2x2 average pool.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

BINOMIAL = {1: [1.0], 2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0],
            6: [1.0, 5.0, 10.0, 10.0, 5.0, 1.0], 7: [1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0]}

class BlurPool(nn.Module):
    """Depthwise binomial blur of size ``kernel`` then stride-``stride`` sub-sampling: (B, C, H, W) →
    (B, C, ceil(H / stride), ceil(W / stride)). The filter is a non-persistent buffer (no state_dict entry)."""

    def __init__(self, channels: int, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        if kernel not in BINOMIAL:
            raise ValueError(f"BlurPool kernel must be one of {sorted(BINOMIAL)}, got {kernel}")
        taps = torch.tensor(BINOMIAL[kernel])
        weights = torch.outer(taps, taps)
        self.register_buffer("filter", (weights / weights.sum()).expand(channels, 1, kernel, kernel).clone(),
                             persistent=False)
        self.channels, self.kernel, self.stride = channels, kernel, stride
        self.padding = ((kernel - 1) // 2, math.ceil((kernel - 1) / 2)) * 2  # left, right, top, bottom

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel={self.kernel}, stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1:
            x = F.pad(x, self.padding, mode="reflect")
        return F.conv2d(x, self.filter.to(x.dtype), stride=self.stride, groups=self.channels)

def blur_pool(channels: int, kernel: int = 3) -> nn.Module:
    """The anti-aliased replacement of a 2x2 average pool: BlurPool(stride 2). ``partial(blur_pool, kernel=k)``
    is a ``down`` factory of ``StackedHourglass`` / ``FANStem``."""
    return BlurPool(channels, kernel)


def max_blur_pool(channels: int, kernel: int = 3) -> nn.Module:
    """The anti-aliased replacement of a 2x2 max pool: max pool (kernel 2, stride 1) → BlurPool(stride 2)."""
    return nn.Sequential(nn.MaxPool2d(2, stride=1), BlurPool(channels, kernel))
