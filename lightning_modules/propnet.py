"""PropagationNet: propagate points to curves to learn structure (paper 003, CVPR 2020; IMPLEMENTATION_NOTES §0, §4).

PropNet = 4 stacked "multi-view" hourglasses (FAN hourglasses of Bulat's HPM blocks with anti-aliased
down-sampling, BlurPool-3) with CoordConv, and after each hourglass a propagation module (PM, Sec. 3.1, Fig. 1):
the stack's landmark heatmaps are propagated to M boundary heatmaps by 7x7 convolutions (supervised), the
boundaries are concatenated with the stack's features, and a two-stage hourglass followed by a sigmoid gives an
attention map that multiplies the features passed to the next stack. Loss: Focal Wing (eqs. 2-5), the
Adaptive Wing loss (eq. 1) of the landmark and boundary maps weighted per sample by the batch's focal factors.
Decoding: argmax + 1/4 pixel on the last stack's landmark maps (Sec. 4.3).

No public code exists. The network follows the notes' design calibrated to the paper's budget (Table 8:
36.30 M parameters, 42.83 G multiply-accumulates at 256 px for WFLW); ``tests/test_propnet.py`` checks our counts.

The ablations of Tables 4-8 are values of this module (``experiments/propnet/manifest.yaml`` names them):

================  ==========  ==========  ============  ==========  ==========  ================================
row               block       antialias   propagation   coordconv   loss        table
================  ==========  ==========  ============  ==========  ==========  ================================
baseline (BL/BB)  bottleneck  none        false         false       awing       Tables 4-7
+PM               bottleneck  none        true          false       awing       Table 4 "With PM"
MHM               hpm         3           false         false       awing       Table 5
BL+AC-n           bottleneck  2 / 3 / 5   false         false       awing       Table 6
Focal Wing        bottleneck  none        false         false       focal_wing  Table 7
AWing (4 stacks)  hpm         none        false         true        awing       Table 8 (``boundary_head``)
PropNet           hpm         3           true          true        focal_wing  Tables 1-3, 8
================  ==========  ==========  ============  ==========  ==========  ================================

Departures and choices where the paper is silent (IMPLEMENTATION_NOTES §4, §7):

- Propagation module (only Fig. 1): one stack of three 7x7 convolutions (n_m → 12 → 12 → 1, ReLU between) per
  boundary on the heatmaps of that boundary's landmarks (the notes suggest 16 channels; 12 fits the paper's
  budget better: 36.78 M / 44.7 GMAC for WFLW against 37.21 M / 46.5 GMAC, the paper 36.30 M / 42.83 G); a 1x1
  convolution maps [features, boundaries] (256 + M channels) to 256; the "two-stage hourglass" is one HPM
  hourglass of depth 2 (the reading that fits the paper's budget; two depth-4 hourglasses would be 3-4x over
  it); a 1x1 convolution and a sigmoid give a 256-channel attention map (channel-wise and spatial).
- CoordConv (placement not given): AWing's, a CoordConv stem convolution (x, y, r) and a 1x1 CoordConv at each
  hourglass entrance (x, y, r, and for stacks 2-4 x and y gated by the previous stack's boundaries, max over M,
  > 0.05).
- The fourth PM's attention has no consumer: the paper's Fig. 6 feeds each PM's features to the next hourglass
  and there is none after the fourth. The budget that reproduces Table 8 (notes §4.2) counts four full PMs, so
  the fourth is built (our 36.78 M includes its 2.98 M attention branch) but only its boundary propagation runs;
  the unused branch is frozen (no gradient could reach it, and DDP requires every trainable parameter to get
  one) and left out of the measured MACs (44.7 G built, 40.9 G run).
- M: the layout's boundaries (15 for WFLW's 98 points, as the paper; 13 for 68 points, the TAB lines: the paper
  does not say how it gets 15 on 300W).
- Boundary targets: the exact distance to each polyline, exp(-d^2 / 2 sigma^2), sigma = 1 (AWing), cut at 3
  sigma (``landmarks.heatmaps.encode_boundaries``; the paper draws lines and blurs them).
- Landmark targets: Gaussians of sigma = 1 heatmap px (AWing's; the paper does not say).
- Focal factor: the per-sample reading of eq. 2 (notes §4.3); 300W and COFW have no released attributes, so
  their weights are 1 (plain AWing), as the notes advise. AWing's weight map is off (PropNet does not mention it).
- Loss on every stack (intermediate supervision; not stated).
- Epochs, batch, schedule (not given): the notes' AWing defaults (configs).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal, NamedTuple

import torch
from torch import nn

from datamodules.wflw import ATTRIBUTES as WFLW_ATTRIBUTES
from landmarks.heatmaps import HeatmapCodec
from landmarks.layouts import Boundary
from landmarks.losses import adaptive_wing_loss, focal_factor, focal_wing_loss
from lightning_modules.components.blurpool import BINOMIAL, blur_pool, max_blur_pool
from lightning_modules.components.coordconv import CoordConv2d
from lightning_modules.components.hourglass import (
    Bottleneck,
    Hourglass,
    NewellStem,
    StackedHourglass,
    avg_pool,
    max_pool,
    newell_head,
)
from lightning_modules.components.hpm import FANStem, HPMBlock, fan_head, stem_conv
from lightning_modules.heatmap import HeatmapModule

Block = Literal["hpm", "bottleneck"]
GATE = 0.05  # AWing's boundary gate of the CoordConv channels


class StackOutput(NamedTuple):
    """One stack's outputs: (B, K, h, w) landmark maps and (B, M, h, w) boundary maps (None without boundaries)."""

    landmarks: torch.Tensor
    boundaries: torch.Tensor | None


