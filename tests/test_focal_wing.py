"""PropagationNet's losses (paper 003 eqs. 1-5): Adaptive Wing per pixel, AWing's weight map, the focal factor and
Focal Wing, each against an independent reference (a scalar loop over eq. 1, scipy's grey dilation, hand-worked
focal factors, finite differences).
"""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import grey_dilation

from landmarks.losses import adaptive_wing, adaptive_wing_loss, focal_factor, focal_wing_loss

OMEGA, THETA, EPSILON, ALPHA = 14.0, 0.5, 1.0, 2.1


def awing_scalar(y: float, y_hat: float, omega=OMEGA, theta=THETA, epsilon=EPSILON, alpha=ALPHA) -> float:
    """Eq. 1 with A and Omega as printed under it, one pixel at a time in plain Python floats."""
    d, p = abs(y - y_hat), alpha - y
    a = omega * p * (theta / epsilon) ** (p - 1) / (1 + (theta / epsilon) ** p) / epsilon
    big_omega = theta * a - omega * math.log(1 + (theta / epsilon) ** p)
    return omega * math.log(1 + abs(d / epsilon) ** p) if d < theta else a * d - big_omega


def awing_numpy(pred: np.ndarray, target: np.ndarray, **params: float) -> np.ndarray:
    return np.vectorize(lambda y_hat, y: awing_scalar(float(y), float(y_hat), **params))(pred, target)


def slope_a(y: float) -> float:
    p = ALPHA - y
    return OMEGA * p * (THETA / EPSILON) ** (p - 1) / (1 + (THETA / EPSILON) ** p) / EPSILON


