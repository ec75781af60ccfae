"""`python -m leaderboard render`: golden Markdown, numbers against independent computations, HTML and LaTeX
outputs, duplicate labels, the synthetic-data warning and the CLI's exit codes.

Regenerate the golden file with ``UPDATE_GOLDEN=1 python -m pytest tests/test_render.py``, then read it.
"""

import base64
import os
import re
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import add, numpy_nme, table_rows

from leaderboard.__main__ import main as leaderboard_main
from leaderboard.render import (
    collect_entries,
    keep_newest,
    leaderboard_frame,
    load_usable,
    render_leaderboards,
    subset_frame,
)
from leaderboard.stats import bootstrap_ci, paired_test

GOLDEN = Path(__file__).parent / "data" / "golden" / "leaderboard.md"
N_BOOT, SEED = 500, 0
COST = {"params": 6_543_210, "macs": 1_234_000_000, "input_size": 128, "images_per_s": {"1": 212.5, "32": 3012.4},
        "device": "cpu"}


def three_methods(results):
    """'precise' (low noise, with cost), 'rough' (high noise), 'middle': on the same 40 image indices."""
    return {"precise": add(results, 3, 1.0, "precise", 1, cost=COST), "rough": add(results, 4, 4.0, "rough", 2),
            "middle": add(results, 5, 2.0, "middle", 3)}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A results folder with :func:`three_methods`, written once; tests add their own records beside it."""
    results = tmp_path_factory.mktemp("shared")
    return results, three_methods(results)


def render(tmp_path, *results, **kwargs):
    return render_leaderboards(list(results), tmp_path / "out", n_boot=N_BOOT, seed=SEED, **kwargs)


def test_markdown_matches_the_golden_file(tmp_path, shared):
    text = render(tmp_path, shared[0])["markdown"].read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "re-run with UPDATE_GOLDEN=1 if the change is intended, and read the diff"
    assert str(shared[0]) not in text and "SYNTHETIC" not in text


def test_numbers_equal_independent_computations(tmp_path, shared):
    results, predictions = shared
    entries, _ = load_usable(collect_entries([results])[0], "inter_ocular")
    frame = leaderboard_frame(entries, "inter_ocular", n_boot=N_BOOT, seed=SEED)
    assert list(frame.index) == ["precise", "middle", "rough"] and frame.attrs["baseline"] == "precise"
    base = numpy_nme(predictions["precise"])
    for method, preds in predictions.items():
        values = numpy_nme(preds)
        row = frame.loc[method]
        assert row["nme"] == pytest.approx(values.mean(), rel=1e-10)
        assert (row["nme_ci_low"], row["nme_ci_high"]) == pytest.approx(
            bootstrap_ci(values, 0.95, N_BOOT, SEED), rel=1e-10)
        assert row["nme_ci_low"] < row["nme"] < row["nme_ci_high"]
        for t in (0.08, 0.1):
            assert row[f"fr@{t:g}"] == pytest.approx(100 * np.mean(values / 100 > t))
            grid = np.linspace(0, t, round(t / 1e-4) + 1)
            curve = (values[None, :] / 100 <= grid[:, None]).mean(1)
            assert row[f"auc@{t:g}"] == pytest.approx(np.trapezoid(curve, grid) / t, rel=1e-10)
        if method == "precise":
            assert row["paired"] == "baseline"
            continue
        expected = paired_test(values, base, 0.95, N_BOOT, SEED)  # same indices 0..39, same order
        assert row["paired"] == "tested" and row["diff"] == pytest.approx(expected.mean_difference, rel=1e-10)
        assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
        assert row["p_wilcoxon"] == pytest.approx(expected.p_wilcoxon, rel=1e-10)
    assert frame.loc["precise", "params_m"] == pytest.approx(6.54321) and np.isnan(frame.loc["rough", "macs_g"])
    # The rendered cells are these numbers, formatted.
    text = render(tmp_path, results)["markdown"].read_text()
    rows = table_rows(text, "Method")
    for method in predictions:
        r = frame.loc[method]
        assert rows[method][0] == f"{r['nme']:.2f} [{r['nme_ci_low']:.2f}, {r['nme_ci_high']:.2f}]"
    r = frame.loc["rough"]
    assert f"{r['diff']:+.2f} [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]" in rows["rough"]
    assert rows["precise"][-2:] == ["baseline", "—"] and rows["precise"][5:9] == ["6.54", "1.23", "212.5", "3012.4"]
    # Subsets: each method's own subset mask.
    by_subset = subset_frame(entries, "inter_ocular", ["full", "pose"], N_BOOT, SEED)
    pose = predictions["middle"]["subset_mask"][:, 0]
    assert by_subset.loc["middle", ("pose", "nme")] == pytest.approx(numpy_nme(predictions["middle"])[pose].mean())
    assert by_subset.loc["middle", ("pose", "n")] == pose.sum()


def test_baseline_option_and_different_images(tmp_path, shared):
    add(tmp_path, 6, 1.5, "fewer", 4, n=30)  # indices 0..29: not the same images
    entries, _ = load_usable(collect_entries([shared[0], tmp_path])[0], "inter_ocular")
    frame = leaderboard_frame(entries, "inter_ocular", baseline="rough", n_boot=N_BOOT, seed=SEED)
    assert frame.attrs["baseline"] == "rough" and frame.loc["rough", "paired"] == "baseline"
    assert frame.loc["precise", "diff"] < 0 and frame.loc["fewer", "paired"] == "different images"
    # Rendered, records on other images never share a table (issue 14): 'fewer' gets its own, titled by its count.
    text = render(tmp_path, shared[0], tmp_path, baseline="rough")["markdown"].read_text()
    rows = table_rows(text, "Method")
    assert "fewer" not in rows and "baseline" in rows["rough"]
    assert list(table_rows(text.split("## synthetic-300w_68-test (30 images)")[1], "Method")) == ["fewer"]
    with pytest.raises(ValueError, match="no record of a method"):
        render(tmp_path, shared[0], baseline="nobody")


def test_html_and_latex_outputs(tmp_path, shared):
    add(tmp_path, 7, 2.0, "other", 5, test_set="wflw-test")  # a second leaderboard
    paths = render(tmp_path, shared[0], tmp_path, title="T & T")
    page = paths["html"].read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 * 3  # (2 test sets) x (full, pose, blur)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('<a href="#') == 2 and 'id="wflw-test"' in page and "T &amp; T" in page
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 6
    tex = paths["latex"].read_text()
    assert tex.count(r"\toprule") == 4 and r"NME (\%) [95\% CI]" in tex and "inter\\_ocular" in tex
    assert not re.search(r"(?<!\\)[%&_#]", "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
                         .replace(" & ", " "))  # every special character escaped, except column separators
    assert tex.isascii()


def test_duplicate_labels_keep_the_newest(tmp_path):
    add(tmp_path, 3, 1.0, "same", 1)
    newest = add(tmp_path, 4, 3.0, "same", 9)
    add(tmp_path, 5, 2.0, "other", 2)
    kept, notes = keep_newest(collect_entries([tmp_path])[0])
    assert sorted(e.record["record_id"] for e in kept) == ["other__day2", "same__day9"]
    assert len(notes) == 1 and "kept the newest, same__day9" in notes[0] and "same__day1" in notes[0]
    text = render(tmp_path, tmp_path)["markdown"].read_text()
    assert "kept the newest, same__day9" in text
    nme = numpy_nme(newest).mean()
    assert table_rows(text, "Method")["same"][0].startswith(f"{nme:.2f} [")


def test_synthetic_records_carry_a_warning(tmp_path, shared):
    add(tmp_path, 8, 2.0, "fake", 6, experiment={"paper": "p", "name": "n", "test": "t", "data": "synthetic"},
        expected={"n_images": 50, "subsets": {"pose": None}, "partial": True})
    paths = render(tmp_path, shared[0], tmp_path)
    text = paths["markdown"].read_text()
    assert "> **⚠ SYNTHETIC DATA: fake" in text
    assert "fake: 40 images scored on full, the test set has 50 (a partial evaluation)." in text
    assert "experiment p / n / t, synthetic data" in text
    assert '<p class="warning">⚠ SYNTHETIC DATA' in paths["html"].read_text()


def test_cli_finds_nested_results_and_refuses_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert leaderboard_main(["render", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no evaluation records" in capsys.readouterr().err
    add(tmp_path / "reproduce" / "exp1", 3, 1.0, "a", 1)
    add(tmp_path / "reproduce" / "exp2", 4, 2.0, "b", 2)
    argv = ["render", "--results", str(tmp_path / "reproduce"), "--out", str(tmp_path / "o"), "--bootstrap", "200",
            "--thresholds", "0.05", "0.1", "--normalizer", "bbox"]
    assert leaderboard_main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["leaderboard.md", "leaderboard.tex", "leaderboard.html"]
    text = Path(printed[0]).read_text()
    assert set(table_rows(text, "Method")) == {"a", "b"} and "**Normaliser:** bbox" in text and "FR@0.05 (%)" in text
