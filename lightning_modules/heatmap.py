"""HeatmapModule: the base of models that predict one heatmap per landmark (hourglass, MHHN, PropNet, TAB).

It owns the model's :class:`~landmarks.heatmaps.HeatmapCodec` (stride, Gaussian targets, decoder), set in the
config as ``codec: {stride: 4, sigma: 3.0, decoder: sdt, window: 9}``. Subclasses return from ``forward`` the
list of every stack's (B, K, h, w) maps (the last one is decoded) and write ``training_loss``; targets come
from :meth:`target_maps`, decoded landmarks from the codec.

SDT diagnostics (:class:`SDTDiagnostics`; on when the decoder is SDT, or where a subclass sets
``sdt_diagnostics = True``): in every validation and test pass, the SDT fit of the last stack's maps gives the
share of landmarks that fell back to argmax + 1/4 (``{stage}/sdt_fallback``), the share a gated fine detection
loss would act on (``{stage}/fdl_active``: a fit, not a fallback, with the argmax inside the gate around the
truth) and the distribution of fitted peak heights (``{stage}/peak_height_p10`` / ``_p50`` / ``_p90``). Test
passes store them in the evaluation record (``diagnostics``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from landmarks.heatmaps import HeatmapCodec, SDTInfo
from lightning_modules.base import LandmarkModule


class SDTDiagnostics(Metric):
    """Shares of SDT fallbacks and of FDL-active landmarks, and quantiles of the fitted peak heights; exact under
    DDP (sums and concatenated heights)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("fallback", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("active", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("peaks", [], dist_reduce_fx="cat")

    def update(self, info: SDTInfo, active: torch.Tensor) -> None:
        self.fallback += info.fallback.sum()
        self.active += active.sum()
        self.count += info.fallback.numel()
        self.peaks.append(info.peak.flatten().float())

    def compute(self) -> dict[str, float]:
        peaks = self.peaks if isinstance(self.peaks, torch.Tensor) else torch.cat(self.peaks)
        peaks = peaks[torch.isfinite(peaks)]
        out = {"sdt_fallback": float(self.fallback / self.count), "fdl_active": float(self.active / self.count)}
        if len(peaks):
            q = torch.quantile(peaks.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, device=peaks.device))
            out |= {"peak_height_p10": float(q[0]), "peak_height_p50": float(q[1]), "peak_height_p90": float(q[2])}
        return out


class HeatmapModule(LandmarkModule):
    """A landmark model whose outputs are per-stack heatmaps, decoded by ``codec``.

    Args:
        codec: the heatmap codec (a mapping is accepted, e.g. from a checkpoint's hyper-parameters).
        **kwargs: LandmarkModule arguments (layout, input_size, flip_test, optimizer, lr_scheduler, ...).
    """

    sdt_diagnostics: bool = False  # True: log the SDT diagnostics whatever the decoder (MHHN's every row)

    def __init__(self, codec: HeatmapCodec = HeatmapCodec(), **kwargs) -> None:  # noqa: B008 (frozen: a safe default)
        super().__init__(**kwargs)
        self.codec = codec if isinstance(codec, HeatmapCodec) else HeatmapCodec(**dict(codec))
        if self.input_size % self.codec.stride:
            raise ValueError(f"input size {self.input_size} is not a multiple of the codec stride {self.codec.stride}")
        self.sdt_stats = nn.ModuleDict({stage: SDTDiagnostics() for stage in ("val", "test")})

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

    def landmark_maps(self, outputs: Any) -> list[torch.Tensor]:
        """Every stack's (B, K, h, w) landmark maps in ``forward``'s outputs (a list of them by default; a module
        whose stacks also output other maps, such as boundaries, says where its landmark maps are)."""
        return outputs

    def decode(self, outputs: Any) -> torch.Tensor:
        maps = self.landmark_maps(outputs)[-1].float()
        if maps.shape[-1] * self.codec.stride != self.input_size:
            raise ValueError(f"maps of side {maps.shape[-1]} at stride {self.codec.stride} do not cover the "
                             f"{self.input_size}px input")
        return self.codec.decode(maps)

    def fdl_gate(self) -> float | None:
        """Radius (heatmap pixels, per axis) around the truth within which a fine detection loss acts (None: no
        gate); MHHN's ``fdl_gate`` sets it."""
        return None

    def update_diagnostics(self, outputs: Any, batch: dict, stage: str) -> None:
        if not (self.codec.is_sdt or self.sdt_diagnostics):
            return
        maps = self.landmark_maps(outputs)[-1].float()
        _, info = self.codec.sdt(maps)
        active = ~info.fallback
        gate = self.fdl_gate()
        if gate is not None:
            truth = self.heatmap_points(batch, maps)
            active &= (info.centre.to(truth.dtype) - truth).abs().amax(-1) <= gate
        self.sdt_stats[stage].update(info, active)

    def compute_diagnostics(self, stage: str) -> dict[str, float]:
        stats = self.sdt_stats[stage]
        if not stats.update_count:
            return {}
        out = stats.compute()
        stats.reset()
        return out

    def extra_repr(self) -> str:
        return f"codec={self.codec}"
