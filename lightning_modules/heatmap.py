"""HeatmapModule: the base of models that predict one heatmap per landmark (hourglass, MHHN, PropNet, TAB).

It owns the model's :class:`~landmarks.heatmaps.HeatmapCodec` (stride, Gaussian targets, decoder), set in the
config as ``codec: {stride: 4, sigma: 3.0, decoder: sdt, window: 9}``. Subclasses return from ``forward`` the
list of every stack's (B, K, h, w) maps (the last one is decoded) and write ``training_loss``; targets come
from :meth:`target_maps`, decoded landmarks from the codec. Where the decoder is SDT, the share of landmarks
that fell back to argmax + 1/4 is logged as ``{stage}/sdt_fallback``.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from landmarks.heatmaps import HeatmapCodec
from lightning_modules.base import LandmarkModule


class HeatmapModule(LandmarkModule):
    """A landmark model whose outputs are per-stack heatmaps, decoded by ``codec``.

    Args:
        codec: the heatmap codec (a mapping is accepted, e.g. from a checkpoint's hyper-parameters).
        **kwargs: LandmarkModule arguments (layout, input_size, flip_test, optimizer, lr_scheduler, ...).
    """

    def __init__(self, codec: HeatmapCodec = HeatmapCodec(), **kwargs) -> None:  # noqa: B008 (frozen: a safe default)
        super().__init__(**kwargs)
        self.codec = codec if isinstance(codec, HeatmapCodec) else HeatmapCodec(**dict(codec))
        if self.input_size % self.codec.stride:
            raise ValueError(f"input size {self.input_size} is not a multiple of the codec stride {self.codec.stride}")
        self.sdt_fallback = MeanMetric()  # share of landmarks the SDT decoded by argmax + 1/4 instead

    @property
    def map_size(self) -> int:
        """Side of the heatmaps: input size / stride."""
        return self.input_size // self.codec.stride

    def check_input(self, images: torch.Tensor) -> None:
        if images.shape[-1] != self.input_size:  # the codec's stride holds for this input size only
            raise ValueError(f"the model was built for {self.input_size}px crops, got {images.shape[-1]}px")

    def heatmap_points(self, batch: dict, maps: torch.Tensor) -> torch.Tensor:
        """The batch's (B, K, 2) crop-pixel landmarks in heatmap pixels, in the dtype of ``maps``."""
        return self.codec.to_heatmap(batch["landmarks"].to(maps.dtype))

    def target_maps(self, batch: dict, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) Gaussian targets shaped like ``maps``, encoded on their device."""
        return self.codec.encode(batch["landmarks"].to(maps.dtype), maps.shape[-2:])

    def decode(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        maps = outputs[-1].float()
        if maps.shape[-1] * self.codec.stride != self.input_size:
            raise ValueError(f"maps of side {maps.shape[-1]} at stride {self.codec.stride} do not cover the "
                             f"{self.input_size}px input")
        points, fallback = self.codec.decode_heatmap(maps)
        if self.codec.is_sdt and not self.training:
            self.sdt_fallback.update(fallback.float().mean(), weight=fallback.numel())
        return self.codec.to_crop(points)

    def _log_fallback(self, stage: str) -> None:
        if self.sdt_fallback.update_count:
            self.log(f"{stage}/sdt_fallback", self.sdt_fallback.compute())
            self.sdt_fallback.reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_fallback("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_fallback("test")

    def extra_repr(self) -> str:
        return f"codec={self.codec}"

