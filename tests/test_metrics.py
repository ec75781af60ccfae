"""Metrics against independent references: numpy loops, closed forms and hand-worked cases."""

import numpy as np
import pytest
import torch

from landmarks.layouts import AFLW_19, COFW_29, W300_68, WFLW_98
from landmarks.metrics import (
    FULL,
    NMEMetric,
    PredictionStore,
    auc,
    bbox_size,
    ced,
    failure_rate,
    inter_ocular,
    inter_pupil,
    per_image_nme,
    summarize,
)


def nme_loop(pred, target, norm, visible=None):
    out = []
    for b in range(len(pred)):
        errs = [np.hypot(*(pred[b, k] - target[b, k])) for k in range(pred.shape[1])
                if visible is None or visible[b, k]]
        out.append(np.mean(errs) / norm[b] if errs else np.nan)
    return np.array(out)


def auc_loop(nme, t, step=1e-4):
    grid = [i * step for i in range(int(round(t / step)) + 1)]
    curve = [sum(e <= g for e in nme) / len(nme) for g in grid]
    area = sum((curve[i] + curve[i + 1]) / 2 * step for i in range(len(grid) - 1))
    return area / t


def test_per_image_nme_matches_loop_on_real_shapes(aflw2000_shapes):
    target, _ = aflw2000_shapes
    rng = np.random.default_rng(0)
    pred = target + rng.normal(0, 3, target.shape)
    norm = np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)
    visible = rng.random(target.shape[:2]) > 0.2
    got = per_image_nme(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(norm))
    np.testing.assert_allclose(got.numpy(), nme_loop(pred, target, norm), rtol=1e-12)
    got_vis = per_image_nme(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(norm),
                            torch.from_numpy(visible))
    np.testing.assert_allclose(got_vis.numpy(), nme_loop(pred, target, norm, visible), rtol=1e-12)


def test_visible_only_nme_of_fully_occluded_face_is_nan():
    pred = torch.zeros(1, 3, 2)
    got = per_image_nme(pred, pred + 1, torch.ones(1), torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isnan(got).all()


def test_normalisers_on_real_shapes(aflw2000_shapes):
    target, _ = aflw2000_shapes
    t = torch.from_numpy(target)
    np.testing.assert_allclose(inter_ocular(t, W300_68).numpy(),
                               [np.hypot(*(s[36] - s[45])) for s in target], rtol=1e-12)
    left = target[:, 36:42].mean(1)
    right = target[:, 42:48].mean(1)
    np.testing.assert_allclose(inter_pupil(t, W300_68).numpy(), np.linalg.norm(left - right, axis=-1), rtol=1e-12)
    # 2000 real faces: inter-pupil is shorter than inter-ocular (pupils lie between the outer corners).
    assert (inter_pupil(t, W300_68) < inter_ocular(t, W300_68)).all()


@pytest.mark.parametrize("layout,corners,pupils", [
    (WFLW_98, (60, 72), (96, 97)), (COFW_29, (8, 9), (16, 17)), (AFLW_19, (6, 11), (7, 10)),
])
def test_normaliser_indices(layout, corners, pupils):
    pts = torch.rand(4, layout.num_points, 2, dtype=torch.float64) * 100
    np.testing.assert_allclose(inter_ocular(pts, layout), (pts[:, corners[0]] - pts[:, corners[1]]).norm(dim=-1))
    np.testing.assert_allclose(inter_pupil(pts, layout), (pts[:, pupils[0]] - pts[:, pupils[1]]).norm(dim=-1))


def test_bbox_size_hand_worked():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 9.0, 4.0]])
    np.testing.assert_allclose(bbox_size(boxes).numpy(), [np.sqrt(40 * 100), 6.0])


def test_failure_rate_and_ced_match_loops():
    nme = np.random.default_rng(1).gamma(2.0, 0.02, 1001)
    for t in (0.05, 0.08, 0.10):
        assert float(failure_rate(torch.from_numpy(nme), t)) == pytest.approx(100 * np.mean([e > t for e in nme]))
    grid = np.array([0.0, 0.01, 0.05, 0.1, 1.0])
    np.testing.assert_allclose(ced(torch.from_numpy(nme), grid).numpy(),
                               [np.mean([e <= g for e in nme]) for g in grid])


