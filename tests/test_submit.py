"""`python -m leaderboard submit`: imported evaluations are re-scored, compared, and stored as new records."""

import json

import numpy as np
import pytest
from record_fixtures import NORMALIZERS, SUBSETS, fixture_predictions, fixture_record

from leaderboard import submit as submit_module
from leaderboard.__main__ import main as leaderboard_main
from leaderboard.scoring import rescore
from leaderboard.store import load_predictions, load_record, load_records, sha256_file, write_record
from leaderboard.submit import rescore_all


@pytest.fixture()
def source(tmp_path):
    """A record and its predictions, written by another results folder (A)."""
    preds = fixture_predictions(11)
    path = write_record(fixture_record(preds), preds, tmp_path / "A")
    record = load_record(path)
    return path, tmp_path / "A" / record["predictions"]["file"], record


def submit(record, predictions, results, *extra):
    return leaderboard_main(["submit", "--record", str(record), "--predictions", str(predictions),
                             "--results", str(results), *extra])


def test_round_trip_stores_the_rescored_metrics(tmp_path, source, capsys):
    record_path, npz, original = source
    assert submit(record_path, npz, tmp_path / "B") == 0
    out = capsys.readouterr().out
    (stored,) = load_records(tmp_path / "B")
    assert f"record: {stored['_path']}" in out and "agree" in out
    assert stored["record_id"] != original["record_id"] and stored["method"] == original["method"]
    predictions = load_predictions(stored, tmp_path / "B")
    assert _same(stored["metrics"], rescore_all(predictions))  # exactly, NaN included
    for normalizer in NORMALIZERS:
        for subset in ["full", *SUBSETS]:
            again = rescore(predictions, normalizer, subset)
            for key, value in original["metrics"][normalizer][subset].items():
                assert stored["metrics"][normalizer][subset][key] == pytest.approx(value, rel=1e-12, nan_ok=True)
                if key != "nme_visible":
                    assert stored["metrics"][normalizer][subset][key] == again[key]
    assert stored["submitted_metrics"] == original["metrics"]
    submission = stored["submission"]
    assert submission["metrics_agree"] is True and submission["metrics_compared"] > 0
    assert submission["sha256"] == sha256_file(npz) and submission["source_record_id"] == original["record_id"]
    assert submission["source_record"].endswith(record_path.name) and submission["source_predictions"].endswith(
        npz.name)
    assert stored["protocol"]["thresholds"] == [0.08, 0.1]
    assert submit(record_path, npz, tmp_path / "B", "--method", "HGs-rerun") == 0  # never overwrites
    assert sorted(r["method"] for r in load_records(tmp_path / "B")) == ["HGs", "HGs-rerun"]


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN


def test_falsified_metrics_are_refused_unless_the_rescored_ones_are_accepted(tmp_path, source, capsys):
    record_path, npz, original = source
    falsified = json.loads(record_path.read_text())
    true_nme = falsified["metrics"]["inter_ocular"]["pose"]["nme"]
    falsified["metrics"]["inter_ocular"]["pose"]["nme"] = true_nme / 2
    claim = tmp_path / "claim.json"
    claim.write_text(json.dumps(falsified))
    assert submit(claim, npz, tmp_path / "B") == 1
    captured = capsys.readouterr()
    table = [line for line in captured.out.splitlines() if line.startswith("|") and "inter_ocular" in line]
    assert len(table) == 1 and "| pose " in table[0] and "| nme " in table[0] and "disagrees" in table[0]
    assert "nothing stored" in captured.err and not (tmp_path / "B").exists()
    assert submit(claim, npz, tmp_path / "B", "--accept-rescored") == 0
    assert "storing the re-scored metrics" in capsys.readouterr().out
    (stored,) = load_records(tmp_path / "B")
    assert stored["metrics"]["inter_ocular"]["pose"]["nme"] == pytest.approx(true_nme, rel=1e-12)
    assert stored["submitted_metrics"]["inter_ocular"]["pose"]["nme"] == true_nme / 2
    assert stored["submission"]["metrics_agree"] is False
    # A loose tolerance lets a near value through; a metric that cannot be re-scored always disagrees.
    falsified["metrics"]["inter_ocular"]["pose"]["nme"] = true_nme * (1 + 1e-4)
    falsified["metrics"]["inter_ocular"]["occlusion"] = {"nme": 1.0}
    claim.write_text(json.dumps(falsified))
    assert submit(claim, npz, tmp_path / "C", "--tolerance", "1e-3") == 1
    out = capsys.readouterr().out
    assert "occlusion" in out and "not re-scorable" in out and "| pose" not in out