def conv7(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 7, padding=3)


class PropagationModule(nn.Module):
    """Sec. 3.1: landmark maps → M boundary maps (a 7x7 convolution stack per boundary, on the maps of its
    landmarks), then an attention map from [features, boundaries] through a two-stage hourglass and a sigmoid.

    ``forward(features, landmarks)`` → (features ⊙ attention, boundaries): (B, C, h, w) and (B, M, h, w).
    """

    def __init__(self, boundaries: Sequence[Boundary], channels: int, width: int = 12, depth: int = 2,
                 block: type[nn.Module] = HPMBlock, down: partial = avg_pool) -> None:
        super().__init__()
        groups = [sorted(set(b.indices)) for b in boundaries]
        for i, group in enumerate(groups):  # fixed index lists: buffers, so they follow the module's device
            self.register_buffer(f"group_{i}", torch.tensor(group), persistent=False)
        self.propagate = nn.ModuleList(
            nn.Sequential(conv7(len(g), width), nn.ReLU(inplace=True), conv7(width, width), nn.ReLU(inplace=True),
                          conv7(width, 1)) for g in groups)
        self.fuse = nn.Conv2d(channels + len(groups), channels, 1)
        self.hourglass = Hourglass(depth, channels, block, down)
        self.attention = nn.Conv2d(channels, channels, 1)

    def boundaries(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) landmark maps → (B, M, h, w) boundary maps."""
        return torch.cat([stack(landmarks.index_select(1, getattr(self, f"group_{i}")))
                          for i, stack in enumerate(self.propagate)], 1)

    def forward(self, features: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boundaries = self.boundaries(landmarks)
        attention = torch.sigmoid(self.attention(self.hourglass(self.fuse(torch.cat([features, boundaries], 1)))))
        return features * attention, boundaries


def coord_stem_conv() -> nn.Module:
    """AWing's stem convolution: a 7x7 stride-2 CoordConv (3 + x, y, r → 64)."""
    return CoordConv2d(3, 64, 7, stride=2, padding=3)


