"""CoordConv (AWing variant, IMPLEMENTATION_NOTES §0.4): coordinate channels against a hand-worked 3x3 grid and a
numpy loop, boundary gating against hand-made maps, the whole layer against a plain Conv2d on a numpy-built
input, parameters and MACs against closed forms, and the AWing / PropNet placements' shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_modules.components.coordconv import CoordConv2d, add_coordinates, boundary_gate, coordinate_maps

S = 1 / math.sqrt(2)


def numpy_coords(height: int, width: int, with_r: bool = True) -> np.ndarray:
    """Independent reference, pixel by pixel: (2 or 3, H, W) float64."""
    out = np.zeros((3 if with_r else 2, height, width))
    for i in range(height):
        for j in range(width):
            out[0, i, j] = -1 + 2 * j / (width - 1) if width > 1 else 0.0
            out[1, i, j] = -1 + 2 * i / (height - 1) if height > 1 else 0.0
            if with_r:
                out[2, i, j] = math.hypot(out[0, i, j], out[1, i, j])
    if with_r and out[2].max() > 0:
        out[2] /= out[2].max()
    return out


def test_coordinate_maps_on_a_hand_worked_3x3_grid():
    x = [[-1, 0, 1]] * 3
    y = [[-1, -1, -1], [0, 0, 0], [1, 1, 1]]
    r = [[1, S, 1], [S, 0, S], [1, S, 1]]  # sqrt(x² + y²) / sqrt(2)
    maps = coordinate_maps(3, 3, dtype=torch.float64)
    assert maps.shape == (1, 3, 3, 3)
    np.testing.assert_allclose(maps[0].numpy(), np.array([x, y, r], dtype=float), rtol=0, atol=1e-15)
    assert torch.equal(coordinate_maps(3, 3, with_r=False, dtype=torch.float64), maps[:, :2])


@pytest.mark.parametrize("height, width", [(4, 5), (7, 2), (1, 6), (6, 1), (1, 1), (64, 64)])
def test_coordinate_maps_match_a_numpy_loop(height, width):
    for with_r in (True, False):
        maps = coordinate_maps(height, width, with_r, dtype=torch.float64)
        np.testing.assert_allclose(maps[0].numpy(), numpy_coords(height, width, with_r), rtol=0, atol=1e-12)


def test_coordinate_maps_follow_the_requested_dtype():
    reference = torch.from_numpy(numpy_coords(64, 64))
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        maps = coordinate_maps(64, 64, dtype=dtype)[0]
        assert maps.dtype == dtype
        eps = torch.finfo(dtype).eps  # built in float32, rounded once: within an ulp of the float64 reference
        torch.testing.assert_close(maps.double(), reference, rtol=eps, atol=eps)


def test_boundary_gate_thresholds_the_clamped_map_at_0_05():
    b = torch.tensor([[-3.0, 0.0, 0.05, 0.0501], [0.2, 1.0, 7.0, float("-inf")]], dtype=torch.float64)
    expected = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(boundary_gate(b[None, None], 2, 4)[0, 0], expected)


def test_boundary_gated_channels_copy_x_and_y_on_the_boundary_only():
    boundary = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    boundary[0, 0, 1, :] = 0.9  # sample 0: the middle row
    boundary[1, 0, :, 2] = 2.0  # sample 1: the right column (clamped to 1, still on)
    boundary[1, 0, 0, 0] = 0.04  # below the gate
    x = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    out = add_coordinates(x, boundary=boundary)
    assert out.shape == (2, 1 + 3 + 2, 3, 3)
    gated_x = [[[0, 0, 0], [-1, 0, 1], [0, 0, 0]], [[0, 0, 1], [0, 0, 1], [0, 0, 1]]]
    gated_y = [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, -1], [0, 0, 0], [0, 0, 1]]]
    np.testing.assert_array_equal(out[:, 4].numpy(), np.array(gated_x, dtype=float))
    np.testing.assert_array_equal(out[:, 5].numpy(), np.array(gated_y, dtype=float))
    np.testing.assert_array_equal(out[:, 1:4].numpy(), np.broadcast_to(numpy_coords(3, 3), (2, 3, 3, 3)))


def test_a_boundary_map_at_twice_the_resolution_is_resized_to_the_input():
    """Bilinear halving (align_corners=False) averages each 2x2 block, so a map constant on 2x2 blocks gates
    exactly as the same map at the input's resolution."""
    low = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1  # around the 0.05 gate
    high = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (3, 1, 16, 16)
    assert torch.equal(boundary_gate(high, 8, 8), low > 0.05)
    x = torch.randn(3, 4, 8, 8)
    assert torch.equal(add_coordinates(x, boundary=high), add_coordinates(x, boundary=low))


def test_a_resized_boundary_map_is_clamped_then_averaged():
    """Halving averages each 2x2 block of the map clamped to [0, 1] (numpy reference): [[0.3, -0.3]] * 2 → 0.15
    (on; 0 without the clamp), [[0.08, 0], [0, 0.08]] → 0.04 (off; a nearest pick would read 0.08)."""
    blocks = np.array([[[0.3, -0.3], [0.3, -0.3]], [[0.08, 0.0], [0.0, 0.08]], [[2.0, -5.0], [-5.0, -5.0]],
                       [[0.0, 0.0], [0.0, 0.21]]])  # 4 blocks: on, off, on (clamped 1 / 4), on (0.0525)
    high = np.zeros((4, 4))
    high[:2, :2], high[:2, 2:], high[2:, :2], high[2:, 2:] = blocks
    expected = np.clip(high, 0, 1).reshape(2, 2, 2, 2).mean(axis=(1, 3)) > 0.05
    assert expected.tolist() == [[True, False], [True, True]]
    assert torch.equal(boundary_gate(torch.from_numpy(high)[None, None], 2, 2)[0, 0], torch.from_numpy(expected))


