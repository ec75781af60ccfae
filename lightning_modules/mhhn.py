"""MHHN: multi-order high-precision hourglass network (paper 001; IMPLEMENTATION_NOTES §2).

MHHN = stacked hourglasses (HGs) + the multi-order cross geometry-aware block (MCG, eqs. 7-9) after every
hourglass unit + heatmap subpixel regression (HSR): the subpixel detection loss (SDL, eq. 6: Jensen-Shannon
divergence of the normalised maps, eq. 2, plus lambda times the fine detection loss, eq. 5, through the
Gaussian surface fit) and subpixel detection technology decoding (SDT, eqs. 11-20).

The paper's ablations are values of this one module (``experiments/mhhn/manifest.yaml`` names them):

================  ========  ======  =========================  ========================================
row               mcg       loss    decoder                    other
================  ========  ======  =========================  ========================================
HGs               none      mse     argmax                     Table I-IV baseline, Table V "MSE"
HGs+HSR           none      sdl     sdt                        Table V "SDL+SDT", Table VI sigma = 3
HGs+MCG           all       mse     argmax
MHHN              all       sdl     sdt                        Table VII lambda = 1/16
MSE+SDT           none      mse     sdt (at test time only)    the HGs checkpoint, decoded by SDT
KLDL / JSDL+SDT   none      kld/jsd sdt
SDL1+SDT          none      sdl     sdt                        ``fdl_constrained=False`` (eq. 18 in FDL)
(all SDL rows)                                                 ``fdl_gate=True``: see the departures
sigma, lambda     ...       sdl     sdt                        ``sigma``, ``fdl_weight``
text results      last / heatmap_stride=8 (32x32 maps) / window=15
================  ========  ======  =========================  ========================================

Departures and choices where the paper is silent (IMPLEMENTATION_NOTES §2 and §7):

- Backbone blocks (not given): Newell stem, depth-4 hourglasses of pre-activation bottlenecks, Newell heads and
  1x1 inter-stack merges (``components.hourglass``). Optimiser, batch and epochs (not given): RMSprop, total
  batch 16, 200 epochs (configs). Augmentation std (not given): the shared pipeline's defaults.
- MCG softmax axis (not given): rows. No 1/sqrt(d) scaling (as the paper; ``mcg_scaled`` adds it). Computed as
  attention (``components.mcg``) so memory-efficient kernels need not form the 4096 x 4096 matrix.
- Normalising a predicted map (not given): values clamped to >= 1e-8, then divided by their sum.
- SDT frame: the weighted log fit and eq. 20 are read with the origin at the argmax pixel (as
  IMPLEMENTATION_NOTES §2.3; the paper does not say). Eq. 20 depends on the origin: read in heatmap
  coordinates, an error e in the fitted curvature moves u by about 2 e sigma^2 u, and on trained synthetic
  maps it was worse than the argmax (0.85 vs 0.72 px); in the window frame its first case (c0 >= 0, i.e.
  G >= 1) is exact for sigma = sigma* whatever G, and its second (G < 1) only holds for G = 1 exactly, so
  such landmarks mostly fall back. Fitted in float64.
- SDT fallback (not in the paper): where the fit is no peak or lands more than ``max_offset`` = 1 px from the
  argmax, the argmax with the quarter-pixel shift is used (counted, logged as ``{stage}/sdt_fallback``); in the
  FDL such a landmark is a constant.
- The SDL is applied to every stack's output (intermediate supervision; the paper does not say).
- FDL gate (not in the paper, ``fdl_gate=True``): only landmarks whose truth lies inside the fitting window
  around their argmax pass FDL gradients (all keep their value). The fit can move a centre only within its
  window, so for a misplaced peak the term is noise: on synthetic faces (12 epochs) the ungated SDL reached
  12.9 % NME (and SDL1 11.9 %) against 6.6 % for the JS loss alone and 7.7 % for HGs; gated, 5.1 %.
- 32x32 variant: sigma* is halved to 1.5 so the targets cover the same image area (the paper does not say).
- Learning-rate schedule: the paper's divisors (2, 5, 10, 10 at epochs 20, 50, 100, 150), not its sentence
  "reaches 1e-5 after 150 epochs", which they contradict.
- Heatmap to crop mapping: the exact pixel-area convention of ``landmarks.heatmaps`` (no 1-based shifts).
"""

from __future__ import annotations

from typing import Literal

import torch
from torchmetrics import MeanMetric

