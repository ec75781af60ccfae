"""TAB's BALT (boundary → landmark UNet with SCBE feature fusion, paper 004 eqs. 3-5): parameter counts summed
by hand from the notes' channel plan, the fusion terms of eq. 4 per setting, the code's BALT_MS_2X forward
written out line by line, the max-pool transition against a numpy recomputation, and gradients to every
parameter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lightning_modules.components.balt import BALT

VARIANTS = list(itertools.product(range(4), ("ms", "ss"), ("strided_conv", "max_pool")))
SMALL = {"in_maps": 3, "num_points": 5, "feature_channels": 8, "width": 4}  # fast variants for shape tests


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # no bias


def bn(c: int) -> int:
    return 2 * c  # gamma, beta


def double(cin: int, cout: int) -> int:
    return conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)


def cbr(cin: int, cout: int, k: int) -> int:
    return conv(cin, cout, k) + bn(cout)


def unet_count(m: int, w: int, k: int) -> int:
    """The notes' UNet (§5.2): inc, d1..d4, up1..up4, final 1x1 with bias."""
    encoder = double(m, w) + double(w, 2 * w) + double(2 * w, 4 * w) + double(4 * w, 8 * w) + double(8 * w, 8 * w)
    decoder = double(16 * w, 4 * w) + double(8 * w, 2 * w) + double(4 * w, w) + double(2 * w, 2 * w)
    return encoder + decoder + 2 * w * k + k


def inputs(size: int = 64, b: int = 2, m: int = 3, c: int = 8, n: int = 4, seed: int = 0, width: int | None = None):
    g = torch.Generator().manual_seed(seed)
    width = size if width is None else width
    boundaries = torch.randn(b, m, size, width, generator=g)
    features = [torch.randn(b, c, size >> k, width >> k, generator=g) for k in range(n)]
    return boundaries, features


def fused_terms(model: BALT) -> dict[int, set[int]]:
    return {int(i): {int(j) for j in terms} for i, terms in model.fuse.items()}


def test_default_parameter_count_matches_the_notes_and_a_hand_sum():
    model = BALT(16, 98)  # feature_channels 256, width 48, fusion 2, ms, strided conv
    w, c = 48, 256
    fusion = (cbr(c, w, 1)  # x1 += 1x1(F64)
              + cbr(c, 2 * w, 3) + cbr(c, 2 * w, 1)  # x2 += 3x3s2(F64) + 1x1(F32)
              + cbr(c, 4 * w, 3) + cbr(c, 4 * w, 1)  # x3 += 3x3s2(F32) + 1x1(F16)
              + cbr(c, 8 * w, 3) + cbr(c, 8 * w, 1))  # x4 += 3x3s2(F16) + 1x1(F8)
    expected = unet_count(16, w, 98) + fusion
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    assert abs(count - 9.39e6) / 9.39e6 < 0.01  # notes §5.2: BALT 9.39 M
    # BN buffers: running mean and variance per channel (BN parameters / 2 channels each), one counter per BN.
    bn_channels = [m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn_channels) == 2 * 9 + 7
    assert sum(b.numel() for b in model.buffers()) == 2 * sum(bn_channels) + len(bn_channels)


@pytest.mark.parametrize(("fusion", "features", "transition", "extra"), [
    (0, "ms", "strided_conv", lambda c, w: 0),
    (1, "ss", "max_pool", lambda c, w: cbr(c, w, 1)),
    (3, "ms", "strided_conv", lambda c, w: (  # t=2's list, plus the j = i-2 chains F -> level j+1 -> level i
        cbr(c, w, 1) + cbr(c, 2 * w, 3) + cbr(c, 2 * w, 1) + cbr(c, 4 * w, 3) + cbr(c, 4 * w, 1)
        + cbr(c, 8 * w, 3) + cbr(c, 8 * w, 1) + cbr(c, 2 * w, 3) + cbr(2 * w, 4 * w, 3)
        + cbr(c, 4 * w, 3) + cbr(4 * w, 8 * w, 3))),
    (3, "ms", "max_pool", lambda c, w: (  # eq. 4: every term is a 1x1 to the level's channels (+ parameter-free MP)
        cbr(c, w, 1) + 2 * cbr(c, 2 * w, 1) + 3 * cbr(c, 4 * w, 1) + 3 * cbr(c, 8 * w, 1))),
    (3, "ss", "strided_conv", lambda c, w: cbr(c, w, 1) + cbr(c, 2 * w, 3) + cbr(c, 2 * w, 3) + cbr(2 * w, 4 * w, 3)),
])
def test_parameter_counts_of_other_settings(fusion, features, transition, extra):
    model = BALT(16, 98, fusion=fusion, features=features, transition=transition)
    assert sum(p.numel() for p in model.parameters()) == unet_count(16, 48, 98) + extra(256, 48)


