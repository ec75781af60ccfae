"""Heatmap encoding and decoding, on whatever device the points or maps live on.

Coordinates. In every frame the centre of pixel [row j, column i] is (x = i, y = j) and pixel i covers
[i - 0.5, i + 0.5]. A heatmap at stride s over a crop (s = crop size / heatmap size, e.g. 256 / 64 = 4) has
pixel i covering crop pixels [s*i - 0.5, s*(i+1) - 0.5], so

    x_heatmap = (x_crop + 0.5) / s - 0.5        x_crop = (x_heatmap + 0.5) * s - 0.5

(:func:`crop_to_heatmap`, :func:`heatmap_to_crop`). At stride 4, crop pixel 1.5 (the centre of the first
4x4 block) is heatmap pixel 0. The public codes of AWing and HRNet use x/s with 1-based shifts instead; that
differs by a constant fraction of a pixel, which this convention removes.

Boundary maps (LAB / AWing / PropNet / TAB): :func:`encode_boundaries` renders a layout's boundary polylines
as exp(-d^2 / (2 sigma^2)) of the exact distance d to each polyline, batched on the points' device.

Decoders: integer argmax, argmax with the quarter-pixel shift, soft-argmax, and MHHN's subpixel detection
technology (:func:`decode_sdt`, a batched Gaussian surface fit around each argmax).

:class:`HeatmapCodec` bundles one model's choices (stride, Gaussian targets, decoder) in one object that the
module owns and its config sets, so modules never dispatch on decoder names themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import torch

from landmarks.layouts import Boundary


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


# --- boundary maps (LAB / AWing / PropNet / TAB) -------------------------------------------------------------


@lru_cache(maxsize=32)
def _segment_index(
    polylines: tuple[tuple[int, ...], ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The S segments of all polylines at once, as (S,) start / end landmark indices and owning polyline.

    Cached per layout and device, so a training step pays no host-to-device copy for it. A one-point polyline
    is one degenerate segment (its distance is the distance to the point).
    """
    starts, ends, owner = [], [], []
    for m, indices in enumerate(polylines):
        path = indices if len(indices) > 1 else indices * 2
        starts += path[:-1]
        ends += path[1:]
        owner += [m] * (len(path) - 1)
    return tuple(torch.tensor(v, dtype=torch.long, device=device) for v in (starts, ends, owner))


def encode_boundaries(
    points: torch.Tensor,
    boundaries: Sequence[Boundary],
    size: tuple[int, int],
    sigma: float,
    truncate: float | None = 3.0,
    union: bool = False,
) -> torch.Tensor:
    """(B, K, 2) points in heatmap pixels → (B, M, h, w) boundary maps, one per polyline of ``boundaries``.

    Value ``exp(-d^2 / (2 sigma^2))`` with d the exact Euclidean distance from the pixel centre (pixel [j, i]
    at (x = i, y = j)) to the nearest segment of the polyline (a closed loop repeats its first index), and 0
    where d > ``truncate * sigma`` (AWing's 3 sigma; None: no cut). So a map is 1 on its polyline and falls
    off as a Gaussian across it, sub-pixel exact. With ``union=True`` a last channel (M + 1 in all) is the max
    over the M maps: the map of the distance to all boundaries together (TAB's 16th channel).

    Every segment of every polyline is measured at once: for a segment a→b and pixel p, the closest point is
    ``a + t (b - a)`` with ``t = clamp((p - a)·(b - a) / |b - a|^2, 0, 1)``, where the unclamped t and p - a
    are sums of per-column and per-row terms (broadcast, never a loop over pixels); a repeated point is a
    zero-length segment (t = 0: the distance to the point). The minimum per polyline is one scatter-reduce.
    Work and memory are B x S x h x w for S segments (91 for WFLW's 15 boundaries). Points may lie outside
    the map; their segments still shape the pixels inside. Computed without gradients: these are targets.
    """
    if not points.is_floating_point():
        raise TypeError(f"points must be floating point, got {points.dtype}")
    polylines = tuple(tuple(int(i) for i in b.indices) for b in boundaries)
    if not polylines or any(not p for p in polylines):
        raise ValueError("boundary maps need at least one boundary, each with at least one landmark index")
    num_points = points.shape[-2]
    if any(not 0 <= i < num_points for p in polylines for i in p):
        raise ValueError(f"a boundary index is outside 0..{num_points - 1}")
    with torch.no_grad():
        return _render_boundaries(points, polylines, size, sigma, truncate, union)


