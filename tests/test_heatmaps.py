"""Heatmap encoding / decoding against numpy references and the stride convention."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from landmarks.heatmaps import (
    argmax_2d,
    crop_to_heatmap,
    decode_argmax,
    decode_soft_argmax,
    encode_gaussian,
    heatmap_to_crop,
)


def test_encode_matches_pointwise_formula():
    pts = torch.tensor([[[10.3, 20.7], [0.0, 63.0], [-5.0, 30.2]]], dtype=torch.float64)
    for sigma in (1.0, 1.5, 3.0):
        maps = encode_gaussian(pts, (64, 48), sigma).numpy()
        assert maps.shape == (1, 3, 64, 48)
        for k, (u, v) in enumerate(pts[0].tolist()):
            for j, i in [(20, 10), (21, 10), (0, 0), (63, 47), (30, 2)]:
                ref = np.exp(-((i - u) ** 2 + (j - v) ** 2) / (2 * sigma**2))
                assert maps[0, k, j, i] == pytest.approx(ref, rel=1e-12, abs=1e-300)


def test_encode_truncates_beyond_window():
    pts = torch.tensor([[[20.0, 20.0]]])
    maps = encode_gaussian(pts, (40, 40), 1.5, truncate=3.0)[0, 0]
    assert maps[20, 24] > 0 and maps[20, 25] == 0  # 4 <= 4.5 < 5
    assert maps[20, 20] == 1.0


def test_encode_runs_on_the_points_device_and_dtype():
    pts = torch.rand(2, 5, 2, dtype=torch.float32) * 30
    maps = encode_gaussian(pts, (32, 32), 1.0)
    assert maps.device == pts.device and maps.dtype == torch.float32 and maps.shape == (2, 5, 32, 32)


def test_soft_argmax_round_trip_subpixel():
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(rng.uniform(8, 56, (4, 30, 2)))
    for sigma in (1.0, 1.5, 2.0):
        decoded = decode_soft_argmax(encode_gaussian(pts, (64, 64), sigma))
        assert (decoded - pts).abs().max() < 0.1
    # softmax(beta * map) is unbiased when the map is a log-density (what a softmax-trained network outputs).
    log_density = torch.log(encode_gaussian(pts, (64, 64), 1.5)) / 2.0
    assert (decode_soft_argmax(log_density, beta=2.0) - pts).abs().max() < 0.1


def argmax_quarter_reference(hm):
    """Direct port of the AWing / HRNet rule (0-based, shift per axis where both neighbours exist)."""
    b, k, h, w = hm.shape
    out = np.zeros((b, k, 2))
    for bi in range(b):
        for ki in range(k):
            m = hm[bi, ki]
            y, x = np.unravel_index(np.argmax(m), m.shape)
            px, py = float(x), float(y)
            if 0 < x < w - 1:
                px += 0.25 * np.sign(m[y, x + 1] - m[y, x - 1])
            if 0 < y < h - 1:
                py += 0.25 * np.sign(m[y + 1, x] - m[y - 1, x])
            out[bi, ki] = px, py
    return out


def test_decode_argmax_matches_reference_on_random_maps():
    hm = torch.from_numpy(np.random.default_rng(1).random((3, 7, 16, 12)))
    hm[0, 0, 0, 5] = 5  # border maxima keep their integer coordinate on that axis
    hm[0, 1, 7, 11] = 5
    np.testing.assert_allclose(decode_argmax(hm).numpy(), argmax_quarter_reference(hm.numpy()))


def test_decode_argmax_error_within_a_quarter_pixel_for_gaussians():
    pts = torch.from_numpy(np.random.default_rng(2).uniform(2, 30, (2, 20, 2)))
    err = (decode_argmax(encode_gaussian(pts, (32, 32), 1.5)) - pts).abs()
    assert err.max() <= 0.25 + 1e-9
    # argmax alone can be off by 0.5; the shift halves the worst case.
    assert (argmax_2d(encode_gaussian(pts, (32, 32), 1.5)) - pts).abs().max() > 0.3


def test_stride_mapping_matches_average_pooling_of_a_crop_blob():
    """Render a blob at crop resolution, average-pool it by the stride: its centroid is crop_to_heatmap(p)."""
    crop_pts = torch.tensor([[[100.3, 77.6], [40.0, 200.25]]], dtype=torch.float64)
    for stride in (2, 4, 8):
        blob = encode_gaussian(crop_pts, (256, 256), 6.0)
        pooled = F.avg_pool2d(blob, stride)
        centroid = decode_soft_argmax(pooled)
        assert (centroid - crop_to_heatmap(crop_pts, stride)).abs().max() < 1e-3
    np.testing.assert_allclose(heatmap_to_crop(crop_to_heatmap(crop_pts, 4), 4), crop_pts)
    # The centre of the first 4x4 block of crop pixels (1.5) is heatmap pixel 0.
    assert crop_to_heatmap(torch.tensor(1.5), 4).item() == 0.0
