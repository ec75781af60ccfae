"""Bootstrap intervals and paired tests against closed forms and hand-worked cases; the CI gate's exit codes."""

import json
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import fixture_predictions, fixture_record

from leaderboard.__main__ import main as leaderboard_main
from leaderboard.gate import Tolerance, compare
from leaderboard.stats import aligned_nme, bootstrap_ci, bootstrap_means, paired_test
from leaderboard.store import record_digest, write_record


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


# --- tolerances per metric, in the metric's unit; test-set identity (issue 14) --------------------------------

def shifted(tmp_path, name, **change):
    """The seed-0 record with ``change`` added to metrics on every subset (nme, fr@0.1 in percentage points,
    auc@0.1 as a fraction), so that a hand-worked tolerance decides the gate."""
    predictions = fixture_predictions(0, noise=2.0)
    record = fixture_record(predictions, name)
    for per_subset in record["metrics"].values():
        for summary in per_subset.values():
            for metric, delta in change.items():
                summary[metric.replace("_", "@0.")] += delta
    return write_record(record, predictions, tmp_path)


@pytest.mark.parametrize("change, extra, code", [
    ({"auc_1": -0.006}, [], 1), ({"auc_1": -0.004}, [], 0),  # default auc=0.005 (a fraction)
    ({"nme": 0.06}, [], 1), ({"nme": 0.04}, [], 0),  # default nme=0.05 (percentage points)
    ({"fr_1": 0.6}, [], 1), ({"fr_1": 0.4}, [], 0),  # default fr=0.5 (percentage points)
    # Issue 14, case 3: the README's --abs-tol 0.05 let an AUC drop of 0.0125 pass; it is percentage points now.
    ({"auc_1": -0.0125}, ["--abs-tol", "0.05"], 1), ({"nme": 0.04}, ["--abs-tol", "0.05"], 0),
    ({"auc_1": -0.0125}, ["--tol", "auc=0.02"], 0), ({"auc_1": -0.0125}, ["--tol", "auc@0.1=0.01"], 1),
    ({"nme": 0.3, "auc_1": -0.003}, ["--tol", "nme=0.5", "--tol", "fr=0"], 0),
    ({"nme": 0.3}, ["--abs-tol", "1", "--tol", "nme=0.1"], 1),  # --tol wins over --abs-tol
    ({"auc_1": +0.3, "nme": -1.0}, ["--tol", "nme=0", "fr=0", "auc=0"], 0),  # improvements never fail
])
def test_gate_tolerances_are_per_metric_in_its_unit(tmp_path, capsys, change, extra, code):
    base = shifted(tmp_path, "base")
    new = shifted(tmp_path, "new", **change)
    assert leaderboard_main(["gate", "--record", str(new), "--baseline", str(base), *extra]) == code
    out = capsys.readouterr().out
    assert ("REGRESSED" in out) == (code == 1) and "auc@0.1 " in out and "(fraction of 1)" in out


def test_gate_help_states_the_default_tolerances_and_refuses_bad_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        leaderboard_main(["gate", "--help"])
    assert "nme=0.05 fr=0.5 auc=0.005" in " ".join(capsys.readouterr().out.split())
    base = shifted(tmp_path, "base")
    for bad in ("nme", "nme=-1", "psnr=1", "auc=x"):
        assert leaderboard_main(["gate", "--record", str(base), "--baseline", str(base), "--tol", bad]) == 2
        assert "--tol" in capsys.readouterr().err


def test_gate_refuses_records_of_other_images(tmp_path, capsys):
    base = write(tmp_path, 0, 2.0, "base")
    gate = lambda new: leaderboard_main(["gate", "--record", str(new), "--baseline", str(base)])  # noqa: E731
    fewer = fixture_predictions(0, n=30)  # same name, 30 of the 40 images
    assert gate(write_record(fixture_record(fewer, "fewer"), fewer, tmp_path)) == 2
    assert "different test-set contents" in capsys.readouterr().err
    renamed = fixture_predictions(0) | {"image_id": np.array([f"other{i}" for i in range(40)])}
    other = write_record(fixture_record(renamed, "renamed"), renamed, tmp_path)  # 40 images, other ones
    assert gate(other) == 2
    err = capsys.readouterr().err
    assert "different test-set contents" in err and "40 images, image set" in err
    # A record written before records carried an image set: taken from its predictions beside it ...
    old = json.loads(Path(base).read_text())
    del old["image_set"]
    old["digest"] = record_digest(old)
    Path(base).write_text(json.dumps(old))
    assert gate(other) == 2 and gate(write(tmp_path, 0, 2.0, "same")) == 0
    # ... or, copied alone, compared by name and image count only, which the output says.
    alone = tmp_path / "alone" / "records" / Path(base).name
    alone.parent.mkdir(parents=True)
    alone.write_text(Path(base).read_text())
    capsys.readouterr()
    assert leaderboard_main(["gate", "--record", str(other), "--baseline", str(alone)]) == 0
    assert "only the test set's name and image count (40) were compared" in capsys.readouterr().out
