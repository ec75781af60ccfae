"""Stacked hourglass built from parts (Newell et al., ECCV 2016; FAN / AWing variants), as timm builds models.

A :class:`StackedHourglass` is a stem, ``num_stacks`` recursive :class:`Hourglass` es, a head per stack and
Newell's 1x1 inter-stack merges. Every part is passed in as a factory, so a paper composes its network without
options in the shared block:

=============  ==========================================  =============================================
part           Newell (default; MHHN "HGs", PropNet "BB")  FAN (AWing, PropNet, TAB; ``components.hpm``)
=============  ==========================================  =============================================
``block``      :class:`Bottleneck` (cin, cout)             ``hpm.HPMBlock``
``down``       :func:`max_pool` (channels)                 :func:`avg_pool`; PropNet: ``blurpool.blur_pool``
``up``         :func:`nearest_up` (channels)               :func:`nearest_up`
``stem``       :class:`NewellStem` (channels)              ``hpm.FANStem``
``head``       :func:`newell_head` (channels)              ``hpm.fan_head``
``hook``       none                                        MHHN: MCG after every unit (``mhhn.py``)
=============  ==========================================  =============================================

``hook(index, channels)`` returns a module called as ``hook(x, o)`` on a stack's input x and hourglass output
o, whose result replaces o for the rest of that stack (MHHN's MCG, eqs. 7-9), or None for no hook on that
stack. A paper that needs more (PropNet's propagation module between stacks) writes its own loop over
:meth:`StackedHourglass.stack` and :meth:`StackedHourglass.merge`.

Shapes are given for a 256x256 input with 256 channels at stride 4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

BlockFactory = Callable[[int, int], nn.Module]  # (in channels, out channels) -> resolution-preserving block
ScaleFactory = Callable[[int], nn.Module]  # channels -> module halving (down) or doubling (up) the resolution
PartFactory = Callable[[int], nn.Module]  # channels -> stem (images -> C channels) or head (C -> C features)
StackHook = Callable[[int, int], nn.Module | None]  # (stack index, channels) -> module(x, o) -> o, or None


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


def max_pool(channels: int) -> nn.Module:
    """2x2 max-pool, stride 2 (Newell)."""
    return nn.MaxPool2d(2)


def avg_pool(channels: int) -> nn.Module:
    """2x2 average pool, stride 2 (FAN / AWing / TAB)."""
    return nn.AvgPool2d(2)


def nearest_up(channels: int) -> nn.Module:
    """Nearest-neighbour x2 up-sampling (Newell, FAN)."""
    return nn.Upsample(scale_factor=2, mode="nearest")


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels: ``out = upper(x) + upsample(up(inner(down(pool(x)))))``, where
    ``inner`` is the hourglass of depth - 1, or one more block at the bottom.

    ``depth`` levels hold ``3 * depth + 1`` blocks (13 at depth 4, as FAN's).
    """

    def __init__(self, depth: int, channels: int, block: BlockFactory = Bottleneck, down: ScaleFactory = max_pool,
                 up: ScaleFactory = nearest_up) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        # Created in this order (upper, down, inner, up) so that a seeded build draws the same initial weights
        # as the hourglass this class replaced; the pool and up-sampling modules hold no parameters.
        self.upper = block(channels, channels)
        self.pool = down(channels)
        self.down = block(channels, channels)
        self.inner = Hourglass(depth - 1, channels, block, down, up) if depth > 1 else block(channels, channels)
        self.up = block(channels, channels)
        self.upsample = up(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x)[-1]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The sum ``upper + upsample(lower)`` of every level, coarsest first: for depth 4 on (B, C, 64, 64),
        (B, C, 8, 8), (B, C, 16, 16), (B, C, 32, 32) and the output (B, C, 64, 64) (TAB's multi-scale features)."""
        pooled = self.down(self.pool(x))
        inner = self.inner.levels(pooled) if isinstance(self.inner, Hourglass) else []
        lower = self.up(inner[-1] if inner else self.inner(pooled))  # (B, C, H/2, W/2)
        return [*inner, self.upper(x) + self.upsample(lower)]


class NewellStem(nn.Module):
    """7x7 stride-2 conv (3→64) → bottleneck 128 → max-pool → bottleneck 128 → bottleneck C: (B, C, S/4, S/4).

    ``stride=8`` appends a 2x2 max-pool (MHHN's 32x32 maps from 256 px crops); it has no parameters, so the
    state_dict keys are those of the stride-4 stem.
    """

    def __init__(self, channels: int, stride: int = 4) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        self.stride = stride
        self.layers = nn.Sequential(
            conv_bn_relu(3, 64, 7, 2), Bottleneck(64, 128), nn.MaxPool2d(2), Bottleneck(128, 128),
            Bottleneck(128, channels), *([nn.MaxPool2d(2)] if stride == 8 else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def newell_head(channels: int) -> nn.Module:
    """Newell's stack head: bottleneck → 1x1 conv-BN-ReLU (the features the maps are read from)."""
    return nn.Sequential(Bottleneck(channels, channels), conv_bn_relu(channels, channels))


def no_hook(index: int, channels: int) -> None:
    return None


class StackedHourglass(nn.Module):
    """Stem, then ``num_stacks`` hourglasses, each with a head predicting ``out_channels`` maps.

    The next stack's input is ``x + merge_features(features) + merge_maps(maps)`` (Newell's intermediate
    supervision). ``forward`` returns the list of every stack's maps, (B, out_channels, S/stride, S/stride) each.

    Args:
        out_channels: maps per stack (landmarks, or boundaries for TAB's estimator).
        num_stacks, depth, channels: hourglass count, levels per hourglass, feature channels.
        block, down, up: the hourglass parts (see the module docstring).
        stem: channels -> the stem module mapping (B, 3, S, S) images to (B, C, S/stride, S/stride) features;
            it must have a ``stride`` attribute (input pixels per map pixel).
        head: channels -> the head module of each stack (features the maps are read from, same shape).
        hook: per-stack module on (hourglass input, hourglass output), kept in ``self.hooks`` by stack index (so
            a network without hooks has exactly the plain state_dict).
    """

    def __init__(self, out_channels: int, num_stacks: int = 4, depth: int = 4, channels: int = 256,
                 block: BlockFactory = Bottleneck, down: ScaleFactory = max_pool, up: ScaleFactory = nearest_up,
                 stem: PartFactory = NewellStem, head: PartFactory = newell_head, hook: StackHook = no_hook) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels must be even, got {channels}")
        self.stem = stem(channels)
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels, block, down, up) for _ in range(num_stacks))
        self.heads = nn.ModuleList(head(channels) for _ in range(num_stacks))
        self.to_maps = nn.ModuleList(nn.Conv2d(channels, out_channels, 1) for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_stacks - 1))
        self.merge_maps = nn.ModuleList(nn.Conv2d(out_channels, channels, 1) for _ in range(num_stacks - 1))
        hooks = {str(i): hook(i, channels) for i in range(num_stacks)}
        self.hooks = nn.ModuleDict({i: module for i, module in hooks.items() if module is not None})
        self.depth, self.stride = depth, self.stem.stride

    def check_input(self, images: torch.Tensor) -> None:
        multiple = self.stride * 2**self.depth
        for size in images.shape[-2:]:
            if size % multiple:
                raise ValueError(f"input size {size} must be a multiple of {multiple} for depth {self.depth} and "
                                 f"stride {self.stride}")

    def stack(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack ``i`` on its input x (B, C, h, w): its head features (B, C, h, w) and maps (B, K, h, w)."""
        o = self.hourglasses[i](x)
        if str(i) in self.hooks:
            o = self.hooks[str(i)](x, o)  # e.g. MCG's P′ replaces the hourglass output for the rest of the stack
        features = self.heads[i](o)
        return features, self.to_maps[i](features)

    def merge(self, i: int, x: torch.Tensor, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """The input of stack i + 1: ``x + merge_features(features) + merge_maps(maps)``."""
        return x + self.merge_features[i](features) + self.merge_maps[i](maps)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(images)
        x = self.stem(images)  # (B, C, S/stride, S/stride)
        outputs = []
        for i in range(len(self.hourglasses)):
            features, maps = self.stack(i, x)
            outputs.append(maps)
            if i < len(self.merge_features):
                x = self.merge(i, x, features, maps)
        return outputs
