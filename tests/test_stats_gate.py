"""Bootstrap intervals and paired tests against closed forms and hand-worked cases; the CI gate's exit codes."""

import numpy as np
import pytest
from record_fixtures import fixture_predictions, fixture_record

from leaderboard.__main__ import main as leaderboard_main
from leaderboard.gate import Tolerance, compare
from leaderboard.stats import aligned_nme, bootstrap_ci, bootstrap_means, paired_test
from leaderboard.store import write_record


def test_bootstrap_of_two_values_follows_the_binomial():
    # Resampling {0, 1} twice: the mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4.
    means = bootstrap_means(np.array([0.0, 1.0]), resamples=20_000, seed=1)
    freq = [np.mean(means == v) for v in (0.0, 0.5, 1.0)]
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.015)
    assert bootstrap_ci(np.array([0.0, 1.0]), resamples=20_000) == (0.0, 1.0)


def test_bootstrap_ci_matches_the_normal_closed_form():
    values = np.random.default_rng(0).normal(5.0, 2.0, 4000)
    low, high = bootstrap_ci(values, resamples=4000, seed=3)
    half = 1.959964 * values.std() / np.sqrt(len(values))  # the plug-in standard error of the mean
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)
    assert bootstrap_ci(values, resamples=500, seed=3) == bootstrap_ci(values, resamples=500, seed=3)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.array([]))


def test_paired_test_hand_worked_cases():
    a = np.array([3.0, 4, 5, 6, 7])
    b = a - np.array([1.0, 2, 3, 4, 5])  # a is worse on every image by 1..5
    r = paired_test(a, b, resamples=2000)
    # Wilcoxon: all 5 signed ranks positive, W- = 0; exact two-sided p = 2 / 2^5.
    assert r.wilcoxon_statistic == 0 and r.p_wilcoxon == pytest.approx(2 / 32)
    assert r.mean_difference == pytest.approx(3.0) and r.p_bootstrap == pytest.approx(1 / 2000)
    assert 1.0 <= r.ci_low < 3.0 < r.ci_high <= 5.0
    same = paired_test(a, a.copy())
    assert same.p_wilcoxon == 1.0 and same.mean_difference == 0 and same.p_bootstrap == 1.0
    rng = np.random.default_rng(0)
    base = rng.uniform(2, 6, 300)
    tied = paired_test(base + rng.normal(0, 0.5, 300), base, seed=1)  # differences: noise centred on 0
    assert tied.p_bootstrap > 0.05 and tied.p_wilcoxon > 0.05 and tied.ci_low < 0 < tied.ci_high
    with pytest.raises(ValueError, match="same images"):
        paired_test(a, a[:3])


def test_aligned_nme_pairs_images_by_index():
    p = fixture_predictions(0)
    q = fixture_predictions(1)
    order = np.random.default_rng(0).permutation(len(q["index"]))
    shuffled = {k: (v[order] if k not in ("normalizers", "subsets") else v) for k, v in q.items()}
    a1, b1 = aligned_nme(p, q, "inter_ocular")
    a2, b2 = aligned_nme(p, shuffled, "inter_ocular")
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(b1, b2)
    fewer = {k: (v[:-1] if k not in ("normalizers", "subsets") else v) for k, v in q.items()}
    with pytest.raises(ValueError, match="different images"):
        aligned_nme(p, fewer, "inter_ocular")


def write(tmp_path, seed, noise, method, test_set=None):
    predictions = fixture_predictions(seed, noise=noise)
    record = fixture_record(predictions, method)
    if test_set:
        record["test_set"] = test_set
    return write_record(record, predictions, tmp_path)


def test_gate_exit_codes_and_table(tmp_path, capsys):
    base = write(tmp_path, 0, 2.0, "base")
    same = write(tmp_path, 0, 2.0, "same")
    worse = write(tmp_path, 0, 3.0, "worse")
    better = write(tmp_path, 0, 1.0, "better")
    other = write(tmp_path, 0, 2.0, "other", test_set="wflw-test")
    gate = lambda new, *extra: leaderboard_main(["gate", "--record", str(new), "--baseline", str(base), *extra])  # noqa: E731
    assert gate(same) == 0 and gate(better) == 0
    assert gate(worse) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "| pose" in out and "regression(s)" in out
    assert gate(worse, "--abs-tol", "100") == 0  # everything within a huge tolerance
    assert gate(other) == 2 and "different test sets" in capsys.readouterr().err
    assert leaderboard_main(["nothing"]) == 2


def test_gate_directions_and_relative_tolerance():
    base = fixture_record(fixture_predictions(0, noise=2.0))
    worse = fixture_record(fixture_predictions(0, noise=2.4))
    table = compare(worse, base, metrics=("nme", "auc@0.1"))
    nme = table[table.metric == "nme"]
    auc = table[table.metric == "auc@0.1"]
    assert (nme.change > 0).all() and (auc.change < 0).all()  # worse: NME up, AUC down
    assert (table.status == "REGRESSED").all()
    relaxed = compare(worse, base, metrics=("nme",), tolerance=Tolerance(relative=0.5))
    assert (relaxed.status == "ok").all()
    assert (relaxed.allowed == 0.5 * relaxed.baseline).all()
