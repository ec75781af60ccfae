"""Procedural face images with exact landmarks (numpy + OpenCV), for running the benchmark without datasets.

``render_face`` samples a 3-D face from the statistical shape model of ``face_model`` (AFLW2000-3D shapes),
poses it, projects it (weak perspective) and paints a cartoon-like but structured face with OpenCV's
anti-aliased primitives (``face_paint``), so that every landmark lies on visible image structure:

* the jaw contour is the edge of the skin region (against the neck, hair and background) and carries a soft
  shadow line where the jaw faces the camera;
* brows are filled shapes whose upper and lower edges pass through the brow points;
* eyes: the sclera outline (dark upper lid, lower lid line) passes through the eye points, the corners are
  where the lids meet, and the iris and pupil are centred on the pupil landmarks;
* nose: a highlight/shadow along the ridge (27-30), nostrils and a shaded nose-bottom curve (31-35);
* mouth: filled lips through 48-59, the inner lip lines through 60-67, a dark mouth (and teeth) when open.

Head, hair, ears, neck and shoulders are 3-D point sets posed with the face. Facial parts are painted far
to near (by depth) and the nose is a filled skin shape, so that under a large yaw the far eye slides behind
the nose, the near ear comes in front and the skin silhouette follows the projected head.

Each WFLW attribute (``ATTRIBUTES``) is switched on independently with probability ``attribute_rate`` and
tagged only when present. Each concern draws from its own generator seeded from ``rng`` (a fixed number of
draws), so switching an attribute on or off (``attributes=``) leaves every other random choice unchanged:
the same face with and without an occluder differs only by the occluder.

Coordinates: the centre of pixel [row j, column i] is (x=i, y=j), as in OpenCV (drawn with 4 fractional
bits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from datamodules.synthetic.face_model import (
    pose_and_project,
    rotation_matrix,
    sample_shape_3d,
    silhouette_contour,
    to_wflw98,
)
from datamodules.synthetic.face_paint import (
    _EYESHADOW,
    _HAIR,
    _IRIS,
    _LIPSTICK,
    _SKIN,
    _background,
    _col,
    _directional,
    _draw_brow,
    _draw_eye,
    _draw_mouth,
    _draw_nose,
    _head_extras,
    _hull,
    _Look,
    _occluders,
    _poly,
    _shade_face,
    _smooth,
)
from landmarks.layouts import W300_68, WFLW_98, LandmarkLayout

ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")

# 68 -> K conversion per supported layout (a table keyed by the layout object, not by a point count).
_CONVERSIONS: dict[LandmarkLayout, Callable[[np.ndarray], np.ndarray]] = {
    W300_68: lambda p68: p68.copy(),
    WFLW_98: to_wflw98,
}


@dataclass
class SyntheticFace:
    """One rendered face.

    ``occlusion_mask`` (an addition to the sample fields) is the (H, W) bool mask of occluder pixels (all
    False without occluders); ``visible[k]`` is False exactly where it covers landmark k's pixel
    (``round(x), round(y)``; points outside the image count as visible).
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (K, 2) float64, pixel-centre convention
    visible: np.ndarray  # (K,) bool; False where an occluder covers the point
    box: np.ndarray  # (4,) x1 y1 x2 y2: the face box (min/max of the 68-point ground truth)
    attributes: tuple[str, ...]  # subset tags, a subset of ATTRIBUTES, in ATTRIBUTES order
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees
    occlusion_mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool


# ------------------------------------------------------------------------------------------------ render


