"""MHHN's multi-order correlation block (eqs. 7-9) against an explicit float64 reference, and the stacked
hourglass options that use it (mcg placement, stride 8)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from lightning_modules.components.hourglass import NewellStem, StackedHourglass
from lightning_modules.components.mcg import MultiOrderCorrelation
from lightning_modules.mhhn import mcg_hook


def mcg_reference(p: torch.Tensor, o: torch.Tensor, gamma: float, scaled: bool = False) -> np.ndarray:
    """Eqs. 7-9 written out in float64 numpy: Z = P Pᵀ + O Oᵀ + P Oᵀ, row-wise softmax, γ Ẑ O + O."""
    b, c, h, w = o.shape
    p_, o_ = (t.detach().double().numpy().reshape(b, c, h * w).transpose(0, 2, 1) for t in (p, o))  # (B, N, C)
    z = p_ @ p_.transpose(0, 2, 1) + o_ @ o_.transpose(0, 2, 1) + p_ @ o_.transpose(0, 2, 1)
    if scaled:
        z = z / np.sqrt(c)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    z_hat = e / e.sum(axis=-1, keepdims=True)
    out = gamma * (z_hat @ o_) + o_
    return out.transpose(0, 2, 1).reshape(b, c, h, w)


def inputs(seed: int = 0, b: int = 2, c: int = 8, size: int = 4, std: float = 0.5) -> tuple[torch.Tensor, ...]:
    """Random P, O scaled so that Z's rows spread over a few units: the softmax is neither flat nor one-hot."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, c, size, size, generator=g) * std for _ in range(2))


def block(gamma: float, c: int = 8, scaled: bool = False) -> MultiOrderCorrelation:
    mcg = MultiOrderCorrelation(c, scaled)
    with torch.no_grad():
        mcg.gamma.fill_(gamma)
    return mcg


def test_softmax_is_neither_flat_nor_one_hot():
    p, o = inputs()
    b, c = o.shape[:2]
    p_, o_ = (t.reshape(b, c, -1).transpose(1, 2).double() for t in (p, o))
    z = p_ @ p_.transpose(1, 2) + o_ @ o_.transpose(1, 2) + p_ @ o_.transpose(1, 2)
    top = z.softmax(-1).max(-1).values
    assert 0.1 < top.median() < 0.9


def test_gamma_zero_is_exactly_the_identity():
    p, o = inputs(1)
    mcg = MultiOrderCorrelation(8)
    assert mcg.gamma.item() == 0.0
    assert torch.equal(mcg(p, o), o)


@pytest.mark.parametrize("scaled", [False, True])
def test_matches_explicit_float64_reference(scaled: bool):
    p, o = inputs(2)
    out = block(0.7, scaled=scaled)(p, o)
    np.testing.assert_allclose(out.detach().double().numpy(), mcg_reference(p, o, 0.7, scaled), rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(mcg_reference(p, o, 0.7, scaled), o.numpy(), atol=1e-2)  # the block does something


def test_channels_last_inputs_and_shape_check():
    p, o = inputs(3)
    mcg = block(0.7)
    out = mcg(p.to(memory_format=torch.channels_last), o.to(memory_format=torch.channels_last))
    np.testing.assert_allclose(out.detach().double().numpy(), mcg_reference(p, o, 0.7), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must both be"):
        mcg(p, o[:, :4])


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_gradients_reach_gamma(gamma: float):
    p, o = (t.requires_grad_() for t in inputs(4))
    mcg = block(gamma)
    (mcg(p, o) * torch.randn_like(o)).sum().backward()
    assert mcg.gamma.grad is not None and mcg.gamma.grad.abs() > 0
    assert o.grad is not None and (p.grad.abs().sum() > 0) == (gamma != 0)


def test_bfloat16_autocast_and_inputs_close_to_float32():
    p, o = inputs(5)
    mcg = block(0.7)
    ref = mcg(p, o).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mcg(p, o)
    bf16 = mcg(p.bfloat16(), o.bfloat16())
    assert bf16.dtype == torch.bfloat16
    for out in (auto, bf16):
        torch.testing.assert_close(out.detach().float(), ref, atol=5e-2, rtol=5e-2)
    bf16.float().sum().backward()
    assert mcg.gamma.grad is not None and torch.isfinite(mcg.gamma.grad)


def tiny(mcg: str = "none", stride: int = 4, mcg_scaled: bool = False) -> StackedHourglass:
    """The Newell stack with MHHN's MCG hook, as MHHNModule builds it."""
    return StackedHourglass(out_channels=5, num_stacks=3, depth=2, channels=16,
                            stem=partial(NewellStem, stride=stride), hook=mcg_hook(mcg, 3, mcg_scaled))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mcg_placement_parameters_and_state_dict_keys():
    plain = StackedHourglass(out_channels=5, num_stacks=3, depth=2, channels=16)
    assert tiny().state_dict().keys() == plain.state_dict().keys() and count(tiny()) == count(plain)
    assert count(tiny("all")) == count(plain) + 3 and count(tiny("last")) == count(plain) + 1
    assert list(tiny("last").hooks) == ["2"] and list(tiny("all").hooks) == ["0", "1", "2"]
    assert tiny(stride=8).state_dict().keys() == plain.state_dict().keys()


@pytest.mark.parametrize("mcg", ["none", "all", "last"])
@pytest.mark.parametrize("stride", [4, 8])
def test_output_shapes(mcg: str, stride: int):
    outs = tiny(mcg, stride=stride, mcg_scaled=True)(torch.randn(2, 3, 64, 64))
    assert len(outs) == 3 and all(o.shape == (2, 5, 64 // stride, 64 // stride) for o in outs)


def test_bad_options_and_input_size_raise():
    with pytest.raises(ValueError, match="mcg must be"):
        tiny("first")
    with pytest.raises(ValueError, match="stride must be 4 or 8"):
        tiny(stride=2)
    with pytest.raises(ValueError, match="multiple of 32"):  # stride 8 x 2**2
        tiny(stride=8)(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny()(torch.zeros(1, 3, 64, 40))


def test_fresh_mcg_model_equals_plain_model():
    torch.manual_seed(0)
    plain = tiny().eval()
    full = tiny("all").eval()
    missing, unexpected = full.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"hooks.{i}.gamma" for i in range(3)] and not unexpected
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(images), full(images), strict=True):
            assert torch.equal(a, b)
    with torch.no_grad():
        full.hooks["1"].gamma.fill_(0.5)
        assert not torch.allclose(plain(images)[-1], full(images)[-1])
