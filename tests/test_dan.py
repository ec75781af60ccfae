"""DAN (PWC's cascaded regression baseline): parameter counts from the layer list, the geometric layers against
numpy references, and the cascade's plumbing (shapes, grey input, mapping back by T⁻¹, gradients)."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from lightning_modules.components.dan import DAN, apply_transform, landmark_heatmap, similarity_transform, warp_image


def random_similarity(rng: np.random.Generator, batch: int) -> np.ndarray:
    """(B, 2, 3) similarities: scale in [0.8, 1.2], angle in ±30°, shift in ±5 px (column-vector convention)."""
    s, a, t = rng.uniform(0.8, 1.2, batch), rng.uniform(-0.5, 0.5, batch), rng.uniform(-5, 5, (batch, 2))
    linear = s[:, None, None] * np.stack([np.stack([np.cos(a), -np.sin(a)], -1),
                                          np.stack([np.sin(a), np.cos(a)], -1)], -2)
    return np.concatenate([linear, t[..., None]], -1)


def dan_parameter_count(num_points: int, stages: int, input_size: int) -> tuple[int, int]:
    """(total, stage 1) from Kowalski's / PWC's layer list: conv 3x3 with bias + BN (γ, β), FC with bias."""
    def conv_bn(cin: int, cout: int) -> int:
        return 9 * cin * cout + cout + 2 * cout

    def sub_network(cin: int) -> int:
        convs = conv_bn(cin, 64) + conv_bn(64, 64) + conv_bn(64, 128) + conv_bn(128, 128) \
            + conv_bn(128, 256) + conv_bn(256, 256) + conv_bn(256, 512) + conv_bn(512, 512)
        flat = 512 * (input_size // 16) ** 2
        return convs + (flat * 256 + 256 + 2 * 256) + (256 * 2 * num_points + 2 * num_points)

    feature_image = 256 * (input_size // 2) ** 2 + (input_size // 2) ** 2
    return sub_network(1) + (stages - 1) * (sub_network(3) + feature_image), sub_network(1)


@pytest.fixture(scope="module")
def dan() -> DAN:
    torch.manual_seed(0)
    return DAN()


@pytest.fixture(scope="module")
def mean_shape() -> torch.Tensor:
    """A face-sized (68, 2) shape well inside the 112-px frame."""
    rng = np.random.default_rng(1)
    return torch.tensor(rng.uniform(30, 82, (68, 2)), dtype=torch.float32)


def test_parameter_count_is_the_papers(dan: DAN) -> None:
    total, stage1 = dan_parameter_count(68, 3, 112)
    assert (total, stage1) == (35_053_144, 11_146_312)  # PWC Sec. 4: the model and "the sub-network"
    assert sum(p.numel() for p in dan.parameters()) == total
    assert sum(p.numel() for p in dan.stages[0].parameters()) == stage1
    other = DAN(num_points=5, stages=2, input_size=64)
    assert sum(p.numel() for p in other.parameters()) == dan_parameter_count(5, 2, 64)[0]


def test_similarity_transform_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    matrix = random_similarity(rng, 4)
    src = rng.uniform(0, 100, (4, 30, 2))
    dst = np.einsum("bij,bkj->bki", matrix[..., :2], src) + matrix[:, None, :, 2]
    found = similarity_transform(torch.tensor(src), torch.tensor(dst))
    np.testing.assert_allclose(found.numpy(), matrix, atol=1e-10)


def test_similarity_transform_is_the_least_squares_fit() -> None:
    rng = np.random.default_rng(1)
    src, dst = rng.uniform(0, 100, (3, 20, 2)), rng.uniform(0, 100, (20, 2))  # dst broadcast over the batch
    found = similarity_transform(torch.tensor(src), torch.tensor(dst)).numpy()
    for b in range(3):  # unknowns (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty
        rows = [[x, -y, 1, 0] for x, y in src[b]] + [[y, x, 0, 1] for x, y in src[b]]
        (a, bb, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
        np.testing.assert_allclose(found[b], [[a, -bb, tx], [bb, a, ty]], atol=1e-9)


def test_apply_transform_against_a_loop() -> None:
    rng = np.random.default_rng(2)
    matrix, points = random_similarity(rng, 2), rng.uniform(0, 50, (2, 7, 2))
    out = apply_transform(torch.tensor(points), torch.tensor(matrix)).numpy()
    for b, k in itertools.product(range(2), range(7)):
        np.testing.assert_allclose(out[b, k], matrix[b] @ np.append(points[b, k], 1.0), atol=1e-12)


def test_warp_image_moves_a_dot_where_apply_transform_moves_the_point() -> None:
    rng = np.random.default_rng(3)
    size, dot = 112, np.array([[40.3, 61.7], [70.6, 45.2]])
    ys, xs = np.mgrid[0:size, 0:size]
    images = np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5 ** 2)) for x, y in dot])[:, None]
    matrix = random_similarity(rng, 2)
    warped = warp_image(torch.tensor(images), torch.tensor(matrix), size).numpy()[:, 0]
    expected = apply_transform(torch.tensor(dot[:, None]), torch.tensor(matrix)).numpy()[:, 0]
    for b in range(2):
        centroid = np.array([(warped[b] * xs).sum(), (warped[b] * ys).sum()]) / warped[b].sum()
        np.testing.assert_allclose(centroid, expected[b], atol=0.05)
        assert np.hypot(*(np.unravel_index(warped[b].argmax(), warped[b].shape)[::-1] - expected[b])) < 1


def test_warp_image_samples_the_inverse_map_with_edge_padding() -> None:
    """Warping the images x and y (bilinear reproduces linear functions) reads back clamp(T⁻¹(q)) exactly."""
    rng = np.random.default_rng(4)
    size, out = 24, 20
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    matrix = random_similarity(rng, 2)
    warped = warp_image(torch.tensor(np.stack([np.stack([xs, ys])] * 2)), torch.tensor(matrix), out).numpy()
    for b, (j, i) in itertools.product(range(2), itertools.product(range(out), range(out))):
        linear, shift = matrix[b, :, :2], matrix[b, :, 2]
        source = np.linalg.solve(linear, np.array([i, j]) - shift)
        np.testing.assert_allclose(warped[b, :, j, i], np.clip(source, 0, size - 1), atol=1e-9)


def heatmap_reference(shapes: np.ndarray, size: int) -> np.ndarray:
    """Kowalski eq. 3, one pixel at a time: 1 / (1 + min_k sqrt(|(x, y) - s_k|² + 1e-6))."""
    out = np.zeros((len(shapes), 1, size, size))
    for b, y, x in itertools.product(range(len(shapes)), range(size), range(size)):
        out[b, 0, y, x] = 1 / (1 + min(math.sqrt((x - sx) ** 2 + (y - sy) ** 2 + 1e-6) for sx, sy in shapes[b]))
    return out


def windowed_heatmap_reference(shapes: np.ndarray, size: int, half: int) -> np.ndarray:
    """Kowalski's ``LandmarkImageLayer`` as he wrote it: clamp, draw a (2h+1)² patch per landmark, max."""
    out = np.zeros((len(shapes), 1, size, size))
    for b, k in itertools.product(range(shapes.shape[0]), range(shapes.shape[1])):
        sx, sy = np.clip(shapes[b, k], half, size - 1 - half)
        ix, iy = int(sx), int(sy)
        for ox, oy in itertools.product(range(-half, half + 1), repeat=2):
            val = 1 / (1 + math.sqrt((ox - (sx - ix)) ** 2 + (oy - (sy - iy)) ** 2 + 1e-6))
            out[b, 0, iy + oy, ix + ox] = max(out[b, 0, iy + oy, ix + ox], val)
    return out


