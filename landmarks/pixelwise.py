"""PWC (paper 002): pixel labels, the PWC / hybrid / adversarial losses, the decoders, and the two heatmap baselines.

Pure torch, batched, on whatever device the inputs live on. Points are (B, K, 2) as (x, y) in the pixels of the
maps (pixel [row j, column i] has its centre at (x = i, y = j)); PWC's maps have the crop's size (224 x 224), so
these are crop pixels. Logits are (B, K + 1, H, W) with the background class at channel 0 and landmark k (0-based)
at channel k + 1 (IMPLEMENTATION_NOTES §3.3).

Paper equations: eq. 1 the coordinate (regression) loss, eq. 2 the PWC cross-entropy, eq. 3 the hybrid loss; the
shape discriminator's ``loss_face = -E[log D(S)]`` and ``loss_disc = -(E[log D(S_gt)] + E[log(1 - D(S))])``
(Sec. 3, unnumbered in the text); Sec. 2.2 the distribution model (spatial softmax + KL to a Gaussian) and the
heatmap-regression model (L2 with a background map), both with "three-pixel standard deviation" (Sec. 4).

Readings of the official code (github.com/chihfanhsu/fl_detection, ``codes/``) followed here:

- Labels (``TensorflowUtils.pts2map``): points rounded with Python's ``round`` (half to even, as ``torch.round``),
  kept only when the rounded pixel is inside the map, written in landmark order, so where two landmarks round to
  the same pixel the later index wins.
- Decoding (``model_hybridADis.heatmap2pts``): argmax over pixels of each landmark channel of the per-pixel
  softmax over the K + 1 classes (not of the raw logits: the softmax normalises each pixel, so the two can differ).
- The coordinate term goes through that argmax, so in the code it has no gradient (``official=True`` here); the
  paper's intent needs the differentiable :func:`soft_argmax` (the default).
- The code trains D with ``minimize(-D_loss)``: gradient ascent on the paper's objective (``official=True``).
- Heatmap regression (``training_heatmapreg.py``): the prediction is the per-pixel softmax over the K + 1
  channels, the background target is 1 - (sum over landmarks), the loss sums squares over channels and pixels
  and averages over the batch.

Departures, on purpose: Gaussian targets are centred on the sub-pixel point (the code's points are integers, so
pass ``points.round()`` to reproduce it) and renormalised over the map when the border cuts them (the code pastes
a fixed 25 x 25 filter, cut at the border and not renormalised); the heatmap-regression background is channel 0,
like PWC's background class, where the code appends it last (a permutation of the head's output channels).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from landmarks.heatmaps import argmax_2d, decode_soft_argmax, encode_gaussian


def pixel_labels(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, 2) points → (B, H, W) long class map: 0 background, k + 1 at the rounded pixel of landmark k.

    PWC's ground truth (IMPLEMENTATION_NOTES §3.3): one pixel per landmark, no Gaussian, no weights. Points are
    rounded half to even (Python's ``round``, which the official ``pts2map`` inputs went through); a landmark whose
    rounded pixel is outside the map (or not finite) gets no label. Where several landmarks round to the same
    pixel the highest index wins, as the code's loop over landmarks overwrites; a scatter with "amax" gives that
    order deterministically on every device (a plain scatter with repeated indices does not).
    """
    h, w = size
    batch, num_points = points.shape[:2]
    with torch.no_grad():
        rounded = points.detach().round()
        x, y = rounded[..., 0], rounded[..., 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)  # False for NaN
        xi = torch.where(inside, x, 0).long()
        yi = torch.where(inside, y, 0).long()
        classes = torch.arange(1, num_points + 1, device=points.device).expand(batch, num_points)
        labels = torch.zeros(batch, h * w, dtype=torch.long, device=points.device)
        labels.scatter_reduce_(1, yi * w + xi, torch.where(inside, classes, 0), "amax")
    return labels.view(batch, h, w)


