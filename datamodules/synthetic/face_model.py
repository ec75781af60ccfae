"""A 3-D statistical face shape model (68 points) and the 68 -> 98 (WFLW) landmark derivation. Pure numpy.

The model (``data/face_shape_model.npz``, fitted by ``tools/fit_face_shape_model.py`` from the AFLW2000-3D
3-D ground truth, see ``data/PROVENANCE.md``) lives in a canonical frame: x to the image right, y down,
z towards the camera, a frontal face; the origin is the mean shape's centroid and one unit is the mean
outer inter-ocular distance (36-45). A shape is

    mean + sum_k c_k * components[k] + (gap - mouth_gap_mean) * mouth_open_mode

with c_k ~ N(0, stddev_k^2) and the inner-lip gap ``gap`` drawn from the data's distribution.

``pose_and_project`` rotates (yaw, then pitch, then roll) and projects orthographically with one scale
(weak perspective). Angle conventions (degrees):

* yaw: rotation about the vertical axis; positive yaw turns the nose towards the image left (the sign of the
  AFLW2000-3D pose files); +-90 is a profile.
* pitch: rotation about the horizontal axis; positive pitch lifts the chin (the nose tip moves up).
* roll: in-plane rotation, positive = counter-clockwise on screen (as ``landmarks.geometry``).

``to_wflw98`` derives the 98-point WFLW layout from 68 points (the 68-point subset is copied exactly, so
``wflw98_to_68(to_wflw98(p)) == p``), with linear, mirror-symmetric rules, so that the derivation commutes
with a horizontal flip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).resolve().parent / "data" / "face_shape_model.npz"

# The standard WFLW -> 68 subset: contour 0, 2, .., 32; brows 33-37 and 42-46; nose 51-59; eyes 60, 61, 63,
# 64, 65, 67 and 68, 69, 71, 72, 73, 75; mouth 76-95.
WFLW98_TO_68 = np.array(
    [*range(0, 33, 2), *range(33, 38), *range(42, 47), *range(51, 60),
     60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75, *range(76, 96)]
)

# Lower brow edge: (68-point upper-brow index the lower point sits under, WFLW index of the lower point) in
# the order inner -> outer. Brow A (image left, upper 17-21 = WFLW 33-37, 21 inner): WFLW 38 under 21, 39
# under 20, 40 under 19, 41 under 18 (the loop closes at 33 = 17). Brow B (upper 22-26 = WFLW 42-46, 22
# inner): 50 under 22, 49 under 23, 48 under 24, 47 under 25 (the loop starts at 46 = 26).
_BROW_A = ((21, 38), (20, 39), (19, 40), (18, 41))
_BROW_B = ((22, 50), (23, 49), (24, 48), (25, 47))
# Offsets of the lower edge from the upper-edge point (in units of the nose-root-to-chin distance 27-8):
# along the normal towards the eye, and along the brow towards its inner end, inner -> outer. Fitted by
# least squares (per position, both brows pooled) to the 4 real WFLW shapes in tests/data/wflw_coco, the only
# real 98-point shapes available here: 8 brows, so the test on those shapes is not independent of these.
_BROW_THICKNESS = np.array([0.0545, 0.0563, 0.0583, 0.0573])
_BROW_SHIFT = np.array([0.0165, 0.0135, 0.0078, -0.0173])
# The same as index arrays over both brows: upper point, lower point, the two points whose difference is
# the brow tangent there (central differences, one-sided at the inner end), the pupil, inner and outer end.
_BROW_UPPER = np.array([k for k, _ in _BROW_A + _BROW_B])
_BROW_LOWER = np.array([w for _, w in _BROW_A + _BROW_B])
_BROW_TAN_A = np.array([21, 21, 20, 19, 22, 22, 23, 24])
_BROW_TAN_B = np.array([20, 19, 18, 17, 23, 24, 25, 26])
_BROW_EYE = np.array([96] * 4 + [97] * 4)
_BROW_INNER = np.array([21] * 4 + [22] * 4)
_BROW_OUTER = np.array([17] * 4 + [26] * 4)
_BROW_THICKNESS8 = np.tile(_BROW_THICKNESS, 2)
_BROW_SHIFT8 = np.tile(_BROW_SHIFT, 2)


@dataclass(frozen=True)
class FaceShapeModel:
    """The arrays of ``face_shape_model.npz`` (read-only). See ``tools/fit_face_shape_model.py``."""

    mean: np.ndarray  # (68, 3)
    components: np.ndarray  # (C, 68, 3), unit norm
    stddev: np.ndarray  # (C,)
    expression_weight: np.ndarray  # (C,) fraction of each component's energy on brows, eyes, mouth
    mouth_open_mode: np.ndarray  # (68, 3) shape change per unit of inner-lip gap
    mouth_gap_mean: float
    mouth_gap_percentiles: np.ndarray  # gap at the 50th, 90th, 99th percentiles
    variance_explained: np.ndarray  # (C,) cumulative
    total_variance_explained: float
    num_shapes: int
    source: str


@functools.cache
def load_shape_model(path: str | Path = MODEL_PATH) -> FaceShapeModel:
    """Load (once) the shape model stored next to this module."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def frozen(key: str) -> np.ndarray:
        a = arrays[key].astype(np.float64)
        a.setflags(write=False)
        return a

    return FaceShapeModel(
        mean=frozen("mean"),
        components=frozen("components"),
        stddev=frozen("stddev"),
        expression_weight=frozen("expression_weight"),
        mouth_open_mode=frozen("mouth_open_mode"),
        mouth_gap_mean=float(arrays["mouth_gap_mean"]),
        mouth_gap_percentiles=frozen("mouth_gap_percentiles"),
        variance_explained=frozen("variance_explained"),
        total_variance_explained=float(arrays["total_variance_explained"]),
        num_shapes=int(arrays["num_shapes"]),
        source=str(arrays["source"]),
    )