def test_landmark_heatmap_against_loops() -> None:
    rng = np.random.default_rng(5)
    size = 20
    shapes = rng.uniform(-2, size + 1, (2, 4, 2))  # some outside the image: the window variant clamps them
    shapes[0, 0] = [7.0, 11.0]  # exactly on a pixel: the map is 1/(1 + 1e-3) there
    full = landmark_heatmap(torch.tensor(shapes), size).numpy()
    np.testing.assert_allclose(full, heatmap_reference(shapes, size), atol=1e-12)
    windowed = landmark_heatmap(torch.tensor(shapes), size, window=3).numpy()
    np.testing.assert_allclose(windowed, windowed_heatmap_reference(shapes, size, 3), atol=1e-12)
    assert (windowed == 0).any()


def test_forward_returns_every_stage_and_averages_rgb(dan: DAN, mean_shape: torch.Tensor) -> None:
    images = torch.rand(2, 3, 112, 112)
    dan.eval()
    with torch.no_grad():
        shapes = dan(images, mean_shape)
        grey = dan(images.mean(1, keepdim=True), mean_shape)
    assert [tuple(s.shape) for s in shapes] == [(2, 68, 2)] * 3
    for rgb, one in zip(shapes, grey, strict=True):
        torch.testing.assert_close(rgb, one)


def test_zero_updates_keep_the_mean_shape(dan: DAN, mean_shape: torch.Tensor) -> None:
    model = copy.deepcopy(dan).eval()
    for stage in model.stages:
        torch.nn.init.zeros_(stage.output.weight)
        torch.nn.init.zeros_(stage.output.bias)
    with torch.no_grad():
        shapes = model(torch.rand(2, 3, 112, 112), mean_shape)
    for shape in shapes:
        torch.testing.assert_close(shape, mean_shape.expand(2, -1, -1), atol=1e-4, rtol=0)


def test_later_stage_updates_are_mapped_back_by_the_inverse_transform(dan: DAN, mean_shape: torch.Tensor) -> None:
    """Stage 1 outputs A(S0) (A a known similarity); stage 2 adds δ in the mean frame: S2 = A(S0 + δ)."""
    rng = np.random.default_rng(6)
    a = torch.tensor(random_similarity(rng, 1)[0], dtype=torch.float32)
    delta = torch.tensor(rng.uniform(-3, 3, (68, 2)), dtype=torch.float32)
    model = copy.deepcopy(dan).eval()
    biases = (apply_transform(mean_shape, a) - mean_shape, delta, torch.zeros(68, 2))
    for stage, bias in zip(model.stages, biases, strict=True):
        torch.nn.init.zeros_(stage.output.weight)
        stage.output.bias.data.copy_(bias.flatten())
    with torch.no_grad():
        s1, s2, s3 = model(torch.rand(2, 3, 112, 112), mean_shape)
    expected = apply_transform(mean_shape + delta, a).expand(2, -1, -1)
    torch.testing.assert_close(s2, expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(s3, s2, atol=1e-3, rtol=0)


def test_gradients_of_the_last_stage_reach_every_parameter(dan: DAN, mean_shape: torch.Tensor) -> None:
    model = copy.deepcopy(dan).train()
    model.zero_grad()
    shapes = model(torch.rand(2, 3, 112, 112), mean_shape)
    (shapes[-1] - mean_shape).abs().mean().backward()  # the cascade is differentiable through T, warp and H
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
