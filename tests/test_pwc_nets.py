"""PWC's networks (paper 002): the detector, the direct-regression model and the shape discriminator.

References are independent of the code under test: parameter counts are closed-form sums written here from the
layer table of IMPLEMENTATION_NOTES §3.2 and the official code's dense layers, checked against the paper's
numbers (Sec. 4); the transposed convolutions are checked as the adjoints of TF "SAME" convolutions padded by
TF's own formula; the grey averaging against a three-channel network whose first kernel is split in thirds; the
shortcuts and the heads against functional rebuilds. Full-size networks are counted on the meta device (no
memory); one full-size forward runs at batch 1; everything else uses width 8.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.components.pwc_nets import (
    DirectRegression,
    PWCDetector,
    ShapeDiscriminator,
    tf_conv_block,
    tf_same_up,
)

# Sec. 4 of the paper
PAPER_PWC, PAPER_DIST, PAPER_REG, PAPER_DISC, PAPER_HYBRID_DISC = 82_947_658, 82_871_880, 178_682_440, 34_689, \
    82_982_347


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_block(cin: int, cout: int, k: int) -> int:
    """k x k conv with bias, then BN (γ, β)."""
    return k * k * cin * cout + cout + 2 * cout


def backbone_params(cin: int = 1) -> int:
    """Notes §3.2: 2x64, 2x128, 4x256, 4x512, 4x512 3x3 conv blocks; a 7x7 and a 1x1 block of 2048."""
    widths = [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    total = 0
    for cout in widths:
        total += conv_block(cin, cout, 3)
        cin = cout
    return total + conv_block(512, 2048, 7) + conv_block(2048, 2048, 1)


def detector_params(classes: int, cin: int = 1) -> int:
    """Backbone + 1x1 score (bias) + 4x4 → 512, 4x4 → 256, 16x16 → classes transposed convs (bias)."""
    return (backbone_params(cin) + 2048 * classes + classes + 16 * classes * 512 + 512 + 16 * 512 * 256 + 256
            + 256 * 256 * classes + classes)


def dense(cin: int, cout: int, bn: bool) -> int:
    return cin * cout + cout + (2 * cout if bn else 0)


def regression_params(points: int) -> int:
    """model_reg.py: flatten 7*7*2048, dense 1024 + BN, dense 256 + BN, dense 2K."""
    return backbone_params() + dense(7 * 7 * 2048, 1024, True) + dense(1024, 256, True) + dense(256, 2 * points, False)


def discriminator_params(points: int) -> int:
    """model_hybridADis.py: dense 128 + BN, dense 128 + BN, dense 1."""
    return dense(2 * points, 128, True) + dense(128, 128, True) + dense(128, 1, False)


def test_parameter_counts_match_closed_form_and_paper() -> None:
    with torch.device("meta"):  # 260 M parameters counted without allocating them
        pwc, dist, rgb = PWCDetector(69), PWCDetector(68), PWCDetector(69, grey=False)
        reg, disc = DirectRegression(68), ShapeDiscriminator(68)
        reg19, disc19 = DirectRegression(19), ShapeDiscriminator(19)
    assert count(pwc) == detector_params(69) == PAPER_PWC
    assert count(dist) == detector_params(68) == PAPER_DIST
    assert count(reg) == regression_params(68) == PAPER_REG
    assert count(disc) == discriminator_params(68) == PAPER_DISC
    assert count(pwc) + count(disc) == PAPER_HYBRID_DISC
    assert count(rgb) == detector_params(69, cin=3) == PAPER_PWC + 2 * 9 * 64
    assert count(reg19) == regression_params(19) and count(disc19) == discriminator_params(19)
    # BN running statistics are buffers, not parameters (TF: non-trainable variables)
    bn = [m for m in pwc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn) == 18 and all(m.running_mean is not None and m.momentum == 0.1 and m.eps == 1e-5 for m in bn)


def test_full_size_detector_shapes() -> None:
    """One forward at the paper's size: backbone outputs, the TF-'SAME' transposed convs' sizes 14, 28, 224."""
    torch.manual_seed(0)
    net = PWCDetector().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("up1", "up2", "up3"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, 224, 224))
        logits = net.decode(f)
    assert f.pool3.shape == (1, 256, 28, 28) and f.pool4.shape == (1, 512, 14, 14) and f.top.shape == (1, 2048, 7, 7)
    assert shapes == {"up1": (1, 512, 14, 14), "up2": (1, 256, 28, 28), "up3": (1, 69, 224, 224)}
    assert logits.shape == (1, 69, 224, 224) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("k", "s", "n"), [(4, 2, 7), (4, 2, 14), (16, 8, 28)])
def test_transposed_conv_is_adjoint_of_tf_same_conv(k: int, s: int, n: int) -> None:
    """TF's conv2d_transpose is the gradient of conv2d('SAME') with output n from input n*s; TF pads that conv by
    max((n - 1) * s + k - n * s, 0) in total, the smaller half before. <up(x), y> = <x, conv_same(y)>."""
    torch.manual_seed(0)
    up = tf_same_up(3, 2, k, s)
    nn.init.zeros_(up.bias)
    x = torch.randn(1, 3, n, n, dtype=torch.float64)
    y = torch.randn(1, 2, n * s, n * s, dtype=torch.float64)
    total = max((n - 1) * s + k - n * s, 0)
    before, after = total // 2, total - total // 2
    weight = up.weight.detach().double()  # (3, 2, k, k): as a conv from 2 to 3 channels
    conv_same = F.conv2d(F.pad(y, (before, after, before, after)), weight, stride=s)
    out = up.double()(x)
    assert out.shape == (1, 2, n * s, n * s) and conv_same.shape == x.shape
    assert torch.allclose((out * y).sum(), (x * conv_same).sum(), rtol=1e-10)


def small_detector(**kwargs) -> PWCDetector:
    torch.manual_seed(0)
    net = PWCDetector(width=8, **kwargs).eval()
    for m in net.modules():  # non-trivial running statistics, so eval mode is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def test_grey_averaging() -> None:
    """An RGB image and its grey image repeated 3x give the same logits; and a 3-channel network whose first
    kernel is the grey one split in thirds gives them too (grey = (R + G + B) / 3, as tf.reduce_mean)."""
    grey_net = small_detector()
    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 64, 64)
    grey = rgb.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    rgb_net = small_detector(grey=False)
    state = grey_net.state_dict()
    first = "backbone.stages.0.0.0.weight"
    assert state[first].shape[1] == 1 and rgb_net.state_dict()[first].shape[1] == 3
    state[first] = state[first].repeat(1, 3, 1, 1) / 3
    rgb_net.load_state_dict(state)
    with torch.no_grad():
        out_rgb, out_grey, out_split = grey_net(rgb), grey_net(grey), rgb_net(rgb)
    assert torch.allclose(out_rgb, out_grey, atol=1e-5)
    assert torch.allclose(out_rgb, out_split, atol=1e-5)
    assert not torch.allclose(out_rgb, rgb_net(rgb[:, [1, 0, 2]] * torch.tensor([1.0, 0.5, 2.0]).view(1, 3, 1, 1)))


def test_shortcuts_enter_where_the_table_says() -> None:
    """The decoder is affine after the score layer: adding d to pool4 moves the logits by up3(up2(d)), adding e to
    pool3 by up3(e) (both without bias); built here with F.conv_transpose2d and the notes' paddings."""
    net = small_detector()
    torch.manual_seed(2)
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, 64, 64))
        d, e = torch.randn_like(f.pool4), torch.randn_like(f.pool3)
        base = net.decode(f)
        moved4 = net.decode(f._replace(pool4=f.pool4 + d)) - base
        moved3 = net.decode(f._replace(pool3=f.pool3 + e)) - base
        up2 = F.conv_transpose2d(d, net.up2.weight, stride=2, padding=1)
        expect4 = F.conv_transpose2d(up2, net.up3.weight, stride=8, padding=4)
        expect3 = F.conv_transpose2d(e, net.up3.weight, stride=8, padding=4)
        # and the score path: logits = up3(up2(up1(relu(score(top))) + pool4) + pool3), all explicit
        score = F.relu(F.conv2d(f.top, net.score.weight, net.score.bias))
        fuse1 = F.conv_transpose2d(score, net.up1.weight, net.up1.bias, stride=2, padding=1) + f.pool4
        fuse2 = F.conv_transpose2d(fuse1, net.up2.weight, net.up2.bias, stride=2, padding=1) + f.pool3
        full = F.conv_transpose2d(fuse2, net.up3.weight, net.up3.bias, stride=8, padding=4)
    assert torch.allclose(moved4, expect4, atol=1e-4) and torch.allclose(moved3, expect3, atol=1e-4)
    assert torch.allclose(base, full, atol=1e-5)