def _gap_quantile(model: FaceShapeModel, u: float) -> float:
    """Inner-lip gap at quantile u: piecewise linear through 0 (u=0) and the stored 50/90/99th percentiles."""
    q50, q90, q99 = model.mouth_gap_percentiles
    return float(np.interp(u, [0.0, 0.5, 0.9, 0.99, 1.0], [0.0, q50, q90, q99, q99 + (q99 - q90) / 9]))


def sample_shape_3d(
    rng: np.random.Generator, expression_scale: float = 1.0, mouth_open: float | None = None
) -> np.ndarray:
    """A random (68, 3) face in the model frame.

    Args:
        rng: the random source (exactly ``C + 1`` draws, whatever the arguments).
        expression_scale: multiplies the expressive part of every component (its ``expression_weight``) and
            the mouth opening beyond the median: 1 reproduces the data's spread, 2-3 gives strong expressions.
        mouth_open: the inner-lip gap in model units (inter-ocular distances); None draws it from the data.
    """
    model = load_shape_model()
    z = rng.standard_normal(len(model.stddev))
    u = rng.random()
    gain = 1.0 + (expression_scale - 1.0) * model.expression_weight
    shape = model.mean + np.tensordot(z * model.stddev * gain, model.components, 1)
    if mouth_open is None:
        q50 = model.mouth_gap_percentiles[0]
        mouth_open = q50 + expression_scale * (_gap_quantile(model, u) - q50)
    shape = shape + (max(mouth_open, 0.0) - model.mouth_gap_mean) * model.mouth_open_mode
    # The lips never cross: a lower inner-lip point above its upper partner closes onto their midpoint.
    for a, b in ((61, 67), (62, 66), (63, 65)):
        if shape[b, 1] < shape[a, 1]:
            mid = (shape[a] + shape[b]) / 2
            shape[a] = shape[b] = mid
    return shape


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 R with rotated = points @ R.T (yaw, then pitch, then roll; conventions in the module docstring)."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    roll = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
    return roll @ pitch @ yaw


