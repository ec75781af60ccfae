"""Landmark layouts: what each point set means, as data.

Code never branches on a dataset name or a point count; it asks the layout. A layout says how many points
there are, how they are re-indexed under a horizontal mirror, which points define the inter-ocular and
inter-pupil distances, and which polylines form the facial boundaries (LAB / AWing / PropNet / TAB).

Indices are 0-based. "Left" and "right" follow the image (the subject's right eye is on the image left).
Sources: ../shared/DATASETS.md, IMPLEMENTATION_NOTES.md §4.2 (boundary lists, TAB utilities).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

Points = torch.Tensor | np.ndarray
# Named point sets a layout answers (``LandmarkLayout.point_set``): every point, or the eye-contour points (the
# "12 eye anchors" of the 68-point layout that PWC's Figures 9, 10 and 14 score on their own).
POINT_SETS = ("all", "eyes")


@dataclass(frozen=True)
class Boundary:
    """One facial boundary: a polyline through landmark indices (a closed loop repeats its first index)."""

    name: str
    indices: tuple[int, ...]


@dataclass(frozen=True)
class LandmarkLayout:
    """A landmark convention (68-point 300W, 98-point WFLW, 29-point COFW, 19-point AFLW).

    Attributes:
        name: short identifier, also used in configs and records.
        num_points: K.
        flip_permutation: ``flip_permutation[k]`` is the index whose mirrored position point k takes after a
            horizontal flip: ``flipped[k] = mirror(points[flip_permutation[k]])``. An involution.
        outer_eye_corners: the two points whose distance is the inter-ocular normaliser.
        pupil_groups: two groups of indices; each pupil is the mean of its group (a single index where the
            layout annotates the pupil, the six eye-contour points for 68-point faces).
        boundaries: facial boundary polylines (empty where no paper defines them).
        eyes: the points on the two eye contours (not the pupils), for metrics over the eye region alone.
    """

    name: str
    num_points: int
    flip_permutation: tuple[int, ...]
    outer_eye_corners: tuple[int, int]
    pupil_groups: tuple[tuple[int, ...], tuple[int, ...]]
    boundaries: tuple[Boundary, ...] = field(default=())
    eyes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        perm = self.flip_permutation
        if sorted(perm) != list(range(self.num_points)):
            raise ValueError(f"{self.name}: flip_permutation is not a permutation of 0..{self.num_points - 1}")
        if any(perm[perm[k]] != k for k in range(self.num_points)):
            raise ValueError(f"{self.name}: flip_permutation is not an involution")
        used = [*self.outer_eye_corners, *self.pupil_groups[0], *self.pupil_groups[1]]
        used += [i for b in self.boundaries for i in b.indices] + list(self.eyes)
        if any(not 0 <= i < self.num_points for i in used):
            raise ValueError(f"{self.name}: an index is outside 0..{self.num_points - 1}")

    def point_set(self, name: str) -> tuple[int, ...]:
        """The indices of the named point set of :data:`POINT_SETS` ("all" or "eyes"), so that callers name the
        region they score and the layout says which points it is."""
        if name not in POINT_SETS:
            raise ValueError(f"unknown point set {name!r}; known: {list(POINT_SETS)}")
        points = tuple(range(self.num_points)) if name == "all" else self.eyes
        if not points:
            raise ValueError(f"{self.name}: the layout names no {name!r} points")
        return points

    def pupil_centres(self, points: Points) -> Points:
        """(..., K, 2) → (..., 2, 2): the two pupil centres (image-left first)."""
        left = points[..., list(self.pupil_groups[0]), :].mean(-2)
        right = points[..., list(self.pupil_groups[1]), :].mean(-2)
        stack = torch.stack if isinstance(points, torch.Tensor) else np.stack
        return stack([left, right], -2)

    def flip_points(self, points: Points, width: float) -> Points:
        """Mirror (..., K, 2) points of an image ``width`` pixels wide and re-index them.

        Pixel centres sit at integer coordinates, so the mirror of x is ``width - 1 - x``.
        """
        flipped = points[..., list(self.flip_permutation), :]
        flipped = flipped.clone() if isinstance(flipped, torch.Tensor) else flipped.copy()
        flipped[..., 0] = width - 1 - flipped[..., 0]
        return flipped


def _r(a: int, b: int) -> tuple[int, ...]:
    """Inclusive range a..b, ascending or descending (the notation of the issue and the notes)."""
    step = 1 if b >= a else -1
    return tuple(range(a, b + step, step))


def _lines(*specs: tuple[str, tuple[int, ...]]) -> tuple[Boundary, ...]:
    return tuple(Boundary(name, indices) for name, indices in specs)


W300_68 = LandmarkLayout(
    name="300w_68",
    num_points=68,
    flip_permutation=(
        _r(16, 0) + _r(26, 17) + (27, 28, 29, 30) + _r(35, 31)
        + (45, 44, 43, 42, 47, 46) + (39, 38, 37, 36, 41, 40)
        + _r(54, 48) + _r(59, 55) + _r(64, 60) + (67, 66, 65)
    ),
    outer_eye_corners=(36, 45),
    pupil_groups=(_r(36, 41), _r(42, 47)),
    eyes=_r(36, 47),
    # 13 lines of the TAB utilities (IMPLEMENTATION_NOTES §4.2).
    boundaries=_lines(
        ("contour", _r(0, 16)),
        ("brow_left", _r(17, 21)),
        ("brow_right", _r(22, 26)),
        ("nose_bridge", _r(27, 30)),
        ("nose_bottom", _r(31, 35)),
        ("eye_left_upper", _r(36, 39)),
        ("eye_left_lower", (39, 40, 41, 36)),
        ("eye_right_upper", _r(42, 45)),
        ("eye_right_lower", (45, 46, 47, 42)),
        ("outer_lip_upper", _r(48, 54)),
        ("outer_lip_lower", _r(54, 59) + (48,)),
        ("inner_lip_upper", _r(60, 64)),
        ("inner_lip_lower", _r(64, 67) + (60,)),
    ),
)

WFLW_98 = LandmarkLayout(
    name="wflw_98",
    num_points=98,
    flip_permutation=(
        _r(32, 0)
        + (46, 45, 44, 43, 42, 50, 49, 48, 47) + (37, 36, 35, 34, 33, 41, 40, 39, 38)
        + (51, 52, 53, 54) + _r(59, 55)
        + (72, 71, 70, 69, 68, 75, 74, 73) + (64, 63, 62, 61, 60, 67, 66, 65)
        + _r(82, 76) + _r(87, 83) + _r(92, 88) + (95, 94, 93) + (97, 96)
    ),
    outer_eye_corners=(60, 72),
    pupil_groups=((96,), (97,)),
    eyes=_r(60, 75),
    # 15 lines of TAB / PropNet Fig. 2 (IMPLEMENTATION_NOTES §4.2).
    boundaries=_lines(
        ("contour", _r(0, 32)),
        ("brow_left_upper", _r(33, 37)),
        ("brow_left_lower", _r(38, 41) + (33,)),
        ("brow_right_upper", _r(42, 46)),
        ("brow_right_lower", _r(46, 50)),
        ("nose_bridge", _r(51, 54)),
        ("nose_bottom", _r(55, 59)),
        ("outer_lip_upper", _r(76, 82)),
        ("outer_lip_lower", _r(82, 87) + (76,)),
        ("inner_lip_upper", _r(88, 92)),
        ("inner_lip_lower", _r(92, 95) + (88,)),
        ("eye_left_upper", _r(60, 64)),
        ("eye_left_lower", _r(64, 67) + (60,)),
        ("eye_right_upper", _r(68, 72)),
        ("eye_right_lower", _r(72, 75) + (68,)),
    ),
)

# COFW: brows 0,4,2,5 / 1,6,3,7; eyes 8,12,10,13 / 9,14,11,15; pupils 16, 17; nose 18-21; mouth 22-27;
# chin 28 (DATASETS.md). No paper of the five defines COFW boundaries.
COFW_29 = LandmarkLayout(
    name="cofw_29",
    num_points=29,
    flip_permutation=(1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21,
                      23, 22, 24, 25, 26, 27, 28),
    outer_eye_corners=(8, 9),
    pupil_groups=((16,), (17,)),
    eyes=_r(8, 15),
)

# AFLW 19: brows 0-5, eyes 6-11 (outer corner, centre, inner corner per eye), nose 12-14, mouth 15-17,
# chin 18 (the 21-point AFLW markup without the ears). AFLW is normalised by face size in every paper; the
# eye indices are given so that inter-ocular / inter-pupil NMEs can still be computed.
AFLW_19 = LandmarkLayout(
    name="aflw_19",
    num_points=19,
    flip_permutation=(5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18),
    outer_eye_corners=(6, 11),
    pupil_groups=((7,), (10,)),
    eyes=(6, 8, 9, 11),  # the eye corners (7 and 10 are the pupils)
)

LAYOUTS: dict[str, LandmarkLayout] = {layout.name: layout for layout in (W300_68, WFLW_98, COFW_29, AFLW_19)}


def get_layout(layout: str | LandmarkLayout) -> LandmarkLayout:
    """The layout itself, or the one registered under that name (configs and checkpoints store names)."""
    if isinstance(layout, LandmarkLayout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown landmark layout {layout!r}; known: {sorted(LAYOUTS)}") from None
