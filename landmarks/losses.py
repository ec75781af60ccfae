"""Heatmap losses shared by the papers (torch only).

- :func:`heatmap_weight_map`: AWing's foreground mask M (IMPLEMENTATION_NOTES §0.7): 1 where the 3x3 grey
  dilation of the target map exceeds 0.2, else 0.
- :func:`weighted_heatmap_mse`: mean over pixels of ``(pred - target)^2 * (W * M + 1)``; W = 0 is the plain
  mean-squared error of Newell et al., W = 10 the weighting of AWing.
- MHHN (paper 001): :func:`kl_divergence`, :func:`js_divergence` (eq. 2) between normalised maps,
  :func:`fine_detection_loss` (eq. 5) through the SDT fit, and their sum :func:`subpixel_detection_loss` (eq. 6).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from landmarks.heatmaps import SDTFrame, SDTInfo, SDTReading, decode_sdt


def heatmap_weight_map(target: torch.Tensor, threshold: float = 0.2, kernel: int = 3) -> torch.Tensor:
    """(B, C, h, w) target maps → (B, C, h, w) float mask: grey_dilation(target, kernel x kernel) > threshold."""
    dilated = F.max_pool2d(target, kernel, stride=1, padding=kernel // 2)
    return (dilated > threshold).to(target.dtype)


def weighted_heatmap_mse(pred: torch.Tensor, target: torch.Tensor, foreground_weight: float = 0.0) -> torch.Tensor:
    """Mean of ``(pred - target)^2 * (foreground_weight * M + 1)`` over every element (M: heatmap_weight_map).

    Sparse Gaussian targets make the plain MSE (weight 0) settle first on all-zero maps; weighting the pixels
    around each peak (AWing: 10) makes the peaks appear an order of magnitude sooner.
    """
    squared = (pred - target).square()
    if foreground_weight:
        squared = squared * (foreground_weight * heatmap_weight_map(target) + 1)
    return squared.mean()


# --- MHHN's heatmap subpixel regression (paper 001 eqs. 1-6) ---------------------------------------------------


def heatmap_distribution(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., h, w) maps → (..., h*w) discrete distributions: values clamped to >= ``eps``, divided by their sum.

    The paper normalises each map to sum 1 without saying how negative predictions are handled; clamping keeps
    every probability positive (finite logs) and ignores negative pixels, as a ReLU would.
    """
    flat = maps.flatten(-2).clamp_min(eps)
    return flat / flat.sum(-1, keepdim=True)


def kl_divergence(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, K, h, w) maps → (B, K) ``KL(p_target || p_pred)`` of the normalised maps (Table V's "KLDL")."""
    p, q = heatmap_distribution(pred, eps), heatmap_distribution(target, eps)
    return (torch.xlogy(q, q) - q * p.log()).sum(-1)


def js_divergence(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, K, h, w) maps → (B, K) Jensen-Shannon divergence of the normalised maps (eq. 2), in nats:
    ``JS = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``; symmetric, between 0 and ln 2."""
    p, q = heatmap_distribution(pred, eps), heatmap_distribution(target, eps)
    m = (p + q) / 2
    return 0.5 * (torch.xlogy(p, p) - p * m.log()).sum(-1) + 0.5 * (torch.xlogy(q, q) - q * m.log()).sum(-1)


def fine_detection_loss(
    heatmaps: torch.Tensor,
    points: torch.Tensor,
    sigma: float,
    window: int = 9,
    reading: SDTReading = "isotropic",
    frame: SDTFrame = "window",
    gate: float | None = None,
    return_active: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, SDTInfo]:
    """(B, K) squared distance between the SDT landmarks of ``heatmaps`` and the true ``points`` (eq. 5), in
    heatmap pixels^2. Differentiable in the map values through the least-squares fit; landmarks whose fit falls
    back to the argmax (see ``decode_sdt``) contribute a constant.

    ``gate = r`` (not in the paper): only landmarks whose argmax lies within r pixels (per axis) of the truth pass
    a gradient; the others keep their value but are constants. The fit can only move a peak within its window,
    so for a peak in the wrong place the term is noise that drowned the JS term in our short runs.

    With ``return_active=True`` also the (B, K) bool mask of the landmarks the loss acts on (a fit, not a
    fallback, and inside the gate) and the decoding's :class:`~landmarks.heatmaps.SDTInfo`.
    """
    pred, info = decode_sdt(heatmaps, window, sigma, reading, frame, return_info=True)
    error = (pred - points.to(pred.dtype)).square().sum(-1)
    active = ~info.fallback
    if gate is not None:
        near = (info.centre.to(points.dtype) - points).abs().amax(-1) <= gate
        error, active = torch.where(near, error, error.detach()), active & near
    return (error, active, info) if return_active else error


def subpixel_detection_loss(
    heatmaps: torch.Tensor,
    target: torch.Tensor,
    points: torch.Tensor,
    sigma: float,
    weight: float = 1 / 16,
    window: int = 9,
    reading: SDTReading = "isotropic",
    frame: SDTFrame = "window",
    gate: float | None = None,
) -> dict[str, torch.Tensor]:
    """MHHN's SDL (eq. 6): per image ``sum_k JS + weight * sum_k FDL``, averaged over the batch.

    Returns the terms (batch means of the per-image sums) and their total under "loss", and, detached, the share
    of landmarks the FDL acts on ("fdl_active"), the share whose fit fell back to argmax + 1/4 ("sdt_fallback")
    and the median fitted peak height ("peak_height"): :data:`DIAGNOSTICS`, which are not summed over stacks.
    """
    js = js_divergence(heatmaps, target).sum(-1).mean()
    error, active, info = fine_detection_loss(heatmaps, points, sigma, window, reading, frame, gate,
                                              return_active=True)
    fdl = error.sum(-1).mean()
    return {"loss": js + weight * fdl, "js": js, "fdl": fdl, "fdl_active": active.float().mean(),
            "sdt_fallback": info.fallback.float().mean(), "peak_height": info.peak.nanmedian().float()}


DIAGNOSTICS = ("fdl_active", "sdt_fallback", "peak_height")  # shares and medians: the last stack's, not summed
