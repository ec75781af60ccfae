"""Bulat's hierarchical, parallel and multi-scale block and the FAN parts built on it (IMPLEMENTATION_NOTES §0.1-0.3).

Used by FAN, AWing, TAB's boundary estimator and PropNet's "multi-view" hourglass. With these parts a
:class:`~lightning_modules.components.hourglass.StackedHourglass` is the FAN stack::

    StackedHourglass(K, num_stacks, 4, 256, block=HPMBlock, down=avg_pool, stem=FANStem, head=fan_head)

Parameter and MAC counts are checked against the notes in ``tests/test_components.py``: 405.5 k convolution
weights for ``HPMBlock(256, 256)``; 5.28 M parameters and 3.32 GMAC for a depth-4 FAN hourglass at 64x64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lightning_modules.components.hourglass import ScaleFactory, avg_pool


def bn_relu_conv(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Pre-activation convolution without bias: BN → ReLU → conv (padding keeps the resolution)."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False))


class HPMBlock(nn.Module):
    """Bulat's ConvBlock: three chained 3x3 pre-activation convs of C/2, C/4 and C/4 channels, concatenated
    (= C channels), plus a shortcut (identity, or BN → ReLU → 1x1 conv when the channel count changes).

    (B, cin, H, W) → (B, cout, H, W); ``cout`` must be a multiple of 4.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        if cout % 4:
            raise ValueError(f"HPM output channels must be a multiple of 4, got {cout}")
        self.branch_a = bn_relu_conv(cin, cout // 2)  # (B, C/2, H, W)
        self.branch_b = bn_relu_conv(cout // 2, cout // 4)  # on a's output: (B, C/4, H, W)
        self.branch_c = bn_relu_conv(cout // 4, cout // 4)  # on b's output: (B, C/4, H, W)
        self.shortcut = nn.Identity() if cin == cout else bn_relu_conv(cin, cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch_a(x)
        b = self.branch_b(a)
        c = self.branch_c(b)
        return torch.cat((a, b, c), dim=1) + self.shortcut(x)


def stem_conv() -> nn.Module:
    """FAN's first layer: a 7x7 stride-2 convolution, 3 → 64 channels."""
    return nn.Conv2d(3, 64, 7, 2, 3)


class FANStem(nn.Module):
    """FAN / AWing stem (§0.3): 7x7 stride-2 conv (3→64) → BN → ReLU → HPM(64, 128) → down → HPM(128, 128) →
    HPM(128, C): (B, 3, S, S) → (B, C, S/4, S/4). ``down`` is FAN's 2x2 average pool, or PropNet's BlurPool;
    ``first`` builds the first convolution (AWing and PropNet: a CoordConv)."""

    stride = 4

    def __init__(self, channels: int, down: ScaleFactory = avg_pool,
                 first: Callable[[], nn.Module] = stem_conv) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            first(), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            HPMBlock(64, 128), down(128), HPMBlock(128, 128), HPMBlock(128, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def fan_head(channels: int) -> nn.Module:
    """FAN's stack head (§0.2): HPM(C, C) → 1x1 conv (with bias) → BN → ReLU."""
    return nn.Sequential(HPMBlock(channels, channels), nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))