# Eq. 4 by hand: level i adds F_j for max(1, i - t + 1) <= j <= i (t = 0: nothing), "ss" has F_1 only.
EXPECTED_TERMS = {
    (0, "ms"): {}, (0, "ss"): {},
    (1, "ms"): {1: {1}, 2: {2}, 3: {3}, 4: {4}}, (1, "ss"): {1: {1}},
    (2, "ms"): {1: {1}, 2: {1, 2}, 3: {2, 3}, 4: {3, 4}}, (2, "ss"): {1: {1}, 2: {1}},
    (3, "ms"): {1: {1}, 2: {1, 2}, 3: {1, 2, 3}, 4: {2, 3, 4}}, (3, "ss"): {1: {1}, 2: {1}, 3: {1}},
}


@pytest.mark.parametrize(("fusion", "features", "transition"), VARIANTS)
def test_only_the_terms_of_eq4_are_built(fusion, features, transition):
    model = BALT(**SMALL, fusion=fusion, features=features, transition=transition)
    assert fused_terms(model) == EXPECTED_TERMS[fusion, features]
    if fusion == 0:
        assert not any(name.startswith("fuse") for name, _ in model.named_parameters())


@pytest.mark.parametrize(("fusion", "features", "transition"), VARIANTS)
@pytest.mark.parametrize(("height", "width"), [(64, 64), (32, 32), (32, 48)])
def test_output_shape_follows_the_input(fusion, features, transition, height, width):
    model = BALT(**SMALL, fusion=fusion, features=features, transition=transition)
    boundaries, feats = inputs(height, n=4 if features == "ms" else 1, width=width)
    assert model(boundaries, feats).shape == (2, 5, height, width)
    for i, terms in model.fuse.items():  # every transition lands on its level's channels and resolution
        level = int(i)
        for j, t in terms.items():
            out = t(feats[int(j) - 1])
            assert out.shape == (2, model.level_channels[level - 1], height >> (level - 1), width >> (level - 1))


@pytest.mark.parametrize(("fusion", "features"), list(itertools.product(range(4), ("ms", "ss"))))
def test_features_matter_exactly_when_fusing(fusion, features):
    torch.manual_seed(0)
    model = BALT(**SMALL, fusion=fusion, features=features).eval()
    boundaries, feats = inputs(32, n=4 if features == "ms" else 1)
    base = model(boundaries, feats)
    perturbed = model(boundaries, [f + torch.randn_like(f) for f in feats])
    if fusion == 0:
        assert torch.equal(base, perturbed)
    else:
        assert (base - perturbed).abs().max() > 1e-4


def test_ms_1x_uses_the_coarsest_map_but_not_the_level_2_transition_from_f64():
    torch.manual_seed(0)
    model = BALT(**SMALL, fusion=1, features="ms").eval()
    assert "1" not in model.fuse["2"] and set(model.fuse["4"]) == {"4"}
    boundaries, feats = inputs(32)
    changed = feats[:3] + [3 * torch.randn_like(feats[3])]  # not a constant shift: BN would absorb that
    assert (model(boundaries, feats) - model(boundaries, changed)).abs().max() > 1e-5


def test_ss_takes_one_map_and_refuses_four():
    model = BALT(**SMALL, fusion=2, features="ss")
    boundaries, feats = inputs(32)
    assert model(boundaries, feats[:1]).shape == (2, 5, 32, 32)
    with pytest.raises(ValueError, match='"ss" needs 1 feature map'):
        model(boundaries, feats)


def test_strided_chain_for_3x_halves_twice_through_the_middle_level():
    model = BALT(**SMALL, fusion=3)
    chain = model.fuse["3"]["1"]  # F64 -> level 2's channels at 32² -> level 3's channels at 16²
    convs = [m for m in chain.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (8, 8, (3, 3), (2, 2)), (8, 16, (3, 3), (2, 2))]
    _, feats = inputs(64)
    assert chain(feats[0]).shape == (2, 16, 16, 16)
    assert model.fuse["4"]["2"](feats[1]).shape == (2, 32, 8, 8)


