"""Heatmap losses shared by the papers (torch only).

- :func:`heatmap_weight_map`: AWing's foreground mask M (IMPLEMENTATION_NOTES §0.7): 1 where the 3x3 grey
  dilation of the target map exceeds 0.2, else 0.
- :func:`weighted_heatmap_mse`: mean over pixels of ``(pred - target)^2 * (W * M + 1)``; W = 0 is the plain
  mean-squared error of Newell et al., W = 10 the weighting of AWing.
- PropagationNet (paper 003): :func:`adaptive_wing` (eq. 1, per pixel), :func:`adaptive_wing_loss` (the sample-
  weighted, optionally foreground-weighted reduction of eqs. 3-4), :func:`focal_factor` (eq. 2, per batch) and
  :func:`focal_wing_loss` (eq. 5).
- MHHN (paper 001): :func:`kl_divergence`, :func:`js_divergence` (eq. 2) between normalised maps,
  :func:`fine_detection_loss` (eq. 5) through the SDT fit, and their sum :func:`subpixel_detection_loss` (eq. 6).
"""

from __future__ import annotations

import math
from typing import Any, Literal

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
    return foreground_weighted((pred - target).square(), target, foreground_weight).mean()


def foreground_weighted(loss: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """Per-pixel ``loss * (foreground_weight * M + 1)`` (M: :func:`heatmap_weight_map` of ``target``); weight 0
    returns ``loss`` itself. One place for AWing's weighting, shared by the MSE and the Adaptive Wing losses."""
    if foreground_weight:
        loss = loss * (foreground_weight * heatmap_weight_map(target) + 1)
    return loss


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


# --- PropagationNet's Adaptive Wing and Focal Wing losses (paper 003 eqs. 1-5) ---------------------------------

FocalReading = Literal["per_sample", "literal"]
PixelReduction = Literal["mean", "sum"]


def adaptive_wing(
    pred: torch.Tensor, target: torch.Tensor, omega: float = 14.0, theta: float = 0.5, epsilon: float = 1.0,
    alpha: float = 2.1,
) -> torch.Tensor:
    """Per-pixel Adaptive Wing loss (paper 003 eq. 1, IMPLEMENTATION_NOTES §0.7), same shape as the inputs.

    With ``d = |y - ŷ|`` (y = ``target``): ``omega * ln(1 + (d / epsilon)^(alpha - y))`` for ``d < theta``, else
    ``A * d - Omega``. The exponent ``alpha - y`` follows the target, so A and Omega are computed per pixel; they
    make the loss and its slope continuous at ``d = theta``. Near a background pixel (y = 0, exponent 2.1) small
    errors cost almost nothing, like the MSE; near a peak (y = 1, exponent 1.1) they cost nearly as much as L1, so
    the foreground keeps a gradient that the MSE would let vanish; beyond theta the loss is L1 with slope A.
    """
    d = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    a = omega * power * ratio ** (power - 1) / (epsilon * (1 + ratio**power))
    big_omega = theta * a - omega * torch.log1p(ratio**power)
    return torch.where(d < theta, omega * torch.log1p((d / epsilon) ** power), a * d - big_omega)


def adaptive_wing_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    foreground_weight: float = 0.0,
    pixels: PixelReduction = "mean",
    omega: float = 14.0,
    theta: float = 0.5,
    epsilon: float = 1.0,
    alpha: float = 2.1,
) -> torch.Tensor:
    """(N, K, h, w) maps → scalar ``(1/N) sum_n weights_n sum_k P(AWing ⊙ (foreground_weight * M + 1))`` (eqs. 3-4).

    ``weights``: (N,) per-sample weights (:func:`focal_factor`); None is 1 for every sample, i.e. plain AWing.
    ``foreground_weight``: AWing's weight map W (10 in AWing; 0, off, by default as PropNet does not mention it).
    ``pixels``: P, the reduction over the h x w pixels of each map. The paper sums (``"sum"``); the default
    ``"mean"`` divides that by the constant h * w (4,096 at 64²) so values do not depend on the map size. Landmark
    and boundary terms share the same h * w, so the balance beta of eq. 5 is unchanged. Adam, the paper's
    optimiser, is invariant to a constant loss scale (its step is m / sqrt(v)) apart from its epsilon (1e-8) and
    weight decay, so lr 1e-4 stands; with SGD, multiply the learning rate by h * w to match the paper's sum.
    """
    if pixels not in ("mean", "sum"):
        raise ValueError(f"pixels must be 'mean' or 'sum', got {pixels!r}")
    loss = foreground_weighted(adaptive_wing(pred, target, omega, theta, epsilon, alpha), target, foreground_weight)
    flat = loss.flatten(2)  # (N, K, h*w)
    per_sample = (flat.mean(-1) if pixels == "mean" else flat.sum(-1)).sum(-1)  # (N,) sum over the K maps
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.dtype)
    return per_sample.mean()


