"""Shape-indexed patches: a square patch of the image around each landmark estimate (GlomFace's ρ(I, L^{t-1}),
paper 000 eq. 1; IMPLEMENTATION_NOTES §1.1).

Convention (the project's, ``landmarks/geometry.py``): pixel i covers [i - 0.5, i + 0.5] and its centre is at
coordinate i. A patch of ``size`` S around point p samples the image at p + j - (S - 1) / 2, j = 0..S-1, on each
axis, so p lies at the patch's centre (S - 1) / 2: on the middle pixel for an odd S, between the two middle
pixels for an even S (p at patch coordinate 19.5 for S = 40). A point at an integer (odd S) or at an integer
+ 0.5 (even S) therefore copies image pixels exactly; other points are interpolated bilinearly. Outside the
image the samples are zero (zero padding, interpolated towards zero within half a pixel of the edge).

Departures from the official op (MDM's ``extract_patches``, used by GlomFace, points given as (y, x)): it copies
pixels without interpolation from the truncated corner ``int(p - S/2)``, so its patch sits up to one pixel
off-centre, and it never reads image row or column 0 nor writes the patch pixels outside the image. Ours is
centred, sub-pixel and zero outside; as there, no gradient flows through the point locations (the points are
detached), while the image receives a gradient.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def extract_patches(images: torch.Tensor, points: torch.Tensor, size: int = 40) -> torch.Tensor:
    """Cut a ``size`` x ``size`` patch centred on every point, all in one ``grid_sample`` call.

    Args:
        images: (B, C, H, W).
        points: (B, K, 2) pixel coordinates (x, y) in ``images``; detached (no gradient to the locations).
        size: patch side S in pixels.

    Returns:
        (B, K, C, S, S) patches; ``patches[b, k, :, r, c]`` is the image at
        (x_k + c - (S - 1) / 2, y_k + r - (S - 1) / 2).
    """
    b, c, h, w = images.shape
    k = points.shape[1]
    if points.shape != (b, k, 2):
        raise ValueError(f"points must be (B, K, 2) with B = {b}, got {tuple(points.shape)}")
    points = points.detach().to(images.dtype)
    offsets = torch.arange(size, dtype=images.dtype, device=images.device) - (size - 1) / 2  # (S,)
    # align_corners=False: normalised -1 and 1 are the outer edges of the border pixels, -0.5 and W - 0.5.
    gx = (2 * (points[..., 0, None] + offsets) + 1) / w - 1  # (B, K, S) along a patch row
    gy = (2 * (points[..., 1, None] + offsets) + 1) / h - 1  # (B, K, S) down a patch column
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), -1)  # (B, K, S, S, 2)
    sampled = F.grid_sample(images, grid.reshape(b, k * size, size, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # (B, C, K*S, S)
    return sampled.reshape(b, c, k, size, size).transpose(1, 2)  # (B, K, C, S, S)