class PropNet(nn.Module):
    """The network: stem, ``num_stacks`` hourglasses with heads (``components.hourglass.StackedHourglass`` parts),
    CoordConv entrances and propagation modules between them (module docstring).

    ``forward(images)`` → one :class:`StackOutput` per stack: landmark maps (B, K, h, w), and boundary maps
    (B, M, h, w) from the propagation module, or (B, 1, h, w) from the head's extra channel (``boundary_head``,
    AWing), or None.
    """

    def __init__(self, num_points: int, boundaries: Sequence[Boundary], num_stacks: int = 4, depth: int = 4,
                 channels: int = 256, block: Block = "hpm", antialias: int | None = 3, propagation: bool = True,
                 coordconv: bool = True, boundary_head: bool = False, pm_width: int = 12, pm_depth: int = 2) -> None:
        super().__init__()
        if block not in ("hpm", "bottleneck"):
            raise ValueError(f"block must be 'hpm' or 'bottleneck', got {block!r}")
        if propagation and boundary_head:
            raise ValueError("boundaries come from the propagation module or from the head (AWing), not both")
        if coordconv and block != "hpm":
            raise ValueError("CoordConv is wired into the FAN stem: use block 'hpm' with coordconv")
        if antialias is not None and antialias not in BINOMIAL:
            raise ValueError(f"antialias must be None or a BlurPool kernel size {sorted(BINOMIAL)}, got {antialias}")
        hpm = block == "hpm"
        # §0.5: avg pool → BlurPool; max pool → max pool (stride 1) + BlurPool
        blur = blur_pool if hpm else max_blur_pool
        down = (avg_pool if hpm else max_pool) if antialias is None else partial(blur, kernel=antialias)
        stem = partial(FANStem, down=down, first=coord_stem_conv if coordconv else stem_conv) if hpm else NewellStem
        self.num_points = num_points
        self.net = StackedHourglass(num_points + int(boundary_head), num_stacks, depth, channels,
                                    HPMBlock if hpm else Bottleneck, down, stem=stem,
                                    head=fan_head if hpm else newell_head)
        gated = propagation or boundary_head
        self.entrances = nn.ModuleList(CoordConv2d(channels, channels, 1, with_boundary=gated and i > 0)
                                       for i in range(num_stacks)) if coordconv else None
        self.propagation = nn.ModuleList(
            PropagationModule(boundaries, channels, pm_width, pm_depth, HPMBlock if hpm else Bottleneck, down)
            for _ in range(num_stacks)) if propagation else None
        if self.propagation is not None:  # the last attention has no next hourglass to feed (module docstring)
            last = self.propagation[-1]
            for unused in (last.fuse, last.hourglass, last.attention):
                unused.requires_grad_(False)
        self.boundary_head = boundary_head

    def forward(self, images: torch.Tensor) -> list[StackOutput]:
        self.net.check_input(images)
        x = self.net.stem(images)  # (B, C, S/4, S/4)
        outputs, gate = [], None
        for i in range(len(self.net.hourglasses)):
            entry = x if self.entrances is None else self.entrances[i](x, gate)  # + x, y, r (, gated x, y)
            features = self.net.heads[i](self.net.hourglasses[i](entry))  # (B, C, h, w)
            maps = self.net.to_maps[i](features)  # (B, K (+1), h, w)
            landmarks, boundaries = maps[:, :self.num_points], None
            if self.propagation is not None and i < len(self.net.merge_features):
                features, boundaries = self.propagation[i](features, landmarks)  # Fig. 1: attention on features
            elif self.propagation is not None:  # the last stack: its boundaries are supervised, nothing follows
                boundaries = self.propagation[i].boundaries(landmarks)
            elif self.boundary_head:
                boundaries = maps[:, self.num_points:]
            outputs.append(StackOutput(landmarks, boundaries))
            if boundaries is not None:
                gate = boundaries.amax(1, keepdim=True)  # the next entrance's boundary gate (max over M)
            if i < len(self.net.merge_features):
                x = self.net.merge(i, x, features, maps)
        return outputs


