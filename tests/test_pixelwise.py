"""PWC's labels, losses and decoders (paper 002 eqs. 1-3, the discriminator's losses, the heatmap baselines), each
against an independent reference: the official ``pts2map`` loop in numpy, numpy log-softmax loops, hand-worked
distances, closed forms of the GAN losses, finite differences (gradcheck).
"""

import math

import numpy as np
import pytest
import torch

from landmarks.losses import kl_divergence
from landmarks.pixelwise import (
    adversarial_loss,
    argmax_coordinates,
    coordinate_loss,
    discriminator_loss,
    distribution_loss,
    heatmap_l2_loss,
    heatmap_targets,
    hybrid_loss,
    pixel_labels,
    pwc_loss,
    soft_argmax,
)

# --- numpy references ------------------------------------------------------------------------------------------


def pts2map_numpy(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """The official ``TensorflowUtils.pts2map`` for an h x w map: Python's round, the range check on the rounded
    pixel, landmarks written in order (a later one overwrites)."""
    maps = np.zeros((points.shape[0], h, w), dtype=np.int64)
    for i in range(points.shape[0]):
        for p in range(points.shape[1]):
            x, y = points[i, p]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            xr, yr = round(x), round(y)
            if xr < w and yr < h and xr > -1 and yr > -1:
                maps[i, yr, xr] = p + 1
    return maps


def log_softmax_numpy(z: np.ndarray, axis: int) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def gaussian_numpy(x: float, y: float, h: int, w: int, sigma: float, truncate: float | None) -> np.ndarray:
    """One normalised Gaussian target, pixel by pixel."""
    g = np.zeros((h, w))
    for j in range(h):
        for i in range(w):
            if truncate is None or (abs(i - x) <= truncate * sigma and abs(j - y) <= truncate * sigma):
                g[j, i] = math.exp(-((i - x) ** 2 + (j - y) ** 2) / (2 * sigma**2))
    return g / g.sum() if g.sum() > 0 else g


# --- labels ----------------------------------------------------------------------------------------------------


def test_pixel_labels_match_the_official_loop():
    g = torch.Generator().manual_seed(0)
    h, w = 9, 13
    points = torch.rand(3, 12, 2, generator=g, dtype=torch.float64) * torch.tensor([w + 4.0, h + 4.0]) - 2
    points[0, 0] = torch.tensor([w - 0.5, 3.0])  # 12.5 rounds to 12 (even): inside, last column
    points[0, 1] = torch.tensor([w - 1.5, 3.0])  # 11.5 rounds to 12 too: landmark 1 overwrites landmark 0
    points[0, 2] = torch.tensor([-0.5, 0.0])  # -0.5 rounds to -0: inside, first column
    points[0, 3] = torch.tensor([2.0, h - 0.5])  # 8.5 rounds to 8: inside, last row
    points[0, 4] = torch.tensor([2.0, h + 0.5])  # 9.5 rounds to 10: outside
    points[0, 5] = torch.tensor([w + 0.3, 1.0])  # rounds to w: outside
    points[0, 6] = torch.tensor([1.0, h + 0.2])  # rounds to h: outside
    points[1, 5] = points[1, 9] = torch.tensor([4.2, 4.4])  # a duplicate: the later (9) wins
    points[1, 6] = torch.tensor([float("nan"), 2.0])  # not finite: no label
    points[2, 7] = torch.tensor([1e9, 1e9])  # far outside
    labels = pixel_labels(points, (h, w))
    assert labels.shape == (3, h, w) and labels.dtype == torch.long
    np.testing.assert_array_equal(labels.numpy(), pts2map_numpy(points.numpy(), h, w))
    assert labels[0, 3, w - 1] == 2 and labels[1, 4, 4] == 10 and labels[0, h - 1, 2] == 4
    np.testing.assert_array_equal(pixel_labels(points.float(), (h, w)).numpy(), labels.numpy())


# --- eq. 2 -----------------------------------------------------------------------------------------------------


def test_pwc_loss_is_the_pixel_mean_of_the_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64) * 3
    labels = pixel_labels(torch.tensor([[[1.0, 1.0], [4.0, 2.0], [0.0, 4.0]], [[5.0, 0.0], [2.0, 2.0], [9.0, 9.0]]],
                                       dtype=torch.float64), (5, 6))
    log_p = log_softmax_numpy(logits.numpy(), axis=1)
    lab = labels.numpy()
    total = sum(-log_p[b, lab[b, j, i], j, i] for b in range(2) for j in range(5) for i in range(6))
    assert pwc_loss(logits, labels).item() == pytest.approx(total / (2 * 5 * 6), rel=1e-12)


# --- decoders --------------------------------------------------------------------------------------------------


