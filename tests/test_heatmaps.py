"""Heatmap encoding / decoding against numpy references and the stride convention."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from landmarks.heatmaps import (
    HeatmapCodec,
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


# --- HeatmapCodec: one model's heatmap choices -----------------------------------------------------------------


def test_codec_encodes_in_crop_pixels_with_the_pixel_area_convention():
    codec = HeatmapCodec(stride=4, sigma=1.5, truncate=3.0)
    points = torch.tensor([[[10.0, 21.5], [40.2, 3.0]]])  # crop pixels of a 64 px crop
    maps = codec.encode(points, (16, 16))
    ys, xs = np.mgrid[0:16, 0:16]
    for k, (x, y) in enumerate(points[0].tolist()):
        u, v = (x + 0.5) / 4 - 0.5, (y + 0.5) / 4 - 0.5  # written out, not via crop_to_heatmap
        expected = np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * 1.5**2))
        expected[(np.abs(xs - u) > 4.5) | (np.abs(ys - v) > 4.5)] = 0
        np.testing.assert_allclose(maps[0, k].numpy(), expected, atol=1e-6)


def test_codec_decoders_on_a_hand_worked_map():
    """Peak at heatmap pixel (x=5, y=7); right neighbour higher than left, upper higher than lower; stride 4."""
    maps = torch.zeros(1, 1, 12, 12)
    maps[0, 0, 7, 5], maps[0, 0, 7, 6], maps[0, 0, 7, 4], maps[0, 0, 6, 5], maps[0, 0, 8, 5] = 1, .5, .2, .4, .1
    to_crop = lambda x, y: [(x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5]  # noqa: E731
    integer = HeatmapCodec(decoder="argmax_integer").decode(maps)
    quarter = HeatmapCodec(decoder="argmax_quarter").decode(maps)
    soft = HeatmapCodec(decoder="soft_argmax").decode(maps)
    assert integer[0, 0].tolist() == to_crop(5, 7)
    assert quarter[0, 0].tolist() == to_crop(5.25, 6.75)
    total = 1 + .5 + .2 + .4 + .1
    expected_soft = to_crop((5 * 1 + 6 * .5 + 4 * .2 + 5 * .4 + 5 * .1) / total, (7 * 1.7 + 6 * .4 + 8 * .1) / total)
    torch.testing.assert_close(soft[0, 0], torch.tensor(expected_soft))


@pytest.mark.parametrize("reading", ["isotropic", "eq20", "eq18"])
@pytest.mark.parametrize("frame", ["window", "heatmap"])
def test_codec_sdt_round_trip_is_exact_on_its_own_targets(reading, frame):
    codec = HeatmapCodec(stride=4, sigma=3.0, decoder="sdt", window=9, sdt_reading=reading, sdt_frame=frame)
    points = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(3)) * 160 + 48
    maps = codec.encode(points, (64, 64))
    decoded, info = codec.sdt(maps)
    assert not info.fallback.any()
    torch.testing.assert_close(codec.to_crop(decoded), points, atol=1e-3, rtol=0)
    torch.testing.assert_close(codec.decode(maps), codec.to_crop(decoded))
    assert (HeatmapCodec(stride=4, sigma=3.0).decode(maps) - points).abs().max() > 0.5  # argmax + 1/4 is not


def test_codec_refuses_bad_settings_and_names_the_old_decoder():
    with pytest.raises(ValueError, match="'argmax' is now 'argmax_quarter'"):
        HeatmapCodec(decoder="argmax")
    with pytest.raises(ValueError, match="odd"):
        HeatmapCodec(window=8)
    with pytest.raises(ValueError, match="positive"):
        HeatmapCodec(sigma=0)
    with pytest.raises(ValueError, match="sdt_reading 'eq18'"):
        HeatmapCodec(decoder="sdt_unconstrained")
    with pytest.raises(ValueError, match="sdt_reading must be one of"):
        HeatmapCodec(sdt_reading="eq19")
