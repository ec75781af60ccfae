"""Stacked-hourglass heatmap-regression baseline ("HGs"), the shared baseline of MHHN and PropNet.

Network: ``components.hourglass.StackedHourglass`` (Newell et al. 2016). Targets: unnormalised Gaussians
(peak 1) of std ``sigma`` heatmap pixels at each landmark, encoded on the model's device from the crop
landmarks. Loss: mean-squared error summed over stacks (intermediate supervision), optionally with AWing's
foreground weight map (``foreground_weight``; 0, the default, is Newell's plain MSE). Decoding: the last
stack's maps, argmax with the quarter-pixel shift toward the higher neighbour (or soft-argmax), mapped back to
crop pixels with the exact stride convention of ``landmarks.heatmaps``.

Departures from Newell et al.: RMSprop is replaced by whatever optimiser the config names (Adam by default);
the heatmap-to-crop mapping uses the exact pixel-area convention instead of the 1-based shifts of the public
codes; the optional foreground weight (off by default) comes from AWing, not from Newell.
"""

from __future__ import annotations

from typing import Literal

import torch

from landmarks.heatmaps import crop_to_heatmap, decode_argmax, decode_soft_argmax, encode_gaussian, heatmap_to_crop
from landmarks.losses import weighted_heatmap_mse
from lightning_modules.base import LandmarkModule
from lightning_modules.components.hourglass import StackedHourglass


class StackedHourglassModule(LandmarkModule):
    """Stacked hourglass baseline.

    Args:
        num_stacks, depth, channels: hourglass count, levels per hourglass, feature channels.
        sigma: std of the target Gaussians, in heatmap pixels.
        foreground_weight: W of the AWing weight map (0: plain MSE).
        decoder: "argmax" (argmax + 1/4 pixel shift) or "soft_argmax" (integral of the clamped map).
        mcg: MHHN's multi-order cross geometry-aware block after "all" hourglass units, the "last" one, or "none";
            ``mcg_scaled`` divides its correlations by sqrt(channels).
        heatmap_stride: crop pixels per heatmap pixel: 4 (64x64 maps from 256 px crops) or 8 (32x32).
        **kwargs: LandmarkModule arguments (layout, input_size, flip_test, optimizer, lr_scheduler, ...).
    """

    def __init__(
        self,
        num_stacks: int = 4,
        depth: int = 4,
        channels: int = 256,
        sigma: float = 1.5,
        foreground_weight: float = 0.0,
        decoder: Literal["argmax", "soft_argmax"] = "argmax",
        mcg: Literal["none", "all", "last"] = "none",
        mcg_scaled: bool = False,
        heatmap_stride: int = 4,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net = StackedHourglass(self.layout.num_points, num_stacks, depth, channels, mcg=mcg,
                                    mcg_scaled=mcg_scaled, stride=heatmap_stride)
        self.sigma, self.foreground_weight = sigma, foreground_weight
        self.decoder = decoder

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.shape[-1] != self.input_size:  # the decoder's stride is input_size / heatmap size
            raise ValueError(f"the model was built for {self.input_size}px crops, got {images.shape[-1]}px")
        return self.net(images)  # per stack: (B, K, S/stride, S/stride)

    def stride(self, heatmaps: torch.Tensor) -> float:
        return self.input_size / heatmaps.shape[-1]

    def training_loss(self, outputs: list[torch.Tensor], batch: dict) -> torch.Tensor:
        target = self.target_maps(batch, outputs[-1])
        return sum(weighted_heatmap_mse(maps.float(), target.float(), self.foreground_weight) for maps in outputs)

    def heatmap_points(self, batch: dict, maps: torch.Tensor) -> torch.Tensor:
        """The batch's (B, K, 2) crop-pixel landmarks in the heatmap pixels of ``maps``."""
        return crop_to_heatmap(batch["landmarks"].to(maps.dtype), self.stride(maps))

    def target_maps(self, batch: dict, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) Gaussian targets (peak 1, std ``sigma``) shaped like ``maps``."""
        return encode_gaussian(self.heatmap_points(batch, maps), maps.shape[-2:], self.sigma)

    def decode_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) → (B, K, 2) heatmap-pixel landmarks with the configured decoder."""
        return decode_argmax(maps) if self.decoder == "argmax" else decode_soft_argmax(maps)

    def decode(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        maps = outputs[-1].float()
        return heatmap_to_crop(self.decode_maps(maps), self.stride(maps))
