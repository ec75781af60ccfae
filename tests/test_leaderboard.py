"""Records: atomic, never overwritten, validated; tables and plots derived from them; re-scoring."""

import json
import multiprocessing as mp

import numpy as np
import pytest
from record_fixtures import NORMALIZERS, SUBSETS, fixture_predictions, fixture_record

from landmarks.metrics import FULL as metrics_FULL
from leaderboard.plots import plot_ced
from leaderboard.scoring import rescore, rescore_nme
from leaderboard.store import (
    FULL,
    SCHEMA_VERSION,
    RecordError,
    atomic_write_bytes,
    load_predictions,
    load_record,
    load_records,
    record_digest,
    sha256_file,
    write_record,
)
from leaderboard.tables import metrics_table, render_markdown


def test_write_and_load_round_trip(tmp_path):
    preds = fixture_predictions()
    path = write_record(fixture_record(preds), preds, tmp_path)
    record = load_record(path)
    assert record["schema_version"] == SCHEMA_VERSION == 2 and record["record_id"] in path.name
    assert record["digest"].startswith("sha256:")
    loaded = load_predictions(record, tmp_path)
    np.testing.assert_array_equal(loaded["pred"], preds["pred"])
    assert list(loaded["normalizers"]) == NORMALIZERS
    assert [r["record_id"] for r in load_records(tmp_path)] == [record["record_id"]]


def test_rescoring_from_predictions_equals_the_recorded_evaluation(tmp_path):
    preds = fixture_predictions(1)
    record = load_record(write_record(fixture_record(preds), preds, tmp_path))
    stored = load_predictions(record, tmp_path)
    for normalizer in NORMALIZERS:
        for subset in ["full", *SUBSETS]:
            again = rescore(stored, normalizer, subset)
            for key, value in record["metrics"][normalizer][subset].items():
                if key != "nme_visible":
                    assert again[key] == pytest.approx(value, rel=1e-12), (normalizer, subset, key)
    vis = rescore_nme(stored, "bbox", "pose", visible_only=True)
    assert 100 * vis.mean() == pytest.approx(record["metrics"]["bbox"]["pose"]["nme_visible"], rel=1e-12)
    with pytest.raises(KeyError, match="unknown subset"):
        rescore(stored, "bbox", "occlusion")


def test_results_are_never_overwritten(tmp_path):
    atomic_write_bytes(tmp_path / "a.json", b"first")
    with pytest.raises(FileExistsError, match="never overwritten"):
        atomic_write_bytes(tmp_path / "a.json", b"second")
    assert (tmp_path / "a.json").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind


def _writer(args):
    results, seed = args
    preds = fixture_predictions(seed, n=10)
    return str(write_record(fixture_record(preds, method=f"m{seed % 3}"), preds, results))


def test_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_writer, [(tmp_path, s) for s in range(16)])
    assert len(set(paths)) == 16
    records = load_records(tmp_path)
    assert len(records) == 16
    for record in records:
        load_predictions(record, tmp_path)  # every checksum matches


def test_corrupted_or_edited_records_are_rejected(tmp_path):
    preds = fixture_predictions(2)
    path = write_record(fixture_record(preds), preds, tmp_path)
    record = json.loads(path.read_text())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match="unreadable"):
        load_record(tmp_path / "bad.json")
    del record["metrics"]
    (tmp_path / "missing.json").write_text(json.dumps(record))
    with pytest.raises(RecordError, match="missing fields"):
        load_record(tmp_path / "missing.json")
    record = json.loads(path.read_text())
    record["metrics"]["inter_ocular"]["full"]["nme"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(record))
    with pytest.raises(RecordError, match="full/nme"):
        load_record(tmp_path / "nan.json")
    good = load_record(path)
    npz = tmp_path / good["predictions"]["file"]
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(RecordError, match="checksum"):
        load_predictions(good, tmp_path)


def test_markdown_table_states_protocol_and_values(tmp_path):
    good, bad = fixture_predictions(3, noise=1.0), fixture_predictions(4, noise=6.0)
    records = [fixture_record(good, "good"), fixture_record(bad, "bad")]
    for r in records:
        r["record_id"] = r["method"]
    frame = metrics_table(records, "nme")
    assert frame.loc["good", "full"] < frame.loc["bad", "full"]
    assert list(frame.columns) == ["full", *SUBSETS]
    text = render_markdown(records, title="T")
    assert "## synthetic-300w_68-test" in text and "**inter_ocular**" in text and "trapezoid" in text
    m = records[0]["metrics"]["inter_ocular"]
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("|")]
    good_rows = [[c.strip() for c in r[1:]] for r in rows if r[0].strip() == "good"]
    # One row per metric table: NME (std), FR@0.1, AUC@0.1, each over full, pose, blur.
    assert good_rows[0][0] == f"{m['full']['nme']:.2f} ({m['full']['nme_std']:.2f})"
    assert good_rows[1][1] == f"{m['pose']['fr@0.1']:.2f}"
    assert good_rows[2][2] == f"{m['blur']['auc@0.1']:.4f}"
    assert "**FR@0.1 (%)**" in text and "**AUC@0.1**" in text
    assert "**bbox**" in render_markdown(records, normalizer="bbox")