def soft_argmax_numpy(logits: np.ndarray) -> np.ndarray:
    """Per-pixel class softmax, then each landmark channel normalised over pixels, then the expected (x, y)."""
    p = np.exp(log_softmax_numpy(logits, axis=1))
    b, c, h, w = p.shape
    out = np.zeros((b, c - 1, 2))
    for n in range(b):
        for k in range(1, c):
            m = p[n, k] / p[n, k].sum()
            out[n, k - 1] = [sum(m[j, i] * i for j in range(h) for i in range(w)),
                             sum(m[j, i] * j for j in range(h) for i in range(w))]
    return out


def test_soft_argmax_matches_numpy_and_is_differentiable():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 5, 7, generator=g, dtype=torch.float64) * 2
    np.testing.assert_allclose(soft_argmax(logits).numpy(), soft_argmax_numpy(logits.numpy()), rtol=1e-12)
    tiny = torch.randn(1, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(soft_argmax, (tiny,))


def one_hot_maps(points: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, K, 2) integer points → (B, K + 1, H, W) one-hot class probabilities (background elsewhere)."""
    return torch.nn.functional.one_hot(pixel_labels(points, (h, w)), points.shape[1] + 1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("h, w", [(6, 6), (5, 8)])
def test_soft_argmax_equals_argmax_on_sharp_maps_including_the_borders(h, w):
    corners = [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w // 2, h // 2 - 1]]
    points = torch.tensor([corners], dtype=torch.float64)
    probs = one_hot_maps(points, h, w).to(torch.float64)
    assert torch.equal(soft_argmax(probs, from_logits=False), points)
    logits = 60.0 * probs  # sharp logits: each landmark's pixel wins by e^60
    np.testing.assert_allclose(soft_argmax(logits).numpy(), points.numpy(), atol=1e-12)
    assert torch.equal(argmax_coordinates(logits), points.long())


def test_argmax_coordinates_read_the_class_softmax_not_the_logits():
    """Landmark 0's logit is higher at pixel A, but the background dominates there: the official decoding (the
    per-pixel softmax's argmax) picks pixel B; compared with np.argmax per channel as ``map2pts`` does."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    logits[0, 1] = -5.0
    logits[0, :, 1, 1] = torch.tensor([10.0, 2.0, 0.0])  # A = (x 1, y 1)
    logits[0, :, 2, 3] = torch.tensor([0.0, 1.5, 0.0])  # B = (x 3, y 2)
    got = argmax_coordinates(logits)
    p = np.exp(log_softmax_numpy(logits.numpy().astype(np.float64), axis=1))
    expected = [[np.unravel_index(np.argmax(p[b, k]), p[b, k].shape)[::-1] for k in range(1, 3)] for b in range(2)]
    np.testing.assert_array_equal(got.numpy(), np.array(expected))
    assert got[0, 0].tolist() == [3, 2] and logits[0, 1].flatten().argmax().item() == 1 * 5 + 1


# --- eqs. 1 and 3 ----------------------------------------------------------------------------------------------


def test_coordinate_loss_hand_worked():
    pred = torch.tensor([[[3.0, 4.0], [1.0, 1.0]], [[0.0, 0.0], [-6.0, 8.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    loss = coordinate_loss(pred, target)
    assert loss.item() == pytest.approx((5 + 0 + 0 + 10) / 4)  # Euclidean, not squared
    loss.backward()
    expected = torch.tensor([[[0.6, 0.8], [0.0, 0.0]], [[0.0, 0.0], [-0.6, 0.8]]]) / 4  # unit vectors / 4; 0 at d=0
    torch.testing.assert_close(pred.grad, expected)


def test_hybrid_official_adds_a_value_without_gradient_and_the_soft_one_trains():
    g = torch.Generator().manual_seed(4)
    points = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[3.0, 3.0], [0.0, 4.0]]], dtype=torch.float64)
    labels = pixel_labels(points, (5, 6))
    base = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)

    def grad_of(fn):
        logits = base.clone().requires_grad_(True)
        out = fn(logits)
        out.backward()
        return out.detach(), logits.grad

    pwc, pwc_grad = grad_of(lambda z: pwc_loss(z, labels))
    official, official_grad = grad_of(lambda z: hybrid_loss(z, labels, points, official=True)["loss"])
    argmax_distance = (argmax_coordinates(base).double() - points).norm(dim=-1).mean()
    assert official.item() == pytest.approx(pwc.item() + 0.25 * argmax_distance.item(), rel=1e-12)
    assert argmax_distance > 0.5  # the term has a value ...
    torch.testing.assert_close(official_grad, pwc_grad, rtol=0, atol=0)  # ... and no gradient
    soft, soft_grad = grad_of(lambda z: hybrid_loss(z, labels, points, beta=0.5)["loss"])
    soft_distance = np.linalg.norm(soft_argmax_numpy(base.numpy()) - points.numpy(), axis=-1).mean()
    assert soft.item() == pytest.approx(pwc.item() + 0.5 * soft_distance, rel=1e-12)
    assert (soft_grad - pwc_grad).abs().max() > 1e-3
    out = hybrid_loss(base, labels, points)
    assert out["points"].shape == (2, 2, 2) and set(out) == {"loss", "pwc", "coordinate", "points"}


# --- the discriminator's losses ----------------------------------------------------------------------------------


def test_discriminator_losses_closed_forms():
    half = torch.zeros(4, 1)  # D = 0.5 on every shape
    assert discriminator_loss(half, half).item() == pytest.approx(2 * math.log(2))
    assert discriminator_loss(half, half, official=True).item() == pytest.approx(-2 * math.log(2))
    assert adversarial_loss(half).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([[2.0], [-1.0], [0.3]]), torch.tensor([[0.5], [-3.0]])
    sig = lambda t: 1 / (1 + np.exp(-t.numpy().astype(np.float64)))  # noqa: E731
    paper = -(np.log(sig(real)).mean() + np.log(1 - sig(fake)).mean())
    assert discriminator_loss(real, fake).item() == pytest.approx(paper, rel=1e-6)
    assert discriminator_loss(real, fake, official=True).item() == pytest.approx(-paper, rel=1e-6)
    assert adversarial_loss(fake).item() == pytest.approx(-np.log(sig(fake)).mean(), rel=1e-6)
    confident = discriminator_loss(torch.tensor([[200.0]]), torch.tensor([[-200.0]]))  # stable, no log(0)
    assert torch.isfinite(confident) and confident.item() == pytest.approx(0.0, abs=1e-30)
    assert adversarial_loss(torch.tensor([[-200.0]])).item() == pytest.approx(200.0)


# --- the heatmap baselines -------------------------------------------------------------------------------------

POINTS = [[[6.0, 5.0], [2.3, 9.7], [10.4, 0.2]], [[7.5, 7.5], [40.0, 3.0], [0.0, 0.0]]]  # one far outside


def test_distribution_loss_against_numpy():
    g = torch.Generator().manual_seed(5)
    h, w, sigma = 11, 12, 1.5
    points = torch.tensor(POINTS, dtype=torch.float64)
    logits = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64) * 2
    log_p = log_softmax_numpy(logits.numpy().reshape(2, 3, -1), axis=-1)
    total = 0.0
    for b in range(2):
        for k in range(3):
            q = gaussian_numpy(*POINTS[b][k], h, w, sigma, 4.0).ravel()
            total += sum(qi * (math.log(qi) - lp) for qi, lp in zip(q, log_p[b, k], strict=True) if qi > 0)
    assert distribution_loss(logits, points, sigma).item() == pytest.approx(total / 2, rel=1e-12)