def focal_factor(attributes: torch.Tensor, reading: FocalReading = "per_sample") -> torch.Tensor:
    """(N, C) bool attributes of a batch (WFLW: pose, expression, illumination, make-up, occlusion, blur) → (N,)
    sample weights ``sum_c sigma_n^(c)`` of eq. 3, with sigma from eq. 2 (N_c = samples with attribute c):

    - ``"per_sample"`` (notes §4.3, the intended reading, default): ``sigma_n^(c) = N / N_c`` if sample n has
      attribute c, else 1; a rare attribute raises the weight of the few samples that carry it.
    - ``"literal"`` (eq. 2 as printed): ``sigma^(c) = N / N_c`` if N_c > 0, else 1, the same for every sample, so
      it only rescales the whole batch's loss.

    A batch where no sample has any attribute gets weight C for every sample (eq. 3 sums C ones), not 1. A dataset
    without attributes (300W, COFW: the authors' labels are unreleased) has no classes to sum over; the notes
    use plain AWing there (sigma ≡ 1), so pass ``weights=None`` to the losses instead of calling this. The
    constant factor C between the two only rescales the loss (see :func:`adaptive_wing_loss` on Adam).
    """
    if attributes.ndim != 2 or attributes.shape[1] == 0:
        raise ValueError(f"attributes must be (N, C) with C >= 1, got {tuple(attributes.shape)}; "
                         "a dataset without attributes passes weights=None (plain AWing)")
    if reading not in ("per_sample", "literal"):
        raise ValueError(f"reading must be 'per_sample' or 'literal', got {reading!r}")
    has = attributes.bool()
    count = has.sum(0)  # (C,) N_c
    sigma = torch.where(count > 0, has.shape[0] / count.clamp_min(1), 1.0)  # (C,) eq. 2 where N_c > 0
    if reading == "literal":
        return sigma.sum().expand(has.shape[0]).clone()
    return torch.where(has, sigma, 1.0).sum(-1)  # (N,)


def focal_wing_loss(
    landmark_pred: torch.Tensor,
    landmark_target: torch.Tensor,
    boundary_pred: torch.Tensor,
    boundary_target: torch.Tensor,
    weights: torch.Tensor | None = None,
    beta: float = 0.5,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Focal Wing (eq. 5) of one stack: ``L_lm + beta * L_bd`` (eqs. 3 and 4, :func:`adaptive_wing_loss` on the
    (N, K, h, w) landmark and (N, M, h, w) boundary maps, both with the per-sample ``weights`` of
    :func:`focal_factor`, None for plain AWing). ``options`` go to :func:`adaptive_wing_loss` (foreground_weight,
    pixels, omega, theta, epsilon, alpha), its defaults being the one place of the paper's values. Returns "loss"
    and its terms "landmark" and "boundary". Summing over the stacks is the module's job.
    """
    landmark = adaptive_wing_loss(landmark_pred, landmark_target, weights, **options)
    boundary = adaptive_wing_loss(boundary_pred, boundary_target, weights, **options)
    return {"loss": landmark + beta * boundary, "landmark": landmark, "boundary": boundary}


# --- Wing loss (Feng et al., CVPR 2018; GlomFace*) ---------------------------------------------------------------


def wing_loss(error: torch.Tensor, width: float = 10.0, curvature: float = 2.0) -> torch.Tensor:
    """Wing loss of (B, K, 2) coordinate errors (pixels): per coordinate ``w ln(1 + |x| / epsilon)`` for
    ``|x| < w`` and ``|x| - C`` beyond, ``C = w - w ln(1 + w / epsilon)`` (continuous at ``|x| = w``); summed over
    landmarks and coordinates, averaged over the batch."""
    if width <= 0 or curvature <= 0:
        raise ValueError(f"wing width and curvature must be positive, got {width}, {curvature}")
    x = error.abs()
    c = width - width * math.log(1 + width / curvature)
    loss = torch.where(x < width, width * torch.log1p(x / curvature), x - c)
    return loss.flatten(1).sum(1).mean()
