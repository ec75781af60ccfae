"""Heatmap encoding and decoding, on whatever device the points or maps live on.

Coordinates. In every frame the centre of pixel [row j, column i] is (x = i, y = j) and pixel i covers
[i - 0.5, i + 0.5]. A heatmap at stride s over a crop (s = crop size / heatmap size, e.g. 256 / 64 = 4) has
pixel i covering crop pixels [s*i - 0.5, s*(i+1) - 0.5], so

    x_heatmap = (x_crop + 0.5) / s - 0.5        x_crop = (x_heatmap + 0.5) * s - 0.5

(:func:`crop_to_heatmap`, :func:`heatmap_to_crop`). At stride 4, crop pixel 1.5 (the centre of the first
4x4 block) is heatmap pixel 0. The public codes of AWing and HRNet use x/s with 1-based shifts instead; that
differs by a constant fraction of a pixel, which this convention removes.

Decoders: integer argmax, argmax with the quarter-pixel shift, soft-argmax, and MHHN's subpixel detection
technology (:func:`decode_sdt`, a batched Gaussian surface fit around each argmax).

:class:`HeatmapCodec` bundles one model's choices (stride, Gaussian targets, decoder) in one object that the
module owns and its config sets, so modules never dispatch on decoder names themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch


def crop_to_heatmap(points: torch.Tensor, stride: float) -> torch.Tensor:
    """Crop-pixel coordinates → heatmap-pixel coordinates at ``stride``."""
    return (points + 0.5) / stride - 0.5


def heatmap_to_crop(points: torch.Tensor, stride: float) -> torch.Tensor:
    """Heatmap-pixel coordinates → crop-pixel coordinates at ``stride``."""
    return (points + 0.5) * stride - 0.5


def encode_gaussian(
    points: torch.Tensor, size: tuple[int, int], sigma: float, truncate: float | None = None
) -> torch.Tensor:
    """(B, K, 2) points in heatmap pixels → (B, K, h, w) unnormalised Gaussians with peak 1 at the point.

    ``exp(-((x - u)^2 + (y - v)^2) / (2 sigma^2))`` sampled at pixel centres, sub-pixel exact. With
    ``truncate = t`` the map is 0 beyond t*sigma along either axis (HRNet's +-3 sigma window). A point far
    outside the map gives a map that is (nearly) zero. Computed as the outer product of two 1-D profiles.
    """
    h, w = size
    x = torch.arange(w, device=points.device, dtype=points.dtype)
    y = torch.arange(h, device=points.device, dtype=points.dtype)
    dx = x - points[..., 0:1]  # (B, K, w)
    dy = y - points[..., 1:2]  # (B, K, h)
    gx = torch.exp(-dx.square() / (2 * sigma**2))
    gy = torch.exp(-dy.square() / (2 * sigma**2))
    if truncate is not None:
        gx = gx * (dx.abs() <= truncate * sigma)
        gy = gy * (dy.abs() <= truncate * sigma)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def argmax_2d(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) → (B, K, 2) integer (x, y) of each map's maximum (the first one on ties)."""
    w = heatmaps.shape[-1]
    flat = heatmaps.flatten(-2).argmax(-1)
    return torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor")], -1)


def decode_argmax(heatmaps: torch.Tensor, shift: float = 0.25, peak: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, h, w) → (B, K, 2) float heatmap coordinates: the argmax moved ``shift`` pixel toward the
    higher neighbour along each axis (the standard "argmax + 1/4" decoding of IMPLEMENTATION_NOTES §0.6).

    Along an axis where the maximum sits on the border, or where both neighbours are equal, no shift is made.
    ``peak``: the (B, K, 2) argmax if the caller has it already.
    """
    h, w = heatmaps.shape[-2:]
    peak = argmax_2d(heatmaps) if peak is None else peak
    px, py = peak[..., 0], peak[..., 1]
    flat = heatmaps.flatten(-2)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)
        return flat.gather(-1, idx).squeeze(-1)

    dx = torch.sign(at(px + 1, py) - at(px - 1, py)) * ((px > 0) & (px < w - 1))
    dy = torch.sign(at(px, py + 1) - at(px, py - 1)) * ((py > 0) & (py < h - 1))
    return peak.to(heatmaps.dtype) + shift * torch.stack([dx, dy], -1).to(heatmaps.dtype)


def decode_soft_argmax(heatmaps: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """(B, K, h, w) → (B, K, 2) expected (x, y) under a per-map distribution; differentiable.

    ``beta=None``: the distribution is the map itself, clamped at 0 and normalised to sum 1 (integral
    regression). Otherwise: ``softmax(beta * map)``. Unbiased for a symmetric peak well inside the map.
    """
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.flatten(-2)
    if beta is None:
        flat = flat.clamp_min(0)
        prob = flat / flat.sum(-1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    else:
        prob = torch.softmax(beta * flat, -1)
    prob = prob.unflatten(-1, (h, w))
    x = torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype)
    y = torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype)
    return torch.stack([(prob.sum(-2) * x).sum(-1), (prob.sum(-1) * y).sum(-1)], -1)


# --- subpixel detection technology (SDT, MHHN paper 001 eqs. 11-20) ------------------------------------------


def fit_gaussian_surface(
    heatmaps: torch.Tensor, window: int = 9, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guo's weighted log fit of ``G exp(-(x-u)^2/(2 sx^2) - (y-v)^2/(2 sy^2))`` around each map's argmax.

    For the L = window^2 samples f around the argmax (eq. 13), ``f ln f = B c`` with design rows
    ``f [1, x, y, x^2, y^2]`` and ``c = [ln G - u^2/(2sx^2) - v^2/(2sy^2), u/sx^2, v/sy^2, -1/(2sx^2), -1/(2sy^2)]``
    (eq. 14), solved by QR for every image and landmark at once (eqs. 15-17: ``c = R1^-1 Q^T a``).

    The fit uses coordinates local to the window centre (IMPLEMENTATION_NOTES §2.3; for conditioning, x^2 stays
    below (window/2)^2), so ``c`` is in that local frame. Samples outside the map get weight 0; values are
    clamped to >= ``eps`` before the log. The window position (the argmax) is a constant; ``c`` is
    differentiable in the map values.

    Returns:
        coefficients (B, K, 5) in the local frame (float64; float32 on MPS), and the window centres (B, K, 2)
        as integer (x, y).
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    h, w = heatmaps.shape[-2:]
    centre = argmax_2d(heatmaps.detach())  # (B, K, 2)
    # Only the windows go to float64 (MPS has none: float32): eq. 20's second case divides two small numbers
    # when the peak sits near a pixel centre, which costs float32 up to 1e-3 px.
    dtype = torch.float32 if heatmaps.device.type == "mps" else torch.float64
    r = torch.arange(-(window // 2), window // 2 + 1, device=heatmaps.device)
    dy, dx = (g.flatten() for g in torch.meshgrid(r, r, indexing="ij"))  # (L,)
    xs, ys = centre[..., :1] + dx, centre[..., 1:] + dy  # (B, K, L)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    index = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
    f = heatmaps.flatten(-2).gather(-1, index).to(dtype).clamp_min(eps)  # (B, K, L)
    weight = f * inside
    fx, fy = dx.to(f.dtype), dy.to(f.dtype)
    basis = torch.stack([torch.ones_like(fx), fx, fy, fx.square(), fy.square()], -1)  # (L, 5)
    design = weight.unsqueeze(-1) * basis  # (B, K, L, 5)
    q, r1 = torch.linalg.qr(design)  # reduced: (B, K, L, 5), (B, K, 5, 5)
    s = q.transpose(-1, -2) @ (weight * f.log()).unsqueeze(-1)  # (B, K, 5, 1)
    coefficients = torch.linalg.solve_triangular(r1, s, upper=True).squeeze(-1)
    return coefficients, centre


def _safe(x: torch.Tensor, ok: torch.Tensor, fill: float) -> torch.Tensor:
    """``x`` where ``ok``, else ``fill``: keeps NaN / inf out of later divisions and out of their gradients."""
    return torch.where(ok, x, torch.full_like(x, fill))


def sdt_from_coefficients(
    coefficients: torch.Tensor, centre: torch.Tensor, sigma: float, constrained: bool = True
) -> torch.Tensor:
    """(B, K, 5) window-local coefficients and (B, K, 2) window centres → (B, K, 2) Gaussian centres (x, y).

    ``constrained=False`` ("SDL1"): eq. 18, ``u = -c1 / (2 c3)``, ``v = -c2 / (2 c4)``.
    ``constrained=True`` (MHHN's SDT, eqs. 19-20: G = 1, sx = sy): ``u = sigma*^2 c1`` if ``c0 >= 0``, otherwise
    ``u = s c1`` with ``s = -2 c0 / (c1^2 + c2^2)``, the sigma^2 implied by G = 1 (and the same for v). Read in
    the window frame (origin at the argmax pixel), as IMPLEMENTATION_NOTES §2.3 prescribes. Eq. 20 is not
    invariant to the origin: read in the heatmap frame its error grows with the distance from pixel [0, 0]
    (an error e in the curvature moves u by about 2 e sigma^2 u), which made it worse than the plain argmax on
    trained maps. In the window frame the first case is exact for sigma = sigma* whatever G; the second, taken
    when G < 1, only holds for G = 1 and otherwise lands far away (then :func:`decode_sdt` falls back).
    Entries that are not a fit (flat map, no peak) come out non-finite or far away.
    """
    c0, c1, c2, c3, c4 = coefficients.unbind(-1)
    if constrained:
        norm = c1.square() + c2.square()
        scale = torch.where(c0 >= 0, torch.full_like(c0, sigma**2), -2 * c0 / _safe(norm, norm > 0, 1.0))
        scale = _safe(scale, (c0 >= 0) | (norm > 0), float("nan"))  # c0 < 0 on a flat top: no estimate
        local = torch.stack([scale * c1, scale * c2], -1)
    else:
        peak = (c3 < 0) & (c4 < 0)
        local = torch.stack([-c1 / (2 * _safe(c3, peak, -1.0)), -c2 / (2 * _safe(c4, peak, -1.0))], -1)
        local = torch.where(peak.unsqueeze(-1), local, torch.full_like(local, float("nan")))
    return local + centre.to(local.dtype)


def decode_sdt(
    heatmaps: torch.Tensor,
    window: int = 9,
    sigma: float = 3.0,
    constrained: bool = True,
    max_offset: float = 1.0,
    return_fallback: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) → (B, K, 2) sub-pixel landmarks (x, y) in heatmap pixels by MHHN's SDT (eqs. 11-20).

    A Gaussian surface is fitted in a ``window`` x ``window`` neighbourhood of each argmax
    (:func:`fit_gaussian_surface`) and its centre read with the constrained solution of eq. 20 (``sigma`` is
    the sigma* of the training targets) or the unconstrained one of eq. 18. Where the fit does not describe a
    peak (non-finite, no maximum, or a centre more than ``max_offset`` pixels from the argmax pixel: flat,
    multi-modal or noisy maps), the landmark falls back to the argmax with the quarter-pixel shift
    (:func:`decode_argmax`). Differentiable in the map values where the fit is used.

    Returns the points, and with ``return_fallback=True`` also the (B, K) bool mask of fallback landmarks.
    """
    out_dtype = heatmaps.dtype if heatmaps.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(heatmaps.device.type, enabled=False):  # no bf16 matmuls under autocast
        coefficients, centre = fit_gaussian_surface(heatmaps, window)
    points = sdt_from_coefficients(coefficients, centre, sigma, constrained)
    offset = (points - centre.to(points.dtype)).abs().amax(-1)
    ok = torch.isfinite(points).all(-1) & (offset <= max_offset)
    fallback = decode_argmax(heatmaps.detach(), peak=centre).to(points.dtype)
    points = torch.where(ok.unsqueeze(-1), _safe(points, ok.unsqueeze(-1), 0.0), fallback).to(out_dtype)
    return (points, ~ok) if return_fallback else points


# --- the codec: one model's heatmap choices in one object ------------------------------------------------------

Decoder = Literal["argmax_integer", "argmax_quarter", "soft_argmax", "sdt", "sdt_unconstrained"]
DECODERS: tuple[str, ...] = get_args(Decoder)


@dataclass(frozen=True)
class HeatmapCodec:
    """How a model's landmark heatmaps relate to crop pixels: targets in, landmarks out.

    Attributes:
        stride: crop pixels per heatmap pixel (4: 64x64 maps from 256 px crops; 8 for MHHN's 32x32 variant).
        sigma: std of the target Gaussians in heatmap pixels; also MHHN's sigma* in the SDT constraint (eq. 20).
        truncate: targets are 0 beyond ``truncate * sigma`` along either axis (HRNet / TAB: 3); None: untruncated.
        decoder: "argmax_integer" (the arg-max pixel, as MHHN's "traverse the heatmap"), "argmax_quarter"
            (arg-max moved 1/4 pixel toward the higher neighbour, IMPLEMENTATION_NOTES §0.6), "soft_argmax"
            (expectation of the clamped, normalised map), "sdt" (MHHN's Gaussian surface fit read with eq. 20) or
            "sdt_unconstrained" (eq. 18).
        window: side of the SDT fitting window (odd; 9 in MHHN).
        max_offset: SDT falls back to argmax + 1/4 where its estimate lies farther than this from the arg-max
            pixel (heatmap pixels).
    """

    stride: int = 4
    sigma: float = 1.5
    truncate: float | None = None
    decoder: Decoder = "argmax_quarter"
    window: int = 9
    max_offset: float = 1.0

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            hint = " ('argmax' is now 'argmax_quarter', with the 1/4 shift, or 'argmax_integer')" \
                if self.decoder == "argmax" else ""
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}{hint}")
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"the SDT window must be odd and >= 3, got {self.window}")
        if not self.stride > 0 or not self.sigma > 0:
            raise ValueError(f"stride and sigma must be positive, got {self.stride} and {self.sigma}")

    @property
    def is_sdt(self) -> bool:
        return self.decoder.startswith("sdt")

    def to_heatmap(self, points: torch.Tensor) -> torch.Tensor:
        """Crop pixels → heatmap pixels."""
        return crop_to_heatmap(points, self.stride)

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels → crop pixels."""
        return heatmap_to_crop(points, self.stride)

    def encode(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, 2) crop-pixel landmarks → (B, K, h, w) Gaussian targets (peak 1), on the points' device."""
        return encode_gaussian(self.to_heatmap(points), tuple(size), self.sigma, self.truncate)

    def decode_heatmap(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) → (B, K, 2) heatmap-pixel landmarks and the (B, K) bool mask of SDT fallbacks (all False
        for the other decoders)."""
        if self.is_sdt:
            return decode_sdt(maps, self.window, self.sigma, constrained=self.decoder == "sdt",
                              max_offset=self.max_offset, return_fallback=True)
        if self.decoder == "soft_argmax":
            points = decode_soft_argmax(maps)
        else:
            points = decode_argmax(maps, shift=0.25 if self.decoder == "argmax_quarter" else 0.0)
        return points, torch.zeros(points.shape[:-1], dtype=torch.bool, device=points.device)

    def decode(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) maps → (B, K, 2) landmarks in crop pixels."""
        return self.to_crop(self.decode_heatmap(maps)[0])
