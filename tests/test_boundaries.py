"""Boundary maps (``encode_boundaries``, ``HeatmapCodec.boundary_maps``) on real 300W and WFLW shapes.

References, each computed another way than the code under test:
- a per-pixel float64 loop that measures every segment by cases (before the start: distance to the start; past
  the end: to the end; else |cross product| / length), per boundary and for all boundaries together;
- scipy's exact Euclidean distance transform of the polylines rasterised on a grid F = 8 times finer. Its
  distances err by up to (sqrt(2)/2 + 1/8) / F px (rounding each sample to the fine grid, plus half the sample
  spacing along the line), so it is compared with that tolerance, on distances read back from the maps;
- hand-worked values (truncation, points outside the map, degenerate segments) and exact integer geometry
  (which pixel centres lie on a line through integer points).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from datamodules.w300 import read_pts
from landmarks.heatmaps import HeatmapCodec, encode_boundaries
from landmarks.layouts import W300_68, WFLW_98, Boundary, LandmarkLayout

DATA = Path(__file__).parent / "data"
SIZE = (56, 64)  # (h, w): not square, so a swapped x / y cannot pass


def fit_to_map(shape: np.ndarray, span: float, offset: tuple[float, float]) -> np.ndarray:
    """A real shape scaled so that its larger side spans ``span`` heatmap pixels, centred on the map + offset."""
    lo, hi = shape.min(0), shape.max(0)
    centre = np.array([(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2]) + offset
    return (shape - (lo + hi) / 2) * (span / (hi - lo).max()) + centre


def real_shapes() -> dict[str, tuple[LandmarkLayout, np.ndarray]]:
    """(4, K, 2) real shapes per layout, in heatmap pixels of a SIZE map, at assorted sub-pixel offsets."""
    w300 = [read_pts(p) - 1 for p in sorted((DATA / "300w_pts").glob("*.pts"))]  # .pts are 1-based
    coco = json.loads((DATA / "wflw_coco" / "test_wflw.json").read_text())
    wflw = [np.asarray(a["keypoints"], np.float64).reshape(98, 3)[:, :2] for a in coco["annotations"]]
    offsets = [(0.0, 0.0), (0.31, -0.27), (-0.45, 0.13), (0.5, 0.5)]
    return {layout.name: (layout, np.stack([fit_to_map(s, 44.0, o) for s, o in zip(shapes, offsets, strict=True)]))
            for layout, shapes in ((W300_68, w300), (WFLW_98, wflw))}


SHAPES = real_shapes()


def segments(shape: np.ndarray, indices: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    path = list(indices) if len(indices) > 1 else [indices[0]] * 2
    return shape[path[:-1]], shape[path[1:]]


def segment_distances(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from point p to each segment a[s] -> b[s], by cases."""
    u, ap = b - a, p - a
    length2, dot = (u * u).sum(1), (ap * u).sum(1)
    cross = np.abs(ap[:, 0] * u[:, 1] - ap[:, 1] * u[:, 0])
    perpendicular = cross / np.sqrt(np.where(length2 > 0, length2, 1.0))
    to_a, to_b = np.hypot(*ap.T), np.hypot(*(p - b).T)
    return np.where((length2 == 0) | (dot <= 0), to_a, np.where(dot >= length2, to_b, perpendicular))


def reference_distances(shape: np.ndarray, boundaries: tuple[Boundary, ...], size=SIZE) -> np.ndarray:
    """(M + 1, h, w) float64: distance from every pixel centre to each polyline, then to all of them."""
    parts = [segments(shape, b.indices) for b in boundaries]
    a, b = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    starts = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    out = np.empty((len(boundaries) + 1, *size))
    for j in range(size[0]):
        for i in range(size[1]):
            d = segment_distances(np.array([i, j], np.float64), a, b)
            out[:-1, j, i] = np.minimum.reduceat(d, starts)
            out[-1, j, i] = d.min()
    return out


