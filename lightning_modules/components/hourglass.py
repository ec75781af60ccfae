"""Stacked hourglass (Newell et al., ECCV 2016) with pre-activation bottleneck residual blocks.

This is the "HGs" backbone of MHHN (IMPLEMENTATION_NOTES §2.1 defaults: Newell stem, depth-4 hourglass,
bottleneck blocks, max-pool down, nearest-neighbour up, Newell head and 1x1 inter-stack merges) and the
PropNet ablation baseline ("BB"). Shapes are given for a 256x256 input with 256 channels.

MHHN options of ``StackedHourglass``: ``mcg`` inserts the multi-order correlation block (``components.mcg``,
eqs. 7-9) after every hourglass ("all") or only the last one ("last", the paper's cheaper ablation), and
``stride=8`` runs the hourglasses at S/8 (the paper's 32x32 variant) instead of S/4.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.components.mcg import MultiOrderCorrelation


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 (C/2), BN-ReLU-3x3 (C/2), BN-ReLU-1x1 (C), plus a shortcut
    (identity, or a 1x1 conv when the channel count changes)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1),
        )
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Hourglass(nn.Module):
    """Recursive hourglass: out = block(x) + up(block(inner(block(pool(x))))), ``depth`` levels."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.upper = Bottleneck(channels, channels)
        self.down = Bottleneck(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Bottleneck(channels, channels)
        self.up = Bottleneck(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.upper(x) + F.interpolate(lower, scale_factor=2, mode="nearest")


class NewellStem(nn.Module):
    """7x7 stride-2 conv (3→64) → bottleneck 128 → max-pool → bottleneck 128 → bottleneck C: (B, C, S/4, S/4).

    ``stride=8`` appends a 2x2 max-pool (MHHN's 32x32 maps from 256 px crops); it has no parameters, so the
    state_dict keys are those of the stride-4 stem.
    """

    def __init__(self, channels: int, stride: int = 4) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        self.layers = nn.Sequential(
            conv_bn_relu(3, 64, 7, 2), Bottleneck(64, 128), nn.MaxPool2d(2), Bottleneck(128, 128),
            Bottleneck(128, channels), *([nn.MaxPool2d(2)] if stride == 8 else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class StackedHourglass(nn.Module):
    """Stem, then ``num_stacks`` hourglasses each with a head predicting ``out_channels`` maps at ``stride``.

    The next stack's input is ``x + merge_features(features) + merge_maps(maps)`` (Newell's intermediate
    supervision). ``forward`` returns the list of every stack's maps, (B, out_channels, S/stride, S/stride) each.

    Args:
        mcg: stacks whose hourglass output O is replaced by ``MultiOrderCorrelation(x, O)`` before the head:
            "all", "last" or "none" (plain HGs). The blocks live in ``self.mcg`` keyed by stack index, so "none"
            has exactly the plain model's state_dict; each block adds one parameter (γ, initialised to 0).
        mcg_scaled: divide the MCG correlation by √channels (a stabiliser, not in the paper).
        stride: 4 (64x64 maps from 256 px crops) or 8 (the paper's 32x32 variant).
    """

    def __init__(self, out_channels: int, num_stacks: int = 4, depth: int = 4, channels: int = 256,
                 mcg: Literal["none", "all", "last"] = "none", mcg_scaled: bool = False, stride: int = 4) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels must be even, got {channels}")
        stacks = {"none": [], "all": range(num_stacks), "last": [num_stacks - 1]}
        if mcg not in stacks:
            raise ValueError(f"mcg must be 'none', 'all' or 'last', got {mcg!r}")
        self.stem = NewellStem(channels, stride)
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(num_stacks))
        self.heads = nn.ModuleList(
            nn.Sequential(Bottleneck(channels, channels), conv_bn_relu(channels, channels)) for _ in range(num_stacks)
        )
        self.to_maps = nn.ModuleList(nn.Conv2d(channels, out_channels, 1) for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_stacks - 1))
        self.merge_maps = nn.ModuleList(nn.Conv2d(out_channels, channels, 1) for _ in range(num_stacks - 1))
        self.mcg = nn.ModuleDict({str(i): MultiOrderCorrelation(channels, mcg_scaled) for i in stacks[mcg]})
        self.depth, self.stride = depth, stride

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        multiple = self.stride * 2**self.depth
        for size in images.shape[-2:]:
            if size % multiple:
                raise ValueError(f"input size {size} must be a multiple of {multiple} for depth {self.depth} and "
                                 f"stride {self.stride}")
        x = self.stem(images)  # (B, C, S/stride, S/stride)
        outputs = []
        for i, (hourglass, head, to_maps) in enumerate(zip(self.hourglasses, self.heads, self.to_maps, strict=False)):
            o = hourglass(x)
            if str(i) in self.mcg:
                o = self.mcg[str(i)](x, o)  # P′ replaces the hourglass output for the rest of the stack
            features = head(o)  # (B, C, S/stride, S/stride)
            maps = to_maps(features)  # (B, K, S/stride, S/stride)
            outputs.append(maps)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](features) + self.merge_maps[i](maps)
        return outputs