def test_distribution_loss_is_the_kl_of_landmarks_losses_on_untruncated_maps():
    """Where every probability exceeds that function's 1e-8 floor, both compute the same KL divergence."""
    g = torch.Generator().manual_seed(6)
    points = torch.tensor([[[3.2, 4.0], [7.0, 1.5]]], dtype=torch.float64)
    logits = torch.randn(1, 2, 9, 10, generator=g, dtype=torch.float64)
    targets = torch.tensor(np.stack([gaussian_numpy(*p, 9, 10, 5.0, None) for p in points[0].tolist()]))[None]
    assert targets.min() > 1e-8
    reference = kl_divergence(torch.softmax(logits.flatten(-2), -1).view_as(logits), targets).sum()
    assert distribution_loss(logits, points, sigma=5.0, truncate=None).item() == pytest.approx(reference.item(),
                                                                                                rel=1e-10)


def test_heatmap_l2_loss_against_numpy():
    g = torch.Generator().manual_seed(7)
    h, w, sigma = 11, 12, 1.5
    points = torch.tensor(POINTS, dtype=torch.float64)
    logits = torch.randn(2, 4, h, w, generator=g, dtype=torch.float64)
    p = np.exp(log_softmax_numpy(logits.numpy(), axis=1))
    total = 0.0
    for b in range(2):
        gauss = [gaussian_numpy(*POINTS[b][k], h, w, sigma, 4.0) for k in range(3)]
        target = [1 - sum(gauss)] + gauss  # background first, 1 - sum over landmarks (the code's)
        total += sum(((p[b, c] - target[c]) ** 2).sum() for c in range(4))
    assert heatmap_l2_loss(logits, points, sigma).item() == pytest.approx(total / 2, rel=1e-12)
    targets = heatmap_targets(points, (h, w), sigma)
    torch.testing.assert_close(targets.sum(1), torch.ones(2, h, w, dtype=torch.float64))  # per-pixel distribution
    assert targets[1, 2].sum() == 0  # the landmark outside the map has no target mass