def gaussian(d: np.ndarray, sigma: float, truncate: float | None) -> np.ndarray:
    value = np.exp(-(d**2) / (2 * sigma**2))
    return value if truncate is None else np.where(d <= truncate * sigma, value, 0.0)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """Per layout: (4, M + 1, h, w) reference distances of the four real shapes."""
    return {name: np.stack([reference_distances(s, layout.boundaries) for s in shapes])
            for name, (layout, shapes) in SHAPES.items()}


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("sigma, truncate", [(1.0, 3.0), (1.5, 3.0), (1.5, None), (2.0, 2.0)])
def test_maps_match_the_per_pixel_reference_on_real_shapes(reference, name, sigma, truncate):
    layout, shapes = SHAPES[name]
    expected = gaussian(reference[name], sigma, truncate)
    maps = encode_boundaries(torch.from_numpy(shapes), layout.boundaries, SIZE, sigma, truncate, union=True)
    assert maps.shape == (4, len(layout.boundaries) + 1, *SIZE) and maps.dtype == torch.float64
    np.testing.assert_allclose(maps.numpy(), expected, rtol=0, atol=1e-12)
    single = encode_boundaries(torch.from_numpy(shapes).float(), layout.boundaries, SIZE, sigma, truncate)
    assert single.dtype == torch.float32 and single.shape[1] == len(layout.boundaries)  # no union channel
    np.testing.assert_allclose(single.numpy(), expected[:, :-1], rtol=0, atol=2e-5)


def test_layouts_have_the_boundary_counts_of_the_papers():
    assert len(W300_68.boundaries) == 13 and len(WFLW_98.boundaries) == 15  # notes §4.2; + union = 14 / 16


def edt_distances(shape: np.ndarray, boundaries: tuple[Boundary, ...], fine: int = 8) -> np.ndarray:
    """(M + 1, h, w): distance transform of the polylines drawn on a grid ``fine`` times finer than the map.

    Fine node (k, l) sits at (x, y) = (l / fine, k / fine), so map pixel [j, i] is fine node [j * fine, i * fine].
    Each segment is sampled at <= 1 / (4 fine) spacing and every sample marks its nearest fine node."""
    h, w = SIZE
    drawn = np.ones((len(boundaries) + 1, (h - 1) * fine + 1, (w - 1) * fine + 1), bool)
    for m, boundary in enumerate(boundaries):
        for a, b in zip(*segments(shape, boundary.indices), strict=True):
            n = int(math.ceil(np.hypot(*(b - a)) * fine * 4)) + 1
            samples = a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)
            col, row = np.rint(samples * fine).astype(int).T
            drawn[m, row, col] = drawn[-1, row, col] = False
    return np.stack([distance_transform_edt(d)[::fine, ::fine] / fine for d in drawn])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_distances_match_a_supersampled_distance_transform(name):
    """Distances read back from untruncated maps (sigma 8: no underflow across the map) vs scipy's EDT."""
    layout, shapes = SHAPES[name]
    fine, sigma = 8, 8.0
    bound = (math.sqrt(2) / 2 + 1 / 8) / fine  # rasterisation error of the reference, see the module docstring
    maps = encode_boundaries(torch.from_numpy(shapes), layout.boundaries, SIZE, sigma, truncate=None, union=True)
    distances = np.sqrt(-2 * sigma**2 * np.log(maps.numpy()))
    for shape, ours in zip(shapes, distances, strict=True):
        theirs = edt_distances(shape, layout.boundaries, fine)
        error = np.abs(ours - theirs)
        assert error.max() <= bound, error.max()
        assert error.mean() < bound / 2  # the bound is a worst case; typical errors are well inside it


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_map_peaks_on_its_polyline_and_is_below_one_elsewhere(name):
    """Integer shapes: the pixels where a map is exactly 1 are exactly the pixel centres on its segments."""
    layout, shapes = SHAPES[name]
    shapes = np.rint(shapes)  # rounded: some consecutive points coincide (zero-length segments)
    maps = encode_boundaries(torch.from_numpy(shapes), layout.boundaries, SIZE, 1.5).numpy()
    jj, ii = np.mgrid[: SIZE[0], : SIZE[1]]
    for shape, per_shape in zip(shapes.astype(np.int64), maps, strict=True):
        for boundary, values in zip(layout.boundaries, per_shape, strict=True):
            on_line = np.zeros(SIZE, bool)
            for a, b in zip(*segments(shape, boundary.indices), strict=True):
                u, px, py = b - a, ii - a[0], jj - a[1]
                cross, dot = px * u[1] - py * u[0], px * u[0] + py * u[1]
                if u @ u == 0:  # a repeated point: the point itself
                    on_line |= (px == 0) & (py == 0)
                else:  # exact in integers
                    on_line |= (cross == 0) & (dot >= 0) & (dot <= u @ u)
            np.testing.assert_array_equal(values == 1.0, on_line)
            assert (values[shape[list(boundary.indices), 1], shape[list(boundary.indices), 0]] == 1.0).all()
            assert values[~on_line].max() < 1.0


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_union_is_the_max_over_boundaries(name):
    """The union channel is also checked against the distance to all segments at once in the reference test."""
    layout, shapes = SHAPES[name]
    maps = encode_boundaries(torch.from_numpy(shapes), layout.boundaries, SIZE, 1.0, union=True).numpy()
    np.testing.assert_array_equal(maps[:, -1], maps[:, :-1].max(1))