from landmarks.heatmaps import decode_sdt
from landmarks.losses import js_divergence, kl_divergence, subpixel_detection_loss, weighted_heatmap_mse
from lightning_modules.hourglass import StackedHourglassModule

Loss = Literal["mse", "kld", "jsd", "sdl"]
Decoder = Literal["argmax", "soft_argmax", "sdt", "sdt_unconstrained"]


class MHHNModule(StackedHourglassModule):
    """MHHN and its ablations (defaults: the full MHHN of the paper).

    Args:
        mcg: MCG after "all" hourglass units (MHHN), the "last" one, or "none" (HGs).
        mcg_scaled: divide the MCG correlations by sqrt(channels) (not in the paper).
        loss: "mse" (heatmap MSE), "kld" (KL divergence), "jsd" (JS divergence, eq. 2) or "sdl" (eq. 6).
        fdl_weight: lambda of eq. 6 (1/16 in the paper).
        fdl_constrained: the FDL reads the fit with eq. 20 ("SDL"); False: eq. 18 ("SDL1").
        fdl_gate: FDL gradients only from landmarks whose truth lies inside the fitting window around the argmax
            (not in the paper; False: every landmark, as eq. 5; see ``landmarks.losses.fine_detection_loss``).
        window: side of the SDT fitting window, odd (9 in the paper; 15 in its text ablation).
        decoder: "argmax" (+1/4 pixel), "soft_argmax", "sdt" (eq. 20) or "sdt_unconstrained" (eq. 18).
        sigma: sigma* of the targets and of the SDT constraint, heatmap pixels (3 on 64x64 maps).
        **kwargs: StackedHourglassModule arguments (num_stacks, depth, channels, heatmap_stride, ...).
    """

    def __init__(
        self,
        mcg: Literal["none", "all", "last"] = "all",
        mcg_scaled: bool = False,
        loss: Loss = "sdl",
        fdl_weight: float = 1 / 16,
        fdl_constrained: bool = True,
        fdl_gate: bool = True,
        window: int = 9,
        decoder: Decoder = "sdt",
        sigma: float = 3.0,
        **kwargs,
    ) -> None:
        if loss not in ("mse", "kld", "jsd", "sdl"):
            raise ValueError(f"loss must be mse, kld, jsd or sdl, got {loss!r}")
        if decoder not in ("argmax", "soft_argmax", "sdt", "sdt_unconstrained"):
            raise ValueError(f"decoder must be argmax, soft_argmax, sdt or sdt_unconstrained, got {decoder!r}")
        if window < 3 or window % 2 == 0:
            raise ValueError(f"window must be odd and >= 3, got {window}")
        super().__init__(sigma=sigma, decoder="argmax", mcg=mcg, mcg_scaled=mcg_scaled, **kwargs)
        self.decoder = decoder
        self.loss_name, self.fdl_weight, self.fdl_constrained, self.window = loss, fdl_weight, fdl_constrained, window
        self.fdl_gate = fdl_gate
        self.sdt_fallback = MeanMetric()  # share of landmarks the SDT decoded by argmax + 1/4 instead

    def training_loss(self, outputs: list[torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        target = self.target_maps(batch, outputs[-1]).float()
        points = self.heatmap_points(batch, outputs[-1]).float()
        terms: dict[str, torch.Tensor] = {}
        for maps in outputs:  # every stack (intermediate supervision)
            maps = maps.float()
            if self.loss_name == "mse":
                stack = {"loss": weighted_heatmap_mse(maps, target, self.foreground_weight)}
            elif self.loss_name == "kld":
                stack = {"loss": kl_divergence(maps, target).sum(-1).mean()}
            elif self.loss_name == "jsd":
                stack = {"loss": js_divergence(maps, target).sum(-1).mean()}
            else:
                stack = subpixel_detection_loss(maps, target, points, self.sigma, self.fdl_weight, self.window,
                                                self.fdl_constrained, self.window // 2 if self.fdl_gate else None)
            terms = {k: terms.get(k, 0) + v for k, v in stack.items()}
        return terms

    def decode_maps(self, maps: torch.Tensor) -> torch.Tensor:
        if not self.decoder.startswith("sdt"):
            return super().decode_maps(maps)
        points, fallback = decode_sdt(maps, self.window, self.sigma, constrained=self.decoder == "sdt",
                                      return_fallback=True)
        if not self.training:
            self.sdt_fallback.update(fallback.float().mean(), weight=fallback.numel())
        return points

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