def test_ced_counts_ties_at_the_threshold_as_successes():
    assert ced(torch.tensor([0.08, 0.08, 0.09]), [0.08]).item() == pytest.approx(2 / 3)
    assert failure_rate(torch.tensor([0.08, 0.08, 0.09]), 0.08).item() == pytest.approx(100 / 3)


def test_auc_matches_loop_and_closed_form():
    nme = np.random.default_rng(2).gamma(2.0, 0.02, 300)
    for t in (0.08, 0.10):
        got = float(auc(torch.from_numpy(nme), t))
        assert got == pytest.approx(auc_loop(nme, t), abs=1e-10)
        # Exact integral of the step function CED: mean(max(0, 1 - e / t)); the grid rule is within a step.
        assert got == pytest.approx(np.mean(np.clip(1 - nme / t, 0, None)), abs=1e-4 / t)


def test_auc_hand_worked_cases():
    assert float(auc(torch.zeros(5), 0.08)) == pytest.approx(1.0)
    assert float(auc(torch.full((5,), 0.2), 0.08)) == 0.0
    # One image at t/2: CED is 1 from the grid point t/2 on (area t/2) and the trapezoid of the interval just
    # before it ramps from 0 to 1 (area step/2): (t/2 + step/2) / t.
    assert float(auc(torch.tensor([0.04], dtype=torch.float64), 0.08)) == pytest.approx(0.5 + 0.5e-4 / 0.08,
                                                                                         abs=1e-12)


def test_summarize_units():
    nme = torch.tensor([0.02, 0.04, 0.12])
    s = summarize(nme, (0.08, 0.1))
    assert s["nme"] == pytest.approx(6.0)
    assert s["nme_std"] == pytest.approx(100 * np.std([0.02, 0.04, 0.12]))
    assert s["fr@0.08"] == pytest.approx(100 / 3)
    assert s["fr@0.1"] == pytest.approx(100 / 3)
    assert 0 < s["auc@0.1"] < 1 and s["n"] == 3


def _random_batch(rng, n, k=68):
    target = torch.from_numpy(rng.uniform(0, 128, (n, k, 2)))
    pred = target + torch.from_numpy(rng.normal(0, 2, (n, k, 2)))
    norm = {"inter_ocular": inter_ocular(target, W300_68), "bbox": torch.from_numpy(rng.uniform(50, 100, n))}
    mask = torch.from_numpy(rng.random((n, 2)) > 0.5)
    visible = torch.from_numpy(rng.random((n, k)) > 0.1)
    return pred, target, norm, mask, visible


def test_nme_metric_matches_functional_reference_per_subset():
    rng = np.random.default_rng(3)
    metric = NMEMetric(["inter_ocular", "bbox"], ["pose", "blur"])
    batches = [_random_batch(rng, n) for n in (7, 5, 9)]
    start = 0
    for pred, target, norm, mask, visible in batches:
        metric.update(pred, target, norm, torch.arange(start, start + len(pred)), mask, visible)
        start += len(pred)
    res = metric.compute()
    pred, target, mask, visible = (torch.cat([b[i] for b in batches]) for i in (0, 1, 3, 4))
    for normalizer in ("inter_ocular", "bbox"):
        norm = torch.cat([b[2][normalizer] for b in batches])
        nme = nme_loop(pred.numpy(), target.numpy(), norm.numpy())
        nme_vis = nme_loop(pred.numpy(), target.numpy(), norm.numpy(), visible.numpy())
        for subset, rows in ((FULL, np.ones(len(nme), bool)), ("pose", mask[:, 0].numpy()),
                             ("blur", mask[:, 1].numpy())):
            got = res[normalizer][subset]
            assert got["n"] == rows.sum()
            assert got["nme"] == pytest.approx(100 * nme[rows].mean(), rel=1e-12)
            assert got["nme_std"] == pytest.approx(100 * nme[rows].std(), rel=1e-10)
            assert got["nme_visible"] == pytest.approx(100 * nme_vis[rows].mean(), rel=1e-12)
            assert got["fr@0.08"] == pytest.approx(100 * (nme[rows] > 0.08).mean())
            assert got["auc@0.1"] == pytest.approx(auc_loop(nme[rows], 0.1), abs=1e-10)