def line(points: list[tuple[float, float]], indices=None) -> tuple[torch.Tensor, tuple[Boundary, ...]]:
    pts = torch.tensor([points], dtype=torch.float64)
    return pts, (Boundary("line", tuple(range(len(points))) if indices is None else indices),)


def test_truncation_is_euclidean_at_truncate_sigma():
    """Hand-worked: the segment (10, 20) -> (30, 20), sigma 1, cut at 3."""
    pts, boundaries = line([(10.0, 20.0), (30.0, 20.0)])
    cut = encode_boundaries(pts, boundaries, (40, 40), 1.0, truncate=3.0)[0, 0]
    full = encode_boundaries(pts, boundaries, (40, 40), 1.0, truncate=None)[0, 0]
    assert cut[20, 20] == 1.0 and cut[20, 10] == 1.0 and cut[20, 30] == 1.0
    assert cut[23, 20] == pytest.approx(math.exp(-4.5), rel=1e-12)  # d = 3: kept
    assert cut[24, 20] == 0 and full[24, 20] == pytest.approx(math.exp(-8), rel=1e-12)  # d = 4
    assert cut[20, 33] == pytest.approx(math.exp(-4.5), rel=1e-12) and cut[20, 34] == 0  # past the end
    assert cut[22, 32] == pytest.approx(math.exp(-4), rel=1e-12)  # d = sqrt(8) < 3
    assert cut[21, 33] == 0 and full[21, 33] == pytest.approx(math.exp(-5), rel=1e-12)  # d = sqrt(10) > 3
    assert (cut > 0).sum() == 21 * 7 + 2 * (5 + 5 + 1)  # the band + beyond each end 5, 5, 1 pixels (dx = 1, 2, 3)


