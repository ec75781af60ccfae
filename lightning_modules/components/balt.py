"""TAB's boundary-aware landmark transform (BALT, paper 004 Sec. 3.2; official code ``BALT_MS_2X``).

A UNet maps the boundary estimator's (SCBE's) boundary heatmaps to landmark heatmaps at the same resolution
(eq. 2: Ĥˡ = BALT(Ĥᵇ, B)), while the SCBE's boundary-aware features B are added into its encoder. With width W
and a 64x64 input (shapes follow the input: any side divisible by 16):

====  ==========  ==============================  =====  ==========================================
x_i   resolution  encoder                         fused  decoder (up-sample x2, concat skip, DC)
====  ==========  ==============================  =====  ==========================================
x1    64²         DC in_maps → W                  yes    up4: 2W → 2W, then 1x1 conv 2W → K (bias)
x2    32²         max-pool, DC W → 2W             yes    up3: 4W → W
x3    16²         max-pool, DC 2W → 4W            yes    up2: 8W → 2W
x4    8²          max-pool, DC 4W → 8W            yes    up1: 16W → 4W
x5    4²          max-pool, DC 8W → 8W            no     (input of up1)
====  ==========  ==============================  =====  ==========================================

DC ("double conv") is (3x3 conv without bias → BN(momentum 0.01) → ReLU) twice; the decoder up-samples
bilinearly with ``align_corners=True`` and concatenates [skip, up-sampled] as the code does.

The paper's equations, with F_i the features of level i (fine to coarse) and T a transition (conv-BN-ReLU):

* eq. 3 (1x fusion): x_{i+1} = DC(MP(x_i ⊕ T(F_i))): each level adds its own-resolution features;
* eq. 4 (t x fusion): level i also adds B''_j = MP(T(F_j)) for every finer level j with max(1, i-t+1) <= j < i,
  so t = 2 adds one finer scale, t = 3 two; t = 0 fuses nothing (Table 10: 0x 4.87, 1x 4.74, 2x 4.70,
  3x 4.73 NME on the 300W challenging subset);
* eq. 5 (shape constraint enhancement): the decoder's skips are the *fused* encoder tensors x_i ⊕ (...).

Where the code departs from the paper: the official ``BALT_MS_2X`` down-samples a finer level's features with a
3x3 stride-2 conv-BN-ReLU, not eq. 4's 1x1 transition followed by a max-pool. ``transition="strided_conv"``
(the default) follows the code, extended to t = 3 as a chain of (i - j) stride-2 convs whose channels step
through the levels in between; ``transition="max_pool"`` is eq. 4 (1x1 conv-BN-ReLU to level i's channels,
then a max-pool by 2^(i-j)). The code implements only t = 2; t = 0, 1, 3 are the paper's ablation settings.

``features="ms"`` (multi-scale, the paper's choice, Table 9: 4.70 vs 4.78 NME) takes the last hourglass's four
level sums [F64, F32, F16, F8]; ``features="ss"`` (single-scale) takes only the last stack's head features, "the
output of the last convolutional layers before heatmap predictions", a single 64x64 map F64: then only the
transitions from level 1 exist (the same-level one into x1, and for t >= 2 the down-sampled ones into x2...).

Only the transitions that ``forward`` uses are built, so every trainable parameter receives a gradient (DDP).
The transition from level j into level i is ``self.fuse[str(i)][str(j)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.components.hourglass import conv_bn_relu

FUSED_LEVELS = 4  # x1..x4 receive features; x5 (the bottleneck) never does
FEATURE_LEVELS = {"ms": 4, "ss": 1}  # how many feature maps each selection hands in, fine to coarse
TRANSITIONS = ("strided_conv", "max_pool")


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """The UNet's "DC": (3x3 conv, no bias → BN(momentum 0.01) → ReLU) x 2, as the code's ``UNetConv``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU(inplace=True),
    )


