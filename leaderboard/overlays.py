"""Landmarks drawn on images: the one drawing routine behind prediction overlays, failure galleries and photos.

``draw_face`` marks one face on an RGB image (predictions as filled dots, ground truth as rings joined to the
prediction by an error line, the face box, a caption); ``write_image`` saves the result atomically. Sizes scale
with the face, so a 40 px crop and a 4000 px photo both read at a glance. Colours are fixed and documented in
``COLOURS`` so every picture of the suite uses the same legend.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from leaderboard.store import atomic_write_bytes

# RGB. Prediction green, ground truth red (rings), error lines yellow, boxes cyan, captions white on black.
COLOURS = {"prediction": (40, 220, 60), "truth": (235, 50, 50), "error": (250, 210, 40), "box": (40, 200, 230),
           "text": (255, 255, 255), "text_back": (0, 0, 0)}


def _face_size(points: np.ndarray, box: np.ndarray | None) -> float:
    """sqrt(w h) of the box, else of the points' extent: the scale the marks are drawn at."""
    if box is not None:
        w, h = box[2] - box[0], box[3] - box[1]
    else:
        w, h = np.ptp(points[:, 0]), np.ptp(points[:, 1])
    return float(np.sqrt(max(w, 1.0) * max(h, 1.0)))


def draw_face(image: np.ndarray, points: np.ndarray, truth: np.ndarray | None = None,
              box: np.ndarray | list[float] | None = None, caption: str | None = None,
              caption_at: tuple[float, float] | None = None) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 RGB with one face marked.

    points (K, 2) predicted landmarks in the image's pixels (x, y; pixel centres at integers); truth (K, 2) the
    ground truth in the same frame, drawn as rings with a line to each prediction (NaN rows are skipped);
    box [x0, y0, x1, y1]; caption a short text (e.g. "NME 4.2 %") above the box or the face, or with its top-left
    corner at ``caption_at`` (x, y) (a gallery's crops: the image corner, clear of a face that fills the crop).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_face expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    box_arr = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
    out = np.ascontiguousarray(image.copy())
    size = _face_size(points[np.isfinite(points).all(1)], box_arr)
    # Marks about 1 % of the face, at least one pixel; lines a third of that.
    radius = max(1, int(round(size * 0.012)))
    thick = max(1, radius // 3)
    shift = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
    scale = 1 << shift

    def fixed(p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0] * scale)), int(round(p[1] * scale))

    if box_arr is not None:
        cv2.rectangle(out, fixed(box_arr[:2]), fixed(box_arr[2:]), COLOURS["box"], thick, cv2.LINE_AA, shift)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
        if truth.shape != points.shape:
            raise ValueError(f"truth {truth.shape} and points {points.shape} differ")
        for p, g in zip(points, truth, strict=True):
            if np.isfinite(p).all() and np.isfinite(g).all():
                cv2.line(out, fixed(p), fixed(g), COLOURS["error"], thick, cv2.LINE_AA, shift)
        for g in truth:
            if np.isfinite(g).all():
                cv2.circle(out, fixed(g), radius * scale, COLOURS["truth"], thick, cv2.LINE_AA, shift)
    for p in points:
        if np.isfinite(p).all():
            cv2.circle(out, fixed(p), radius * scale, COLOURS["prediction"], -1, cv2.LINE_AA, shift)
    if caption:
        finite = points[np.isfinite(points).all(1)]
        x0, y0 = (box_arr[:2] if box_arr is not None else finite.min(0) if len(finite) else (0.0, 0.0))
        font_scale = max(0.35, min(2.0, size / 250.0))
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        if caption_at is not None:  # the baseline sits th below the top-left corner asked for
            x0, y0 = caption_at[0], caption_at[1] + th + 4
        x = int(np.clip(x0, 0, max(0, out.shape[1] - tw)))
        y = int(np.clip(y0 - 4, th + base, out.shape[0] - 1))
        cv2.rectangle(out, (x, y - th - base), (x + tw, y + base), COLOURS["text_back"], -1)
        cv2.putText(out, caption, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, COLOURS["text"], 1, cv2.LINE_AA)
    return out


def write_image(path: str | Path, image: np.ndarray, overwrite: bool = False, quality: int = 92) -> Path:
    """Save an RGB uint8 image atomically; the format follows the suffix (.jpg, .png). Refuses to replace an
    existing file unless ``overwrite``."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else [])
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix!r}: {path}")
    return atomic_write_bytes(path, data.tobytes(), overwrite=overwrite)