def test_degenerate_segments():
    """A repeated point is a zero-length segment: no NaN; a one-point boundary is the point's Gaussian."""
    pts = torch.tensor([[[10.3, 12.6], [30.2, 40.1], [50.0, 12.0]]], dtype=torch.float64)
    boundaries = (Boundary("point", (0,)), Boundary("point twice", (1, 1)),
                  Boundary("repeat", (0, 1, 1, 2)), Boundary("plain", (0, 1, 2)))
    maps = encode_boundaries(pts, boundaries, (48, 64), 2.0, truncate=None)[0]
    assert torch.isfinite(maps).all()
    y, x = torch.meshgrid(torch.arange(48.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64),
                          indexing="ij")
    for m, (u, v) in ((0, pts[0, 0]), (1, pts[0, 1])):
        expected = torch.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * 2.0**2))
        torch.testing.assert_close(maps[m], expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(maps[2], maps[3], rtol=0, atol=1e-14)
    collapsed = torch.tensor([[[20.0, 20.0]] * 3], dtype=torch.float64)  # every point of a polyline the same
    assert torch.isfinite(encode_boundaries(collapsed, (Boundary("c", (0, 1, 2, 0)),), (40, 40), 1.0)).all()


def test_points_outside_the_map():
    sigma = 1.5  # cut at 4.5
    far, _ = line([(-20.0, -20.0), (-10.0, -30.0)])
    crossing, _ = line([(-20.0, 10.0), (90.0, 10.0)])
    beside, _ = line([(-2.0, -50.0), (-2.0, 100.0)])
    pts = torch.cat([far, crossing, beside])  # a batch of three, one line each
    maps = encode_boundaries(pts, (Boundary("line", (0, 1)),), (32, 40), sigma)[:, 0].numpy()
    assert (maps[0] == 0).all()
    assert (maps[1, 10] == 1).all() and maps[1, 12] == pytest.approx(np.full(40, math.exp(-4 / 4.5)), rel=1e-12)
    assert (maps[1, 15] == 0).all()  # d = 5
    assert maps[2, :, 0] == pytest.approx(np.full(32, math.exp(-4 / 4.5)), rel=1e-12)
    assert maps[2, :, 2] == pytest.approx(np.full(32, math.exp(-16 / 4.5)), rel=1e-12)
    assert (maps[2, :, 3:] == 0).all()  # d >= 5
    for item, shape in enumerate(pts.numpy()):  # and all of it as the reference says
        d = np.array([[segment_distances(np.array([i, j], float), shape[:1], shape[1:])[0] for i in range(40)]
                      for j in range(32)])
        np.testing.assert_allclose(maps[item], gaussian(d, sigma, 3.0), rtol=0, atol=1e-12)


def test_codec_maps_crop_pixels_at_its_stride_with_its_sigma(reference):
    """Crop pixel x is heatmap pixel (x + 0.5) / stride - 0.5 (worked by hand here, not by the codec)."""
    layout, shapes = SHAPES["300w_68"]
    crop = (torch.from_numpy(shapes) + 0.5) * 4 - 0.5  # the shapes in crop pixels of a stride-4 codec
    codec = HeatmapCodec(stride=4, sigma=1.5)
    maps = codec.boundary_maps(crop, layout.boundaries, SIZE, union=True)
    np.testing.assert_allclose(maps.numpy(), gaussian(reference["300w_68"], 1.5, 3.0), atol=1e-12)
    other = codec.boundary_maps(crop, layout.boundaries, SIZE, sigma=1.0, truncate=None)
    np.testing.assert_allclose(other.numpy(), gaussian(reference["300w_68"][:, :-1], 1.0, None), atol=1e-12)


def test_refuses_what_it_cannot_draw():
    pts = torch.zeros(1, 5, 2)
    with pytest.raises(TypeError):
        encode_boundaries(pts.long(), (Boundary("a", (0, 1)),), (8, 8), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        encode_boundaries(pts, (), (8, 8), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        encode_boundaries(pts, (Boundary("empty", ()),), (8, 8), 1.0)
    with pytest.raises(ValueError, match="outside 0..4"):
        encode_boundaries(pts, (Boundary("a", (0, 5)),), (8, 8), 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    layout, shapes = SHAPES["wflw_98"]
    pts = torch.from_numpy(shapes).float()
    cpu = encode_boundaries(pts, layout.boundaries, SIZE, 1.5, union=True)
    gpu = encode_boundaries(pts.cuda(), layout.boundaries, SIZE, 1.5, union=True)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