def _render_boundaries(
    points: torch.Tensor, polylines: tuple[tuple[int, ...], ...], size: tuple[int, int], sigma: float,
    truncate: float | None, union: bool,
) -> torch.Tensor:
    """The arithmetic of :func:`encode_boundaries`, after its checks."""
    h, w = size
    starts, ends, owner = _segment_index(polylines, points.device)
    a = points.index_select(-2, starts)  # (B, S, 2)
    u = points.index_select(-2, ends) - a  # (B, S, 2) segment vectors
    length2 = u.square().sum(-1).clamp_min(torch.finfo(points.dtype).tiny)  # (B, S); 0-length: t = 0 below
    ux, uy = u[..., 0, None, None], u[..., 1, None, None]  # (B, S, 1, 1)
    qx = (torch.arange(w, device=points.device, dtype=points.dtype) - a[..., 0:1]).unsqueeze(-2)  # (B, S, 1, w)
    qy = (torch.arange(h, device=points.device, dtype=points.dtype) - a[..., 1:2]).unsqueeze(-1)  # (B, S, h, 1)
    t = (qx * (ux / length2[..., None, None]) + qy * (uy / length2[..., None, None])).clamp_(0, 1)  # (B, S, h, w)
    dx = torch.addcmul(qx, t, ux, value=-1)  # p - (a + t u), x and y
    dy = torch.addcmul(qy, t, uy, value=-1)
    d2 = dx.square_().addcmul_(dy, dy)  # (B, S, h, w) squared distance to each segment
    nearest = d2.new_full((*points.shape[:-2], len(polylines), h, w), float("inf"))
    nearest.scatter_reduce_(-3, owner[:, None, None].expand_as(d2), d2, "amin")  # (B, M, h, w)
    maps = torch.exp(nearest / (-2 * sigma**2))
    if truncate is not None:
        maps = maps * (nearest <= (truncate * sigma) ** 2)
    if union:
        maps = torch.cat([maps, maps.amax(-3, keepdim=True)], -3)
    return maps


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


SDTReading = Literal["isotropic", "eq20", "eq18"]
SDTFrame = Literal["window", "heatmap"]
SDT_READINGS: tuple[str, ...] = get_args(SDTReading)
SDT_FRAMES: tuple[str, ...] = get_args(SDTFrame)


