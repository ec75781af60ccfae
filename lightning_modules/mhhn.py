"""MHHN: multi-order high-precision hourglass network (paper 001; IMPLEMENTATION_NOTES §2).

MHHN = stacked hourglasses (HGs) + the multi-order cross geometry-aware block (MCG, eqs. 7-9) after every
hourglass unit + heatmap subpixel regression (HSR): the subpixel detection loss (SDL, eq. 6: Jensen-Shannon
divergence of the normalised maps, eq. 2, plus lambda times the fine detection loss, eq. 5, through the
Gaussian surface fit) and subpixel detection technology decoding (SDT, eqs. 11-20).

The paper's ablations are values of this one module (``experiments/mhhn/manifest.yaml`` names them):

================  ========  ======  =========================  ========================================
row               mcg       loss    codec.decoder              other
================  ========  ======  =========================  ========================================
HGs               none      mse     argmax_integer             Table I-IV baseline, Table V "MSE"
HGs+HSR           none      sdl     sdt                        Table V "SDL+SDT", Table VI sigma = 3
HGs+MCG           all       mse     argmax_integer
MHHN              all       sdl     sdt                        Table VII lambda = 1/16
MSE+SDT           none      mse     sdt (at test time only)    the HGs checkpoint, decoded by SDT
KLDL / JSDL+SDT   none      kld/jsd sdt
SDL1+SDT          none      sdl     sdt                        ``fdl_reading=eq18`` (eq. 18 in the FDL)
(all SDL rows)                                                 ``fdl_gate=True``: see the departures
sigma, lambda     ...       sdl     sdt                        ``codec.sigma``, ``fdl_weight``
text results      last / codec.stride=8 (32x32 maps) / codec.window=15 (at test time, on MHHN's checkpoint)
extra rows        HGs decoded by argmax + 1/4; MHHN decoded by the literal eq. 20 in both frames (test time)
================  ========  ======  =========================  ========================================

The HGs rows "traverse the heatmap" for the maximum (Sec. III-C): integer argmax, as the paper decodes them
(argmax + 1/4 would narrow the gap to SDT; it is kept as an extra row).

Departures and choices where the paper is silent (IMPLEMENTATION_NOTES §2 and §7):

- Backbone blocks (not given): Newell stem, depth-4 hourglasses of pre-activation bottlenecks, Newell heads and
  1x1 inter-stack merges (``components.hourglass``; MCG is that network's per-stack hook). Optimiser, batch and
  epochs (not given): RMSprop, total batch 16, 200 epochs (configs).
- Augmentation (the paper: rotation and scale drawn from Gaussians, std not given): uniform rotation +-30 deg,
  scale 0.8-1.2, translation 5 %, horizontal flip 0.5 (``experiments/mhhn/augment.yaml``).
- Crops (the paper: the provided face boxes): the ground-truth landmark box enlarged 1.25x on 300W
  (``experiments/data/300w.yaml``; the given boxes on COFW, AFLW and WFLW).
- Model selection (not described): 5 % of the training faces are held out and the checkpoint with the best
  validation NME is tested; the test sets are never used for selection.
- lambda's unit: the fine detection loss is in heatmap pixels^2 (64x64 maps); if the paper meant crop pixels
  (256 px), its lambda = 1/16 weighs the term 16x more than ours.
- MCG softmax axis (not given): rows. No 1/sqrt(d) scaling (as the paper; ``mcg_scaled`` adds it). Computed as
  attention (``components.mcg``) so memory-efficient kernels need not form the 4096 x 4096 matrix.
- Normalising a predicted map (not given): values clamped to >= 1e-8, then divided by their sum.
- SDT reading (``codec.sdt_reading``; the frame is ``codec.sdt_frame``): eq. 20 imposes G = 1 and sx = sy. Read
  literally it breaks when the fitted peak height G is near but not at 1, and nothing in training pushes G to 1
  (JS is scale-free). Measured on exact and N(0, 0.01)-noisy Gaussians, sigma 2-4, G 0.8-1.3, 400 random
  centres (``make bench``, "MHHN SDT readings"; mean error in heatmap px, argmax + 1/4 about 0.19-0.32):

  ================  =====================  ================  ===============================
  reading, frame    G = 1, sigma = sigma*  G = 0.98 / 0.99   cells worse than argmax + 1/4
  ================  =====================  ================  ===============================
  eq20, window      exact                  0.25-0.44         16 of 48 (falls back for G < 0.98)
  eq20, heatmap     exact                  0.002-0.20        7 of 48 (2 sigma^2 |ln G| / R)
  isotropic (ours)  exact                  0-0.02            0 of 48 (exact at any G, sigma)
  eq18 (SDL1)       exact                  0-0.02            0 of 48
  ================  =====================  ================  ===============================

  The default is "isotropic": eq. 20's sx = sy constraint with G and sigma estimated (u = -c1 / (c3 + c4)), in
  the window frame; the FDL reads the fit the same way ("SDL"; ``fdl_reading=eq18`` is "SDL1"). The literal
  eq. 20 stays a switch and an extra row. Fitted in float64. On trained maps (``make reproduce-mhhn
  DATA=synthetic``, 300W stand-in, NME by face size) the SDL-trained maps peak at a median G of 1.7 (p10 0.8,
  p90 2.7): MHHN decodes to 4.72 % with the default reading, against 5.09 % / 6.31 % with the literal eq. 20
  in the window / heatmap frame (18 % / 47 % of the landmarks fall back to argmax + 1/4) and 5.66 % for
  HGs+HSR's maps by argmax + 1/4 (5.10 % by SDT).
- SDT fallback (not in the paper): where the fit is no peak or lands more than ``max_offset`` = 1 px from the
  argmax, the argmax with the quarter-pixel shift is used; in the FDL such a landmark is a constant. Logged in
  training (``train/sdt_fallback``, ``train/fdl_active``: the share the FDL acts on, ``train/peak_height``: the
  median fitted G, all of the last stack) and in every validation and test pass and evaluation record
  (``sdt_fallback``, ``fdl_active``, ``peak_height_p10 / p50 / p90``; ``lightning_modules.heatmap``).
- The SDL is applied to every stack's output (intermediate supervision; the paper does not say).
- FDL gate (not in the paper, ``fdl_gate=True``): only landmarks whose truth lies inside the fitting window
  around their argmax pass FDL gradients (all keep their value). The fit can move a centre only within its
  window, so for a misplaced peak the term is noise: on synthetic faces (12 epochs, measured with the literal
  eq. 20 reading) the ungated SDL reached 12.9 % NME (and SDL1 11.9 %) against 6.6 % for the JS loss alone and
  7.7 % for HGs; gated, 5.1 %. With the default reading the gated FDL acts on 95 % of the landmarks.
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

from landmarks.heatmaps import SDT_READINGS, HeatmapCodec
from landmarks.losses import DIAGNOSTICS, js_divergence, kl_divergence, subpixel_detection_loss, weighted_heatmap_mse
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
    codec = module.codec
    return subpixel_detection_loss(maps, target, points, codec.sigma, module.fdl_weight, codec.window,
                                   module.fdl_reading or codec.sdt_reading, codec.sdt_frame, module.fdl_gate())


# One stack's loss terms (the total under "loss"), by the ``loss`` argument: (module, maps, target, points).
STACK_LOSSES: dict[str, Callable[..., Terms]] = {"mse": _mse, "kld": _kld, "jsd": _jsd, "sdl": _sdl}


class MHHNModule(StackedHourglassModule):
    """MHHN and its ablations (defaults: the full MHHN of the paper).

    Args:
        mcg: MCG after "all" hourglass units (MHHN), the "last" one, or "none" (HGs).
        mcg_scaled: divide the MCG correlations by sqrt(channels) (not in the paper).
        loss: "mse" (heatmap MSE), "kld" (KL divergence), "jsd" (JS divergence, eq. 2) or "sdl" (eq. 6).
        fdl_weight: lambda of eq. 6 (1/16 in the paper), on the fine detection loss in heatmap pixels^2.
        fdl_reading: how the FDL reads the fit: None (the codec's ``sdt_reading``, the constrained "SDL") or
            "eq18" (unconstrained: "SDL1"), or any reading of ``landmarks.heatmaps.sdt_from_coefficients``.
        fdl_gate: FDL gradients only from landmarks whose truth lies inside the fitting window around the argmax
            (not in the paper; False: every landmark, as eq. 5; see ``landmarks.losses.fine_detection_loss``).
        codec: stride (4; 8 for the 32x32 variant), sigma* of the targets (3 on 64x64 maps), decoder ("sdt", or an
            argmax for the HGs rows), SDT window (9), reading and frame (module docstring).
        **kwargs: StackedHourglassModule arguments (num_stacks, depth, channels, foreground_weight, ...).
    """

    sdt_diagnostics = True  # every row logs fallbacks, FDL-active share and fitted peak heights

    def __init__(
        self,
        mcg: MCGPlacement = "all",
        mcg_scaled: bool = False,
        loss: Loss = "sdl",
        fdl_weight: float = 1 / 16,
        fdl_reading: Literal["isotropic", "eq20", "eq18"] | None = None,
        fdl_gate: bool = True,
        codec: HeatmapCodec = HeatmapCodec(stride=4, sigma=3.0, decoder="sdt", window=9),  # noqa: B008 (frozen)
        num_stacks: int = 4,
        **kwargs,
    ) -> None:
        if loss not in STACK_LOSSES:
            raise ValueError(f"loss must be one of {sorted(STACK_LOSSES)}, got {loss!r}")
        if fdl_reading not in (None, *SDT_READINGS):
            raise ValueError(f"fdl_reading must be None or one of {SDT_READINGS}, got {fdl_reading!r}")
        super().__init__(codec=codec, num_stacks=num_stacks, _stack_hook=mcg_hook(mcg, num_stacks, mcg_scaled),
                         **kwargs)
        self.loss_name = loss
        self.fdl_weight, self.fdl_reading, self.gated = fdl_weight, fdl_reading, fdl_gate

    def fdl_gate(self) -> float | None:
        return self.codec.window // 2 if self.gated else None

    def training_loss(self, outputs: list[torch.Tensor], batch: dict) -> Terms:
        target = self.target_maps(batch, outputs[-1]).float()
        points = self.heatmap_points(batch, outputs[-1]).float()
        terms: Terms = {}
        for maps in outputs:  # every stack (intermediate supervision)
            stack = STACK_LOSSES[self.loss_name](self, maps.float(), target, points)
            terms = {k: terms.get(k, 0) + v for k, v in stack.items() if k not in DIAGNOSTICS}
        # the diagnostics of the last stack (the decoded one): shares and a median, not sums over stacks
        return terms | {k: v for k, v in stack.items() if k in DIAGNOSTICS}
