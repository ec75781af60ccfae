"""Paper figures (``leaderboard.figures``): the eye-point NMSE against a numpy loop, the occlusion split against
hand-set visibility flags, seeds pooled into the mean of their ECDFs, located errors for bad ``figures:`` entries,
and the figures rendered from fixture records into the paper-tables document and the runner's report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from record_fixtures import fixture_predictions, fixture_record
from runner_fixtures import DATA, options, tiny_manifest

import leaderboard.figures as figures
from landmarks.layouts import COFW_29, W300_68, WFLW_98
from landmarks.metrics import auc, per_image_nme
from leaderboard import runner
from leaderboard.document import to_markdown
from leaderboard.manifest import FigureSpec, ManifestError, load_manifest
from leaderboard.paper_tables import Reproduced, main, paper_document
from leaderboard.scoring import rescore_nme
from leaderboard.store import load_predictions, write_record

PAPER_EYES = list(range(36, 48))  # PWC Sec. 5: the 12 eye anchors, points 36-47 (0-based) of the 68


def nmse_loop(pred, target, norm, points):
    """Per-image NMSE over ``points``, one image and one point at a time."""
    out = []
    for i in range(len(pred)):
        errors = [np.hypot(*(pred[i, k] - target[i, k])) for k in points]
        out.append(sum(errors) / len(errors) / norm[i])
    return np.array(out)


def ecdf_loop(values, grid):
    return np.array([sum(v <= g for v in values) / len(values) for g in grid])


def test_eye_point_nmse_matches_a_numpy_loop():
    predictions = fixture_predictions(seed=5, n=12, noise=3.0)
    pred, target, norm = predictions["pred"], predictions["target"], predictions["norm"][:, 0]
    assert list(W300_68.point_set("eyes")) == PAPER_EYES
    expected = nmse_loop(pred, target, norm, PAPER_EYES)
    got = per_image_nme(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(norm),
                        points=W300_68.point_set("eyes"))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(rescore_nme(predictions, "inter_ocular", points=PAPER_EYES), expected, rtol=1e-12)
    np.testing.assert_allclose(rescore_nme(predictions, "inter_ocular", points=W300_68.point_set("all")),
                               nmse_loop(pred, target, norm, range(68)), rtol=1e-12)
    # visible-only over the eyes: the mean runs over the eye points that are visible
    visible = predictions["visible"]
    got = per_image_nme(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(norm),
                        torch.from_numpy(visible), points=PAPER_EYES)
    loop = [nmse_loop(pred[i:i + 1], target[i:i + 1], norm[i:i + 1], [k for k in PAPER_EYES if visible[i, k]])[0]
            for i in range(len(pred))]
    np.testing.assert_allclose(got.numpy(), loop, rtol=1e-12)


def test_layouts_name_their_eye_points():
    assert WFLW_98.point_set("eyes") == tuple(range(60, 76))  # WFLW eye contours 60-67, 68-75 (96, 97: pupils)
    assert COFW_29.point_set("eyes") == tuple(range(8, 16))  # COFW eye contours 8-15 (16, 17: pupils)
    with pytest.raises(ValueError, match="unknown point set 'nose'"):
        W300_68.point_set("nose")


def _manifest_with_figures(tmp_path, figures_block, experiments=None):
    path = tiny_manifest(tmp_path, experiments=experiments)
    raw = yaml.safe_load(path.read_text())
    raw["figures"] = figures_block
    path.write_text(yaml.safe_dump(raw))
    return path


def _experiment(name, seeds=1):
    return {"name": name, "method": name, "data": str(DATA / "300w.yaml"), "roots": {"root": "300w"}, "seeds": seeds,
            "tests": [{"name": "300w", "dataset": "300W", "synthetic": "300w", "normalizer": "inter_ocular"}]}


def _write(results, predictions, experiment, seed_index=0, day=1):
    record = fixture_record(predictions, experiment) | {
        "experiment": {"paper": "tiny", "name": experiment, "test": "300w", "seed_index": seed_index}}
    record["record_id"] = f"{experiment}__{seed_index}"
    record["created"] = f"2024-05-{day:02d}T12:00:00+00:00"
    write_record(record, predictions, results)


@pytest.mark.parametrize("entry, message", [
    ({"figure": "Figure 9", "test": "300w", "rows": {"A": "nope-300w"}},
     r"figures\[0\] \(Figure 9\) names unknown experiments \['nope-300w'\]"),
    ({"figure": "Figure 9", "test": "cofw68", "rows": {"A": "hg-300w"}},
     r"figures\[0\] \(Figure 9\): field 'test': \['hg-300w'\] have no test 'cofw68'"),
    ({"figure": "Figure 9", "test": "300w", "rows": {"A": "hg-300w"}, "landmarks": ["all", "mouth"]},
     r"figures\[0\]: field 'landmarks': expected a list of \['all', 'eyes'\]"),
    ({"figure": "Figure 9", "test": "300w", "rows": {"A": "hg-300w"}, "split": "pose"},
     r"figures\[0\]: field 'split'"),
    ({"figure": "Figure 9", "test": "300w", "rows": {"A": "hg-300w"}, "x_max": 10},
     r"figures\[0\]: field 'x_max': expected a number in \(0, 1\]"),
    ({"figure": "Figure 9", "test": "300w", "rows": {"A": "hg-300w"}, "colour": "red"},
     r"figures\[0\]: unknown keys \['colour'\]"),
])
def test_a_bad_figures_entry_is_refused_naming_the_file_and_the_entry(tmp_path, entry, message):
    path = _manifest_with_figures(tmp_path, [entry])
    with pytest.raises(ManifestError, match=message) as error:
        load_manifest(path)
    assert "manifest.yaml" in str(error.value)


def test_the_occlusion_split_follows_the_visibility_flags(tmp_path):
    """Images 1, 4 and 6 have one hidden point each: panel (a) holds exactly those, panel (b) the others, for every
    point set, with the NMSE of a numpy loop."""
    manifest = load_manifest(_manifest_with_figures(tmp_path, [
        {"figure": "Figure 13", "test": "300w", "rows": {"A": "a-300w"}, "split": "occlusion",
         "landmarks": ["all", "eyes"]}], [_experiment("a-300w")]))
    predictions = fixture_predictions(seed=2, n=8)
    predictions["visible"] = np.ones((8, 68), bool)
    predictions["visible"][[1, 4, 6], [0, 40, 67]] = False  # a jaw point, an eye point, a mouth point
    _write(tmp_path / "res", predictions, "a-300w")
    figure = manifest.figures[0]
    runs = figures.figure_runs(figure, manifest, Reproduced(manifest, tmp_path / "res").runs)
    panels = figures.figure_panels(figure, runs, lambda record: load_predictions(record, tmp_path / "res"))
    assert [(p.letter, p.title) for p in panels] == [
        ("a", "all 68 landmarks, occluded images"), ("b", "all 68 landmarks, images without occlusion"),
        ("c", "12 eye points, occluded images"), ("d", "12 eye points, images without occlusion")]
    occluded, clear = [1, 4, 6], [0, 2, 3, 5, 7]
    pred, target, norm = predictions["pred"], predictions["target"], predictions["norm"][:, 0]
    for panel, rows, points in zip(panels, (occluded, clear, occluded, clear),
                                   (range(68), range(68), PAPER_EYES, PAPER_EYES), strict=True):
        np.testing.assert_allclose(panel.curves["A"], nmse_loop(pred[rows], target[rows], norm[rows], points))


def test_seeds_pool_into_the_mean_of_their_ecdfs(tmp_path):
    manifest = load_manifest(_manifest_with_figures(tmp_path, [
        {"figure": "Figure 9", "test": "300w", "rows": {"A": "a-300w", "B": "b-300w"}}],
        [_experiment("a-300w", seeds=2), _experiment("b-300w")]))
    seeds = [fixture_predictions(seed=s, n=30, noise=1.0 + s) for s in (0, 1)]
    for i, predictions in enumerate(seeds):
        _write(tmp_path / "res", predictions, "a-300w", seed_index=i, day=i + 1)
    _write(tmp_path / "res", fixture_predictions(seed=7, n=30), "b-300w")
    figure = manifest.figures[0]
    runs = figures.figure_runs(figure, manifest, Reproduced(manifest, tmp_path / "res").runs)
    (panel,) = figures.figure_panels(figure, runs, lambda record: load_predictions(record, tmp_path / "res"))
    per_seed = [nmse_loop(p["pred"], p["target"], p["norm"][:, 0], range(68)) for p in seeds]
    grid = np.linspace(0, 0.1, 51)
    mean_ecdf = np.mean([ecdf_loop(v, grid) for v in per_seed], axis=0)
    np.testing.assert_allclose(ecdf_loop(panel.curves["A"], grid), mean_ecdf)
    assert float(auc(panel.curves["A"], 0.1)) == pytest.approx(np.mean([float(auc(v, 0.1)) for v in per_seed]))
    assert len(panel.curves["B"]) == 30


def test_figures_render_after_the_tables_and_in_the_report(tmp_path, monkeypatch):
    """The runner's outputs hold the figure sections after the tables, with PNGs that exist beside each document
    and the number of curves asked for (records missing for a row: said, not drawn)."""
    block = [{"figure": "Figure 9", "caption": "ECDF of the NMSE", "test": "300w", "landmarks": ["all", "eyes"],
              "rows": {"A": "hg-300w", "B": "b-300w", "C": "c-300w"}},
             {"figure": "Figure 13", "test": "300w", "rows": {"A": "hg-300w", "B": "b-300w"}, "split": "occlusion",
              "x_max": 0.2}]
    manifest = load_manifest(_manifest_with_figures(tmp_path, block, [_experiment(n) for n in ("hg-300w", "b-300w",
                                                                                                 "c-300w")]))
    opts = options(tmp_path)
    folder = runner.results_dir(manifest, opts)
    predictions = fixture_predictions(seed=1, n=20)
    predictions["visible"][:5] = True  # five images without occlusion, the others with some
    _write(folder, predictions, "hg-300w")
    _write(folder, fixture_predictions(seed=3, n=20), "b-300w")  # c-300w: not run
    drawn = {}
    real = figures.plot_ced

    def spy(curves, path, max_threshold, **kw):
        drawn[path.name] = (list(curves), max_threshold, kw["title"])
        return real(curves, path, max_threshold, **kw)

    monkeypatch.setattr(figures, "plot_ced", spy)
    outputs = runner.render_outputs(manifest, opts)
    assert sorted(drawn) == ["tab-figure-13-a.png", "tab-figure-13-b.png", "tab-figure-9-a.png",
                             "tab-figure-9-b.png"]
    assert drawn["tab-figure-9-a.png"][0] == ["A", "B"] and drawn["tab-figure-9-a.png"][1] == 0.1
    # B: every image has a hidden point (the fixture's flags); counts that differ go into the legend
    assert drawn["tab-figure-13-a.png"][0] == ["A, n = 15", "B, n = 20"]
    assert drawn["tab-figure-13-b.png"] == (["A"], 0.2, "Figure 13 (b) (SYNTHETIC DATA)\nall 68 landmarks, "
                                                         "images without occlusion (5 images)")
    assert "12 eye points" in drawn["tab-figure-9-b.png"][2]
    for where in ("tables", "report"):
        assert all((folder / where / "figures" / name).is_file() for name in drawn)
    markdown = outputs["tables markdown"].read_text()
    assert markdown.index("## TAB Figure 9 (synthetic)") > markdown.index("## TAB Table 2")
    assert "![Figure 9 (b): 12 eye points](figures/tab-figure-9-b.png)" in markdown
    assert "C: experiment `c-300w`, test `300w`: not run yet." in markdown
    assert "Figure 13 (b): no curve for B (no image in this group)." in markdown
    report = outputs["report html"].read_text()
    assert report.count("data:image/png;base64") >= 4 and "Figure 13 (a): all 68 landmarks, occluded images" in report


def test_the_paper_tables_command_draws_the_pwc_figures(tmp_path, capsys):
    """``python -m leaderboard paper-tables pwc --data synthetic`` with one experiment recorded: its curves in every
    figure that names it, the other rows said to be not run yet."""
    results = tmp_path / "results"
    record = fixture_record(fixture_predictions(seed=4, n=10), "PWC") | {
        "experiment": {"paper": "pwc", "name": "pwc-300w", "test": "pwc-sets", "seed_index": 0}}
    write_record(record, fixture_predictions(seed=4, n=10), results / "pwc" / "synthetic")
    assert main(["pwc", "--out", str(tmp_path / "out"), "--results", str(results), "--data", "synthetic"]) == 0
    markdown = (tmp_path / "out" / "tables.md").read_text()
    for name in ("figure-9-a", "figure-9-b", "figure-10-a", "figure-10-b"):
        assert f"(figures/pwc-{name}.png)" in markdown and (tmp_path / "out" / "figures" / f"pwc-{name}.png").is_file()
    assert "## PWC Figure 14 (synthetic)" in markdown and "figures/pwc-figure-14" not in markdown  # no cofw68 record
    assert "Direct: experiment `direct-300w`, test `pwc-sets`: not run yet." in markdown


def test_a_document_without_records_has_no_figures(tmp_path):
    manifest = load_manifest(_manifest_with_figures(tmp_path, [
        {"figure": "Figure 9", "test": "300w", "rows": {"A": "hg-300w"}}]))
    doc = paper_document("tab", manifest, None, tables=["Table 2"], out_dir=tmp_path / "out")
    assert [s.title for s in doc.sections] == ["TAB Table 2"] and "Figure" not in to_markdown(doc)


def test_the_pwc_manifest_declares_figures_9_10_13_and_14():
    manifest = load_manifest("pwc")
    by_name = {f.figure: f for f in manifest.figures}
    assert list(by_name) == ["Figure 9", "Figure 10", "Figure 13", "Figure 14"]
    assert list(by_name["Figure 9"].rows) == ["Direct", "Cascaded", "Dist.", "Heat. reg.", "PWC", "hybrid"]
    assert list(by_name["Figure 10"].rows) == ["PWC", "PWC+disc", "hybrid", "hybrid+disc"]
    assert by_name["Figure 13"].split == "occlusion" and by_name["Figure 13"].test == "cofw68"
    assert by_name["Figure 14"].landmarks == ("all", "eyes") and by_name["Figure 14"].test == "cofw68"
    assert all(isinstance(f, FigureSpec) and f.x_max == 0.1 for f in manifest.figures)