def test_max_pool_transition_is_a_1x1_then_a_max_over_blocks():
    model = BALT(**SMALL, fusion=3, transition="max_pool").eval()
    for p in model.parameters():  # non-trivial BN affine so that the recomputation is not vacuous
        torch.nn.init.normal_(p, 0.1, 0.5)
    _, feats = inputs(64, seed=3)
    f = feats[0].double().numpy()
    cbr_mod = model.fuse["3"]["1"][0]  # the 1x1 conv-BN-ReLU into level 3's channels
    conv_w = cbr_mod[0].weight.detach().double().numpy()[:, :, 0, 0]  # (16, 8)
    bn_mod = cbr_mod[1]
    scale = bn_mod.weight.detach().double().numpy() / np.sqrt(bn_mod.running_var.double().numpy() + bn_mod.eps)
    shift = bn_mod.bias.detach().double().numpy() - bn_mod.running_mean.double().numpy() * scale
    y = np.einsum("oc,bchw->bohw", conv_w, f) * scale[None, :, None, None] + shift[None, :, None, None]
    y = np.maximum(y, 0)
    pooled = y.reshape(2, 16, 16, 4, 16, 4).max(axis=(3, 5))  # max over each 4x4 block: 64² -> 16²
    out = model.fuse["3"]["1"](feats[0])
    np.testing.assert_allclose(out.detach().double().numpy(), pooled, rtol=1e-5, atol=1e-5)


def test_default_forward_is_the_code_balt_ms_2x_written_out():
    """The notes' list (§5.2) and eq. 5's fused skips, step by step with the sub-modules."""
    torch.manual_seed(0)
    model = BALT(**SMALL).eval()
    b, (f64, f32, f16, f8) = inputs(64, seed=1)
    enc, fu, dec = model.encoder, model.fuse, model.decoder
    x1 = enc["1"](b) + fu["1"]["1"](f64)
    x2 = enc["2"](x1) + fu["2"]["1"](f64) + fu["2"]["2"](f32)
    x3 = enc["3"](x2) + fu["3"]["2"](f32) + fu["3"]["3"](f16)
    x4 = enc["4"](x3) + fu["4"]["3"](f16) + fu["4"]["4"](f8)
    x5 = enc["5"](x4)

    def up(step, x, skip):  # bilinear x2 with align_corners=True, concat [skip, up], double conv
        upsampled = torch.nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return step.conv(torch.cat((skip, upsampled), 1))

    x = up(dec["1"], up(dec["2"], up(dec["3"], up(dec["4"], x5, x4), x3), x2), x1)
    torch.testing.assert_close(model(b, [f64, f32, f16, f8]), model.out(x), rtol=0, atol=0)
    assert x5.shape == (2, 32, 4, 4)


def test_double_conv_is_two_bias_free_convs_with_slow_bn():
    model = BALT(**SMALL, fusion=0)
    dc = model.encoder["1"]
    assert [type(m).__name__ for m in dc] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    assert all(m.bias is None for m in dc if isinstance(m, torch.nn.Conv2d))
    assert all(m.momentum == 0.01 for m in dc if isinstance(m, torch.nn.BatchNorm2d))
    assert model.out.bias is not None


@pytest.mark.parametrize(("fusion", "features", "transition"), VARIANTS)
def test_every_parameter_gets_a_gradient(fusion, features, transition):
    torch.manual_seed(0)
    model = BALT(**SMALL, fusion=fusion, features=features, transition=transition)
    boundaries, feats = inputs(32, n=4 if features == "ms" else 1)
    model(boundaries, feats).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fusion": 4}, "fusion must be"), ({"features": "xs"}, "features must be"),
    ({"transition": "avg_pool"}, "transition must be"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BALT(**SMALL, **kwargs)


def test_bad_inputs_are_refused_with_what_is_wrong():
    model = BALT(**SMALL)
    boundaries, feats = inputs(32)
    with pytest.raises(ValueError, match='"ms" needs 4 feature map'):
        model(boundaries, feats[:3])
    with pytest.raises(ValueError, match=r"feature map 2 \(level 3\) must be \(2, 8, 8, 8\)"):
        model(boundaries, feats[:2] + [feats[2][..., :4, :4], feats[3]])
    with pytest.raises(ValueError, match="divisible by 16"):
        model(*inputs(40))
    with pytest.raises(ValueError, match=r"boundaries must be \(B, 3, H, W\)"):
        model(boundaries[:, :2], feats)
