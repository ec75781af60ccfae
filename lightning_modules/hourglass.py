"""Stacked-hourglass heatmap-regression baseline ("HGs"), the shared baseline of MHHN and PropNet.

Network: ``components.hourglass.StackedHourglass`` with Newell's parts (Newell et al. 2016). Targets and
decoding: the module's ``codec`` (``landmarks.heatmaps.HeatmapCodec``): unnormalised Gaussians (peak 1) of std
``codec.sigma`` heatmap pixels at each landmark, encoded on the model's device, and the last stack's maps
decoded by ``codec.decoder`` with the exact stride convention of ``landmarks.heatmaps``. Loss: mean-squared
error summed over stacks (intermediate supervision), optionally with AWing's foreground weight map
(``foreground_weight``; 0, the default, is Newell's plain MSE).

Departures from Newell et al.: RMSprop is replaced by whatever optimiser the config names (Adam by default);
the heatmap-to-crop mapping uses the exact pixel-area convention instead of the 1-based shifts of the public
codes; the optional foreground weight (off by default) comes from AWing, not from Newell.
"""

from __future__ import annotations

from functools import partial

import torch

from landmarks.heatmaps import HeatmapCodec
from landmarks.losses import weighted_heatmap_mse
from lightning_modules.components.hourglass import NewellStem, StackedHourglass, StackHook, no_hook
from lightning_modules.heatmap import HeatmapModule


class StackedHourglassModule(HeatmapModule):
    """Stacked hourglass baseline.

    Args:
        num_stacks, depth, channels: hourglass count, levels per hourglass, feature channels.
        codec: stride (4: 64x64 maps from 256 px crops; 8: 32x32), target sigma and decoder.
        foreground_weight: W of the AWing weight map (0: plain MSE).
        **kwargs: LandmarkModule arguments (layout, input_size, flip_test, optimizer, lr_scheduler, ...).
    """

    def __init__(
        self,
        num_stacks: int = 4,
        depth: int = 4,
        channels: int = 256,
        codec: HeatmapCodec = HeatmapCodec(stride=4, sigma=1.5, decoder="argmax_quarter"),  # noqa: B008 (frozen)
        foreground_weight: float = 0.0,
        _stack_hook: StackHook = no_hook,  # a paper's per-stack block (MHHN's MCG); not a config option
        **kwargs,
    ) -> None:
        super().__init__(codec=codec, **kwargs)
        self.hparams.pop("_stack_hook", None)
        self.net = StackedHourglass(self.layout.num_points, num_stacks, depth, channels,
                                    stem=partial(NewellStem, stride=self.codec.stride), hook=_stack_hook)
        self.foreground_weight = foreground_weight

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(images)
        return self.net(images)  # per stack: (B, K, S/stride, S/stride)

    def training_loss(self, outputs: list[torch.Tensor], batch: dict) -> torch.Tensor:
        target = self.target_maps(batch, outputs[-1])
        return sum(weighted_heatmap_mse(maps.float(), target.float(), self.foreground_weight) for maps in outputs)
