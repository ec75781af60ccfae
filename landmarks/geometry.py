"""Boxes, square similarity crops and the mapping of points between an image and its crop.

Coordinate convention (used everywhere in the project): the centre of pixel [row j, column i] is (x = i,
y = j); pixel i covers [i - 0.5, i + 0.5]. OpenCV's ``warpAffine`` uses the same convention, so a 2x3 matrix
that maps original points to crop points also warps the image.

A crop is a similarity (one scale, optional rotation), so distances scale by one factor and an NME computed
in crop pixels equals the NME in the original image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def points_bbox(points: Array) -> Array:
    """(..., K, 2) points → (..., 4) box ``x1, y1, x2, y2`` (their min and max)."""
    if isinstance(points, torch.Tensor):
        return torch.cat([points.amin(-2), points.amax(-2)], -1)
    return np.concatenate([points.min(-2), points.max(-2)], -1)


def square_crop_matrix(
    box: Array,
    scale: float,
    size: int,
    center: tuple[float, float] | None = None,
    rotation_deg: float = 0.0,
) -> np.ndarray:
    """2x3 matrix mapping original-image points into a ``size`` x ``size`` crop.

    The crop is the square of side ``scale * max(box width, box height)`` centred on ``center`` (default: the
    box centre), optionally rotated by ``rotation_deg`` (counter-clockwise in the displayed image). Its
    edges map to -0.5 and size - 0.5, so its centre maps to ((size - 1) / 2, (size - 1) / 2).
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64))
    side = scale * max(x2 - x1, y2 - y1)
    if not math.isfinite(side) or side <= 0:
        raise ValueError(f"cannot crop a degenerate box {[x1, y1, x2, y2]} (scale {scale})")
    cx, cy = center if center is not None else ((x1 + x2) / 2, (y1 + y2) / 2)
    s = size / side
    # y points down, so a counter-clockwise rotation on screen is clockwise in (x, y): use -angle.
    a = math.radians(rotation_deg)
    cos, sin = s * math.cos(a), s * math.sin(a)
    c = (size - 1) / 2
    return np.array([[cos, sin, c - cos * cx - sin * cy], [-sin, cos, c + sin * cx - cos * cy]])


def matrix_scale(matrix: Array) -> Array:
    """The scale factor of a (..., 2, 3) similarity: crop pixels per original pixel."""
    if isinstance(matrix, torch.Tensor):
        return torch.linalg.det(matrix[..., :2, :2]).abs().sqrt()
    return np.sqrt(np.abs(np.linalg.det(matrix[..., :2, :2])))


def apply_affine(points: Array, matrix: Array) -> Array:
    """Apply (..., 2, 3) matrices to (..., K, 2) points (batched; torch or numpy)."""
    linear, shift = matrix[..., :2], matrix[..., 2]
    return points @ linear.swapaxes(-1, -2) + shift[..., None, :]


def invert_affine(matrix: Array) -> Array:
    """Inverse of (..., 2, 3) affine matrices."""
    linear, shift = matrix[..., :2], matrix[..., 2:]
    if isinstance(matrix, torch.Tensor):
        inv = torch.linalg.inv(linear)
        return torch.cat([inv, -inv @ shift], -1)
    inv = np.linalg.inv(linear)
    return np.concatenate([inv, -inv @ shift], -1)


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int, border_value: int = 0) -> np.ndarray:
    """Warp an (H, W[, C]) image into the ``size`` x ``size`` crop described by ``matrix`` (bilinear).

    When the crop shrinks the face by more than 2x, the image is first reduced with area averaging, so that
    the bilinear warp does not alias.
    """
    factor = float(matrix_scale(matrix))
    if factor < 0.5:
        # Area-reduce by a factor r close to 2*factor, then re-express the matrix on the reduced image.
        r = 2 * factor
        h, w = image.shape[:2]
        new_w, new_h = max(1, round(w * r)), max(1, round(h * r))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        sx, sy = new_w / w, new_h / h
        # reduced pixel centre x' = (x + 0.5) * sx - 0.5, so original x = (x' + 0.5) / sx - 0.5
        to_original = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]])
        matrix = compose_affine(matrix, to_original)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer(inner(p))``."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2:]) + outer[:, 2:]], 1)
