"""Layouts (flip permutations on real faces) and crop geometry (round trips, warps)."""

import cv2
import numpy as np
import pytest

from landmarks.geometry import (
    apply_affine,
    invert_affine,
    matrix_scale,
    points_bbox,
    square_crop_matrix,
    warp_to_crop,
)
from landmarks.layouts import AFLW_19, COFW_29, LAYOUTS, W300_68, WFLW_98, LandmarkLayout, get_layout


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_flip_permutation_is_an_involution(layout):
    perm = np.array(layout.flip_permutation)
    assert len(perm) == layout.num_points
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_points))
    # Flipping twice returns the original points exactly.
    pts = np.random.default_rng(0).uniform(0, 100, (layout.num_points, 2))
    np.testing.assert_allclose(layout.flip_points(layout.flip_points(pts, 120), 120), pts)
    # Mirror pairs swap the outer eye corners and the pupils.
    a, b = layout.outer_eye_corners
    assert perm[a] == b
    assert sorted(perm[list(layout.pupil_groups[0])]) == sorted(layout.pupil_groups[1])


def test_layout_counts_and_boundaries():
    assert (W300_68.num_points, WFLW_98.num_points, COFW_29.num_points, AFLW_19.num_points) == (68, 98, 29, 19)
    assert len(W300_68.boundaries) == 13 and len(WFLW_98.boundaries) == 15
    # Every WFLW point except the pupils lies on a boundary; every 68-point one does.
    assert {i for b in WFLW_98.boundaries for i in b.indices} == set(range(96))
    assert {i for b in W300_68.boundaries for i in b.indices} == set(range(68))
    # A boundary's mirror is a boundary: the flip maps the set of polylines onto itself.
    for layout in (W300_68, WFLW_98):
        lines = {frozenset(b.indices) for b in layout.boundaries}
        assert {frozenset(layout.flip_permutation[i] for i in line) for line in lines} == lines


def test_layout_rejects_bad_permutations():
    with pytest.raises(ValueError, match="involution"):
        LandmarkLayout("bad", 3, (1, 2, 0), (0, 1), ((0,), (1,)))
    with pytest.raises(ValueError, match="permutation"):
        LandmarkLayout("bad", 3, (0, 0, 1), (0, 1), ((0,), (1,)))
    with pytest.raises(ValueError, match="unknown landmark layout"):
        get_layout("nope")


def similarity_align(src, dst):
    """Least-squares similarity (rotation, scale, shift) of src onto dst (Umeyama, no reflection)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, d]) @ vt
    scale = (s * [1, d]).sum() / (a**2).sum()
    return scale * a @ r.T + md


def test_flip_maps_real_frontal_faces_onto_themselves(aflw2000_shapes):
    """A near-frontal face is nearly symmetric: its mirrored, re-indexed shape aligns onto it (a similarity
    removes roll and offset), while a mirror without re-indexing does not."""
    shapes, yaw = aflw2000_shapes
    frontal = shapes[np.abs(yaw) < 5][:50]
    assert len(frontal) >= 20
    io = np.linalg.norm(frontal[:, 36] - frontal[:, 45], axis=-1)
    errs, wrong = [], []
    for shape, d in zip(frontal, io, strict=False):
        flipped = similarity_align(W300_68.flip_points(shape, 450), shape)
        errs.append(np.linalg.norm(flipped - shape, axis=-1).mean() / d)
        mirrored = shape.copy()
        mirrored[:, 0] = 449 - mirrored[:, 0]
        wrong.append(np.linalg.norm(similarity_align(mirrored, shape) - shape, axis=-1).mean() / d)
    assert np.median(errs) < 0.05
    assert np.median(wrong) > 0.3
    # Semantics survive the flip: the image-left eye corner stays left of the image-right one.
    flipped = W300_68.flip_points(frontal, 450)
    assert (flipped[:, 36, 0] < flipped[:, 45, 0]).all() and (flipped[:, 0, 0] < flipped[:, 16, 0]).all()


def test_crop_matrix_maps_box_to_crop_and_back():
    box = np.array([30.0, 50.0, 130.0, 170.0])  # 100 x 120, centre (80, 110)
    m = square_crop_matrix(box, 1.25, 64)
    assert matrix_scale(m) == pytest.approx(64 / 150)
    np.testing.assert_allclose(apply_affine(np.array([[80.0, 110.0]]), m), [[31.5, 31.5]])
    # The square's edges (side 150 around the centre) map to -0.5 and 63.5.
    np.testing.assert_allclose(apply_affine(np.array([[5.0, 35.0], [155.0, 185.0]]), m), [[-0.5, -0.5], [63.5, 63.5]])
    pts = np.random.default_rng(0).uniform(0, 200, (10, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, m), invert_affine(m)), pts, atol=1e-9)


def test_crop_rotation_turns_counter_clockwise_on_screen():
    m = square_crop_matrix(np.array([0.0, 0.0, 100.0, 100.0]), 1.0, 100, rotation_deg=90)
    # A point right of the centre ends up above it (smaller y) after a counter-clockwise turn.
    out = apply_affine(np.array([[90.0, 50.0]]), m)[0]
    assert out[1] < 49.5 - 30 and abs(out[0] - 49.5) < 1e-9


def test_points_bbox_torch_and_numpy():
    import torch
    pts = np.array([[[1.0, 5.0], [3.0, -2.0], [2.0, 4.0]]])
    np.testing.assert_allclose(points_bbox(pts), [[1, -2, 3, 5]])
    np.testing.assert_allclose(points_bbox(torch.from_numpy(pts)).numpy(), [[1, -2, 3, 5]])


@pytest.mark.parametrize("side", [120, 900])  # 900 px → 64 px takes the area-reduction path
def test_warp_agrees_with_point_mapping(side):
    """Draw a blob in the original image, warp the image: the blob's centroid lands where the matrix maps it."""
    rng = np.random.default_rng(1)
    size = 64
    image = np.zeros((side + 40, side + 20), np.float32)
    centre = np.array([side * 0.43 + 0.3, side * 0.61 - 0.2])
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    sigma = side / 40
    image[:] = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    box = np.array([10.0, 20.0, 10 + side * 0.9, 20 + side * 0.95])
    m = square_crop_matrix(box, 1.1, size, rotation_deg=rng.uniform(-30, 30))
    crop = warp_to_crop(image, m, size)
    w = crop / crop.sum()
    got = np.array([(w * np.arange(size)[None, :]).sum(), (w * np.arange(size)[:, None]).sum()])
    np.testing.assert_allclose(got, apply_affine(centre[None], m)[0], atol=0.05)


def test_warp_keeps_dtype_and_channels():
    image = (np.random.default_rng(2).random((50, 70, 3)) * 255).astype(np.uint8)
    out = warp_to_crop(image, square_crop_matrix(np.array([0, 0, 60, 40.0]), 1.2, 32), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert cv2.__version__  # OpenCV does the warp