def check_gradients(net: nn.Module, loss: torch.Tensor) -> None:
    """Every parameter gets a finite gradient and every weight a non-zero one. (Biases of convs / dense layers
    followed by a training-mode BN get ~0: the BN removes the mean they add, in TF as here.)"""
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("weight"):
            assert p.grad.abs().sum() > 0, name


def test_gradients_flow() -> None:
    torch.manual_seed(3)
    det = PWCDetector(width=8).train()
    logits = det(torch.rand(2, 3, 64, 64))
    check_gradients(det, (logits * torch.randn_like(logits)).sum())
    reg = DirectRegression(19, width=8, input_size=64).train()
    points = reg(torch.rand(2, 3, 64, 64))
    check_gradients(reg, (points * torch.randn_like(points)).sum())
    disc = ShapeDiscriminator(19).train()
    check_gradients(disc, F.binary_cross_entropy_with_logits(disc(torch.rand(4, 19, 2) * 64), torch.ones(4)))


def test_direct_regression_head() -> None:
    """Output (B, K, 2) as x, y per point: with the head's last layer zeroed but its bias, the output is that
    bias read as (x0, y0, x1, y1, ...). With dropout 0 (the code's effective behaviour) training mode is
    deterministic."""
    torch.manual_seed(4)
    net = DirectRegression(5, width=8, input_size=64).train()
    x = torch.rand(2, 3, 64, 64)
    assert net.features(x).shape == (2, 256, 2, 2)
    assert torch.equal(net(x), net(x))
    last = net.head[-1]
    pixels = torch.arange(10, dtype=torch.float32) * 20
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(pixels)
    out = net(x)
    assert out.shape == (2, 5, 2)
    assert torch.equal(out[1, 3], torch.tensor([120.0, 140.0]))
    with pytest.raises(ValueError, match="multiple of 32"):
        DirectRegression(5, width=8, input_size=100)


