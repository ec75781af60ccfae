"""Two-stage trainings (``init_from``) and repeated trainings (``seeds``) through the runner, on tiny synthetic
runs, and the paper tables' mean ± std over seeds against numpy."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from runner_fixtures import options, tiny_manifest

from leaderboard import runner
from leaderboard.layouts import load_layouts
from leaderboard.manifest import load_manifest
from leaderboard.paper_tables import Reproduced, build_tables, find_value, load_references, table_values
from leaderboard.store import load_predictions, load_records

TEST_300W = {"name": "300w", "dataset": "300W", "synthetic": "300w"}


def by_name(records: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["experiment"]["name"], r["experiment"]["seed_index"]): r for r in records}


def test_stage_two_starts_from_stage_one_selected_checkpoint(tmp_path, monkeypatch, capsys):
    """``--only stage2`` runs stage 1 first (listed after it), passes its selected checkpoint to the stage-2 fit
    and records the link (experiment, checkpoint, SHA-256) in stage 2's fit.json and records; a second run
    reuses both."""
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(tiny_manifest(tmp_path, experiments=[
        {"name": "stage2", "method": "HGs (stage 2)", "tests": [TEST_300W],
         "init_from": {"experiment": "hg-300w", "modules": ["net"]}},
        {"name": "hg-300w", "method": "HGs", "tests": [TEST_300W]}]))
    opts = options(tmp_path, only=("stage2",), cost_repeats=0)
    assert runner.reproduce(manifest, opts) == 0
    out = capsys.readouterr().out
    assert out.index("[1/2] hg-300w") < out.index("[2/2] stage2")
    stage1 = json.loads((runner.run_dir(manifest, manifest.experiment("hg-300w"), opts) / "fit.json").read_text())
    stage2 = json.loads((runner.run_dir(manifest, manifest.experiment("stage2"), opts) / "fit.json").read_text())
    digest = hashlib.sha256(Path(stage1["checkpoint"]).read_bytes()).hexdigest()
    link = {"experiment": "hg-300w", "seed_index": 0, "checkpoint": stage1["checkpoint"], "sha256": digest,
            "key": stage1["key"], "modules": ["net"]}
    assert stage2["init_from"] == link and stage2["key"] != stage1["key"]
    records = by_name(load_records(runner.results_dir(manifest, opts)))
    assert set(records) == {("hg-300w", 0), ("stage2", 0)}
    assert records[("stage2", 0)]["experiment"]["init_from"] == link
    assert records[("hg-300w", 0)]["experiment"]["init_from"] is None
    # The stage-2 fit got the checkpoint as the model's init_from (LightningCLI's saved config of that fit).
    saved = yaml.safe_load((Path(stage2["log_dir"]) / "config.yaml").read_text())["model"]["init_args"]
    assert (saved["init_from"], saved["init_modules"]) == (stage1["checkpoint"], ["net"])

    assert runner.reproduce(manifest, options(tmp_path, cost_repeats=0)) == 0
    assert capsys.readouterr().out.count("done earlier: 1 record(s)") == 2
    assert len(load_records(runner.results_dir(manifest, opts))) == 2


def test_stage_two_training_key_follows_stage_one_key_not_its_path(tmp_path):
    manifest = load_manifest(tiny_manifest(tmp_path, experiments=[
        {"name": "a", "method": "A", "tests": [TEST_300W]},
        {"name": "b", "method": "B", "tests": [TEST_300W], "init_from": "a"}]))
    stage2, opts = manifest.experiment("b"), options(tmp_path)

    def key(checkpoint: str, stage1_key: str) -> str:
        init = {"checkpoint": checkpoint, "key": stage1_key, "modules": None}
        args = runner.compose_args(manifest, stage2, None, opts, "fit", init=init)
        assert f"--model.init_args.init_from={checkpoint}" in args
        assert not any(a.startswith("--model.init_args.init_modules") for a in args)
        return runner.training_key(args, stage1_key)

    assert key("/one/best.ckpt", "k1") == key("/elsewhere/best.ckpt", "k1")
    assert key("/one/best.ckpt", "k1") != key("/one/best.ckpt", "k2")
    # test passes load the stage-2 checkpoint itself: no init_from there
    assert not any("init_from" in a for a in runner.compose_args(manifest, stage2, stage2.tests[0], opts, "t"))


def test_seeds_train_and_record_each_seed_and_resume_per_seed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(tiny_manifest(tmp_path, experiments=[
        {"name": "hg-300w", "method": "HGs", "seeds": 2, "tests": [TEST_300W]}]))
    experiment, opts = manifest.experiments[0], options(tmp_path, cost_repeats=0)
    fits = [runner.compose_args(manifest, experiment, None, opts, "fit", i) for i in range(2)]
    assert [[a for a in f if a.startswith("--seed_everything")] for f in fits] == [["--seed_everything=0"],
                                                                                    ["--seed_everything=1"]]
    assert runner.reproduce(manifest, opts) == 0
    folder = runner.results_dir(manifest, opts)
    records = by_name(load_records(folder))
    assert set(records) == {("hg-300w", 0), ("hg-300w", 1)}
    for i in range(2):
        tag = records[("hg-300w", i)]["experiment"]
        assert (tag["seed"], tag["seeds"], records[("hg-300w", i)]["seed"]) == (i, 2, i)  # config seed 0 + i
        run = runner.run_dir(manifest, experiment, opts, i)
        assert run == tmp_path / "runs" / "tiny" / "synthetic" / "hg-300w" / f"seed-{i}"
        assert json.loads((run / "fit.json").read_text())["seed"] == i
    assert records[("hg-300w", 0)]["checkpoint"]["sha256"] != records[("hg-300w", 1)]["checkpoint"]["sha256"]

    # A lost record of seed 1: only seed 1 is tested again, from its finished training.
    Path(records[("hg-300w", 1)]["_path"]).unlink()
    capsys.readouterr()
    assert runner.reproduce(manifest, opts) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier: 1 record(s)") == 1 and "fit: done earlier" in out and "fit: training" not in out
    assert set(by_name(load_records(folder))) == {("hg-300w", 0), ("hg-300w", 1)}

    # The paper table: mean and sample std over the seeds of each seed's NME, computed here with numpy.
    reproduced = Reproduced(manifest, folder)
    layout = load_layouts().get("tab", "Table 2")
    values = table_values(layout, load_references(), reproduced, {"HRNet": "hg-300w"})
    table = build_tables(layout, values, with_reproduced=True)[0]
    row = next(r for r in table.rows if r[0] == "HRNet")
    columns = {"common": "Common Subset", "full": "Fullset"}
    per_seed = {"full": [], "common": []}
    for i in range(2):
        preds = load_predictions(by_name(load_records(folder))[("hg-300w", i)], folder)
        distance = np.sqrt(((preds["pred"] - preds["target"]) ** 2).sum(-1)).mean(1)
        nme = distance / preds["norm"][:, list(preds["normalizers"]).index("inter_ocular")] * 100
        per_seed["full"].append(nme.mean())
        per_seed["common"].append(nme[preds["subset_mask"][:, list(preds["subsets"]).index("common")]].mean())
    for subset, nmes in per_seed.items():
        mean, std = np.mean(nmes), np.std(nmes, ddof=1)
        cell = find_value(values, layout, "HRNet", columns[subset])
        assert cell.reproduced == pytest.approx(mean, rel=1e-9)
        assert f"{mean:.2f} ± {std:.2f}" in row  # the reproduced column of that cell, as printed
    full = find_value(values, layout, "HRNet", "Fullset")
    assert full.delta == pytest.approx(np.mean(per_seed["full"]) - full.reported)
    rendered = (folder / "tables" / "tables.md").read_text()
    assert "mean ± standard deviation (n - 1) over 2 seeds (of 2; seeds 0, 1)" in rendered


def test_a_changed_configuration_never_reuses_an_old_training_or_record(tmp_path, monkeypatch):
    """A record, a finished training and an interrupted one are each refused once the composed configuration
    changes (here an extra override), instead of being reused as if they were the new experiment's."""
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(tiny_manifest(tmp_path))
    opts = options(tmp_path, only=("hg-300w",))
    assert runner.reproduce(manifest, opts) == 0
    changed = options(tmp_path, only=("hg-300w",), overrides=("--model.init_args.foreground_weight=5.0",))
    with pytest.raises(runner.ManifestError, match="this record was made with another configuration"):
        runner.reproduce(manifest, changed)
    for record in load_records(runner.results_dir(manifest, opts)):
        Path(record["_path"]).unlink()  # the records go: the finished training is next in line
    with pytest.raises(runner.ManifestError, match="this finished training was made with another configuration"):
        runner.reproduce(manifest, changed)
    run = runner.run_dir(manifest, manifest.experiment("hg-300w"), opts)
    (run / "fit.json").unlink()  # as if interrupted: last.ckpt and training.json remain
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "training.json").is_file()
    with pytest.raises(runner.ManifestError, match="this interrupted training was made with another configuration"):
        runner.reproduce(manifest, changed)
    assert runner.reproduce(manifest, opts) == 0  # the original configuration resumes and tests again