def test_ced_plot_is_a_png(tmp_path):
    path = plot_ced({"a": np.random.default_rng(0).gamma(2, 0.02, 100), "b": np.full(10, 0.2)}, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- validation: digests, image counts, predictions -----------------------------------------------------------

def reseal(record_path, results) -> dict:
    """Re-write a record after its predictions file was changed, with a matching checksum and digest: so that
    only the predictions' own validation can catch the change."""
    record = json.loads(record_path.read_text())
    record["predictions"]["sha256"] = sha256_file(results / record["predictions"]["file"])
    record["digest"] = record_digest(record)
    record_path.write_text(json.dumps(record))
    return load_record(record_path)


def test_hand_edited_records_are_rejected_and_schema_1_still_loads(tmp_path):
    preds = fixture_predictions(5)
    path = write_record(fixture_record(preds), preds, tmp_path)
    record = json.loads(path.read_text())
    loaded = load_record(path)
    assert loaded["digest"] == record_digest(loaded) == record_digest(record)  # `_path` is not digested
    record["metrics"]["inter_ocular"]["full"]["nme"] *= 0.9  # a valid, finite, better number
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(record, indent=2))
    with pytest.raises(RecordError, match=r"edited\.json.*modified after it was written.*leaderboard submit"):
        load_record(edited)
    del record["digest"]
    edited.write_text(json.dumps(record))
    with pytest.raises(RecordError, match="no digest"):
        load_record(edited)
    record["schema_version"] = 1  # written before digests: accepted as it is
    old = tmp_path / "old.json"
    old.write_text(json.dumps(record))
    assert load_record(old)["metrics"] == record["metrics"]
    assert FULL == metrics_FULL


def test_image_counts_are_checked_against_the_published_sizes(tmp_path):
    preds = fixture_predictions(6)
    n = len(preds["index"])
    pose = int(preds["subset_mask"][:, SUBSETS.index("pose")].sum())
    record = fixture_record(preds)
    with pytest.raises(RecordError, match=rf"{n} images evaluated.*has {n + 1} \(expected.n_images\)"):
        write_record(record | {"expected": {"n_images": n + 1, "subsets": {}}}, preds, tmp_path)
    assert not (tmp_path / "predictions").exists()  # nothing written for an invalid record
    with pytest.raises(RecordError, match=rf"inter_ocular/pose/n counts {pose} images, but subset 'pose' has"):
        write_record(record | {"expected": {"n_images": n, "subsets": {"pose": pose + 2, "blur": None}}}, preds,
                     tmp_path)
    with pytest.raises(RecordError, match="inter_ocular/full/n counts"):
        write_record(record | {"n_images": n - 1}, preds, tmp_path)
    partial = write_record(record | {"expected": {"n_images": n + 1, "subsets": {"pose": 0}, "partial": True}},
                           preds, tmp_path)
    exact = write_record(record | {"expected": {"n_images": n, "subsets": {"pose": pose, "blur": None}}},
                         preds, tmp_path)
    assert load_record(partial)["expected"]["partial"] and load_record(exact)["expected"]["n_images"] == n


@pytest.mark.parametrize("tamper, message", [
    (lambda p: {k: (v[:-1] if k not in ("normalizers", "subsets") else v) for k, v in p.items()},
     "39 rows, but the record has n_images = 40"),
    (lambda p: p | {"pred": np.where(np.arange(40)[:, None, None] == 3, np.nan, p["pred"])},
     "'pred' is not finite for 1 image"),
    (lambda p: {k: v for k, v in p.items() if k != "visible"}, r"missing arrays \['visible'\]"),
    (lambda p: p | {"index": np.r_[p["index"][:-1], 0]}, r"'index' repeats images \[0\]"),
    (lambda p: p | {"norm": p["norm"][:, :1]}, r"'norm' has shape \(40, 1\), expected \(40, 2\)"),
    (lambda p: p | {"target": p["target"][:, :-1]}, "'target' has shape"),
])
def test_tampered_predictions_are_rejected(tmp_path, tamper, message):
    preds = fixture_predictions(7)
    path = write_record(fixture_record(preds), preds, tmp_path)
    record = load_record(path)
    tampered = tamper(load_predictions(record, tmp_path))
    with open(tmp_path / record["predictions"]["file"], "wb") as f:
        np.savez_compressed(f, **tampered)
    with pytest.raises(RecordError, match="checksum"):
        load_predictions(record, tmp_path)
    with pytest.raises(RecordError, match=message):
        load_predictions(reseal(path, tmp_path), tmp_path)
    with pytest.raises(RecordError, match=message):  # and the same check refuses to write them
        write_record(fixture_record(preds), tamper(preds), tmp_path / "again")
