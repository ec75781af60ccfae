"""Landmark layouts: what each point set means, as data.

Code never branches on a dataset name or a point count; it asks the layout. A layout says how many points
there are, how they are re-indexed under a horizontal mirror, which points define the inter-ocular and
inter-pupil distances, which polylines form the facial boundaries (LAB / AWing / PropNet / TAB), and GlomFace's
part hierarchy (:class:`Hierarchy`: regions, groups, parts, pairs).

Indices are 0-based. "Left" and "right" follow the image (the subject's right eye is on the image left).
Sources: ../shared/DATASETS.md, IMPLEMENTATION_NOTES.md §4.2 (boundary lists, TAB utilities), §1.2-1.3 and the
official ``Glom_model.py`` (the 68-point hierarchy; the 98, 29 and 19-point hierarchies are our design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

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
class Part:
    """A named set of landmarks: a PHM region (its patches attend to each other in one non-local block) or a WHM
    part (one local shape is regressed for it). ``indices`` are in the order the model reads and writes them."""

    name: str
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Group:
    """A PHM group: the outputs of ``regions``, concatenated in this order, attend to each other in one block."""

    name: str
    regions: tuple[str, ...]


@dataclass(frozen=True)
class PartPair:
    """A WHM pair: two parts whose representations are coupled, constrained by the feature of ``group``.

    In the official code each member has its own pair FC and both read ``[parts[0], parts[1]]`` in this order
    (``region_brow`` and ``region_eye`` both read ``[brow, eye]``); each local-shape head then reads
    ``[own pair feature, partner's pair feature]``, own first.
    """

    parts: tuple[str, str]
    group: str


def _unique(kind: str, names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"hierarchy: {kind} names repeat: {names}")


def _cover(kind: str, indices: list[int], n: int) -> None:
    """Every landmark 0..n-1 exactly once among ``indices`` (one level of the hierarchy)."""
    if sorted(indices) != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        outside = sorted({i for i in indices if not 0 <= i < n})
        raise ValueError(f"hierarchy: the {kind} must hold every landmark 0..{n - 1} exactly once "
                         f"(missing {missing}, repeated {repeated}, outside {outside})")


_Named = TypeVar("_Named", Part, Group)


def _named(kind: str, items: tuple[_Named, ...], name: str) -> _Named:
    """The item called ``name``, or an error that lists the known names."""
    for item in items:
        if item.name == name:
            return item
    raise ValueError(f"hierarchy: no {kind} named {name!r}; known: {[item.name for item in items]}")


def _same_names(kind: str, order: tuple[str, ...], names: list[str]) -> None:
    if sorted(order) != sorted(names):
        raise ValueError(f"hierarchy: {kind} {list(order)} must name each of {names} exactly once")


@dataclass(frozen=True)
class Hierarchy:
    """GlomFace's part hierarchy (paper 000 §3, Fig. 4; IMPLEMENTATION_NOTES §1.2-1.3) as data, so that the PHM
    and WHM are built from it and the model holds no index list.

    PHM (bottom-up): one non-local block per region over its patches; one per group over the concatenated
    region outputs (``Group.regions`` order); one over the whole, the group outputs concatenated in ``groups``
    order (the landmark in each slot: :attr:`whole_sequence`). The whole representation z flattens the group
    slices of that tensor in ``flatten_order`` (:attr:`flatten_slots`).

    WHM (top-down): one group feature per ``groups`` entry (in the official code all of them read [z, h], so a
    pair's ``group`` is a position, not the content of that PHM group); one branch per part (``parts`` order,
    the code's construction order); the pairs; one local shape per part, ``len(indices)`` points. The local
    shapes are concatenated in ``output_order`` and re-indexed to the layout's order by :attr:`output_index`.

    Validated on construction: regions, groups (as unions of regions) and parts each hold every landmark
    0..N-1 exactly once; groups name existing regions; pairs name two different existing parts and an existing
    group, and every part is in exactly one pair; ``output_order`` and ``flatten_order`` are orderings of the
    part and group names.
    """

    regions: tuple[Part, ...]
    groups: tuple[Group, ...]
    parts: tuple[Part, ...]
    pairs: tuple[PartPair, ...]
    output_order: tuple[str, ...]
    flatten_order: tuple[str, ...]

    def __post_init__(self) -> None:
        region_names, group_names = [r.name for r in self.regions], [g.name for g in self.groups]
        part_names = [p.name for p in self.parts]
        for kind, names in (("region", region_names), ("group", group_names), ("part", part_names)):
            _unique(kind, names)
        n = self.num_points
        _cover("regions", [i for r in self.regions for i in r.indices], n)
        unknown = [name for g in self.groups for name in g.regions if name not in region_names]
        if unknown:
            raise ValueError(f"hierarchy: groups name unknown regions {unknown}")
        _cover("groups", [i for g in self.groups for i in self.group_indices(g.name)], n)
        _cover("parts", [i for p in self.parts for i in p.indices], n)
        for pair in self.pairs:
            if len(pair.parts) != 2 or pair.parts[0] == pair.parts[1]:
                raise ValueError(f"hierarchy: a pair must join two different parts, got {pair.parts}")
            if any(name not in part_names for name in pair.parts) or pair.group not in group_names:
                raise ValueError(f"hierarchy: pair {pair} names an unknown part or group")
        _same_names("pairs", tuple(name for pair in self.pairs for name in pair.parts), part_names)
        _same_names("output_order", self.output_order, part_names)
        _same_names("flatten_order", self.flatten_order, group_names)

    @property
    def num_points(self) -> int:
        """N, the number of landmarks (and patches) the hierarchy covers."""
        return sum(len(r.indices) for r in self.regions)

    def region(self, name: str) -> Part:
        """The region called ``name``."""
        return _named("region", self.regions, name)

    def part(self, name: str) -> Part:
        """The WHM part called ``name``."""
        return _named("part", self.parts, name)

    def group_indices(self, name: str) -> tuple[int, ...]:
        """The landmarks of group ``name`` in the order of its concatenated region outputs."""
        group = _named("group", self.groups, name)
        return tuple(i for region in group.regions for i in self.region(region).indices)

    def pair_of(self, part: str) -> PartPair:
        """The pair that part ``part`` belongs to (its partner and the group feature it reads)."""
        self.part(part)
        return next(pair for pair in self.pairs if part in pair.parts)

    @property
    def whole_sequence(self) -> tuple[int, ...]:
        """The landmark in each slot of the whole-level tensor (the group outputs concatenated). For the official
        68 points: 0-16, 17-26, 36-47, 27-35, 48-67. The code adds the CNN features in natural order to this
        tensor slot by slot (IMPLEMENTATION_NOTES §1.2, "code quirk"); ``features[:, whole_sequence]`` is the
        residual that matches each slot's landmark."""
        return tuple(i for g in self.groups for i in self.group_indices(g.name))

    @property
    def flatten_slots(self) -> tuple[int, ...]:
        """Slots of the whole-level tensor in the order z flattens them (each group's slice, ``flatten_order``)."""
        start, slots = 0, {}
        for g in self.groups:
            size = len(self.group_indices(g.name))
            slots[g.name] = tuple(range(start, start + size))
            start += size
        return tuple(s for name in self.flatten_order for s in slots[name])

    @property
    def output_index(self) -> tuple[int, ...]:
        """Gather index from the concatenated local shapes (``output_order``) to the layout's landmark order:
        ``offsets = torch.cat(local_shapes, 1)[:, output_index]``. The identity for the official 68 points."""
        concatenated = [i for name in self.output_order for i in self.part(name).indices]
        return tuple(int(j) for j in np.argsort(concatenated))


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
        hierarchy: GlomFace's part hierarchy over the K points (None where none is defined; ask for it with
            :meth:`require_hierarchy`).
    """

    name: str
    num_points: int
    flip_permutation: tuple[int, ...]
    outer_eye_corners: tuple[int, int]
    pupil_groups: tuple[tuple[int, ...], tuple[int, ...]]
    boundaries: tuple[Boundary, ...] = field(default=())
    eyes: tuple[int, ...] = ()
    hierarchy: Hierarchy | None = None

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
        if self.hierarchy is not None and self.hierarchy.num_points != self.num_points:
            raise ValueError(f"{self.name}: the hierarchy covers {self.hierarchy.num_points} points, "
                             f"the layout has {self.num_points}")

    def require_hierarchy(self) -> Hierarchy:
        """The part hierarchy, for models built from it (GlomFace); a clear error where the layout has none,
        rather than a failure deep inside the model."""
        if self.hierarchy is None:
            raise ValueError(f"{self.name}: the layout defines no part hierarchy, which GlomFace needs; give the "
                             "LandmarkLayout a Hierarchy (landmarks/layouts.py)")
        return self.hierarchy

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


def _parts(*specs: tuple[str, tuple[int, ...]]) -> tuple[Part, ...]:
    return tuple(Part(name, indices) for name, indices in specs)


def _glomface_hierarchy(
    jaw_left: tuple[int, ...], jaw_right: tuple[int, ...], brows: tuple[int, ...], nose: tuple[int, ...],
    eyes: tuple[int, ...], mouth: tuple[int, ...],
) -> Hierarchy:
    """The official GlomFace hierarchy (``Glom_model.py``; IMPLEMENTATION_NOTES §1.2-1.3) over six index sets.

    PHM regions R0-R5 = jaw_left, jaw_right, brows, nose, eyes, mouth (the code's ``region0``-``region5``);
    groups g1 = R0 + R1, g2 = R2 + R4, g3 = R3 + R5; z flattens the g2, g3, g1 slices. WHM parts in the code's
    order brow, eye, nose, mouth, cheek_left, cheek_right (the same partition as the regions); pairs (brow, eye)
    reading g1, (nose, mouth) g2, (cheek_left, cheek_right) g3; local shapes concatenated as cheek_left,
    cheek_right, brow, nose, eye, mouth.
    """
    return Hierarchy(
        regions=_parts(("jaw_left", jaw_left), ("jaw_right", jaw_right), ("brows", brows), ("nose", nose),
                       ("eyes", eyes), ("mouth", mouth)),
        groups=(Group("g1", ("jaw_left", "jaw_right")), Group("g2", ("brows", "eyes")),
                Group("g3", ("nose", "mouth"))),
        parts=_parts(("brow", brows), ("eye", eyes), ("nose", nose), ("mouth", mouth), ("cheek_left", jaw_left),
                     ("cheek_right", jaw_right)),
        pairs=(PartPair(("brow", "eye"), "g1"), PartPair(("nose", "mouth"), "g2"),
               PartPair(("cheek_left", "cheek_right"), "g3")),
        output_order=("cheek_left", "cheek_right", "brow", "nose", "eye", "mouth"),
        flatten_order=("g2", "g3", "g1"),
    )


def _halves_hierarchy(
    brow_left: tuple[int, ...], brow_right: tuple[int, ...], eye_left: tuple[int, ...],
    eye_right: tuple[int, ...], nose: tuple[int, ...], mouth: tuple[int, ...],
) -> Hierarchy:
    """OUR hierarchy for sparse layouts without a jaw contour (29 and 19 points; no GlomFace code exists).

    Six regions, three groups and three pairs, as the official model, so the same network shapes apply; the
    missing contour is replaced by a left / right split of the upper face: g1 = left brow + left eye, g2 = right
    brow + right eye, g3 = nose + mouth (with the chin). Parts = regions; each pair reads the group that holds
    it: (brow_left, eye_left) g1, (brow_right, eye_right) g2, (nose, mouth) g3. The hierarchy is mirror
    symmetric: the flip permutation maps each left region onto its right one and nose, mouth onto themselves.
    """
    regions = _parts(("brow_left", brow_left), ("brow_right", brow_right), ("eye_left", eye_left),
                     ("eye_right", eye_right), ("nose", nose), ("mouth", mouth))
    return Hierarchy(
        regions=regions,
        groups=(Group("g1", ("brow_left", "eye_left")), Group("g2", ("brow_right", "eye_right")),
                Group("g3", ("nose", "mouth"))),
        parts=regions,
        pairs=(PartPair(("brow_left", "eye_left"), "g1"), PartPair(("brow_right", "eye_right"), "g2"),
               PartPair(("nose", "mouth"), "g3")),
        output_order=tuple(r.name for r in regions),
        flatten_order=("g1", "g2", "g3"),
    )


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
    # The official code's hierarchy (IMPLEMENTATION_NOTES §1.2-1.3).
    hierarchy=_glomface_hierarchy(_r(0, 8), _r(9, 16), _r(17, 26), _r(27, 35), _r(36, 47), _r(48, 67)),
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
    # OUR design (no official 98-point hierarchy): the official structure over the analogous 98-point sets
    # (IMPLEMENTATION_NOTES §1.2): jaw halves 0-16 (with the chin, 16) and 17-32, brows 33-50, nose 51-59, eyes
    # 60-75 with the pupils 96, 97, mouth 76-95. The local shapes no longer concatenate into the layout's order
    # (the pupils come after the mouth), so the model re-indexes them with ``output_index``.
    hierarchy=_glomface_hierarchy(_r(0, 16), _r(17, 32), _r(33, 50), _r(51, 59), _r(60, 75) + (96, 97),
                                  _r(76, 95)),
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
    # OUR design: the brow, eye (with its pupil) and side of point 8 (outer_eye_corners[0], image-left by this
    # module's convention) vs its mirror; nose; mouth with the chin (the only contour point).
    hierarchy=_halves_hierarchy((0, 2, 4, 5), (1, 3, 6, 7), (8, 10, 12, 13, 16), (9, 11, 14, 15, 17), _r(18, 21),
                                _r(22, 28)),
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
    # OUR design, as COFW's: brow and eye (corners and centre) per side, nose, mouth with the chin.
    hierarchy=_halves_hierarchy(_r(0, 2), _r(3, 5), _r(6, 8), _r(9, 11), _r(12, 14), _r(15, 18)),
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
