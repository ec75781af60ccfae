"""MHHN: multi-order high-precision hourglass network (paper 001; IMPLEMENTATION_NOTES §2).

MHHN = stacked hourglasses (HGs) + the multi-order cross geometry-aware block (MCG, eqs. 7-9) after every
hourglass unit + heatmap subpixel regression (HSR): the subpixel detection loss (SDL, eq. 6: Jensen-Shannon
divergence of the normalised maps, eq. 2, plus lambda times the fine detection loss, eq. 5, through the
Gaussian surface fit) and subpixel detection technology decoding (SDT, eqs. 11-20).

The paper's ablations are values of this one module (``experiments/mhhn/manifest.yaml`` names them):

================  ========  ======  =========================  ========================================
row               mcg       loss    codec.decoder              other
================  ========  ======  =========================  ========================================
HGs               none      mse     argmax_quarter             Table I-IV baseline, Table V "MSE"
HGs+HSR           none      sdl     sdt                        Table V "SDL+SDT", Table VI sigma = 3
HGs+MCG           all       mse     argmax_quarter
MHHN              all       sdl     sdt                        Table VII lambda = 1/16
MSE+SDT           none      mse     sdt (at test time only)    the HGs checkpoint, decoded by SDT
KLDL / JSDL+SDT   none      kld/jsd sdt
SDL1+SDT          none      sdl     sdt                        ``fdl_constrained=False`` (eq. 18 in FDL)
(all SDL rows)                                                 ``fdl_gate=True``: see the departures
sigma, lambda     ...       sdl     sdt                        ``codec.sigma``, ``fdl_weight``
text results      last / codec.stride=8 (32x32 maps) / codec.window=15
================  ========  ======  =========================  ========================================

Departures and choices where the paper is silent (IMPLEMENTATION_NOTES §2 and §7):

- Backbone blocks (not given): Newell stem, depth-4 hourglasses of pre-activation bottlenecks, Newell heads and
  1x1 inter-stack merges (``components.hourglass``; MCG is that network's per-stack hook). Optimiser, batch and
  epochs (not given): RMSprop, total batch 16, 200 epochs (configs). Augmentation std (not given): the shared
  pipeline's defaults.
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

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from landmarks.heatmaps import HeatmapCodec
from landmarks.losses import js_divergence, kl_divergence, subpixel_detection_loss, weighted_heatmap_mse
from lightning_modules.components.hourglass import StackHook
from lightning_modules.components.mcg import MultiOrderCorrelation
from lightning_modules.hourglass import StackedHourglassModule

Loss = Literal["mse", "kld", "jsd", "sdl"]
MCGPlacement = Literal["none", "all", "last"]
Terms = dict[str, torch.Tensor]


def mcg_hook(placement: MCGPlacement, num_stacks: int, scaled: bool = False) -> StackHook:
    """The stack hook putting an MCG block (eqs. 7-9) after "all" hourglass units, the "last" one, or "none"."""
    stacks = {"none": (), "all": range(num_stacks), "last": (num_stacks - 1,)}
    if placement not in stacks:
        raise ValueError(f"mcg must be 'none', 'all' or 'last', got {placement!r}")
    chosen = set(stacks[placement])

    def hook(index: int, channels: int) -> nn.Module | None:
        return MultiOrderCorrelation(channels, scaled) if index in chosen else None

    return hook


def _mse(module: MHHNModule, maps: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> Terms:
    return {"loss": weighted_heatmap_mse(maps, target, module.foreground_weight)}


def _kld(module: MHHNModule, maps: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> Terms:
    return {"loss": kl_divergence(maps, target).sum(-1).mean()}


def _jsd(module: MHHNModule, maps: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> Terms:
    return {"loss": js_divergence(maps, target).sum(-1).mean()}


def _sdl(module: MHHNModule, maps: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> Terms:
    window = module.codec.window
    return subpixel_detection_loss(maps, target, points, module.codec.sigma, module.fdl_weight, window,
                                   module.fdl_constrained, window // 2 if module.fdl_gate else None)


# One stack's loss terms (the total under "loss"), by the ``loss`` argument: (module, maps, target, points).
STACK_LOSSES: dict[str, Callable[..., Terms]] = {"mse": _mse, "kld": _kld, "jsd": _jsd, "sdl": _sdl}


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
        codec: stride (4; 8 for the 32x32 variant), sigma* of the targets and of the SDT constraint (3 on 64x64
            maps), decoder ("sdt": eq. 20; "sdt_unconstrained": eq. 18; or an argmax) and the SDT window (9).
        **kwargs: StackedHourglassModule arguments (num_stacks, depth, channels, foreground_weight, ...).
    """

    def __init__(
        self,
        mcg: MCGPlacement = "all",
        mcg_scaled: bool = False,
        loss: Loss = "sdl",
        fdl_weight: float = 1 / 16,
        fdl_constrained: bool = True,
        fdl_gate: bool = True,
        codec: HeatmapCodec = HeatmapCodec(stride=4, sigma=3.0, decoder="sdt", window=9),  # noqa: B008 (frozen)
        num_stacks: int = 4,
        **kwargs,
    ) -> None:
        if loss not in STACK_LOSSES:
            raise ValueError(f"loss must be one of {sorted(STACK_LOSSES)}, got {loss!r}")
        super().__init__(codec=codec, num_stacks=num_stacks, _stack_hook=mcg_hook(mcg, num_stacks, mcg_scaled),
                         **kwargs)
        self.loss_name = loss
        self.fdl_weight, self.fdl_constrained, self.fdl_gate = fdl_weight, fdl_constrained, fdl_gate

    def training_loss(self, outputs: list[torch.Tensor], batch: dict) -> Terms:
        target = self.target_maps(batch, outputs[-1]).float()
        points = self.heatmap_points(batch, outputs[-1]).float()
        terms: Terms = {}
        for maps in outputs:  # every stack (intermediate supervision)
            stack = STACK_LOSSES[self.loss_name](self, maps.float(), target, points)
            terms = {k: terms.get(k, 0) + v for k, v in stack.items()}
        return terms