def test_adaptive_wing_matches_eq1_pixel_by_pixel():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 4, 8, 8, generator=g, dtype=torch.float64)
    target[0, 0] = 0.0  # background pixels (exponent 2.1)
    target[0, 1] = 1.0  # peak pixels (exponent 1.1)
    pred = target + (torch.rand(target.shape, generator=g, dtype=torch.float64) - 0.5) * 3.0  # |d| up to 1.5
    pred[1, 0, 0, :4] = target[1, 0, 0, :4]  # d = 0
    near = torch.tensor([THETA - 1e-2, -(THETA - 1e-4), THETA, -(THETA + 1e-2)], dtype=torch.float64)
    pred[2, 0, 0, :4] = target[2, 0, 0, :4] + near  # either side of θ, where the two branches nearly agree
    d = (pred - target).abs()
    assert (d < THETA).sum() > 50 and (d > THETA).sum() > 50  # both branches well represented
    out = adaptive_wing(pred, target)
    assert out.shape == pred.shape
    np.testing.assert_allclose(out.numpy(), awing_numpy(pred.numpy(), target.numpy()), rtol=1e-12, atol=1e-12)
    out32 = adaptive_wing(pred.float(), target.float())
    np.testing.assert_allclose(out32.numpy(), out.numpy(), rtol=1e-5, atol=1e-5)
    other = dict(omega=10.0, theta=0.3, epsilon=0.7, alpha=2.4)  # every hyper-parameter in its place
    np.testing.assert_allclose(adaptive_wing(pred, target, **other).numpy(),
                               awing_numpy(pred.numpy(), target.numpy(), **other), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("side", [1.0, -1.0])
def test_value_and_gradient_are_continuous_at_theta(y, side):
    """Left and right limits at |y - ŷ| = θ agree in value and slope; autograd matches central differences."""
    h = 1e-9
    gaps = torch.tensor([THETA - h, THETA + h], dtype=torch.float64)
    pred = (y + side * gaps).requires_grad_()
    target = torch.full_like(pred, y)
    loss = adaptive_wing(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    left_value = OMEGA * math.log(1 + (THETA / EPSILON) ** (ALPHA - y))  # the log branch at d = θ, closed form
    assert loss[0].item() == pytest.approx(left_value, abs=1e-7)
    assert loss[1].item() == pytest.approx(left_value, abs=1e-7)
    assert grad[0].item() == pytest.approx(grad[1].item(), abs=1e-6)
    assert abs(grad[1].item()) == pytest.approx(slope_a(y), rel=1e-9)  # the L1 side's slope is A
    # central finite differences, away from θ (either side), against autograd
    for gap in (0.2, 0.45, 0.55, 1.3):
        x = torch.tensor([y + side * gap], dtype=torch.float64, requires_grad=True)
        t = torch.tensor([y], dtype=torch.float64)
        (g,) = torch.autograd.grad(adaptive_wing(x, t).sum(), x)
        e = 1e-6
        fd = (awing_scalar(y, x.item() + e) - awing_scalar(y, x.item() - e)) / (2 * e)
        assert g.item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_like_log_near_zero_on_background_and_like_l1_for_large_errors():
    t = torch.zeros(4, dtype=torch.float64)
    d = torch.tensor([1e-4, 1e-3, 1e-2, 1e-1], dtype=torch.float64)
    # y = 0: ω ln(1 + d^α) ~ ω d^α, so small background errors are nearly free (gradient → 0 like the MSE)
    ratio = adaptive_wing(d, t) / (OMEGA * torch.log1p(d**ALPHA))
    np.testing.assert_allclose(ratio.numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose((adaptive_wing(d[:2], t[:2]) / (OMEGA * d[:2] ** ALPHA)).numpy(), 1.0, rtol=1e-5)
    x = d.clone().requires_grad_()
    (g0,) = torch.autograd.grad(adaptive_wing(x, t).sum(), x)
    np.testing.assert_allclose(g0.numpy(), (OMEGA * ALPHA * d ** (ALPHA - 1) / (1 + d**ALPHA)).numpy(), rtol=1e-12)
    assert g0[0] < 2e-3 and torch.all(g0[1:] > g0[:-1])  # vanishes like d^1.1 as d → 0
    # y = 1: exponent 1.1, the gradient at small errors stays far larger than on the background
    one = torch.ones(4, dtype=torch.float64)
    x1 = (1 - d).requires_grad_()
    (g1,) = torch.autograd.grad(adaptive_wing(x1, one).sum(), x1)
    assert torch.all(g1.abs() > 4 * g0)  # the ratio (1.1 / 2.1) / d grows as d → 0: 4.9 at d = 0.1
    assert g1.abs()[0] > 1000 * g0[0]
    # large errors: exactly linear with slope A (constant first differences, as L1), for y = 0 and y = 1
    for y in (0.0, 1.0):
        far = torch.tensor([0.6, 1.0, 2.0, 5.0], dtype=torch.float64)
        v = adaptive_wing(y + far, torch.full_like(far, y))
        np.testing.assert_allclose((torch.diff(v) / torch.diff(far)).numpy(), slope_a(y), rtol=1e-12)


def batch(n=3, k=5, size=8, seed=1):
    """Gaussian-like targets in [0, 1] with a peak per map, and noisy predictions."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(1, size - 1, (n, k, 2), generator=g)
    dist2 = (xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2
    target = torch.exp(-dist2.double() / 2)
    pred = target + 0.4 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    return pred, target


def reference_loss(pred, target, weights, foreground_weight, pixels="mean"):
    """(1/N) Σ_n w_n Σ_k P(AWing ⊙ (W·M + 1)) by loops, M from scipy's grey dilation."""
    pred, target = pred.detach().numpy(), target.numpy()
    n, k = pred.shape[:2]
    total = 0.0
    for i in range(n):
        sample = 0.0
        for j in range(k):
            mask = (grey_dilation(target[i, j], size=(3, 3)) > 0.2).astype(float)
            per_pixel = awing_numpy(pred[i, j], target[i, j]) * (foreground_weight * mask + 1)
            sample += per_pixel.mean() if pixels == "mean" else per_pixel.sum()
        total += (1.0 if weights is None else float(weights[i])) * sample
    return total / n


@pytest.mark.parametrize("foreground_weight", [0.0, 10.0])
@pytest.mark.parametrize("pixels", ["mean", "sum"])
def test_adaptive_wing_loss_with_weight_map_and_sample_weights(foreground_weight, pixels):
    pred, target = batch()
    weights = torch.tensor([1.0, 7.0, 2.5], dtype=torch.float64)
    for w in (None, weights):
        got = adaptive_wing_loss(pred, target, w, foreground_weight, pixels).item()
        assert got == pytest.approx(reference_loss(pred, target, w, foreground_weight, pixels), rel=1e-12)
    if foreground_weight:  # the weight map matters on these maps
        assert adaptive_wing_loss(pred, target, foreground_weight=10.0) > 1.5 * adaptive_wing_loss(pred, target)


# Hand-made batch, N = 4, columns (pose, expression, illumination, make-up, occlusion, blur):
#   n0: pose, occlusion;  n1: pose;  n2: blur;  n3: none.
# N_c = (2, 0, 0, 0, 1, 1), so eq. 2 gives σ^(c) = (4/2, 1, 1, 1, 4/1, 4/1) = (2, 1, 1, 1, 4, 4).
# per sample (σ_n^(c) = σ^(c) where n has c, else 1):
#   n0 = 2 + 1 + 1 + 1 + 4 + 1 = 10;  n1 = 2 + 5·1 = 7;  n2 = 5·1 + 4 = 9;  n3 = 6·1 = 6.
# literal (σ^(c) for every sample): 2 + 1 + 1 + 1 + 4 + 4 = 13 for each.
HAND_BATCH = [[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]


def test_focal_factor_on_a_hand_made_batch():
    attributes = torch.tensor(HAND_BATCH, dtype=torch.bool)
    assert focal_factor(attributes).tolist() == [10.0, 7.0, 9.0, 6.0]
    assert focal_factor(attributes, "literal").tolist() == [13.0] * 4
    nothing = torch.zeros(4, 6, dtype=torch.bool)  # no sample has an attribute: Σ_c 1 = C = 6 (eq. 3)
    assert focal_factor(nothing).tolist() == [6.0] * 4
    assert focal_factor(nothing, "literal").tolist() == [6.0] * 4
    everyone = torch.ones(4, 6, dtype=torch.bool)  # N_c = N: every σ is 1
    assert focal_factor(everyone).tolist() == [6.0] * 4
    with pytest.raises(ValueError):
        focal_factor(torch.zeros(4, 0, dtype=torch.bool))
    with pytest.raises(ValueError):
        focal_factor(attributes, "per-sample")  # type: ignore[arg-type]


def test_focal_wing_reduces_to_awing_and_combines_the_boundary_term():
    pred, target = batch()
    bpred, btarget = batch(k=2, seed=2)
    awing = reference_loss(pred, target, None, 0.0)
    # no attributes in the dataset (weights None, σ ≡ 1) and β = 0: plain AWing
    assert focal_wing_loss(pred, target, bpred, btarget, beta=0.0)["loss"].item() == pytest.approx(awing, rel=1e-12)
    # a batch where no sample has one of the C = 6 attributes: C times AWing
    nothing = focal_factor(torch.zeros(3, 6, dtype=torch.bool))
    got = focal_wing_loss(pred, target, bpred, btarget, nothing, beta=0.0)["loss"].item()
    assert got == pytest.approx(6 * awing, rel=1e-6)
    # eq. 5 with focal weights: L_lm + 0.5 L_bd, each weighted per sample
    weights = focal_factor(torch.tensor(HAND_BATCH[:3], dtype=torch.bool))
    terms = focal_wing_loss(pred, target, bpred, btarget, weights, foreground_weight=10.0)
    lm = reference_loss(pred, target, weights, 10.0)
    bd = reference_loss(bpred, btarget, weights, 10.0)
    assert terms["landmark"].item() == pytest.approx(lm, rel=1e-6)
    assert terms["boundary"].item() == pytest.approx(bd, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(lm + 0.5 * bd, rel=1e-6)


def test_gradcheck_on_a_tiny_float64_input():
    pred, target = batch(n=2, k=2, size=4, seed=3)
    bpred, btarget = batch(n=2, k=1, size=4, seed=4)
    for p, t in ((pred, target), (bpred, btarget)):  # keep away from the kink-free but finite-difference-hard θ
        near = ((p - t).abs() - THETA).abs() < 1e-3
        p[near] += 1e-2
    weights = torch.tensor([3.0, 1.5], dtype=torch.float64)

    def f(p, b):
        return focal_wing_loss(p, target, b, btarget, weights, foreground_weight=10.0)["loss"]

    assert torch.autograd.gradcheck(f, (pred.requires_grad_(), bpred.requires_grad_()))
    assert torch.autograd.gradcheck(lambda p: adaptive_wing(p, target), (pred,))