def pwc_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 2: softmax cross-entropy of (B, K + 1, H, W) logits against (B, H, W) class labels, averaged over all
    pixels and the batch (the code's ``reduce_mean(sparse_softmax_cross_entropy_with_logits)``).

    ``F.cross_entropy`` takes the class indices directly: at 224 x 224 x 69 a one-hot target would be one more
    tensor the size of the logits (14 MB per image in float32).
    """
    return F.cross_entropy(logits, labels)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, K + 1, H, W) logits → the per-pixel softmax over the K + 1 classes (PWC's probability maps), in at
    least float32 so that half-precision logits still give sums of 50,176 pixels worth reading."""
    return torch.softmax(logits, 1, dtype=torch.promote_types(logits.dtype, torch.float32))


def soft_argmax(scores: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """(B, K + 1, H, W) logits (or, with ``from_logits=False``, per-pixel class probabilities) → (B, K, 2) float
    expected (x, y) of each landmark; differentiable.

    For landmark k the weights are the class-(k + 1) probabilities normalised to sum 1 over the pixels:
    ``w_p = P_k(p) / sum_q P_k(q)`` and ``S_k = sum_p w_p (x_p, y_p)`` (:func:`decode_soft_argmax` without a
    temperature). Why this and not a spatial softmax: it is the expectation under the model's own probability
    map, which the official argmax reads, so a one-hot (sharp) map gives exactly its argmax pixel, and it needs no
    temperature. A spatial softmax of P_k, whose values lie in [0, 1], weighs every pixel within a factor e of
    the others (nearly uniform over 224 x 224: the estimate sits near the map centre); a spatial softmax of the
    class logits ignores the per-pixel normalisation that defines P_k. The price: probability that class k keeps
    on far pixels pulls the estimate toward the map centre in proportion to its share of the map's mass (all of
    it at initialisation, where P_k ~ 1 / (K + 1) everywhere); training on eq. 2 drives that share down. Measured
    at 224 x 224 with a 0.9 peak 88 px from the centre: a leak of 1e-7 per pixel moves it 0.5 px, 1e-6 4.7 px.
    """
    probabilities = class_probabilities(scores) if from_logits else scores
    return decode_soft_argmax(probabilities[:, 1:])


def argmax_coordinates(logits: torch.Tensor) -> torch.Tensor:
    """(B, K + 1, H, W) logits → (B, K, 2) long (x, y): the official decoding (paper Sec. 2.2, ``heatmap2pts``),
    the argmax over pixels of each landmark channel 1..K of the per-pixel class softmax; the first pixel in
    row-major order on ties. No gradient."""
    with torch.no_grad():
        return argmax_2d(class_probabilities(logits)[:, 1:])


def coordinate_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean over the batch and the landmarks of the Euclidean (not squared) distance between (B, K, 2)
    predicted and true points, in pixels. Its gradient at a zero distance is 0 (not NaN)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


def hybrid_loss(
    logits: torch.Tensor, labels: torch.Tensor, points: torch.Tensor, beta: float = 0.25, official: bool = False
) -> dict[str, torch.Tensor]:
    """Eq. 3 with alpha = 1: ``loss_PWC + beta * loss_reg`` (beta 0.25, the paper's).

    The coordinates of eq. 1 come from :func:`soft_argmax` (the paper's intent: the term trains the detector) or,
    with ``official=True``, from :func:`argmax_coordinates` as in the code, where the term only adds its value
    (the gradient is eq. 2's alone; it moved the code's validation loss, i.e. early stopping and checkpoint choice).

    Returns "loss", its terms "pwc" and "coordinate" (scalars), and "points": the (B, K, 2) coordinates the term
    used, to feed the shape discriminator without a second softmax over the maps.
    """
    pwc = pwc_loss(logits, labels)
    pred = argmax_coordinates(logits).to(points.dtype) if official else soft_argmax(logits)
    coordinate = coordinate_loss(pred, points)
    return {"loss": pwc + beta * coordinate, "pwc": pwc, "coordinate": coordinate, "points": pred}


# --- the shape discriminator's losses (paper Sec. 3) -----------------------------------------------------------


def discriminator_loss(
    d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor, official: bool = False
) -> torch.Tensor:
    """``loss_disc = -(E[log D(S_gt)] + E[log(1 - D(S_pred))])`` from D's logits (before the sigmoid), each
    expectation a mean, computed as binary cross-entropy with logits (stable for large logits).

    ``official=True`` returns the negative: the code minimises ``-D_loss``, so D climbs the paper's objective
    (IMPLEMENTATION_NOTES §3.3 calls it a bug; it is kept only to reproduce the code). Detaching the predicted
    shapes in the discriminator's step is the caller's job.
    """
    real = F.binary_cross_entropy_with_logits(d_real_logits, torch.ones_like(d_real_logits))
    fake = F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits))
    loss = real + fake
    return -loss if official else loss


