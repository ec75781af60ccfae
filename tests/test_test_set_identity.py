"""A test set's identity is its name *and* its content (issue 14): records store the digest of the images they
scored; the leaderboard never puts records on other images in one table, marks synthetic and partial rows where
the numbers are, and says when a newer record replaces an older one."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import add, fixture_predictions, fixture_record, numpy_nme, table_rows

from leaderboard.__main__ import main as leaderboard_main
from leaderboard.entries import collect_entries, identify
from leaderboard.render import render_leaderboards
from leaderboard.store import (
    RecordError,
    identity,
    image_set,
    load_predictions,
    load_record,
    record_digest,
    sha256_file,
    write_record,
)

TEST_SET = "synthetic-300w_68-test"


def sections(markdown: str) -> dict[str, str]:
    """{section title: its Markdown} for every ``## `` section."""
    parts = markdown.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part for part in parts}


def render(tmp_path, results, capsys=None):
    """The rendered Markdown, and what the CLI printed (stdout)."""
    out = tmp_path / "out"
    assert leaderboard_main(["render", "--results", str(results), "--out", str(out), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out if capsys else ""
    return (out / "leaderboard.md").read_text(), printed


# --- the digest ------------------------------------------------------------------------------------------------

def test_image_set_is_the_digest_of_the_sorted_ids_whatever_the_order():
    p = fixture_predictions(0, n=12)
    ids = [str(i) for i in p["image_id"]]
    expected = "sha256:" + hashlib.sha256("\n".join(["image_id", *sorted(ids)]).encode()).hexdigest()
    assert image_set(p) == {"n_images": 12, "key": "image_id", "digest": expected}
    order = np.random.default_rng(0).permutation(12)
    shuffled = {k: (v[order] if k not in ("normalizers", "subsets") else v) for k, v in p.items()}
    assert image_set(shuffled) == image_set(p)
    other = p | {"image_id": np.array([*ids[:-1], "someone-else"])}
    assert image_set(other)["digest"] != expected and image_set(other)["n_images"] == 12
    no_ids = {k: v for k, v in p.items() if k != "image_id"} | {"index": np.array([10, 2, 1, *range(11, 20)])}
    numeric = "\n".join(["index", "1", "2", "10", *map(str, range(11, 20))])  # sorted as numbers, not as text
    assert image_set(no_ids) == {"n_images": 12, "key": "index",
                                 "digest": "sha256:" + hashlib.sha256(numeric.encode()).hexdigest()}


def _without_image_set(path: Path) -> None:
    """Turn a record into one written before records carried an image set (a valid digest, no image_set)."""
    record = json.loads(path.read_text())
    del record["image_set"]
    record["digest"] = record_digest(record)
    path.write_text(json.dumps(record))


def test_records_store_their_image_set_and_old_records_get_it_from_their_predictions(tmp_path):
    p = fixture_predictions(1)
    new = load_record(write_record(fixture_record(p), p, tmp_path / "a"))
    assert new["image_set"] == image_set(p)
    old_path = write_record(fixture_record(p, "old"), p, tmp_path / "b")
    _without_image_set(old_path)
    old = load_record(old_path)
    with pytest.raises(RecordError, match="no image_set"):
        identity(old)
    assert identity(old, load_predictions(old, tmp_path / "b")) == identity(new)
    entries, notes = identify(collect_entries([tmp_path])[0])
    assert not notes and entries[0].identity == entries[1].identity == identity(new)
    assert str(identity(new)) == f"{TEST_SET} (40 images, image set {new['image_set']['digest'][7:19]})"


def test_predictions_of_other_images_than_the_record_names_are_refused(tmp_path):
    p = fixture_predictions(2)
    path = write_record(fixture_record(p), p, tmp_path)
    record = load_record(path)
    npz = tmp_path / record["predictions"]["file"]
    with open(npz, "wb") as f:  # same arrays, other image ids; checksum and digest resealed to match
        np.savez_compressed(f, **(p | {"image_id": np.array([f"x{i}" for i in range(40)])}))
    record = json.loads(path.read_text())
    record["predictions"]["sha256"] = sha256_file(npz)
    record["digest"] = record_digest(record)
    path.write_text(json.dumps(record))
    with pytest.raises(RecordError, match="holds other images"):
        load_predictions(load_record(path), tmp_path)


# --- the leaderboard -------------------------------------------------------------------------------------------

def test_a_run_on_fewer_images_gets_its_own_table_and_replaces_nothing(tmp_path, capsys):
    """Issue 14, case 2: an ad-hoc test of the same method on 16 of the 50 images, newer, used to replace the
    full evaluation's row (3.08 % -> 57.65 %), with a note at the bottom as the only sign."""
    full = add(tmp_path, 3, 1.0, "HGs", 1, n=50)
    few = add(tmp_path, 4, 8.0, "HGs", 9, n=16)  # newer, much worse, on ids img0..img15 only
    text, printed = render(tmp_path, tmp_path, capsys)
    by_title = sections(text)
    assert set(by_title) == {f"{TEST_SET} (50 images)", f"{TEST_SET} (16 images)"}
    assert table_rows(by_title[f"{TEST_SET} (50 images)"])["HGs"][0].startswith(f"{numpy_nme(full).mean():.2f} [")
    assert table_rows(by_title[f"{TEST_SET} (16 images)"])["HGs"][0].startswith(f"{numpy_nme(few).mean():.2f} [")
    assert "Replaced" not in text and "replaces" not in printed and "kept the newest" not in text


def test_a_newer_record_on_the_same_images_replaces_the_older_and_says_so(tmp_path, capsys):
    add(tmp_path, 3, 1.0, "HGs", 1)
    newest = add(tmp_path, 4, 3.0, "HGs", 9)
    text, printed = render(tmp_path, tmp_path, capsys)
    (title,) = sections(text)
    assert title == TEST_SET  # one image set: the name alone, as before
    assert table_rows(text)["HGs"][0].startswith(f"{numpy_nme(newest).mean():.2f} [")
    said = [line for line in printed.splitlines() if "replaces" in line]
    assert said == [f"render: {TEST_SET}: HGs: 2 records on these images; kept the newest, HGs__day9 (created "
                    f"2024-05-09T12:00:00+00:00), which replaces the older HGs__day1."]
    assert printed.splitlines()[-1].endswith("leaderboard.html")  # the outputs stay the last lines
    replaced = text.index("**Replaced:** HGs: 2 records on these images; kept the newest, HGs__day9")
    assert replaced < text.index("### Full test set")  # above the table, not in a note at the bottom


def test_image_sets_of_one_size_are_told_apart_and_partial_sets_say_so(tmp_path):
    add(tmp_path, 3, 1.0, "a", 1)
    other = fixture_predictions(5)
    other["image_id"] = np.array([f"other{i}" for i in range(40)])
    write_record(fixture_record(other, "b") | {"record_id": "b__day2", "created": "2024-05-02T12:00:00+00:00"},
                 other, tmp_path)
    add(tmp_path, 6, 1.0, "c", 3, n=12, expected={"n_images": 40, "subsets": {}, "partial": True})
    paths = render_leaderboards([tmp_path], tmp_path / "out", n_boot=50, say=None)
    titles = list(sections(paths["markdown"].read_text()))
    digests = {identity(load_record(p)).short: load_record(p)["method"] for p in (tmp_path / "records").glob("*")}
    short = {method: d for d, method in digests.items()}
    assert sorted(titles) == sorted([f"{TEST_SET} (40 images, image set {short['a']})",
                                     f"{TEST_SET} (40 images, image set {short['b']})",
                                     f"{TEST_SET} (12 images, partial)"])


def test_rows_carry_synthetic_and_partial_marks_where_the_numbers_are(tmp_path):
    """Issue 14, case 5: a CLI or demo record on synthetic faces (``synthetic``, no reproduce ``experiment``)
    had no banner; a partial record had no mark in its row."""
    add(tmp_path, 3, 1.0, "real", 1)
    add(tmp_path, 8, 2.0, "fake", 2, synthetic=True, expected={"n_images": 50, "subsets": {}, "partial": True})
    paths = render_leaderboards([tmp_path], tmp_path / "out", n_boot=50, say=None)
    text = paths["markdown"].read_text()
    mark = "fake [synthetic data; partial: 40 of 50 images]"
    assert mark in table_rows(text) and "real" in table_rows(text)
    assert mark in table_rows(text.split("### NME by subset")[1])  # every table's row
    assert "> **⚠ SYNTHETIC DATA: fake" in text and "[synthetic data: evaluated on generated faces" in text
    assert "[partial: fewer images scored than the test set holds" in text
    assert f"<td>{mark}</td>" in paths["html"].read_text()


def test_the_test_callback_records_synthetic_faces_and_partial_runs(tmp_path):
    """A trainer.test on synthetic faces stores ``synthetic``, its image set, and ``partial`` when fewer
    images were scored than the split holds (limit_test_batches)."""
    import pytorch_lightning as pl

    from datamodules.synthetic import SyntheticFaceDataModule
    from leaderboard.callback import EvaluationRecorder
    from lightning_modules.hourglass import StackedHourglassModule

    data = SyntheticFaceDataModule(train_size=8, test_size=6, image_size=96, input_size=64, batch_size=2,
                                   num_workers=0, val_size=2)
    model = StackedHourglassModule(layout="300w_68", input_size=64, num_stacks=1, depth=2, channels=8)
    records = []
    for limit in (1.0, 2):
        recorder = EvaluationRecorder(results_dir=str(tmp_path / "results"), method="tiny")
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                             default_root_dir=tmp_path, callbacks=[recorder], limit_test_batches=limit)
        trainer.test(model, datamodule=data, verbose=False)
        records.append(load_record(recorder.last_record))
    whole, limited = records
    assert (whole["n_images"], limited["n_images"]) == (6, 4)
    assert whole["synthetic"] is True and not whole["expected"]["partial"] and limited["expected"]["partial"]
    for record in records:
        assert record["image_set"] == image_set(load_predictions(record, tmp_path / "results"))
    assert whole["image_set"]["digest"] != limited["image_set"]["digest"]