def test_a_record_without_metrics_is_scored_and_stored(tmp_path, source):
    record_path, npz, original = source
    bare = {k: original[k] for k in ("method", "test_set", "protocol")}
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    assert submit(tmp_path / "bare.json", npz, tmp_path / "B", "--method", "other") == 0
    (stored,) = load_records(tmp_path / "B")
    assert stored["method"] == "other" and stored["n_images"] == original["n_images"]
    assert stored["submitted_metrics"] is None and stored["submission"]["metrics_compared"] == 0


def test_image_counts_of_known_test_sets(tmp_path, source, monkeypatch, capsys):
    record_path, npz, original = source
    monkeypatch.setitem(submit_module.KNOWN_TEST_SET_SIZES, original["test_set"], original["n_images"] + 5)
    assert submit(record_path, npz, tmp_path / "B") == 2
    assert "(expected.n_images)" in capsys.readouterr().err
    partial = json.loads(record_path.read_text()) | {"expected": {"partial": True}}
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    assert submit(tmp_path / "partial.json", npz, tmp_path / "B") == 0
    (stored,) = load_records(tmp_path / "B")
    assert stored["expected"] == {"partial": True, "n_images": original["n_images"] + 5, "subsets": {}}


def _bad_record(tmp_path, source, change):
    record = json.loads(source[0].read_text())
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing record", "unreadable record"),
    ("missing predictions", "predictions file not found"),
    ("not json", "unreadable record"),
    ("no test_set", "no test set"),
    ("no method", "no method name"),
    ("no primary normaliser", "protocol.primary_normalizer is missing"),
    ("wrong n_images", "n_images is 41 but"),
    ("pickled arrays", "pickled Python objects"),
    ("not an npz", "unreadable predictions"),
    ("NaN predictions", "'pred' is not finite"),
    ("bad thresholds", "protocol.thresholds"),
])
def test_invalid_submissions_exit_2(tmp_path, source, capsys, case, message):
    record_path, npz, _ = source
    preds = dict(np.load(npz))
    if case == "missing record":
        record_path = tmp_path / "nowhere.json"
    elif case == "missing predictions":
        npz = tmp_path / "nowhere.npz"
    elif case == "not json":
        record_path = tmp_path / "bad.json"
        record_path.write_text("{method: HGs")
    elif case == "no test_set":
        record_path = _bad_record(tmp_path, source, lambda r: r.pop("test_set"))
    elif case == "no method":
        record_path = _bad_record(tmp_path, source, lambda r: r.pop("method"))
    elif case == "no primary normaliser":
        record_path = _bad_record(tmp_path, source, lambda r: r["protocol"].pop("primary_normalizer"))
    elif case == "wrong n_images":
        record_path = _bad_record(tmp_path, source, lambda r: r.update(n_images=41))
    elif case == "bad thresholds":
        record_path = _bad_record(tmp_path, source, lambda r: r["protocol"].update(thresholds="0.1"))
    elif case == "pickled arrays":
        npz = tmp_path / "pickled.npz"
        np.savez(npz, **preds, meta=np.array([{"x": 1}], dtype=object))
    elif case == "not an npz":
        npz = tmp_path / "text.npz"
        npz.write_text("hello")
    elif case == "NaN predictions":
        npz = tmp_path / "nan.npz"
        preds["pred"][0, 0, 0] = np.nan
        np.savez(npz, **preds)
    assert submit(record_path, npz, tmp_path / "B") == 2
    err = capsys.readouterr().err
    assert "submit: invalid submission" in err and message in err, err
    assert not (tmp_path / "B").exists()


def test_known_test_set_sizes_are_the_published_ones():
    """Derived from the datamodules' folder sizes; checked here against the papers' numbers."""
    published = {"300w-full": 689, "300w-common": 554, "300w-challenging": 135, "300w-private": 600,
                 "wflw-test": 2500, "cofw-test": 507, "cofw68-test": 507, "aflw-test": 4386, "aflw2000-3d": 2000,
                 "masked-300w-test": 689}
    assert {k: submit_module.KNOWN_TEST_SET_SIZES[k] for k in published} == published