def test_coordconv_is_a_conv2d_on_the_input_with_the_coordinate_channels_appended():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=generator)
    boundary = torch.rand(2, 1, 6, 5, dtype=torch.float64, generator=generator) * 0.1
    coords = numpy_coords(6, 5)  # (3, 6, 5)
    gate = (boundary.numpy() > 0.05)[:, 0]  # (2, 6, 5)
    for with_r, with_b in [(True, False), (False, False), (True, True), (False, True)]:
        layer = CoordConv2d(4, 7, 3, stride=2, padding=1, with_r=with_r, with_boundary=with_b).double()
        parts = [x.numpy(), np.broadcast_to(coords[:2 + with_r], (2, 2 + with_r, 6, 5))]
        if with_b:
            parts.append(coords[None, :2] * gate[:, None])
        reference = nn.Conv2d(4 + layer.extra, 7, 3, stride=2, padding=1).double()
        reference.load_state_dict(layer.conv.state_dict())
        expected = reference(torch.from_numpy(np.concatenate(parts, axis=1)))
        got = layer(x, boundary if with_b else None)
        assert got.shape == (2, 7, 3, 3)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def closed_form_params(cin: int, cout: int, k: int, extra: int, bias: bool) -> int:
    return (cin + extra) * cout * k * k + (cout if bias else 0)


@pytest.mark.parametrize("cin, cout, k, with_r, with_boundary, bias, extra", [
    (3, 64, 7, True, False, True, 3),  # AWing's stem conv
    (256, 256, 1, True, False, True, 3),  # first hourglass entrance
    (256, 256, 1, True, True, True, 5),  # later hourglass entrances
    (16, 8, 3, False, False, False, 2),
    (16, 8, 3, False, True, True, 4),
])
def test_parameter_count_matches_the_closed_form(cin, cout, k, with_r, with_boundary, bias, extra):
    layer = CoordConv2d(cin, cout, k, with_r=with_r, with_boundary=with_boundary, bias=bias)
    assert layer.extra == extra
    assert sum(p.numel() for p in layer.parameters()) == closed_form_params(cin, cout, k, extra, bias)


def test_awing_stem_conv_shapes_and_macs():
    """7x7 stride-2 conv on the image, 3 + 3 input channels: (B, 3, 256, 256) → (B, 64, 128, 128)."""
    stem = CoordConv2d(3, 64, 7, stride=2, padding=3)
    assert stem.conv.in_channels == 6
    with FlopCounterMode(display=False) as counter:
        out = stem(torch.zeros(2, 3, 256, 256))
    assert out.shape == (2, 64, 128, 128)
    assert counter.get_total_flops() // 2 == 2 * 6 * 64 * 49 * 128 * 128  # MACs: batch·cin·cout·k²·H'·W'


@pytest.mark.parametrize("with_boundary, inputs", [(False, 259), (True, 261)])
def test_hourglass_entrance_1x1_shapes(with_boundary, inputs):
    entrance = CoordConv2d(256, 256, 1, with_boundary=with_boundary)
    assert entrance.conv.in_channels == inputs
    boundary = torch.rand(2, 1, 64, 64) if with_boundary else None
    assert entrance(torch.randn(2, 256, 64, 64), boundary).shape == (2, 256, 64, 64)


def test_a_missing_or_unexpected_boundary_map_is_an_error():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="needs the previous stack's boundary map"):
        CoordConv2d(4, 4, 1, with_boundary=True)(x)
    with pytest.raises(ValueError, match="has no channels for"):
        CoordConv2d(4, 4, 1)(x, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="must be \\(B, 1, H, W\\)"):
        CoordConv2d(4, 4, 1, with_boundary=True)(x, torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        CoordConv2d(4, 4, 1, with_boundary=True)(x, torch.rand(2, 1, 8, 8))


def test_channels_last_in_channels_last_out_with_the_same_values():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 16, 16, generator=generator)
    boundary = torch.rand(2, 1, 16, 16, generator=generator) * 0.1
    layer = CoordConv2d(8, 4, 3, padding=1, with_boundary=True)
    expected = layer(x, boundary)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    appended = add_coordinates(x_cl, boundary=boundary)
    assert appended.is_contiguous(memory_format=torch.channels_last) and not appended.is_contiguous()
    assert add_coordinates(x, boundary=boundary).is_contiguous()
    layer = layer.to(memory_format=torch.channels_last)
    got = layer(x_cl, boundary)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected)


def test_bf16_autocast_and_inputs_on_the_input_dtype():
    x = torch.randn(2, 8, 16, 16)
    layer = CoordConv2d(8, 4, 1, with_boundary=True)
    boundary = torch.rand(2, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, boundary)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 16, 16)
    appended = add_coordinates(x.to(torch.bfloat16), boundary=boundary)
    assert appended.dtype == torch.bfloat16
    eps = torch.finfo(torch.bfloat16).eps
    reference = torch.from_numpy(numpy_coords(16, 16)).expand(2, 3, 16, 16)
    torch.testing.assert_close(appended[:, 8:11].double(), reference, rtol=eps, atol=eps)