def test_nme_metric_drops_duplicated_images():
    """A distributed sampler pads shards with repeated images; the metric must count each image once."""
    rng = np.random.default_rng(4)
    pred, target, norm, mask, visible = _random_batch(rng, 6)
    once = NMEMetric(["inter_ocular"], ["pose", "blur"])
    once.update(pred, target, norm, torch.arange(6), mask, visible)
    twice = NMEMetric(["inter_ocular"], ["pose", "blur"])
    twice.update(pred[3:], target[3:], {k: v[3:] for k, v in norm.items()}, torch.arange(3, 6), mask[3:])
    twice.update(pred, target, norm, torch.arange(6), mask, visible)  # 3..5 seen twice
    a, b = once.compute()["inter_ocular"], twice.compute()["inter_ocular"]
    assert a[FULL]["n"] == b[FULL]["n"] == 6
    assert a[FULL]["nme"] == pytest.approx(b[FULL]["nme"], rel=1e-12)


def test_nme_metric_rejects_missing_normaliser_and_bad_mask():
    metric = NMEMetric(["inter_pupil"], ["pose"])
    pred = torch.zeros(2, 68, 2)
    with pytest.raises(KeyError, match="inter_pupil"):
        metric.update(pred, pred, {"bbox": torch.ones(2)}, torch.arange(2))
    with pytest.raises(ValueError, match="subset_mask"):
        metric.update(pred, pred, {"inter_pupil": torch.ones(2)}, torch.arange(2), torch.zeros(2, 3, dtype=bool))


def test_prediction_store_sorts_and_deduplicates():
    store = PredictionStore()
    for idx in ([4, 2], [0, 2]):
        n = len(idx)
        p = torch.tensor(idx, dtype=torch.float64)[:, None, None].expand(n, 3, 2)
        store.update(p, p + 1, torch.ones(n, 3, dtype=bool), torch.ones(n, 2), torch.zeros(n, 1, dtype=bool),
                     torch.tensor(idx))
    out = store.compute()
    np.testing.assert_array_equal(out["index"], [0, 2, 4])
    np.testing.assert_array_equal(out["pred"][:, 0, 0], [0, 2, 4])
    assert out["target"].shape == (3, 3, 2) and out["norm"].shape == (3, 2)


def test_yaw_bin_protocol_on_real_shapes(aflw2000_shapes):
    """AFLW2000-3D style: bbox-normalised NME per yaw bin, checked against a direct numpy computation."""
    target, yaw = aflw2000_shapes
    rng = np.random.default_rng(5)
    pred = target + rng.normal(0, 2, target.shape)
    box = np.concatenate([target.min(1), target.max(1)], 1)
    norm = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    metric = NMEMetric(["bbox"], ["yaw_0_30", "yaw_30_60", "yaw_60_90"])
    bins = np.stack([np.abs(yaw) <= 30, (np.abs(yaw) > 30) & (np.abs(yaw) <= 60), np.abs(yaw) > 60], 1)
    metric.update(torch.from_numpy(pred), torch.from_numpy(target), {"bbox": bbox_size(torch.from_numpy(box))},
                  torch.arange(len(pred)), torch.from_numpy(bins))
    res = metric.compute()["bbox"]
    ref = np.linalg.norm(pred - target, axis=-1).mean(1) / norm
    for j, name in enumerate(["yaw_0_30", "yaw_30_60", "yaw_60_90"]):
        assert res[name]["nme"] == pytest.approx(100 * ref[bins[:, j]].mean(), rel=1e-12)
    assert sum(res[n]["n"] for n in ["yaw_0_30", "yaw_30_60", "yaw_60_90"]) == 2000