def pose_and_project(
    shape3d: np.ndarray,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float,
    scale: float,
    center_xy: tuple[float, float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (N, 3) model points and project them orthographically.

    Returns (N, 2) image points ``scale * (x, y) + center_xy`` (the model origin lands on ``center_xy``; a
    frontal face has an inter-ocular distance of about ``scale`` pixels) and (N,) depths in pixels, larger
    = nearer the camera.
    """
    rotated = np.asarray(shape3d, dtype=np.float64) @ rotation_matrix(yaw_deg, pitch_deg, roll_deg).T
    points = scale * rotated[..., :2] + np.asarray(center_xy, dtype=np.float64)
    return points, scale * rotated[..., 2]


_MIDLINE = (27, 33, 51, 57, 8)  # nasion, subnasale, upper lip, lower lip, chin: the front of the face


def silhouette_contour(shape3d: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Slide the far-side jaw contour (points 0-16) of a (68, 3) model-frame shape onto the silhouette.

    The 3-D contour points are fixed on the jaw; 2-D annotations (300W, WFLW) put the contour on the
    visible face boundary instead. Each contour point is given a horizontal elliptical arc of face surface
    from the front of the face (the midline at its height, ``_MIDLINE``) to the point; when the point's
    surface faces away from the camera after posing, it moves along the arc to where the surface turns away
    (the arc's silhouette). Points that face the camera (the near side, and all of a frontal face) stay.
    Returns a copy.
    """
    out = np.array(shape3d, dtype=np.float64)
    view = rotation_matrix(yaw_deg, pitch_deg, roll_deg).T @ np.array([0.0, 0.0, 1.0])  # camera, model frame
    if view[2] <= 1e-6:
        return out
    mid_y = out[list(_MIDLINE), 1]
    mid_z = out[list(_MIDLINE), 2]
    order = np.argsort(mid_y)
    cx = (out[0, 0] + out[16, 0]) / 2
    for k in range(17):
        x, y, z = out[k]
        a = x - cx
        b = float(np.interp(y, mid_y[order], mid_z[order])) - z
        if abs(a) < 1e-9 or b <= 1e-9 or view[0] / a >= 0:
            continue  # on the midline, or facing the camera
        phi = np.arctan(-(view[2] / b) / (view[0] / a))
        out[k, 0] = cx + a * np.sin(phi)
        out[k, 2] = z + b * np.cos(phi)
    return out


def _midpoints(p: np.ndarray, prev: np.ndarray, nxt: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Point halfway between ``p`` and ``nxt`` on the uniform Catmull-Rom curve (reversal symmetric)."""
    return (-prev + 9 * p + 9 * nxt - after) / 16


def to_wflw98(points: np.ndarray) -> np.ndarray:
    """Derive the 98-point WFLW layout from (..., 68, D) points (D = 2 or 3) -> (..., 98, D).

    * contour 0-32: the 17 points on the even indices; odd indices halfway along a Catmull-Rom curve (the
      ends extended by reflection);
    * brows: upper edges 33-37 and 42-46 are 17-21 and 22-26; the lower edges 38-41 and 47-50 are offset
      from the upper points 21-18 and 22-25 along the normal towards the eye (and slightly along the brow),
      by amounts proportional to the nose-root-to-chin distance (27-8) fitted to real WFLW shapes;
    * nose 51-59 = 27-35; eyes: 60, 61, 63, 64, 65, 67 = 36-41 (68-75 likewise from 42-47), 62 and 66 (70,
      74) halfway along the closed Catmull-Rom eye curve; mouth 76-95 = 48-67;
    * pupils 96, 97: the centres (means) of the 8-point eye contours 60-67 and 68-75.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-2] != 68:
        raise ValueError(f"to_wflw98 expects (..., 68, D) points, got {p.shape}")
    out = np.empty(p.shape[:-2] + (98, p.shape[-1]))
    out[..., WFLW98_TO_68, :] = p

    contour = p[..., 0:17, :]
    ext = np.concatenate([2 * contour[..., :1, :] - contour[..., 1:2, :], contour,
                          2 * contour[..., -1:, :] - contour[..., -2:-1, :]], -2)
    out[..., 1:33:2, :] = _midpoints(ext[..., 1:17, :], ext[..., 0:16, :], ext[..., 2:18, :], ext[..., 3:19, :])

    for eye, (a, b, c, d, e, f) in ((60, range(36, 42)), (68, range(42, 48))):
        out[..., eye + 2, :] = _midpoints(p[..., b, :], p[..., a, :], p[..., c, :], p[..., d, :])
        out[..., eye + 6, :] = _midpoints(p[..., e, :], p[..., d, :], p[..., f, :], p[..., a, :])
    out[..., 96, :] = out[..., 60:68, :].mean(-2)
    out[..., 97, :] = out[..., 68:76, :].mean(-2)

    # Lower brow edges, all 8 points at once: offset from the upper point along the normal towards the eye
    # (the component of point -> pupil orthogonal to the brow tangent) and along the brow.
    size = np.linalg.norm(p[..., 27, :] - p[..., 8, :], axis=-1)[..., None, None]
    upper = p[..., _BROW_UPPER, :]
    tangent = p[..., _BROW_TAN_A, :] - p[..., _BROW_TAN_B, :]
    tangent = tangent / np.linalg.norm(tangent, axis=-1, keepdims=True)
    to_eye = out[..., _BROW_EYE, :] - upper
    normal = to_eye - (to_eye * tangent).sum(-1, keepdims=True) * tangent
    normal = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    along = p[..., _BROW_INNER, :] - p[..., _BROW_OUTER, :]
    along = along / np.linalg.norm(along, axis=-1, keepdims=True)
    out[..., _BROW_LOWER, :] = upper + size * (_BROW_THICKNESS8[:, None] * normal + _BROW_SHIFT8[:, None] * along)
    return out


def wflw98_to_68(points98: np.ndarray) -> np.ndarray:
    """The standard 68-point subset of (..., 98, D) WFLW points."""
    p = np.asarray(points98)
    if p.shape[-2] != 98:
        raise ValueError(f"wflw98_to_68 expects (..., 98, D) points, got {p.shape}")
    return p[..., WFLW98_TO_68, :]