def fit_gaussian_surface(
    heatmaps: torch.Tensor, window: int = 9, eps: float = 1e-6, frame: SDTFrame = "window"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guo's weighted log fit of ``G exp(-(x-u)^2/(2 sx^2) - (y-v)^2/(2 sy^2))`` around each map's argmax.

    For the L = window^2 samples f around the argmax (eq. 13), ``f ln f = B c`` with design rows
    ``f [1, x, y, x^2, y^2]`` and ``c = [ln G - u^2/(2sx^2) - v^2/(2sy^2), u/sx^2, v/sy^2, -1/(2sx^2), -1/(2sy^2)]``
    (eq. 14), solved by QR for every image and landmark at once (eqs. 15-17: ``c = R1^-1 Q^T a``).

    ``frame`` is the origin of (x, y): "window" (the argmax pixel: IMPLEMENTATION_NOTES §2.3; x^2 stays below
    (window/2)^2, well conditioned) or "heatmap" (map pixel [0, 0], the paper's own coordinates in eqs. 3-20).
    A least-squares fit is the same surface in either frame, so only readings that depend on the origin
    (eq. 20) differ. Samples outside the map get weight 0; values are clamped to >= ``eps`` before the log. The
    window position (the argmax) is a constant; ``c`` is differentiable in the map values.

    Returns:
        coefficients (B, K, 5) in ``frame`` (float64; float32 on MPS), and the window centres (B, K, 2) as
        integer (x, y).
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    if frame not in SDT_FRAMES:
        raise ValueError(f"frame must be one of {SDT_FRAMES}, got {frame!r}")
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
    fx, fy = (dx.to(f.dtype), dy.to(f.dtype)) if frame == "window" else (xs.to(f.dtype), ys.to(f.dtype))
    basis = torch.stack([torch.ones_like(fx), fx, fy, fx.square(), fy.square()], -1)  # (L, 5) or (B, K, L, 5)
    design = weight.unsqueeze(-1) * basis  # (B, K, L, 5)
    q, r1 = torch.linalg.qr(design)  # reduced: (B, K, L, 5), (B, K, 5, 5)
    s = q.transpose(-1, -2) @ (weight * f.log()).unsqueeze(-1)  # (B, K, 5, 1)
    coefficients = torch.linalg.solve_triangular(r1, s, upper=True).squeeze(-1)
    return coefficients, centre


def _safe(x: torch.Tensor, ok: torch.Tensor, fill: float) -> torch.Tensor:
    """``x`` where ``ok``, else ``fill``: keeps NaN / inf out of later divisions and out of their gradients."""
    return torch.where(ok, x, torch.full_like(x, fill))


def sdt_from_coefficients(
    coefficients: torch.Tensor, centre: torch.Tensor, sigma: float, reading: SDTReading = "isotropic",
    frame: SDTFrame = "window",
) -> torch.Tensor:
    """(B, K, 5) coefficients in ``frame`` and (B, K, 2) window centres → (B, K, 2) Gaussian centres (x, y) in
    heatmap pixels. Entries that are not a fit (flat map, no peak) come out non-finite or far away.

    Readings:

    - ``"eq18"`` (unconstrained, MHHN's "SDL1"): ``u = -c1 / (2 c3)``, ``v = -c2 / (2 c4)``.
    - ``"isotropic"`` (sx = sy, G and sigma estimated): ``u = -c1 / (c3 + c4)``, ``v = -c2 / (c3 + c4)``.
    - ``"eq20"`` (the paper's constrained reading, G = 1 and sx = sy): ``u = sigma*^2 c1`` if ``c0 >= 0``,
      otherwise ``u = s c1`` with ``s = -2 c0 / (c1^2 + c2^2)``, the sigma^2 that G = 1 implies (v alike).

    eq18 and isotropic are exact for any height G and width sigma of a Gaussian, in either frame. eq20 depends
    on the origin. In the window frame its first case (c0 >= 0, i.e. ln G >= r^2 / 2 sigma^2 for the sub-pixel
    offset r) is exact only for sigma = sigma*, and its second divides by a small number when G is just below 1
    (s = sigma^2 - 2 sigma^4 ln G / r^2): at G = 0.98-0.99 it errs by up to a pixel. In the heatmap frame the
    second case always applies and errs by about 2 sigma^2 |ln G| / R (R: distance from map pixel [0, 0]), but
    fit noise in the curvature moves u in proportion to R. ``benchmarks/bench_mhhn.py`` measures all three.
    """
    c0, c1, c2, c3, c4 = coefficients.unbind(-1)
    if reading == "eq20":
        norm = c1.square() + c2.square()
        scale = torch.where(c0 >= 0, torch.full_like(c0, sigma**2), -2 * c0 / _safe(norm, norm > 0, 1.0))
        scale = _safe(scale, (c0 >= 0) | (norm > 0), float("nan"))  # c0 < 0 on a flat top: no estimate
        found = torch.stack([scale * c1, scale * c2], -1)
    elif reading == "isotropic":
        curvature = c3 + c4  # -1 / sigma^2 for an isotropic Gaussian
        peak = curvature < 0
        found = torch.stack([c1, c2], -1) / -_safe(curvature, peak, -1.0).unsqueeze(-1)
        found = torch.where(peak.unsqueeze(-1), found, torch.full_like(found, float("nan")))
    elif reading == "eq18":
        peak = (c3 < 0) & (c4 < 0)
        found = torch.stack([-c1 / (2 * _safe(c3, peak, -1.0)), -c2 / (2 * _safe(c4, peak, -1.0))], -1)
        found = torch.where(peak.unsqueeze(-1), found, torch.full_like(found, float("nan")))
    else:
        raise ValueError(f"reading must be one of {SDT_READINGS}, got {reading!r}")
    return found + centre.to(found.dtype) if frame == "window" else found


def peak_height(coefficients: torch.Tensor) -> torch.Tensor:
    """(B, K, 5) coefficients → (B, K) height G of the fitted surface (any frame), NaN where it has no maximum:
    ``ln G = c0 - c1^2 / (4 c3) - c2^2 / (4 c4)``."""
    c0, c1, c2, c3, c4 = coefficients.unbind(-1)
    peak = (c3 < 0) & (c4 < 0)
    log_g = c0 - c1.square() / (4 * _safe(c3, peak, -1.0)) - c2.square() / (4 * _safe(c4, peak, -1.0))
    return torch.where(peak, log_g.exp(), torch.full_like(log_g, float("nan")))


@dataclass(frozen=True)
class SDTInfo:
    """What an SDT decoding saw, per landmark: ``fallback`` (B, K) bool (argmax + 1/4 was used), ``peak``
    (B, K) the fitted height G (NaN without a maximum) and ``centre`` (B, K, 2) the argmax pixel."""

    fallback: torch.Tensor
    peak: torch.Tensor
    centre: torch.Tensor


def decode_sdt(
    heatmaps: torch.Tensor,
    window: int = 9,
    sigma: float = 3.0,
    reading: SDTReading = "isotropic",
    frame: SDTFrame = "window",
    max_offset: float = 1.0,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SDTInfo]:
    """(B, K, h, w) → (B, K, 2) sub-pixel landmarks (x, y) in heatmap pixels by MHHN's SDT (eqs. 11-20).

    A Gaussian surface is fitted in a ``window`` x ``window`` neighbourhood of each argmax
    (:func:`fit_gaussian_surface`, in ``frame``) and its centre read with ``reading``
    (:func:`sdt_from_coefficients`; ``sigma`` is the sigma* of the training targets, used by eq20 only). Where
    the fit does not describe a peak (non-finite, no maximum, or a centre more than ``max_offset`` pixels from
    the argmax pixel: flat, multi-modal or noisy maps), the landmark falls back to the argmax with the
    quarter-pixel shift (:func:`decode_argmax`). Differentiable in the map values where the fit is used.

    Returns the points, and with ``return_info=True`` also an :class:`SDTInfo`.
    """
    out_dtype = heatmaps.dtype if heatmaps.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(heatmaps.device.type, enabled=False):  # no bf16 matmuls under autocast
        coefficients, centre = fit_gaussian_surface(heatmaps, window, frame=frame)
    points = sdt_from_coefficients(coefficients, centre, sigma, reading, frame)
    offset = (points - centre.to(points.dtype)).abs().amax(-1)
    ok = torch.isfinite(points).all(-1) & (offset <= max_offset)
    fallback = decode_argmax(heatmaps.detach(), peak=centre).to(points.dtype)
    points = torch.where(ok.unsqueeze(-1), _safe(points, ok.unsqueeze(-1), 0.0), fallback).to(out_dtype)
    if not return_info:
        return points
    return points, SDTInfo(~ok, peak_height(coefficients.detach()), centre)


# --- the codec: one model's heatmap choices in one object ------------------------------------------------------

Decoder = Literal["argmax_integer", "argmax_quarter", "soft_argmax", "sdt"]
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
            (expectation of the clamped, normalised map) or "sdt" (MHHN's Gaussian surface fit, :func:`decode_sdt`).
        window: side of the SDT fitting window (odd; 9 in MHHN).
        sdt_reading: how the fit is read (:func:`sdt_from_coefficients`): "isotropic" (the default, chosen by
            measurement: never worse than argmax + 1/4 for peak heights 0.8-1.3 and sigma 2-4, exact at any
            height), "eq20" (the paper's G = 1 constraint, literal) or "eq18" (unconstrained).
        sdt_frame: origin of the fit, "window" (the argmax pixel) or "heatmap" (map pixel [0, 0], the paper's).
        max_offset: SDT falls back to argmax + 1/4 where its estimate lies farther than this from the arg-max
            pixel (heatmap pixels).
    """

    stride: int = 4
    sigma: float = 1.5
    truncate: float | None = None
    decoder: Decoder = "argmax_quarter"
    window: int = 9
    sdt_reading: SDTReading = "isotropic"
    sdt_frame: SDTFrame = "window"
    max_offset: float = 1.0

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            hints = {"argmax": " ('argmax' is now 'argmax_quarter', with the 1/4 shift, or 'argmax_integer')",
                     "sdt_unconstrained": " (eq. 18 is now decoder 'sdt' with sdt_reading 'eq18')"}
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}{hints.get(self.decoder, '')}")
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"the SDT window must be odd and >= 3, got {self.window}")
        if not self.stride > 0 or not self.sigma > 0:
            raise ValueError(f"stride and sigma must be positive, got {self.stride} and {self.sigma}")
        if self.sdt_reading not in SDT_READINGS or self.sdt_frame not in SDT_FRAMES:
            raise ValueError(f"sdt_reading must be one of {SDT_READINGS} and sdt_frame one of {SDT_FRAMES}, got "
                             f"{self.sdt_reading!r} and {self.sdt_frame!r}")

    @property
    def is_sdt(self) -> bool:
        return self.decoder == "sdt"

    def to_heatmap(self, points: torch.Tensor) -> torch.Tensor:
        """Crop pixels → heatmap pixels."""
        return crop_to_heatmap(points, self.stride)

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels → crop pixels."""
        return heatmap_to_crop(points, self.stride)

    def encode(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, 2) crop-pixel landmarks → (B, K, h, w) Gaussian targets (peak 1), on the points' device."""
        return encode_gaussian(self.to_heatmap(points), tuple(size), self.sigma, self.truncate)

    def boundary_maps(
        self,
        points: torch.Tensor,
        boundaries: Sequence[Boundary],
        size: tuple[int, int],
        sigma: float | None = None,
        union: bool = False,
        truncate: float | None = 3.0,
    ) -> torch.Tensor:
        """(B, K, 2) crop-pixel landmarks → (B, M, h, w) boundary maps (+ the union channel with ``union``) of
        :func:`encode_boundaries`, at this codec's stride, on the points' device.

        ``boundaries``: the layout's ``boundaries``. ``sigma``: in heatmap pixels, default this codec's
        ``sigma`` (TAB's effective 1.5; AWing / PropNet use 1). ``truncate``: 3 (AWing's 3 sigma cut); TAB's
        code does not cut (None).

        Departures from the public codes, on purpose: AWing and TAB draw 1-px lines (cv2.line) between
        landmark coordinates rounded (TAB: truncated) to integers and run a distance transform, so their
        maps move in whole pixels and a line is as thick as its rasterisation; here d is the exact distance
        to the continuous polyline, sub-pixel, and segments with points outside the map still count (TAB
        skips a segment whose end has a coordinate <= 0).
        """
        sigma = self.sigma if sigma is None else sigma
        return encode_boundaries(self.to_heatmap(points), boundaries, tuple(size), sigma, truncate, union)

    def sdt(self, maps: torch.Tensor) -> tuple[torch.Tensor, SDTInfo]:
        """The SDT decoding with this codec's settings (whatever ``decoder`` is): heatmap-pixel points and info."""
        return decode_sdt(maps, self.window, self.sigma, self.sdt_reading, self.sdt_frame, self.max_offset,
                          return_info=True)

    def decode_heatmap(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) → (B, K, 2) heatmap-pixel landmarks with the configured decoder."""
        if self.is_sdt:
            return self.sdt(maps)[0]
        if self.decoder == "soft_argmax":
            return decode_soft_argmax(maps)
        return decode_argmax(maps, shift=0.25 if self.decoder == "argmax_quarter" else 0.0)

    def decode(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) maps → (B, K, 2) landmarks in crop pixels."""
        return self.to_crop(self.decode_heatmap(maps))
