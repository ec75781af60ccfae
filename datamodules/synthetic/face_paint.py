"""The painter of the synthetic faces: OpenCV primitives at sub-pixel precision, palettes, the background, head
parts (hair, ears, neck), eyes, brows, nose, mouth, shading and occluders.

``face_render.render_face`` composes these in depth order; they live apart only to keep files short, and their
names stay private to this sub-package (``render_face`` is the public entry point). Every function draws from
the generator it is given, so the random streams, and hence the faces, are those of a single-file renderer.

Coordinates: the centre of pixel [row j, column i] is (x=i, y=j), as in OpenCV (drawn with 4 fractional
bits).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

_SKIN = np.array([(255, 224, 196), (241, 194, 167), (234, 180, 150), (224, 172, 138), (198, 134, 99),
                  (176, 120, 86), (141, 94, 62), (110, 72, 48), (84, 56, 40)], np.float64)
_HAIR = np.array([(22, 18, 16), (45, 30, 22), (80, 52, 35), (120, 80, 48), (140, 70, 35), (196, 160, 100),
                  (150, 146, 140), (60, 44, 38)], np.float64)
_IRIS = np.array([(70, 45, 25), (100, 70, 40), (60, 90, 120), (80, 110, 70), (40, 30, 25), (110, 120, 130)],
                 np.float64)
_LIPSTICK = np.array([(200, 20, 40), (150, 10, 60), (230, 60, 90), (120, 20, 30), (220, 80, 40),
                      (170, 40, 120)], np.float64)
_EYESHADOW = np.array([(120, 60, 150), (60, 90, 160), (150, 90, 60), (70, 130, 90), (40, 30, 40),
                       (170, 120, 150)], np.float64)


# ------------------------------------------------------------------------------------------ primitives


def _fix(points: np.ndarray) -> np.ndarray:
    """Float (N, 2) points -> int32 fixed-point vertices for cv2 drawing with ``shift=_SHIFT``."""
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _col(c: np.ndarray | Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.clip(np.asarray(c, dtype=np.float64), 0, 255))


def _poly(img: np.ndarray, pts: np.ndarray, color, thickness: int = -1, closed: bool = True) -> None:
    """Filled (thickness < 0) or outlined anti-aliased polygon / polyline through float points."""
    if thickness < 0:
        cv2.fillPoly(img, [_fix(pts)], color, _AA, _SHIFT)
    else:
        cv2.polylines(img, [_fix(pts)], closed, color, max(1, int(thickness)), _AA, _SHIFT)


def _ellipse(img: np.ndarray, centre, size, angle: float, color, thickness: int = -1) -> None:
    """Anti-aliased ellipse with full axis lengths ``size`` (width, height) rotated by ``angle`` degrees."""
    box = ((float(centre[0]), float(centre[1])), (float(size[0]), float(size[1])), float(angle))
    cv2.ellipse(img, box, color, int(thickness), _AA)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


# Uniform Catmull-Rom weights for t = 0, 1/4, 1/2, 3/4 (rows) on (P0, P1, P2, P3) (columns).
_T = np.array([0.0, 0.25, 0.5, 0.75])
_CR = 0.5 * np.stack([-_T**3 + 2 * _T**2 - _T, 3 * _T**3 - 5 * _T**2 + 2, -3 * _T**3 + 4 * _T**2 + _T,
                      _T**3 - _T**2], 1)


def _smooth(pts: np.ndarray) -> np.ndarray:
    """Densify an open polyline (N, 2) by 4 along a Catmull-Rom curve through its points."""
    ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
    segs = np.stack([ext[:-3], ext[1:-2], ext[2:-1], ext[3:]], 1)  # (N-1, 4, 2)
    return np.concatenate([np.einsum("tk,skd->std", _CR, segs).reshape(-1, 2), pts[-1:]])


def _circle(n: int) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], 1)


_CIRCLE16 = _circle(16)
_SPHERE = np.array([(np.cos(t) * np.cos(p), np.sin(p), np.sin(t) * np.cos(p))
                    for p in np.linspace(-np.pi / 2, np.pi / 2, 9)
                    for t in np.linspace(0, 2 * np.pi, 16, endpoint=False)])


# ------------------------------------------------------------------------------------------ background


def _background(g: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency texture + random shapes: clutter so the face is not trivially segmented."""
    corners = g.uniform(0, 255, (2, 2, 3))
    t = np.linspace(0, 1, 5)[:, None, None]
    left = corners[0, 0] + (corners[1, 0] - corners[0, 0]) * t  # (5, 1, 3) down the left edge
    right = corners[0, 1] + (corners[1, 1] - corners[0, 1]) * t
    low = left + (right - left) * t.reshape(1, 5, 1) + g.uniform(-60, 60, (5, 5, 3))  # gradient + blobs
    img = cv2.resize(np.clip(low, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(g.integers(4, 14))):
        kind = int(g.integers(0, 5))
        u = g.random(4)
        color = _col(g.uniform(0, 255, 3))
        if u[0] < 0.25:  # skin- and hair-like clutter as well
            color = _col(_SKIN[g.integers(len(_SKIN))] if u[1] < 0.6 else _HAIR[g.integers(len(_HAIR))])
        c = g.uniform(-0.1, 1.1, 2) * size
        r = g.uniform(0.03, 0.3) * size
        thick = -1 if u[2] < 0.6 else int(1 + 5 * u[3])
        if kind == 0:
            _ellipse(img, c, (2 * r, 2 * r), 0.0, color, thick)
        elif kind == 1:
            _poly(img, cv2.boxPoints((tuple(c), (r * 2, r * g.uniform(0.3, 2)), g.uniform(0, 180))), color, thick)
        elif kind == 2:
            _poly(img, c + g.uniform(-r, r, (int(g.integers(3, 7)), 2)), color, thick)
        elif kind == 3:
            _poly(img, c + g.uniform(-1, 1, (2, 2)) * size * 0.5, color, int(1 + 7 * u[3]), closed=False)
        else:
            _ellipse(img, c, (r * 2, r * g.uniform(0.3, 1.5)), g.uniform(0, 180), color, thick)
    return img


# ------------------------------------------------------------------------------------------- head parts


def _head_extras(shape: np.ndarray, g: np.random.Generator) -> dict:
    """3-D points (model frame) of the hairline, fringe, skull (hair), ears, neck and shoulders."""
    u = g.random(8)
    p0, p16 = shape[0], shape[16]
    c = (p0 + p16) / 2
    half = np.linalg.norm(p16 - p0) / 2
    brow_top = shape[17:27, 1].min()
    brow_z = shape[17:27, 2].mean()
    fh = (c[1] - brow_top) + 0.5 + 0.3 * u[0]  # hairline height above the contour ends
    # Hairline: from a sideburn in front of each ear up over the forehead (the top edge of the skin).
    t = np.linspace(0, np.pi, 15)
    s = np.sin(t)
    side_z = c[2] + 0.35
    hairline = np.stack([c[0] - 0.95 * half * np.cos(t), c[1] - 0.05 - fh * s,
                         side_z + (brow_z + 0.02 - side_z) * s**0.5], 1)
    # Fringe: hair hanging from the hairline over part of the forehead (absent for 40 % of faces).
    drop = (fh - (c[1] - brow_top) - 0.12) * (0 if u[1] < 0.4 else 0.3 + 0.7 * u[2])
    wave = 1 + 0.25 * np.cos(t * (6 + 4 * u[3]))
    fringe_edge = hairline + np.stack([0 * s, drop * s**2 * wave, 0.02 * s], 1)
    fringe = np.concatenate([hairline, fringe_edge[::-1]])
    # Skull: an ellipsoid around the back of the head; hair covers its upper part (more for long hair).
    skull_c = np.array([c[0], c[1] - 0.3 * fh, c[2] - 0.05])
    radii = np.array([half * (1.05 + 0.12 * u[4]), 0.8 * fh + 0.3, 1.0 + 0.1 * u[5]])
    skull = skull_c + _SPHERE * radii
    hair_len = -0.1 + 1.7 * u[6]  # how far below the contour ends hair reaches (<= 0.2 short)
    hair = skull[skull[:, 1] < c[1] + min(hair_len, 0.25)]
    if hair_len > 0.4:  # long hair: falls behind the neck
        curtain = np.array([[sx * half * 0.95, c[1] + hair_len, c[2] - 0.4 - 0.5 * k]
                            for sx in (-1, 1) for k in (0, 1)])
        hair = np.concatenate([hair, curtain])
    # Ears: ellipses in the side plane (y-z) behind contour points 1-2 / 14-15.
    ears = []
    for side, idx in ((-1, (1, 2)), (1, (15, 14))):
        centre = shape[list(idx)].mean(0) + np.array([side * 0.03, -0.1, -0.2])
        ring = np.stack([centre[0] + side * 0.04 * (_CIRCLE16[:, 0] + 1), centre[1] + 0.27 * _CIRCLE16[:, 1],
                         centre[2] + 0.15 * _CIRCLE16[:, 0]], 1)
        ears.append(ring)
    # Neck: a cylinder under the head; shoulders: a wide slab further down.
    jaw_y = shape[8, 1]
    neck_r = half * (0.5 + 0.15 * u[7])
    ring = np.stack([neck_r * _CIRCLE16[:, 0], np.zeros(16), neck_r * 0.8 * _CIRCLE16[:, 1] + c[2] + 0.3], 1)
    neck = np.concatenate([ring + [c[0], c[1], 0], ring + [c[0], jaw_y + 1.6, 0]])
    sh = half * 2.6
    shoulders = np.array([[-neck_r, jaw_y + 0.55], [neck_r, jaw_y + 0.55], [sh, jaw_y + 1.0],
                          [sh * 1.3, jaw_y + 4.0], [-sh * 1.3, jaw_y + 4.0], [-sh, jaw_y + 1.0]])
    shoulders = np.concatenate([shoulders + [c[0], 0], np.full((6, 1), c[2] + 0.2)], 1)
    return {"hairline": hairline, "fringe": fringe, "fringe_drop": drop, "hair": hair, "ear_a": ears[0],
            "ear_b": ears[1], "neck": neck, "shoulders": shoulders}


@dataclass
class _Look:
    skin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    lip: np.ndarray
    sclera: np.ndarray
    eye_shadow: np.ndarray | None
    shadow_alpha: float


def _draw_eye(img: np.ndarray, eye8: np.ndarray, pupil: np.ndarray, brow_lower: np.ndarray, look: _Look,
              unit: float, yaw: float) -> None:
    """Eye shadow (makeup), sclera, iris and pupil clipped to the eye outline, then the lid lines."""
    upper = _smooth(eye8[[0, 1, 2, 3, 4]])
    lower = _smooth(eye8[[4, 5, 6, 7, 0]])
    if look.eye_shadow is not None:
        top = upper + (brow_lower.mean(0) - upper.mean(0)) * 0.6
        region = np.concatenate([upper, top[::-1]])
        lo = np.maximum(np.floor(region.min(0)).astype(int) - 2, 0)
        hi = np.minimum(np.ceil(region.max(0)).astype(int) + 3, img.shape[1::-1])
        if (hi - lo).min() > 1:
            roi = img[lo[1]:hi[1], lo[0]:hi[0]]
            over = roi.copy()
            _poly(over, region - lo, _col(look.eye_shadow))
            cv2.addWeighted(over, look.shadow_alpha, roi, 1 - look.shadow_alpha, 0, roi)
    outline = np.concatenate([upper, lower[1:-1]])
    lo = np.maximum(np.floor(outline.min(0)).astype(int) - 2, 0)
    hi = np.minimum(np.ceil(outline.max(0)).astype(int) + 3, img.shape[1::-1])
    width = np.linalg.norm(eye8[4] - eye8[0])
    if (hi - lo).min() > 1:
        roi = img[lo[1]:hi[1], lo[0]:hi[0]]
        mask = np.zeros(roi.shape[:2], np.uint8)
        _poly(mask, outline - lo, 255)
        eye = np.empty_like(roi)
        eye[:] = _col(look.sclera)
        cos_yaw = max(abs(np.cos(np.radians(yaw))), 0.3)
        r = min(max(0.21 * width / cos_yaw, 1.0), 0.15 * unit)
        pc = pupil - lo
        _ellipse(eye, pc, (2 * r * cos_yaw, 2 * r), 0.0, _col(look.iris))
        _ellipse(eye, pc, (2 * r * cos_yaw, 2 * r), 0.0, _col(look.iris * 0.5), 1)
        _ellipse(eye, pc, (0.9 * r * cos_yaw, 0.9 * r), 0.0, (12, 10, 10))
        _ellipse(eye, pc + np.array([-0.3, -0.35]) * r, (0.35 * r, 0.35 * r), 0.0, (250, 250, 250))
        a = mask.astype(np.float32)[..., None] * (1 / 255)
        roi[:] = (roi * (1 - a) + eye * a).astype(np.uint8)
    lid = max(1, int(round(0.03 * unit + 0.3)))
    _poly(img, upper, _col(look.brow * 0.45), lid, closed=False)
    _poly(img, lower, _col(look.skin * 0.55), max(1, lid // 2), closed=False)
    up_dir = eye8[2] - eye8[6]
    up_dir = up_dir / max(np.linalg.norm(up_dir), 1e-6)
    crease = upper[3:-3] + (upper[3:-3] - eye8[[0, 4]].mean(0)) * 0.12 + up_dir * 0.045 * unit
    _poly(img, crease, _col(look.skin * 0.72), 1, closed=False)


def _draw_brow(img: np.ndarray, upper5: np.ndarray, lower4: np.ndarray, brow_a: bool, look: _Look) -> None:
    """Filled brow bounded by its upper (33-37 / 42-46) and lower (38-41 / 47-50) WFLW edges."""
    up = _smooth(upper5)
    if brow_a:  # 33..37, then 38..41 (inner -> outer), closing at 33
        low = _smooth(np.concatenate([lower4, upper5[:1]]))[:-1]
    else:  # 42..46, then 47..50 (outer -> inner), closing at 42
        low = _smooth(np.concatenate([upper5[-1:], lower4, upper5[:1]]))[1:-1]
    _poly(img, np.concatenate([up, low]), _col(look.brow))


def _draw_nose(img: np.ndarray, p: np.ndarray, look: _Look, unit: float, yaw: float, light: np.ndarray) -> None:
    """Nose body (skin, covers far features), alae, nostrils, the nose-bottom curve and the ridge."""
    side = p[31] - p[35]
    up = p[27] - p[33]
    body = _hull(np.concatenate([p[27:36], [p[31] + 0.12 * side, p[35] - 0.12 * side]]))
    yaw_s = abs(np.sin(np.radians(yaw)))
    _poly(img, body, _col(look.skin * (1.0 - 0.05 * yaw_s)))
    thick = max(1, int(round(0.022 * unit)))
    for k, sgn in ((31, 1), (35, -1)):  # alae: arcs from the nose-bottom ends up around the nostrils
        top = p[k] + up * 0.3 + side * 0.05 * sgn
        _poly(img, _smooth(np.array([p[k], p[k] + up * 0.12 + side * 0.1 * sgn, top])), _col(look.skin * 0.68),
              1, closed=False)
    for a, b in ((31, 33), (33, 35)):  # nostrils
        c = (p[a] + p[b]) / 2 + up * 0.06
        ax = max(np.linalg.norm(p[b] - p[a]) * 0.32, 0.8)
        ang = np.degrees(np.arctan2(p[b][1] - p[a][1], p[b][0] - p[a][0]))
        _ellipse(img, c, (2 * ax, 2 * max(ax * 0.45, 0.7)), ang, _col(look.skin * 0.3))
    _poly(img, _smooth(p[31:36]), _col(look.skin * 0.5), thick, closed=False)
    ridge = _smooth(p[27:31])
    if yaw_s < 0.5:  # a highlight along the ridge, fading as the head turns, and a shadow beside it
        fade = 1 - yaw_s / 0.5
        _poly(img, ridge, _col(look.skin + (np.minimum(look.skin * 1.1 + 15, 255) - look.skin) * fade), thick,
              closed=False)
        _poly(img, ridge[3:] - light * 0.04 * unit, _col(look.skin * 0.8), thick, closed=False)
    else:  # turned: the ridge is the nose's silhouette against the far cheek
        _poly(img, ridge, _col(look.skin * 0.72), thick, closed=False)


def _draw_mouth(img: np.ndarray, outer: np.ndarray, inner: np.ndarray, look: _Look, unit: float) -> None:
    """Outer lip 48-59 (``outer``) filled, the upper lip darker, the inner mouth 60-67 dark when open."""
    up = _smooth(outer[0:7])  # 48 -> 54
    low = _smooth(np.concatenate([outer[6:12], outer[:1]]))  # 54 -> 48
    iup = _smooth(np.concatenate([outer[:1], inner[0:5], outer[6:7]]))  # 48 -> 60..64 -> 54
    inner_up = _smooth(inner[0:5])
    inner_low = _smooth(np.concatenate([inner[4:8], inner[:1]]))  # 64 -> 60
    _poly(img, np.concatenate([up, low[1:-1]]), _col(look.lip))
    _poly(img, np.concatenate([up, iup[::-1][1:-1]]), _col(look.lip * 0.86))
    gap = np.linalg.norm(inner[[1, 2, 3]] - inner[[7, 6, 5]], axis=1).mean()
    if gap > 0.02 * unit:
        _poly(img, np.concatenate([inner_up, inner_low[1:-1]]), (45, 18, 22))
        if gap > 0.07 * unit:  # teeth under the upper lip
            top = _smooth(inner[1:4])
            _poly(img, np.concatenate([top, top[::-1] + (inner[6] - inner[2]) * 0.3]), (236, 232, 222))
    line = _col(look.lip * 0.4)
    _poly(img, inner_up, line, 1, closed=False)
    _poly(img, inner_low, line, 1, closed=False)
    for o, i in ((outer[0], inner[0]), (outer[6], inner[4])):  # creases through the mouth corners
        _poly(img, np.array([o + (o - i) * 0.2, i]), line, max(1, int(round(0.02 * unit))), closed=False)


def _shade_face(img: np.ndarray, face_poly: np.ndarray, p68: np.ndarray, unit: float) -> None:
    """Darken the face towards its silhouette and in the eye sockets (a blurred low-resolution shade map)."""
    h, w = img.shape[:2]
    f = 4
    small = np.ones((h // f, w // f), np.float32)
    _poly(small, face_poly / f, 0.8)
    centre = p68[[27, 28, 29, 30, 33, 51, 62, 66]].mean(0)
    _poly(small, (centre + (face_poly - centre) * 0.72) / f, 1.0)
    for idx in (slice(36, 42), slice(42, 48)):
        _ellipse(small, p68[idx].mean(0) / f, (0.5 * unit / f, 0.32 * unit / f), 0.0, 0.9)
    small = cv2.GaussianBlur(small, (0, 0), max(0.06 * unit / f, 0.5))
    shade = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.multiply(img, cv2.merge([shade, shade, shade]), img, dtype=cv2.CV_8U)


def _directional(img: np.ndarray, direction: np.ndarray, strength: float, box: np.ndarray) -> np.ndarray:
    """Multiply by a linear light ramp across the face box: 1 + strength * (offset along ``direction``)."""
    h, w = img.shape[:2]
    c = (box[:2] + box[2:]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) / 2 + 1e-6
    xs = (np.arange(w, dtype=np.float32) - c[0]) * (direction[0] / half)
    ys = (np.arange(h, dtype=np.float32) - c[1]) * (direction[1] / half)
    ramp = np.clip(1.0 + strength * (ys[:, None] + xs[None, :]), 0.08, 2.5).astype(np.float32)
    return cv2.multiply(img, cv2.merge([ramp, ramp, ramp]), dtype=cv2.CV_8U)


# ------------------------------------------------------------------------------------------- occluders


def _occluders(g: np.random.Generator, size: int, box: np.ndarray, skin: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """1-3 occluders over the face: (H, W) uint8 anti-aliased coverage and (H, W, 3) uint8 texture."""
    mask = np.zeros((size, size), np.uint8)
    tex = np.zeros((size, size, 3), np.uint8)
    centre = (box[:2] + box[2:]) / 2
    face = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0))
    for _ in range(int(g.integers(1, 4))):
        kind = int(g.integers(0, 3))
        u = g.random(8)
        c = centre + (u[:2] - 0.5) * 0.7 * (box[2:] - box[:2])
        r = (0.14 + 0.16 * u[2]) * face
        ang = 180 * u[3]
        color = g.uniform(0, 255, 3)
        lo = np.clip(np.floor(c - 2.6 * r).astype(int), 0, size)
        hi = np.clip(np.ceil(c + 2.6 * r).astype(int) + 1, 0, size)
        if (hi - lo).min() < 2:
            continue
        m = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
        cl = c - lo
        if kind == 0:  # a rectangle (card, phone, microphone ...)
            _poly(m, cv2.boxPoints((tuple(cl), (2 * r, 2 * r * (0.3 + 0.9 * u[4])), ang)), 255)
        elif kind == 1:  # an ellipse (cup, ball ...)
            _ellipse(m, cl, (2 * r, 2 * r * (0.5 + 0.5 * u[4])), ang, 255)
        else:  # a hand: palm and fingers, usually skin-coloured
            _ellipse(m, cl, (1.5 * r, 1.8 * r), ang, 255)
            a = np.radians(ang - 90)
            d = np.array([np.cos(a), np.sin(a)])
            perp = np.array([-d[1], d[0]])
            lengths = g.uniform(0.8, 1.3, 4)
            for f in range(4):
                base = cl + d * 0.6 * r + perp * (f - 1.5) * 0.34 * r
                tip = base + d * r * lengths[f] + perp * (f - 1.5) * 0.1 * r
                _poly(m, np.array([base, tip]), 255, max(1, int(0.3 * r)), closed=False)
            thumb = cl + perp * 0.6 * r
            _poly(m, np.array([thumb, thumb + perp * 0.6 * r + d * 0.3 * r]), 255, max(1, int(0.32 * r)), False)
            if u[4] < 0.75:
                color = skin * (0.8 + 0.25 * u[5])
        t = np.empty(m.shape + (3,), np.float32)
        t[:] = color
        if u[6] < 0.35:  # stripes
            period = 4 + 10 * u[7]
            yy, xx = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
            stripes = ((xx * np.cos(ang) + yy * np.sin(ang)) % period) < period / 2
            t[stripes] *= 0.6
        elif u[6] < 0.7:  # blotchy noise
            t += cv2.resize(g.uniform(-50, 50, (8, 8, 3)).astype(np.float32), m.shape[::-1],
                            interpolation=cv2.INTER_CUBIC)
        sel = m > 0
        tex[lo[1]:hi[1], lo[0]:hi[0]][sel] = np.clip(t[sel], 0, 255).astype(np.uint8)
        np.maximum(mask[lo[1]:hi[1], lo[0]:hi[0]], m, out=mask[lo[1]:hi[1], lo[0]:hi[0]])
    return mask, tex
