"""MHHN's heatmap subpixel regression: the SDT decoder and the JS / KL / fine-detection / SDL losses.

The reference is an independent numpy implementation of the paper's formulation: one landmark at a time, the
weighted log fit of eqs. 13-14 with explicit loops over the window (origin at the argmax pixel), solved by
numpy's SVD least squares (not QR), then eq. 18 or eq. 20 read directly.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from landmarks.heatmaps import decode_argmax, decode_sdt, encode_gaussian, fit_gaussian_surface
from landmarks.losses import (
    fine_detection_loss,
    js_divergence,
    kl_divergence,
    subpixel_detection_loss,
)


def sdt_reference(heatmap: np.ndarray, window: int, sigma: float, constrained: bool, eps: float = 1e-6):
    """One (h, w) map → (x, y), or None when the fit has no peak (eq. 18) or eq. 20 has no estimate."""
    h, w = heatmap.shape
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    a, b = [], []
    half = window // 2
    for y in range(row - half, row + half + 1):
        for x in range(col - half, col + half + 1):
            if 0 <= x < w and 0 <= y < h:
                f = max(heatmap[y, x], eps)
                dx, dy = x - col, y - row  # the window frame: origin at the argmax pixel
                a.append(f * math.log(f))
                b.append([f, f * dx, f * dy, f * dx * dx, f * dy * dy])
    c = np.linalg.lstsq(np.array(b), np.array(a), rcond=None)[0]
    if not constrained:
        if c[3] >= 0 or c[4] >= 0:
            return None
        return col - c[1] / (2 * c[3]), row - c[2] / (2 * c[4])
    if c[0] < 0 and c[1] == c[2] == 0:
        return None
    s = sigma**2 if c[0] >= 0 else -2 * c[0] / (c[1] ** 2 + c[2] ** 2)
    return col + s * c[1], row + s * c[2]


def sdt(maps: torch.Tensor, window: int = 9, sigma: float = 3.0, constrained: bool = True):
    """``decode_sdt`` with the reading the reference implements: eq. 20 (constrained, window frame) or eq. 18;
    returns (points, fallback mask)."""
    points, info = decode_sdt(maps, window, sigma, "eq20" if constrained else "eq18", return_info=True)
    return points, info.fallback


def gaussian_maps(points: torch.Tensor, size: int, sigma, amplitude=1.0) -> torch.Tensor:
    """Anisotropic Gaussians: sigma (sx, sy) per landmark, computed directly (not with encode_gaussian)."""
    y, x = torch.meshgrid(torch.arange(size, dtype=points.dtype), torch.arange(size, dtype=points.dtype),
                          indexing="ij")
    sx, sy = sigma
    u, v = points[..., 0, None, None], points[..., 1, None, None]
    return amplitude * torch.exp(-(x - u) ** 2 / (2 * sx**2) - (y - v) ** 2 / (2 * sy**2))


@pytest.fixture
def centres() -> torch.Tensor:
    """Sub-pixel centres all over a 64x64 map, with some on the borders, in corners and just outside."""
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 30, 2, generator=g, dtype=torch.float64) * 63
    pts[0, :6] = torch.tensor([[0.2, 31.6], [63.3, 12.1], [17.4, -0.3], [40.45, 63.49], [0.1, 0.4], [62.8, 63.2]])
    return pts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constrained_sdt_recovers_sub_pixel_centres_including_borders(centres, dtype):
    maps = encode_gaussian(centres, (64, 64), 3.0).to(dtype)  # G = 1, sigma = sigma*: eq. 20's premise
    points, fallback = sdt(maps, window=9, sigma=3.0)
    assert not fallback.any()
    assert (points.double() - centres).abs().max() < 1e-3
    argmax_error = (decode_argmax(maps).double() - centres).abs().max()
    assert argmax_error > 0.1  # the test would notice an SDT that only returned the argmax


def test_unconstrained_sdt_recovers_any_amplitude_and_anisotropic_sigma(centres):
    maps = gaussian_maps(centres, 64, (2.2, 3.7), amplitude=0.37)
    points = sdt(maps, window=9, constrained=False)[0]
    assert (points - centres).abs().max() < 1e-6
    points = sdt(maps.float(), window=15, constrained=False)[0]
    assert (points.double() - centres).abs().max() < 1e-3


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("window", [9, 15])
def test_sdt_matches_numpy_least_squares_on_imperfect_maps(centres, constrained, window):
    """Amplitudes 0.8-1.5, sigma != sigma* (anisotropic for eq. 18; eq. 20 assumes sx = sy), noisy: the paper's
    estimate, not the truth, is compared; eq. 20 has no usable estimate where G < 1 (both must agree on that)."""
    g = torch.Generator().manual_seed(1)
    amplitude = 0.8 + 0.7 * torch.rand(2, 30, 1, 1, generator=g, dtype=torch.float64)
    maps = gaussian_maps(centres, 64, (3.4, 3.4) if constrained else (2.6, 3.4), amplitude=amplitude)
    maps = maps + 0.01 * torch.randn(maps.shape, generator=g, dtype=maps.dtype)
    points, fallback = sdt(maps, window=window, sigma=3.0, constrained=constrained)
    checked = 0
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            ref = sdt_reference(maps[b, k].numpy(), window, 3.0, constrained)
            peak = np.unravel_index(np.argmax(maps[b, k].numpy()), (64, 64))[::-1]
            if ref is None or max(abs(ref[0] - peak[0]), abs(ref[1] - peak[1])) > 1.0:
                assert fallback[b, k]  # the reference also finds no usable peak: argmax + 1/4 instead
                assert torch.equal(points[b, k], decode_argmax(maps)[b, k])
                continue
            assert not fallback[b, k]
            np.testing.assert_allclose(points[b, k].numpy(), ref, atol=1e-3)
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("reading", ["eq20", "isotropic", "eq18"])
@pytest.mark.parametrize("kind", ["flat", "zeros", "negative", "noise", "two peaks"])
def test_sdt_falls_back_to_quarter_pixel_argmax_without_nan(kind, reading):
    g = torch.Generator().manual_seed(2)
    shape = (2, 5, 32, 32)
    maps = {
        "flat": torch.full(shape, 0.4),
        "zeros": torch.zeros(shape),
        "negative": -torch.rand(shape, generator=g),
        "noise": torch.rand(shape, generator=g),
        "two peaks": encode_gaussian(torch.tensor([[[10.0, 10.0]]]), (32, 32), 1.0).expand(shape)
        + encode_gaussian(torch.tensor([[[13.0, 10.0]]]), (32, 32), 1.0),
    }[kind]
    points, info = decode_sdt(maps, reading=reading, return_info=True)
    fallback = info.fallback
    assert torch.isfinite(points).all()
    if kind != "two peaks" and (kind != "noise" or reading == "eq20"):
        assert fallback.all()
    assert torch.equal(points[fallback], decode_argmax(maps)[fallback])
    if kind in ("two peaks", "noise"):  # a local fit may be found, never further than max_offset away
        assert ((points - decode_argmax(maps)).abs() <= 1.25).all()


def test_sdt_runs_in_bf16_and_batched_equals_one_map_at_a_time(centres):
    maps = encode_gaussian(centres, (64, 64), 3.0).float()
    batched = decode_sdt(maps)
    single = torch.stack([decode_sdt(maps[b : b + 1, k : k + 1])[0, 0] for b in range(2) for k in range(30)])
    assert torch.allclose(batched.reshape(-1, 2), single, atol=1e-5)
    bf16 = decode_sdt(maps.bfloat16())
    # bf16 map values carry 0.4% rounding: a few hundredths of a pixel, still far below argmax + 1/4
    assert bf16.dtype == torch.float32 and (bf16 - centres.float()).abs().max() < 0.1


def test_window_argument_is_checked():
    with pytest.raises(ValueError, match="odd"):
        fit_gaussian_surface(torch.rand(1, 1, 16, 16), window=8)


# --- losses ---------------------------------------------------------------------------------------------------


def _normalise(m: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    m = np.maximum(m, eps)
    return m / m.sum()


def test_js_and_kl_divergences_match_a_direct_numpy_formula():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)  # negative values are clamped
    target = encode_gaussian(torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 7, (8, 8), 1.5)
    js, kl = js_divergence(pred, target), kl_divergence(pred, target)
    for b in range(2):
        for k in range(3):
            p, q = _normalise(pred[b, k].numpy()).ravel(), _normalise(target[b, k].numpy()).ravel()
            m = (p + q) / 2
            ref_js = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m, strict=True)) + 0.5 * sum(
                qi * math.log(qi / mi) for qi, mi in zip(q, m, strict=True))
            ref_kl = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
            assert js[b, k].item() == pytest.approx(ref_js, rel=1e-9)
            assert kl[b, k].item() == pytest.approx(ref_kl, rel=1e-9)


def test_js_divergence_closed_forms():
    a = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    a[..., 0, 0] = 1
    b = torch.zeros_like(a)
    b[..., 1, 1] = 1
    assert js_divergence(a, a).item() == pytest.approx(0, abs=1e-6)
    assert js_divergence(a, b).item() == pytest.approx(math.log(2), rel=1e-6)  # disjoint supports
    assert js_divergence(3 * a, a).item() == pytest.approx(0, abs=1e-6)  # scale-free: maps are normalised


@pytest.mark.parametrize("amplitude, noise", [(1.2, 0.01), (1.0, 0.0)])  # eq. 20's first case, then its second
def test_fine_detection_loss_gradients_pass_gradcheck(amplitude, noise):
    g = torch.Generator().manual_seed(4)
    points = torch.tensor([[[6.3, 7.6], [9.2, 5.4]]], dtype=torch.float64)
    maps = gaussian_maps(points + 0.27, 16, (2.0, 2.0), amplitude=amplitude)  # no argmax ties
    maps = (maps + noise * torch.rand(maps.shape, generator=g, dtype=torch.float64)).requires_grad_()
    for constrained in (True, False):
        assert not sdt(maps, 5, 2.0, constrained)[1].any()
        assert torch.autograd.gradcheck(lambda m, c=constrained: fine_detection_loss(
            m, points, 2.0, window=5, reading="eq20" if c else "eq18"), (maps,))


def test_fine_detection_loss_is_the_squared_sdt_error_and_drives_maps_toward_the_target():
    target = torch.tensor([[[20.3, 30.7]]], dtype=torch.float64)
    maps = encode_gaussian(target + torch.tensor([0.4, -0.3], dtype=torch.float64), (64, 64), 3.0)
    loss = fine_detection_loss(maps, target, 3.0)
    assert loss.item() == pytest.approx(0.4**2 + 0.3**2, rel=1e-6)
    maps.requires_grad_()
    fine_detection_loss(maps, target, 3.0).sum().backward()
    stepped = maps - 1e-3 * maps.grad
    assert fine_detection_loss(stepped, target, 3.0).item() < loss.item()


def test_fine_detection_loss_has_finite_gradients_on_flat_maps():
    maps = torch.full((1, 2, 16, 16), 0.3, dtype=torch.float64, requires_grad=True)
    fine_detection_loss(maps, torch.full((1, 2, 2), 8.0, dtype=torch.float64), 3.0).sum().backward()
    assert torch.isfinite(maps.grad).all() and not maps.grad.any()  # fallback: a constant


def test_subpixel_detection_loss_combines_js_and_weighted_fdl():
    g = torch.Generator().manual_seed(5)
    points = torch.rand(3, 4, 2, generator=g) * 40 + 10
    target = encode_gaussian(points, (64, 64), 3.0)
    pred = encode_gaussian(points + 0.5, (64, 64), 3.0)
    terms = subpixel_detection_loss(pred, target, points, 3.0, weight=1 / 16)
    js = js_divergence(pred, target).sum(-1).mean()
    fdl = ((decode_sdt(pred) - points) ** 2).sum((-1, -2)).mean()
    assert terms["js"].item() == pytest.approx(js.item(), rel=1e-6)
    assert terms["fdl"].item() == pytest.approx(fdl.item(), rel=1e-5) and terms["fdl"].item() == pytest.approx(
        4 * 0.5, rel=1e-3)  # every landmark 0.5 px off in x and y: 0.5 px^2 each, 4 per image
    assert terms["loss"].item() == pytest.approx(js.item() + fdl.item() / 16, rel=1e-5)


def test_fine_detection_gate_keeps_the_value_and_drops_gradients_of_misplaced_peaks():
    truth = torch.tensor([[[20.0, 20.0], [40.0, 30.0]]], dtype=torch.float64)
    peaks = truth + torch.tensor([[0.4, -0.3], [6.2, 0.1]], dtype=torch.float64)  # the second is 6 px off
    maps = encode_gaussian(peaks, (64, 64), 3.0).requires_grad_()
    free = fine_detection_loss(maps, truth, 3.0)
    gated = fine_detection_loss(maps, truth, 3.0, gate=4)
    assert torch.equal(free, gated)
    (grad_free,) = torch.autograd.grad(free[0, 1], maps)
    (grad_gated,) = torch.autograd.grad(gated[0, 1], maps, retain_graph=True)
    assert grad_free.abs().sum() > 0 and not grad_gated.any()
    (grad_near,) = torch.autograd.grad(gated[0, 0], maps)
    assert grad_near.abs().sum() > 0


# --- peak heights other than 1 (issue: eq. 20 read literally breaks near G = 1) ----------------------------------


def argmax_quarter_error(maps: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    return (decode_argmax(maps).double() - centres).norm(dim=-1)


@pytest.mark.parametrize("height", [0.9, 0.99, 1.01, 1.2])
def test_default_sdt_is_exact_at_any_peak_height_where_eq20_is_not(height):
    """At sigma = sigma* the default reading recovers every centre for heights around 1; the literal eq. 20 (window
    frame) errs or falls back at 0.9 / 0.99 / 1.01 (its case 2 divides by a small number), as measured."""
    g = torch.Generator().manual_seed(6)
    centres = 10 + torch.rand(1, 200, 2, generator=g, dtype=torch.float64) * 44
    maps = gaussian_maps(centres, 64, (3.0, 3.0), amplitude=height)
    points, info = decode_sdt(maps, 9, 3.0, return_info=True)
    assert not info.fallback.any() and (points - centres).abs().max() < 1e-6
    torch.testing.assert_close(info.peak, torch.full_like(info.peak, height))
    literal = sdt(maps, 9, 3.0, constrained=True)[0]
    if height < 1.05:  # eq. 20's case 2 (c0 < 0) for some landmarks: off by more than a rounding error
        assert (literal - centres).norm(dim=-1).max() > 0.05
    else:  # G >= 1.05: c0 >= 0 everywhere and sigma = sigma*: case 1 is exact
        assert (literal - centres).abs().max() < 1e-6


@pytest.mark.parametrize("noise", [0.0, 0.01])
@pytest.mark.parametrize("sigma", [2.0, 3.0, 4.0])
def test_default_sdt_is_never_worse_than_argmax_quarter_from_heights_0_8_to_1_3(sigma, noise):
    """Mean error over 150 random centres, exact and noisy Gaussians, sigma != sigma* included."""
    g = torch.Generator().manual_seed(7)
    centres = 10 + torch.rand(1, 150, 2, generator=g, dtype=torch.float64) * 44
    for height in (0.8, 0.9, 0.95, 0.98, 0.99, 1.0, 1.01, 1.05, 1.1, 1.2, 1.3):
        maps = gaussian_maps(centres, 64, (sigma, sigma), amplitude=height)
        maps = maps + noise * torch.randn(maps.shape, generator=g, dtype=maps.dtype)
        error = (decode_sdt(maps, 9, 3.0) - centres).norm(dim=-1).mean()
        assert error <= argmax_quarter_error(maps, centres).mean(), (sigma, noise, height)
        if noise == 0 and height == 1.0 and sigma == 3.0:
            assert error < 1e-6


def test_sdt_frames_agree_for_frame_free_readings_and_eq20_heatmap_frame_damps_the_height():
    """A least-squares fit is the same surface in either frame: eq18 / isotropic agree to rounding; eq20 read in
    heatmap coordinates errs by about 2 sigma^2 |ln G| / R (R: distance from pixel [0, 0]), a closed form."""
    centres = torch.tensor([[[20.3, 30.6], [40.8, 12.2], [50.1, 50.7]]], dtype=torch.float64)
    maps = gaussian_maps(centres, 64, (3.0, 3.0), amplitude=0.9)
    for reading in ("eq18", "isotropic"):
        a = decode_sdt(maps, 9, 3.0, reading, "window")
        b = decode_sdt(maps, 9, 3.0, reading, "heatmap")
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    literal = decode_sdt(maps, 9, 3.0, "eq20", "heatmap")
    r2 = (centres**2).sum(-1, keepdim=True)
    expected = centres * (1 - 2 * 9.0 * math.log(0.9) / r2)  # u = U (1 - 2 sigma^2 ln G / R^2)
    torch.testing.assert_close(literal, expected, atol=1e-6, rtol=0)


def test_decoding_a_warped_real_photo_maps_back_to_the_annotated_points():
    """The whole coordinate chain without the project's encoder: dots rendered at the real annotated sub-pixel
    points of a real 300W photo (one channel each, in original pixels), cropped with the datamodule's crop
    matrix and OpenCV warp, area-averaged 4x to a heatmap, decoded and mapped back through the inverse crop."""
    from PIL import Image

    from datamodules.crop import CropProtocol, crop_matrix
    from datamodules.faces import RawFace
    from datamodules.w300 import read_pts
    from landmarks.geometry import apply_affine, invert_affine, warp_to_crop
    from landmarks.heatmaps import HeatmapCodec

    folder = Path(__file__).parent / "data" / "300w_pts"
    image = np.asarray(Image.open(folder / "einstein.jpg").convert("RGB"))
    points = read_pts(folder / "einstein.pts")[[8, 30, 36, 45, 48, 54]] - 1.0  # 1-based .pts
    raw = RawFace(image, points, np.ones(len(points), bool), "einstein")
    matrix = crop_matrix(raw, CropProtocol(scale=2.5), 256, 2.5, "300W")
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    blur = 2.0 / float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # about 2 crop px wide dots
    maps = []
    for x, y in points:
        dot = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (4 * blur) ** 2)).astype(np.float32)
        crop = warp_to_crop(dot, matrix, 256)
        maps.append(crop.reshape(64, 4, 64, 4).mean((1, 3)))  # area average: heatmap pixel i <- crop 4i..4i+3
    maps = torch.from_numpy(np.stack(maps))[None].double()
    codec = HeatmapCodec(stride=4, sigma=2.0, decoder="sdt", window=7)
    back = apply_affine(codec.decode(maps)[0].numpy(), invert_affine(matrix))
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # crop px per original px
    error = np.linalg.norm(back - points, axis=1) * scale  # in crop pixels
    quarter = apply_affine(codec.to_crop(decode_argmax(maps))[0].numpy(), invert_affine(matrix))
    assert error.max() < 0.1, error
    assert np.linalg.norm(quarter - points, axis=1).max() * scale > 3 * error.max()