def test_discriminator_is_dense_bn_relu_to_a_logit() -> None:
    """Eval mode against a hand-written matrix form: BN(v) = γ (v - μ) / sqrt(σ² + 1e-5) + β."""
    torch.manual_seed(5)
    disc = ShapeDiscriminator(7).eval()
    for m in disc.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    points = torch.rand(3, 7, 2) * 224  # pixels, as the code feeds them
    d1, bn1 = disc.net[1][0], disc.net[1][1]
    d2, bn2 = disc.net[2][0], disc.net[2][1]
    d3 = disc.net[3]

    def bn(v: torch.Tensor, m: nn.BatchNorm1d) -> torch.Tensor:
        return m.weight * (v - m.running_mean) / torch.sqrt(m.running_var + 1e-5) + m.bias

    flat = torch.stack([torch.cat([torch.stack((p[0], p[1])) for p in shape]) for shape in points])  # x0 y0 x1 ..
    h = torch.relu(bn(flat @ d1.weight.T + d1.bias, bn1))
    h = torch.relu(bn(h @ d2.weight.T + d2.bias, bn2))
    expect = (h @ d3.weight.T + d3.bias).squeeze(1)
    with torch.no_grad():
        out = disc(points)
    assert out.shape == (3,) and torch.allclose(out, expect, atol=1e-4)
    with torch.no_grad():
        d3.weight.zero_()
        d3.bias.fill_(5.0)
    assert torch.equal(disc(points), torch.full((3,), 5.0))  # a logit, not a probability
    with pytest.raises(ValueError, match=r"\(B, 7, 2\)"):
        disc(torch.rand(3, 8, 2))


def test_tf_initialisation() -> None:
    """Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out)) and the sample fills most of that range; biases zero."""
    net = PWCDetector(width=8)
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(layers) == 16 + 2 + 1 + 3
    for m in layers:
        w = m.weight
        receptive = w.shape[2] * w.shape[3]
        bound = math.sqrt(6 / ((w.shape[0] + w.shape[1]) * receptive))
        assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
    with pytest.raises(ValueError):
        tf_conv_block(4, 4, 4)
    with pytest.raises(ValueError):
        tf_same_up(4, 4, 5, 2)