class UpConcat(nn.Module):
    """Decoder step (eq. 5): bilinear x2 up-sampling (align_corners=True), concat [skip, up], double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = double_conv(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # (B, c, 2h, 2w)
        return self.conv(torch.cat((skip, up), dim=1))


class BALT(nn.Module):
    """Boundary maps (B, in_maps, H, W) + SCBE features → landmark heatmaps (B, num_points, H, W).

    Args:
        in_maps: boundary maps in (TAB: 16, the 15 boundaries and their union).
        num_points: landmark heatmaps out (the layout's point count).
        feature_channels: channels of every SCBE feature map (256).
        width: W, the channels of the first encoder level (the code's 48).
        fusion: t in eq. 4 (0..3); 2 is the code's ``BALT_MS_2X``.
        features: "ms" (four maps F64, F32, F16, F8) or "ss" (F64 only); see the module docstring.
        transition: how a finer level's features are down-sampled: "strided_conv" (code) or "max_pool" (eq. 4).
    """

    def __init__(self, in_maps: int, num_points: int, feature_channels: int = 256, width: int = 48,
                 fusion: int = 2, features: Literal["ms", "ss"] = "ms",
                 transition: Literal["strided_conv", "max_pool"] = "strided_conv") -> None:
        super().__init__()
        if isinstance(fusion, bool) or not isinstance(fusion, int) or fusion not in range(4):
            raise ValueError(f"fusion must be 0, 1, 2 or 3, got {fusion!r}")
        if features not in FEATURE_LEVELS:
            raise ValueError(f"features must be one of {tuple(FEATURE_LEVELS)}, got {features!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
        self.in_maps, self.num_points, self.feature_channels = in_maps, num_points, feature_channels
        self.fusion, self.features, self.transition = fusion, features, transition
        channels = [width, 2 * width, 4 * width, 8 * width, 8 * width]  # x1..x5
        self.level_channels = channels

        # Encoder, keyed by level: x1 = DC(boundaries), x_{i+1} = DC(MP(x_i)) (eq. 3 without the fusion).
        self.encoder = nn.ModuleDict({"1": double_conv(in_maps, channels[0])})
        for i in range(2, 6):
            self.encoder[str(i)] = nn.Sequential(nn.MaxPool2d(2), double_conv(channels[i - 2], channels[i - 1]))

        # Fusion (eqs. 3-4): fuse[i][j] carries F_j into level i; only the terms forward adds are built.
        self.fuse = nn.ModuleDict()
        for i in range(1, FUSED_LEVELS + 1):
            terms = {str(j): self._transition(j, i) for j in self.sources(i)}
            if terms:
                self.fuse[str(i)] = nn.ModuleDict(terms)

        # Decoder, keyed by the level whose (fused) skip it concatenates: up1 = decoder["4"], ..., up4 = "1".
        self.decoder = nn.ModuleDict({
            "4": UpConcat(channels[4] + channels[3], channels[2]),  # 16W -> 4W at 8²
            "3": UpConcat(channels[2] + channels[2], channels[1]),  # 8W -> 2W at 16²
            "2": UpConcat(channels[1] + channels[1], channels[0]),  # 4W -> W at 32²
            "1": UpConcat(channels[0] + channels[0], 2 * width),  # 2W -> 2W at 64²
        })
        self.out = nn.Conv2d(2 * width, num_points, 1)  # final 1x1 with bias

    def sources(self, level: int) -> list[int]:
        """The feature levels j fused into encoder level ``level`` (eq. 4: max(1, i - t + 1) <= j <= i), given."""
        given = FEATURE_LEVELS[self.features]
        return [j for j in range(max(1, level - self.fusion + 1), level + 1) if j <= given]

    def _transition(self, j: int, i: int) -> nn.Module:
        """T carrying F_j (feature_channels) to level i's channels and resolution (i >= j)."""
        cout = self.level_channels[i - 1]
        if i == j:
            return conv_bn_relu(self.feature_channels, cout, 1)  # B'_i = T(B_i)
        if self.transition == "max_pool":
            return nn.Sequential(conv_bn_relu(self.feature_channels, cout, 1), nn.MaxPool2d(2 ** (i - j)))  # eq. 4
        steps = [self.feature_channels] + self.level_channels[j:i]  # F -> level j+1's -> ... -> level i's (code)
        return nn.Sequential(*(conv_bn_relu(a, b, 3, 2) for a, b in zip(steps[:-1], steps[1:], strict=True)))

    def check_inputs(self, boundaries: torch.Tensor, features: Sequence[torch.Tensor]) -> None:
        """Raise a ValueError naming what is wrong: the map count, a side not divisible by 16, the feature count
        for the selection, or a feature map whose shape is not (B, feature_channels, H / 2^k, W / 2^k)."""
        if boundaries.dim() != 4 or boundaries.shape[1] != self.in_maps:
            raise ValueError(f"boundaries must be (B, {self.in_maps}, H, W), got {tuple(boundaries.shape)}")
        b, _, h, w = boundaries.shape
        if h % 16 or w % 16:
            raise ValueError(f"boundary map sides must be divisible by 16 (four 2x poolings), got {h}x{w}")
        expected = FEATURE_LEVELS[self.features]
        if len(features) != expected:
            raise ValueError(f'features="{self.features}" needs {expected} feature map(s) ordered fine to coarse, '
                             f"got {len(features)}")
        for k, f in enumerate(features):
            shape = (b, self.feature_channels, h >> k, w >> k)
            if tuple(f.shape) != shape:
                raise ValueError(f"feature map {k} (level {k + 1}) must be {shape}, got {tuple(f.shape)}")

    def forward(self, boundaries: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Landmark heatmaps (B, num_points, H, W) from boundaries (B, in_maps, H, W) and SCBE features
        [F64 (B, C, H, W), F32, F16, F8] ("ms") or [F64] ("ss")."""
        self.check_inputs(boundaries, features)
        x, skips = boundaries, []
        for i in range(1, 6):
            x = self.encoder[str(i)](x)  # (B, channels[i-1], H / 2^(i-1), W / 2^(i-1))
            terms = self.fuse[str(i)] if str(i) in self.fuse else {}
            for j, t in terms.items():  # eqs. 3-4: x_i ⊕ Σ_j B''_j ⊕ B'_i, finest j first (the code's order)
                x = x + t(features[int(j) - 1])  # T(F_j): (B, channels[i-1], H / 2^(i-1), W / 2^(i-1))
            if i <= FUSED_LEVELS:
                skips.append(x)  # eq. 5: the decoder concatenates the fused tensors
        for i in range(FUSED_LEVELS, 0, -1):
            x = self.decoder[str(i)](x, skips[i - 1])  # up1 (i=4) ... up4 (i=1)
        return self.out(x)  # (B, num_points, H, W)
