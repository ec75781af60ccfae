"""Network parts: the composable stacked hourglass (Newell and FAN parts), Bulat's HPM block and BlurPool.

Parameter counts are checked against closed forms and against the numbers of IMPLEMENTATION_NOTES §0 (verified
there by an independent rebuild); MACs with torch's FLOP counter.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_modules.components.blurpool import BlurPool, blur_pool, max_blur_pool
from lightning_modules.components.hourglass import (
    Bottleneck,
    Hourglass,
    NewellStem,
    StackedHourglass,
    avg_pool,
    max_pool,
)
from lightning_modules.components.hpm import FANStem, HPMBlock, fan_head


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bn(c: int) -> int:
    return 2 * c  # gamma and beta


def bottleneck_params(cin: int, cout: int) -> int:
    mid = cout // 2
    shortcut = 0 if cin == cout else cin * cout + cout
    return bn(cin) + cin * mid + bn(mid) + mid * mid * 9 + bn(mid) + mid * cout + cout + shortcut


def newell_stack_params(k: int, stacks: int, depth: int, c: int) -> int:
    """Closed form of the Newell stacked hourglass: stem, 3*depth+1 bottlenecks per hourglass, heads, merges."""
    stem = (3 * 64 * 49 + bn(64)) + bottleneck_params(64, 128) + bottleneck_params(128, 128) + \
        bottleneck_params(128, c)
    hourglass = (3 * depth + 1) * bottleneck_params(c, c)
    head = bottleneck_params(c, c) + c * c + bn(c)  # bottleneck + 1x1 conv (no bias) + BN
    to_maps = c * k + k
    merges = (c * c + c) + (k * c + c)
    return stem + stacks * (hourglass + head + to_maps) + (stacks - 1) * merges


@pytest.mark.parametrize("k, stacks, depth, c, before", [
    (68, 4, 4, 256, 12_935_760),  # MHHN's HGs; ``before``: the count of the pre-composable class (commit 09dd453)
    (68, 1, 3, 64, 304_068),
    (98, 2, 3, 64, 477_060),
])
def test_newell_stack_parameter_count_and_shapes(k, stacks, depth, c, before):
    net = StackedHourglass(k, stacks, depth, c)
    assert count(net) == newell_stack_params(k, stacks, depth, c) == before
    size = NewellStem(c).stride * 2**depth * 2
    outs = net(torch.zeros(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(1, k, size // 4, size // 4)] * stacks


def test_stride_8_stem_adds_no_parameters_and_halves_the_maps():
    net4 = StackedHourglass(5, 2, 2, 16)
    net8 = StackedHourglass(5, 2, 2, 16, stem=partial(NewellStem, stride=8))
    assert net8.state_dict().keys() == net4.state_dict().keys() and net8.stride == 8
    assert net8(torch.zeros(1, 3, 64, 64))[-1].shape == (1, 5, 8, 8)


def test_hook_replaces_the_hourglass_output_on_the_chosen_stacks_only():
    calls = []

    class Record(nn.Module):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def forward(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
            calls.append((self.index, x.shape, o.shape))
            return torch.zeros_like(o)

    torch.manual_seed(0)
    plain = StackedHourglass(5, 3, 2, 16).eval()
    torch.manual_seed(0)
    hooked = StackedHourglass(5, 3, 2, 16, hook=lambda i, c: Record(i) if i == 1 else None).eval()
    assert list(hooked.hooks) == ["1"] and hooked.state_dict().keys() == plain.state_dict().keys()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(images), hooked(images)
    assert calls == [(1, (2, 16, 16, 16), (2, 16, 16, 16))]
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with torch.no_grad():  # stack 1 saw a zero hourglass output: its maps are the head of zeros
        expected = hooked.to_maps[1](hooked.heads[1](torch.zeros(2, 16, 16, 16)))
    torch.testing.assert_close(b[1], expected)


def test_hpm_block_matches_the_notes():
    block = HPMBlock(256, 256)
    convs = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert convs == 256 * 128 * 9 + 128 * 64 * 9 + 64 * 64 * 9 == 405_504  # "405.5k (convolutions)"
    assert count(block) == convs + bn(256) + bn(128) + bn(64)
    projected = HPMBlock(64, 128)  # shortcut: BN -> ReLU -> 1x1 conv without bias
    assert count(projected) == (64 * 64 * 9 + 64 * 32 * 9 + 32 * 32 * 9) + bn(64) + bn(64) + bn(32) + \
        (bn(64) + 64 * 128)
    x = torch.randn(2, 64, 8, 8)
    assert projected(x).shape == (2, 128, 8, 8)


def test_fan_hourglass_matches_the_notes_budget():
    """§0.2: a depth-4 FAN hourglass has 13 HPM blocks, 5.28 M parameters and 3.32 GMAC at 64x64."""
    hourglass = Hourglass(4, 256, HPMBlock, avg_pool)
    blocks = [m for m in hourglass.modules() if isinstance(m, HPMBlock)]
    assert len(blocks) == 13 and count(hourglass) == 13 * count(HPMBlock(256, 256))
    assert round(count(hourglass) / 1e6, 2) == 5.28
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        hourglass(torch.zeros(1, 256, 64, 64))
    assert round(counter.get_total_flops() / 2 / 1e9, 2) == 3.32


def test_fan_stack_shapes():
    net = StackedHourglass(16, 2, 2, 32, block=HPMBlock, down=avg_pool, stem=FANStem, head=fan_head)
    outs = net(torch.zeros(1, 3, 64, 64))
    assert len(outs) == 2 and outs[-1].shape == (1, 16, 16, 16)
    assert not any(isinstance(m, Bottleneck) for m in net.modules())


def blur_reference(x: np.ndarray, taps: list[float]) -> np.ndarray:
    """BlurPool by loops: reflect padding (k-1)//2 before and ceil((k-1)/2) after, outer-product filter, stride 2."""
    k = len(taps)
    f = np.outer(taps, taps) / np.sum(taps) ** 2
    before, after = (k - 1) // 2, k // 2
    padded = np.pad(x, ((0, 0), (before, after), (before, after)), mode="reflect")
    c, h, w = padded.shape
    out = np.zeros((c, (h - k) // 2 + 1, (w - k) // 2 + 1))
    for ch in range(c):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[ch, i, j] = (padded[ch, 2 * i:2 * i + k, 2 * j:2 * j + k] * f).sum()
    return out


@pytest.mark.parametrize("kernel, taps", [(3, [1, 2, 1]), (5, [1, 4, 6, 4, 1]), (4, [1, 3, 3, 1])])
@pytest.mark.parametrize("size", [8, 9])
def test_blurpool_matches_a_loop_reference(kernel, taps, size):
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    out = BlurPool(3, kernel)(x)
    assert out.shape == (2, 3, -(-size // 2), -(-size // 2))
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), blur_reference(x[b].numpy(), taps), atol=1e-12)


def test_blurpool_2_is_average_pooling_and_blur_replacements_keep_shapes():
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(BlurPool(4, 2)(x), nn.AvgPool2d(2)(x))
    assert blur_pool(4)(x).shape == max_pool(4)(x).shape == max_blur_pool(4)(x).shape == (2, 4, 8, 8)
    assert BlurPool(4).state_dict() == {}  # the filter is a constant, not a weight
    net = StackedHourglass(5, 1, 2, 16, down=max_blur_pool)  # PropNet's "AC" replacement in a Newell stack
    assert net(torch.zeros(1, 3, 64, 64))[-1].shape == (1, 5, 16, 16)
    with pytest.raises(ValueError, match="kernel"):
        BlurPool(4, 9)