def adversarial_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """``loss_face = -E[log D(S_pred)]`` from D's logits: the detector's shape term (weight 1), the same in the
    paper and the code. It trains the detector only through differentiable coordinates (:func:`soft_argmax`)."""
    return F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))


# --- the heatmap baselines: distribution model and heatmap regression (paper Sec. 2.2) -------------------------


def gaussian_distributions(
    points: torch.Tensor, size: tuple[int, int], sigma: float = 3.0, truncate: float | None = 4.0
) -> torch.Tensor:
    """(B, K, 2) points → (B, K, H, W) Gaussian targets, each normalised to sum 1 over the map ("the Gaussian
    distribution with the three-pixel standard deviation", Sec. 4).

    ``truncate = 4`` is the code's 25 x 25 filter (4 sigma either side of the point). A map with no mass inside
    (a landmark far outside the crop) stays all zero, so its landmark adds nothing to the losses below.
    """
    maps = encode_gaussian(points.detach(), tuple(size), sigma, truncate)
    mass = maps.sum((-2, -1), keepdim=True)
    return maps / mass.clamp_min(torch.finfo(maps.dtype).tiny)


def distribution_loss(
    logits: torch.Tensor, points: torch.Tensor, sigma: float = 3.0, truncate: float | None = 4.0
) -> torch.Tensor:
    """The distribution model's ``loss_dist = sum_l KL(h_gt_l || h_l)`` with ``h_l`` the spatial softmax of the
    (B, K, H, W) logits of landmark l; summed over landmarks, averaged over the batch.

    The code minimises the cross-entropy ``-sum q log p`` (KL plus the target's entropy, a constant). The KL is
    taken on log-softmax values rather than through ``landmarks.losses.kl_divergence``, which clamps normalised
    maps at 1e-8 before the log: at 224 x 224 a trained spatial softmax is below that on most pixels, whose
    gradients the clamp would cut.
    """
    target = gaussian_distributions(points, logits.shape[-2:], sigma, truncate).flatten(-2)  # (B, K, H*W)
    log_p = F.log_softmax(logits.flatten(-2), -1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return F.kl_div(log_p, target.to(log_p.dtype), reduction="none").sum(-1).sum(-1).mean()


def heatmap_targets(
    points: torch.Tensor, size: tuple[int, int], sigma: float = 3.0, truncate: float | None = 4.0,
    height: Literal["sum", "peak"] = "sum",
) -> torch.Tensor:
    """(B, K, 2) points → (B, K + 1, H, W) heatmap-regression targets: channel 0 the background
    ``1 - sum_l h_l``, channels 1..K the :func:`gaussian_distributions` ("the same as the distribution model").

    The sum, not a max, is the code's (``gen_gaumap_with_bk``): with normalised Gaussians each pixel's K + 1
    targets then sum to 1, a distribution like the per-pixel softmax they are compared with.

    The height of the code's Gaussians is unknown (its ``gau_filter.pickle`` is not published): ``height="sum"``
    normalises each to sum 1 (the paper's "distribution", the default); ``"peak"`` gives them a peak of 1, the
    background then ``max(0, 1 - sum)`` (close landmarks overlap).
    """
    if height == "peak":
        landmarks = encode_gaussian(points.detach(), tuple(size), sigma, truncate)
        return torch.cat([(1 - landmarks.sum(1, keepdim=True)).clamp_min(0), landmarks], 1)
    landmarks = gaussian_distributions(points, size, sigma, truncate)
    return torch.cat([1 - landmarks.sum(1, keepdim=True), landmarks], 1)


def heatmap_l2_loss(
    logits: torch.Tensor, points: torch.Tensor, sigma: float = 3.0, truncate: float | None = 4.0,
    height: Literal["sum", "peak"] = "sum",
) -> torch.Tensor:
    """The heatmap-regression model's ``loss_hreg = sum_{l in L, b} (h_gt_l - h_l)^2``: the per-pixel softmax of
    the (B, K + 1, H, W) logits (background at channel 0) against :func:`heatmap_targets`, squares summed over
    channels and pixels (paper and code), averaged over the batch (the code's ``reduce_mean``)."""
    pred = class_probabilities(logits)
    target = heatmap_targets(points, logits.shape[-2:], sigma, truncate, height).to(pred.dtype)
    return (pred - target).square().sum((1, 2, 3)).mean()