class PropNetModule(HeatmapModule):
    """PropagationNet and its ablations (defaults: the full PropNet of the paper; module docstring).

    Args:
        num_stacks, depth, channels: hourglasses, levels per hourglass, feature channels (4, 4, 256).
        block: "hpm" (multi-view hourglass, FAN) or "bottleneck" (the paper's baseline "BB", Newell).
        antialias: BlurPool kernel size replacing every down-sampling (3: "AC-3"; 2, 5; None: plain pooling).
        propagation: the propagation module after every hourglass ("PM").
        coordconv: CoordConv stem and hourglass entrances (AWing's placement; needs ``block="hpm"``).
        boundary_head: AWing's extra boundary output per stack (one union boundary map), without the PM.
        loss: "focal_wing" (eqs. 2-5) or "awing" (eq. 1 alone: every sample weighs 1).
        beta: weight of the boundary term (eq. 5; 0.5).
        boundary_sigma: sigma of the boundary targets, heatmap pixels (1.0, AWing).
        foreground_weight: AWing's weight map W (0: off, as PropNet; 10: AWing).
        attributes: the subset tags that are focal-factor classes (WFLW's six); a dataset whose subsets hold none
            of them (300W, COFW) trains with weights 1.
        pm_width, pm_depth: channels of the 7x7 propagation convolutions, levels of the PM's hourglass.
        codec: stride 4 (64x64 maps), landmark target sigma, argmax + 1/4 decoding (Sec. 4.3).
        **kwargs: LandmarkModule arguments (layout, input_size, flip_test, optimizer, lr_scheduler, ...).
    """

    def __init__(
        self,
        num_stacks: int = 4,
        depth: int = 4,
        channels: int = 256,
        block: Block = "hpm",
        antialias: int | None = 3,
        propagation: bool = True,
        coordconv: bool = True,
        boundary_head: bool = False,
        loss: Literal["focal_wing", "awing"] = "focal_wing",
        beta: float = 0.5,
        boundary_sigma: float = 1.0,
        foreground_weight: float = 0.0,
        attributes: tuple[str, ...] = WFLW_ATTRIBUTES,  # the subset tags of the WFLW datamodule
        pm_width: int = 12,
        pm_depth: int = 2,
        codec: HeatmapCodec = HeatmapCodec(stride=4, sigma=1.0, decoder="argmax_quarter"),  # noqa: B008 (frozen)
        **kwargs,
    ) -> None:
        if loss not in ("focal_wing", "awing"):
            raise ValueError(f"loss must be 'focal_wing' or 'awing', got {loss!r}")
        super().__init__(codec=codec, **kwargs)
        self.net = PropNet(self.layout.num_points, self.layout.boundaries, num_stacks, depth, channels, block,
                           antialias, propagation, coordconv, boundary_head, pm_width, pm_depth)
        self.loss_name, self.beta, self.boundary_sigma = loss, beta, boundary_sigma
        self.foreground_weight, self.attributes = foreground_weight, tuple(attributes)

    def forward(self, images: torch.Tensor) -> list[StackOutput]:
        self.check_input(images)
        return self.net(images)

    def landmark_maps(self, outputs: list[StackOutput]) -> list[torch.Tensor]:
        return [stack.landmarks for stack in outputs]

    def focal_weights(self, batch: dict) -> torch.Tensor | None:
        """(N,) focal factors of the batch from its attribute tags (eq. 2, per sample), or None (weights 1) with
        the AWing loss or on a dataset whose subsets hold no attribute."""
        classes = [a for a in self.attributes if a in self.subsets]
        if self.loss_name == "awing" or not classes:
            return None
        tags = torch.tensor([[c in sample for c in classes] for sample in batch["subsets"]], device=self.device)
        return focal_factor(tags)

    def training_loss(self, outputs: list[StackOutput], batch: dict) -> dict[str, torch.Tensor]:
        size = outputs[-1].landmarks.shape[-2:]
        points = batch["landmarks"].float()
        landmark_target = self.codec.encode(points, size)
        boundary_target = None
        if outputs[-1].boundaries is not None:  # M maps for the PM, their union for AWing's boundary head
            union = self.net.boundary_head
            boundary_target = self.codec.boundary_maps(points, self.layout.boundaries, size, self.boundary_sigma,
                                                       union=union)
            boundary_target = boundary_target[:, -1:] if union else boundary_target
        weights = self.focal_weights(batch)
        terms: dict[str, torch.Tensor] = {}
        for stack in outputs:  # every stack (intermediate supervision)
            landmarks = stack.landmarks.float()
            if boundary_target is None:
                loss = adaptive_wing_loss(landmarks, landmark_target, weights, self.foreground_weight)
                stack_terms = {"loss": loss, "landmark": loss}
            else:
                stack_terms = focal_wing_loss(landmarks, landmark_target, stack.boundaries.float(), boundary_target,
                                              weights, self.beta, foreground_weight=self.foreground_weight)
            terms = {k: terms.get(k, 0) + v for k, v in stack_terms.items()}
        return terms
