"""Heatmap encoding and decoding, on whatever device the points or maps live on.

Coordinates. In every frame the centre of pixel [row j, column i] is (x = i, y = j) and pixel i covers
[i - 0.5, i + 0.5]. A heatmap at stride s over a crop (s = crop size / heatmap size, e.g. 256 / 64 = 4) has
pixel i covering crop pixels [s*i - 0.5, s*(i+1) - 0.5], so

    x_heatmap = (x_crop + 0.5) / s - 0.5        x_crop = (x_heatmap + 0.5) * s - 0.5

(:func:`crop_to_heatmap`, :func:`heatmap_to_crop`). At stride 4, crop pixel 1.5 (the centre of the first
4x4 block) is heatmap pixel 0. The public codes of AWing and HRNet use x/s with 1-based shifts instead; that
differs by a constant fraction of a pixel, which this convention removes.
"""

from __future__ import annotations

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


def decode_argmax(heatmaps: torch.Tensor, shift: float = 0.25) -> torch.Tensor:
    """(B, K, h, w) → (B, K, 2) float heatmap coordinates: the argmax moved ``shift`` pixel toward the
    higher neighbour along each axis (the standard "argmax + 1/4" decoding of IMPLEMENTATION_NOTES §0.6).

    Along an axis where the maximum sits on the border, or where both neighbours are equal, no shift is made.
    """
    h, w = heatmaps.shape[-2:]
    peak = argmax_2d(heatmaps)
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