def render_face(
    rng: np.random.Generator,
    layout: LandmarkLayout,
    image_size: int = 256,
    attribute_rate: float = 0.2,
    *,
    attributes: Iterable[str] | None = None,
) -> SyntheticFace:
    """Render one random face with its ``layout`` landmarks (W300_68 or WFLW_98).

    Args:
        rng: the only random source; the same state gives the identical face.
        layout: the landmark layout of ``landmarks`` / ``visible``.
        image_size: side of the square image.
        attribute_rate: probability of each attribute (independently).
        attributes: force exactly these attributes instead of drawing them (every other random choice stays
            the same, so one face can be rendered with and without, e.g., an occluder).
    """
    convert = _CONVERSIONS.get(layout)
    if convert is None:
        names = ", ".join(lay.name for lay in _CONVERSIONS)
        raise ValueError(f"render_face does not support the layout {layout.name!r}; supported: {names}")
    size = int(image_size)
    draws = rng.random(len(ATTRIBUTES))
    seeds = rng.integers(0, 2**63 - 1, size=4 + len(ATTRIBUTES))
    if attributes is None:
        on = {name: bool(u < attribute_rate) for name, u in zip(ATTRIBUTES, draws, strict=True)}
    else:
        wanted = set(attributes)
        if wanted - set(ATTRIBUTES):
            raise ValueError(f"unknown attributes {sorted(wanted - set(ATTRIBUTES))}; known: {ATTRIBUTES}")
        on = {name: name in wanted for name in ATTRIBUTES}
    g_geom, g_look, g_bg, g_noise = (np.random.default_rng(int(s)) for s in seeds[:4])
    g_attr = {name: np.random.default_rng(int(s)) for name, s in zip(ATTRIBUTES, seeds[4:], strict=True)}

    # --- geometry: pose, shape, size and position ---------------------------------------------------
    u = g_geom.random(9)
    pitch = 25.0 * (u[2] + u[3] - 1.0)
    roll = 30.0 * (u[4] + u[5] - 1.0)
    frac = 0.4 + 0.35 * u[6]  # face box side / image side
    shift = u[7:9] * 2 - 1
    pa = g_attr["pose"].random(2)
    yaw = (1 if pa[0] < 0.5 else -1) * (46.0 + 44.0 * pa[1]) if on["pose"] else 45.0 * (u[0] + u[1] - 1.0)
    ea = g_attr["expression"].random(3)
    if on["expression"]:
        mouth = 0.15 + 0.45 * ea[1] if ea[0] < 0.65 else None
        shape = sample_shape_3d(g_geom, expression_scale=2.0 + ea[2], mouth_open=mouth)
    else:
        shape = sample_shape_3d(g_geom)
    unit_pts, _ = pose_and_project(silhouette_contour(shape, yaw, pitch, roll), yaw, pitch, roll, 1.0, (0, 0))
    lo, hi = unit_pts.min(0), unit_pts.max(0)
    scale = frac * size / (hi - lo).max()
    target = (size - 1) / 2 + shift * 0.85 * (1 - frac) / 2 * size
    center = target - scale * (hi + lo) / 2
    p68, z68 = pose_and_project(silhouette_contour(shape, yaw, pitch, roll), yaw, pitch, roll, scale, center)
    p98 = to_wflw98(p68)
    extras = _head_extras(shape, g_look)
    proj = {k: pose_and_project(v, yaw, pitch, roll, scale, center)[0] for k, v in extras.items() if k != "fringe_drop"}
    rot = rotation_matrix(yaw, pitch, roll)
    unit = scale  # pixels per inter-ocular distance of a frontal face

    # --- appearance -------------------------------------------------------------------------------
    lu = g_look.random(6)
    skin = _SKIN[g_look.integers(len(_SKIN))] * (0.92 + 0.13 * lu[0]) + g_look.uniform(-8, 8, 3)
    hair = _HAIR[g_look.integers(len(_HAIR))] + g_look.uniform(-10, 10, 3)
    brow = np.minimum(hair, skin * 0.55) * (0.7 + 0.3 * lu[1]) if lu[2] < 0.8 else skin * 0.4
    light = g_look.normal(0, 1, 2)
    light = light / max(np.linalg.norm(light), 1e-6)
    ma = g_attr["makeup"].random(3)
    look = _Look(
        skin=skin, hair=hair, brow=brow, iris=_IRIS[g_look.integers(len(_IRIS))],
        lip=_LIPSTICK[int(ma[0] * len(_LIPSTICK))] if on["makeup"] else skin * [0.85, 0.62, 0.62] + [25, 0, 5],
        sclera=np.array([236, 232, 226]) * (0.85 + 0.15 * lu[3]),
        eye_shadow=_EYESHADOW[int(ma[1] * len(_EYESHADOW))] if on["makeup"] else None,
        shadow_alpha=0.35 + 0.25 * ma[2],
    )

    # --- painting: background, body, hair, ears, skin, then the facial parts far to near -------------
    img = _background(g_bg, size)
    _poly(img, proj["shoulders"], _col(g_look.uniform(0, 255, 3)))
    _poly(img, _hull(proj["neck"]), _col(skin * 0.72))
    ears = []
    for name, normal in (("ear_a", (-1.0, 0.0, 0.0)), ("ear_b", (1.0, 0.0, 0.0))):
        facing = (rot @ np.array(normal))[2]  # > 0: the ear's side of the head faces the camera
        ears.append((facing, proj[name]))

    def draw_ear(pts: np.ndarray) -> None:
        _poly(img, pts, _col(skin * 0.9))
        _poly(img, pts, _col(skin * 0.6), 1)
        _poly(img, pts.mean(0) + (pts - pts.mean(0)) * 0.55, _col(skin * 0.72), 1)

    for facing, pts in ears:
        if facing < -0.2:
            draw_ear(pts)
    _poly(img, _hull(proj["hair"]), _col(hair))
    for facing, pts in ears:
        if -0.2 <= facing <= 0.55:
            draw_ear(pts)
    face_poly = _hull(np.concatenate([p68, proj["hairline"]]))
    _poly(img, face_poly, _col(skin))
    for facing, pts in ears:
        if facing > 0.55:
            draw_ear(pts)
    # Jaw line: a soft shadow along the contour (the silhouette on the far side).
    _poly(img, _smooth(p68[0:17]), _col(skin * 0.66), max(1, int(round(0.02 * unit))), closed=False)
    if extras["fringe_drop"] > 0:
        _poly(img, proj["fringe"], _col(hair))

    parts: list[tuple[float, Callable[[], None]]] = [
        (z68[17:22].mean(), lambda: _draw_brow(img, p98[33:38], p98[38:42], True, look)),
        (z68[22:27].mean(), lambda: _draw_brow(img, p98[42:47], p98[47:51], False, look)),
        (z68[36:42].mean(), lambda: _draw_eye(img, p98[60:68], p98[96], p98[38:42], look, unit, yaw)),
        (z68[42:48].mean(), lambda: _draw_eye(img, p98[68:76], p98[97], p98[47:51], look, unit, yaw)),
        (z68[27:36].mean(), lambda: _draw_nose(img, p68, look, unit, yaw, light)),
        (z68[48:68].mean(), lambda: _draw_mouth(img, p68[48:60], p68[60:68], look, unit)),
    ]
    for _, draw in sorted(parts, key=lambda t: t[0]):
        draw()
    _shade_face(img, face_poly, p68, unit)

    # --- attributes on top of the face ---------------------------------------------------------------
    box = np.concatenate([p68.min(0), p68.max(0)])
    covered = np.zeros((size, size), bool)
    if on["occlusion"]:
        occ_mask, occ_tex = _occluders(g_attr["occlusion"], size, box, skin)
        a = cv2.merge([occ_mask, occ_mask, occ_mask])
        img = cv2.add(cv2.multiply(img, 255 - a, scale=1 / 255), cv2.multiply(occ_tex, a, scale=1 / 255))
        covered = occ_mask >= 128

    ia = g_attr["illumination"].random(5)
    if on["illumination"]:
        if ia[0] < 0.6:  # strong directional light: one side of the face in shadow
            direction = np.array([np.cos(2 * np.pi * ia[1]), np.sin(2 * np.pi * ia[1])])
            img = _directional(img, direction, 0.55 + 0.35 * ia[2], box)
        else:  # under- or over-exposure
            gain = 0.3 + 0.2 * ia[3] if ia[4] < 0.5 else 1.6 + 0.6 * ia[3]
            img = cv2.convertScaleAbs(img, alpha=gain)
    else:
        img = _directional(img, light, 0.25 * ia[2], box)

    ba = g_attr["blur"].random(4)
    if on["blur"]:
        if ba[0] < 0.5:  # motion blur
            length = int(round((7 + 8 * ba[1]) * size / 256)) | 1
            k = np.zeros((length, length), np.float32)
            k[length // 2, :] = 1.0
            rot2 = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), 180 * ba[2], 1.0)
            k = cv2.warpAffine(k, rot2, (length, length))
            img = cv2.filter2D(img, -1, k / k.sum())
        else:
            img = cv2.GaussianBlur(img, (0, 0), (1.5 + 1.5 * ba[3]) * size / 256)

    amp = int(g_noise.integers(2, 9))  # uniform grey noise in [-amp, amp]
    noise = cv2.convertScaleAbs(np.frombuffer(g_noise.bytes(size * size), np.uint8).reshape(size, size),
                                alpha=2 * amp / 255)
    img = cv2.subtract(cv2.add(img, cv2.merge([noise, noise, noise])), (amp, amp, amp, 0))

    landmarks = convert(p68)
    ij = np.round(landmarks).astype(int)
    inside = (ij >= 0).all(1) & (ij < size).all(1)
    visible = np.ones(len(landmarks), bool)
    visible[inside] = ~covered[ij[inside, 1], ij[inside, 0]]
    return SyntheticFace(
        image=np.ascontiguousarray(img), landmarks=landmarks, visible=visible, box=box,
        attributes=tuple(name for name in ATTRIBUTES if on[name]), pose=np.array([yaw, pitch, roll]),
        occlusion_mask=covered,
    )
