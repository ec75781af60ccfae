"""GlomFace's part hierarchy as layout data (landmarks/layouts.py) and shape-indexed patches (components/patches.py).

The 68-point lists are typed from IMPLEMENTATION_NOTES §1.2-1.3 and ``Glom_model.py`` (region0..5 slices, group
concatenations, the WHM pairs and the ``offset_global`` concatenation), not taken from the code under test. Patches
are checked against hand-placed pixels, image slices, intensity centroids and a numpy bilinear loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from landmarks.layouts import LAYOUTS, W300_68, WFLW_98, Group, Hierarchy, LandmarkLayout, Part, PartPair
from lightning_modules.components.patches import extract_patches

WITH_HIERARCHY = [layout for layout in LAYOUTS.values() if layout.hierarchy is not None]


def _range(a: int, b: int) -> list[int]:
    return list(range(a, b + 1))


# ---------------------------------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize("layout", WITH_HIERARCHY, ids=[layout.name for layout in WITH_HIERARCHY])
def test_every_landmark_once_per_level(layout: LandmarkLayout) -> None:
    h = layout.require_hierarchy()
    everyone = Counter(range(layout.num_points))
    regions = {r.name: r.indices for r in h.regions}
    assert Counter(i for r in h.regions for i in r.indices) == everyone
    assert Counter(i for g in h.groups for name in g.regions for i in regions[name]) == everyone
    assert Counter(i for p in h.parts for i in p.indices) == everyone
    assert Counter(h.whole_sequence) == everyone
    assert sorted(h.flatten_slots) == list(range(layout.num_points))
    # Every part sits in exactly one pair, and the pair's group exists.
    assert Counter(name for pair in h.pairs for name in pair.parts) == Counter(p.name for p in h.parts)
    assert {pair.group for pair in h.pairs} <= {g.name for g in h.groups}


@pytest.mark.parametrize("layout", WITH_HIERARCHY, ids=[layout.name for layout in WITH_HIERARCHY])
def test_output_index_puts_local_shapes_in_layout_order(layout: LandmarkLayout) -> None:
    """Local shapes whose values are their landmark numbers, concatenated in output_order and gathered with
    output_index, must read 0..K-1."""
    h = layout.require_hierarchy()
    local = [np.array(h.part(name).indices, dtype=float) for name in h.output_order]
    offsets = np.concatenate(local)[list(h.output_index)]
    np.testing.assert_array_equal(offsets, np.arange(layout.num_points))


def test_68_point_hierarchy_is_the_official_one() -> None:
    h = W300_68.require_hierarchy()
    # Regions R0-R5 (level 3), in the code's region0..region5 order.
    assert [list(r.indices) for r in h.regions] == [
        _range(0, 8), _range(9, 16), _range(17, 26), _range(27, 35), _range(36, 47), _range(48, 67)]
    r = [reg.name for reg in h.regions]
    # Groups G1 = R0 + R1, G2 = R2 + R4, G3 = R3 + R5 (level 4).
    assert [list(g.regions) for g in h.groups] == [[r[0], r[1]], [r[2], r[4]], [r[3], r[5]]]
    g = [grp.name for grp in h.groups]
    # Whole level: the group outputs concatenated; z flattens slots 17-38, 39-67, 0-16 (ims_t, ims_m, ims_d).
    assert list(h.whole_sequence) == _range(0, 16) + _range(17, 26) + _range(36, 47) + _range(27, 35) + _range(48, 67)
    assert list(h.flatten_slots) == _range(17, 38) + _range(39, 67) + _range(0, 16)
    # WHM parts, in the code's order, with their local-shape sizes n = 10, 12, 9, 20, 9, 8.
    parts = {p.name: list(p.indices) for p in h.parts}
    assert list(parts) == ["brow", "eye", "nose", "mouth", "cheek_left", "cheek_right"]
    assert parts == {"brow": _range(17, 26), "eye": _range(36, 47), "nose": _range(27, 35),
                     "mouth": _range(48, 67), "cheek_left": _range(0, 8), "cheek_right": _range(9, 16)}
    # Pairs: (brow, eye) reads res_group1, (nose, mouth) res_group2, (cheek_left, cheek_right) res_group3.
    assert [(pair.parts, pair.group) for pair in h.pairs] == [
        (("brow", "eye"), g[0]), (("nose", "mouth"), g[1]), (("cheek_left", "cheek_right"), g[2])]
    assert h.pair_of("eye").parts == ("brow", "eye") and h.pair_of("cheek_right").group == g[2]
    # offset_global = concat(cheek_left, cheek_right, brows, nose, eyes, mouth) is already the 68-point order.
    assert h.output_order == ("cheek_left", "cheek_right", "brow", "nose", "eye", "mouth")
    assert list(h.output_index) == list(range(68))


def test_98_point_hierarchy_follows_the_notes() -> None:
    h = WFLW_98.require_hierarchy()
    assert [sorted(r.indices) for r in h.regions] == [
        _range(0, 16), _range(17, 32), _range(33, 50), _range(51, 59), _range(60, 75) + [96, 97], _range(76, 95)]
    assert [len(h.part(name).indices) for name in h.output_order] == [17, 16, 18, 9, 18, 20]


@pytest.mark.parametrize("name", ["cofw_29", "aflw_19"])
def test_our_sparse_hierarchies_are_mirror_symmetric(name: str) -> None:
    layout = LAYOUTS[name]
    regions = {frozenset(r.indices) for r in layout.require_hierarchy().regions}
    assert {frozenset(layout.flip_permutation[i] for i in region) for region in regions} == regions


def _tiny(**changes: object) -> Hierarchy:
    """A valid 6-point hierarchy with one field changed."""
    fields = dict(
        regions=(Part("a", (0, 1)), Part("b", (2, 3)), Part("c", (4, 5))),
        groups=(Group("g1", ("a", "b")), Group("g2", ("c",))),
        parts=(Part("p", (0, 1, 2)), Part("q", (3, 4, 5))),
        pairs=(PartPair(("p", "q"), "g1"),),
        output_order=("p", "q"),
        flatten_order=("g2", "g1"),
    )
    fields.update(changes)
    return Hierarchy(**fields)


def test_tiny_hierarchy_derivations() -> None:
    h = _tiny(output_order=("q", "p"))
    assert h.num_points == 6 and h.whole_sequence == (0, 1, 2, 3, 4, 5)
    assert h.flatten_slots == (4, 5, 0, 1, 2, 3)
    assert h.output_index == (3, 4, 5, 0, 1, 2)  # q's three points come first in the concatenation
    with pytest.raises(ValueError, match="no part named 'z'; known: \\['p', 'q'\\]"):
        h.pair_of("z")


@pytest.mark.parametrize(("changes", "message"), [
    ({"regions": (Part("a", (0, 1)), Part("b", (1, 3)), Part("c", (4, 5)))}, "regions must hold"),  # 1 twice
    ({"regions": (Part("a", (0, 1)), Part("b", (2, 3)), Part("c", (4, 6)))}, "regions must hold"),  # 6 > 5
    ({"regions": (Part("a", (0, 1)), Part("a", (2, 3)), Part("c", (4, 5)))}, "region names repeat"),
    ({"groups": (Group("g1", ("a", "x")), Group("g2", ("c",)))}, "unknown regions"),
    ({"groups": (Group("g1", ("a", "b")), Group("g2", ("b", "c")))}, "groups must hold"),  # b twice
    ({"groups": (Group("g1", ("a",)), Group("g2", ("c",)))}, "groups must hold"),  # b missing
    ({"parts": (Part("p", (0, 1, 2)), Part("q", (3, 4)))}, "parts must hold"),
    ({"pairs": (PartPair(("p", "r"), "g1"),)}, "unknown part or group"),
    ({"pairs": (PartPair(("p", "q"), "g9"),)}, "unknown part or group"),
    ({"pairs": (PartPair(("p", "p"), "g1"),)}, "two different parts"),
    ({"pairs": ()}, "pairs"),  # parts left without a partner
    ({"output_order": ("p",)}, "output_order"),
    ({"flatten_order": ("g1", "g1")}, "flatten_order"),
])
def test_broken_hierarchies_are_rejected(changes: dict, message: str) -> None:
    _tiny()  # the base is valid
    with pytest.raises(ValueError, match=message):
        _tiny(**changes)


def test_layout_checks_its_hierarchy_and_names_a_missing_one() -> None:
    with pytest.raises(ValueError, match="covers 6 points, the layout has 68"):
        replace(W300_68, hierarchy=_tiny())
    bare = replace(W300_68, name="bare", hierarchy=None)
    with pytest.raises(ValueError, match="bare: the layout defines no part hierarchy"):
        bare.require_hierarchy()


# ------------------------------------------------------------------------------------------------------ patches


def _bilinear(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """(C, H, W) image at (x, y), pixel centres at integers, zero outside: a plain loop over the 4 neighbours."""
    _, h, w = image.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * image[:, yy, xx]
    return out


def test_patches_match_a_bilinear_loop_inside_and_across_the_border() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 2, 12, 15))
    points = np.array([[[0.3, 0.7], [7.25, 5.6], [14.2, 11.9]], [[-2.4, 3.1], [6.0, 6.0], [10.5, -1.2]]])
    size = 5
    patches = extract_patches(torch.from_numpy(images), torch.from_numpy(points), size).numpy()
    assert patches.shape == (2, 3, 2, size, size)
    for b in range(2):
        for k in range(3):
            x, y = points[b, k]
            for r in range(size):
                for c in range(size):
                    ref = _bilinear(images[b], x + c - (size - 1) / 2, y + r - (size - 1) / 2)
                    np.testing.assert_allclose(patches[b, k, :, r, c], ref, atol=1e-12)


@pytest.mark.parametrize("size", [7, 8])
def test_pixel_aligned_points_copy_image_slices(size: int) -> None:
    """Odd sizes at integer points, even sizes at integer + 0.5: the patch is the image slice itself."""
    images = torch.rand(2, 3, 30, 26, dtype=torch.float64)
    corners = torch.tensor([[[4, 5], [10, 20], [15, 3]], [[0, 0], [18, 22], [7, 9]]])  # (x, y) of patch pixel 0
    points = corners + (size - 1) / 2
    patches = extract_patches(images, points, size)
    for b in range(2):
        for k in range(3):
            x, y = corners[b, k].tolist()
            torch.testing.assert_close(patches[b, k], images[b, :, y:y + size, x:x + size], rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [9, 10, 40])
def test_patches_are_centred_on_their_points(size: int) -> None:
    """A Gaussian dot (sigma 1.2) drawn at a sub-pixel point, and a single bright pixel at an integer point: the
    intensity centroid of each patch lies at the patch centre (S - 1) / 2."""
    h = w = 64
    centres = np.array([[20.3, 31.7], [40.62, 25.15], [31.5, 44.05], [27.0, 19.0]])
    ys, xs = np.mgrid[0:h, 0:w]
    images = np.zeros((len(centres), 1, h, w))
    for i, (cx, cy) in enumerate(centres[:3]):
        images[i, 0] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.2**2))
    images[3, 0, 19, 27] = 1.0  # single pixel at x = 27, y = 19
    patches = extract_patches(torch.from_numpy(images), torch.from_numpy(centres[:, None, :]), size).numpy()
    for i in range(len(centres)):
        patch = patches[i, 0, 0]
        total = sum(patch[r, c] for r in range(size) for c in range(size))
        row = sum(r * patch[r, c] for r in range(size) for c in range(size)) / total
        col = sum(c * patch[r, c] for r in range(size) for c in range(size)) / total
        assert abs(col - (size - 1) / 2) < 0.05 and abs(row - (size - 1) / 2) < 0.05, (i, col, row)


def test_points_near_or_past_the_border_give_zero_padded_patches() -> None:
    images = torch.rand(1, 2, 20, 20, dtype=torch.float64) + 1.0  # strictly positive inside the image
    points = torch.tensor([[[1.0, 2.0], [50.0, -30.0]]], dtype=torch.float64)
    patches = extract_patches(images, points, 7)
    near = patches[0, 0]  # patch pixel (r, c) reads image (x = c - 2, y = r - 1)
    assert (near[:, :1, :] == 0).all() and (near[:, :, :2] == 0).all()
    torch.testing.assert_close(near[:, 1:, 2:], images[0, :, 0:6, 0:5], rtol=0, atol=1e-12)
    assert (patches[0, 1] == 0).all()


def test_gradient_reaches_the_image_not_the_points() -> None:
    images = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    points = torch.tensor([[[5.0, 6.0], [7.0, 6.0]]], dtype=torch.float64, requires_grad=True)
    extract_patches(images, points, 3).sum().backward()
    assert points.grad is None
    coverage = np.zeros((16, 16))  # how many patch pixels copy each image pixel
    for x, y in ((5, 6), (7, 6)):
        coverage[y - 1:y + 2, x - 1:x + 2] += 1
    np.testing.assert_allclose(images.grad[0, 0].numpy(), coverage, atol=1e-12)


def test_patch_shape_and_bad_points() -> None:
    patches = extract_patches(torch.zeros(2, 3, 50, 50), torch.full((2, 68, 2), 25.0))
    assert patches.shape == (2, 68, 3, 40, 40)
    with pytest.raises(ValueError, match="points must be"):
        extract_patches(torch.zeros(2, 3, 50, 50), torch.zeros(3, 68, 2))
