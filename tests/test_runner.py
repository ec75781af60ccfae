"""The leaderboard runner: manifests, resumable reproduce on synthetic data, paper tables, DDP = single process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from record_fixtures import NORMALIZERS, fixture_predictions, fixture_record
from runner_fixtures import DATA, ROOT, TINY, options, tiny_manifest

from datamodules.synthetic import SUBSET_SCHEMES, SyntheticFaceSource
from experiments.cli import main as cli_main
from landmarks.metrics import NMEMetric, per_image_nme
from leaderboard import runner
from leaderboard.document import to_markdown
from leaderboard.layouts import load_layouts
from leaderboard.manifest import ManifestError, available_papers, load_manifest
from leaderboard.paper_tables import (
    Reproduced,
    build_tables,
    find_value,
    load_references,
    paper_document,
    table_values,
)
from leaderboard.store import load_predictions, load_records, write_record
from lightning_modules.schedules import StepDivisorsLR

# --- manifests ----------------------------------------------------------------------------------------------


def test_every_paper_manifest_loads_and_names_reference_tables():
    references = load_references()
    assert "hourglass" in available_papers()
    for paper in available_papers():
        manifest = load_manifest(paper)
        for spec in manifest.tables:
            rows = references[(references.paper == manifest.references) & (references.table == spec.table)]
            assert set(spec.rows) <= set(rows.method), (paper, spec.table)


def test_manifest_errors_are_clear(tmp_path):
    path = tiny_manifest(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["tables"][0]["rows"] = {"HGs": "no-such-experiment"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="unknown experiments"):
        load_manifest(path)
    raw["tables"] = []
    raw["experiments"][1]["name"] = raw["experiments"][0]["name"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="not unique"):
        load_manifest(path)
    raw["experiments"][1]["name"] = "other"
    raw["config"] = ["missing.yaml"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="no manifest"):
        load_manifest("no-such-paper")


def test_trained_only_stages_and_experiment_configs(tmp_path):
    """``test: false`` (a stage 1) is trained but has no records, so no table may name it and it must fit;
    ``config`` files come after the data or synthetic configs in both modes."""
    path = tiny_manifest(tmp_path)
    raw = yaml.safe_load(path.read_text())
    extra = tmp_path / "stage.yaml"
    extra.write_text("model:\n  init_args:\n    channels: 32\n")
    raw["experiments"][0] |= {"test": False, "config": [str(extra)]}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="trained only"):
        load_manifest(path)
    raw["tables"] = [t for t in raw["tables"] if "hg-300w" not in t["rows"].values()]
    path.write_text(yaml.safe_dump(raw))
    manifest = load_manifest(path)
    stage1 = manifest.experiment("hg-300w")
    assert not stage1.test and stage1.config == (extra.resolve(),)
    for data in ("synthetic", "real"):
        assert runner.config_files(manifest, stage1, options(tmp_path, data=data))[-1] == extra.resolve()
    raw["experiments"][0]["fit"] = False
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="nothing to run"):
        load_manifest(path)


def test_a_test_pass_on_another_benchmarks_data(tmp_path):
    """A test spec's ``data`` and ``roots`` replace the experiment's for that pass on real data (the model trained on
    the experiment's); synthetic runs keep the synthetic stand-in; the checker covers the test's datasets too."""
    path = tiny_manifest(tmp_path)
    raw = yaml.safe_load(path.read_text())
    cofw68 = str(DATA / "cofw68.yaml")
    raw["experiments"][0]["tests"].append({"name": "cofw68", "dataset": "COFW68", "synthetic": "none",
                                           "data": [cofw68], "roots": {"root": "cofw68", "train_root": "300w"}})
    path.write_text(yaml.safe_dump(raw))
    manifest = load_manifest(path)
    experiment = manifest.experiment("hg-300w")
    spec = experiment.tests[1]
    real = options(tmp_path, data="real", data_root=tmp_path / "data")
    assert runner.config_files(manifest, experiment, real, spec)[1] == Path(cofw68).resolve()
    assert runner.config_files(manifest, experiment, real, experiment.tests[0])[1] == (DATA / "300w.yaml").resolve()
    assert runner.config_files(manifest, experiment, options(tmp_path), spec)[1:] == manifest.synthetic_config
    assert runner.dataset_roots(experiment, real, spec) == {"root": str(tmp_path / "data" / "COFW"),
                                                            "train_root": str(tmp_path / "data" / "300W")}
    assert runner.dataset_roots(experiment, real) == {"root": str(tmp_path / "data" / "300W")}
    problems = runner.check_datasets([experiment], real)
    assert any(p.startswith("cofw") for p in problems) and any(p.startswith("300w") for p in problems)


def test_total_batch_is_split_over_processes(tmp_path):
    manifest = load_manifest(tiny_manifest(tmp_path))
    args, info = runner.batch_args(manifest, options(tmp_path, devices=4, nodes=2, total_batch=32))
    assert args == ["--data.init_args.batch_size=4"] and info["world_size"] == 8 and info["total_batch"] == 32
    assert "lr" not in info  # lr_scaling: none keeps the paper's learning rate
    with pytest.raises(ManifestError, match="does not split"):
        runner.batch_args(manifest, options(tmp_path, devices=3))
    # lr_scaling: linear -> lr x new / paper total, from the last config that sets it (synthetic_small: 0.002)
    raw = yaml.safe_load(manifest.path.read_text()) | {"batch": {"total": 16, "lr_scaling": "linear"}}
    manifest.path.write_text(yaml.safe_dump(raw))
    manifest = load_manifest(manifest.path)
    opts = options(tmp_path, devices=2, total_batch=64)
    args, info = runner.batch_args(manifest, opts, runner.config_files(manifest, manifest.experiments[0], opts))
    assert info["lr"] == pytest.approx(0.002 * 64 / 16)
    assert args == ["--data.init_args.batch_size=32", f"--model.init_args.optimizer.init_args.lr={info['lr']}"]


@pytest.mark.parametrize("paper", available_papers())
def test_real_configs_compose_and_synthetic_ones_run(paper, tmp_path, monkeypatch):
    """Every experiment of every manifest builds from its real configs (no data read at construction), and its
    synthetic stand-in runs a fast_dev_run fit and test."""
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(paper)
    trained: dict[str, Path] = {}  # stage 1 -> its weights (fast_dev_run saves no checkpoint: a state_dict)
    for experiment in manifest.run_order():  # stage 1 before the stages that start from it
        real = runner.compose_args(manifest, experiment, experiment.tests[0], options(tmp_path, data="real"), "fit")
        cli = cli_main(real, run=False)
        assert cli.datamodule.batch_size == manifest.total_batch
        small = runner.compose_args(manifest, experiment, experiment.tests[0], options(tmp_path), "fit")
        small += [*TINY, "--trainer.fast_dev_run=1"]
        if experiment.init_from is not None:
            small.append(f"--model.init_args.init_from={trained[experiment.init_from.experiment]}")
            if experiment.init_from.modules is not None:
                small.append(f"--model.init_args.init_modules={json.dumps(list(experiment.init_from.modules))}")
        cli = cli_main(small, run=False)
        if experiment.fit:  # a cost-only row or a pretrained peer is tested untrained, as the runner does
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        trained[experiment.name] = tmp_path / f"{experiment.name}.pt"
        torch.save(cli.model.state_dict(), trained[experiment.name])
        if experiment.test:
            cli.trainer.test(cli.model, datamodule=cli.datamodule)


def test_synthetic_subset_schemes_tag_faces_by_their_rule():
    for scheme, names in SUBSET_SCHEMES.items():
        source = SyntheticFaceSource("300w_68", "test", 40, subsets=scheme)
        assert source.subset_names == names
        faces = [source.load(i) for i in range(40)]
        for face in faces:
            assert set(face.subsets) <= set(names)
        if scheme in ("300w", "300w_private", "aflw2000", "pwc"):  # a partition: exactly one tag per face
            assert all(len(f.subsets) == 1 for f in faces)
    aflw = SyntheticFaceSource("300w_68", "test", 40, subsets="aflw")
    assert all(("frontal" in aflw.load(i).subsets) == bool(aflw.load(i).visible.all()) for i in range(40))
    with pytest.raises(ValueError, match="unknown subset scheme"):
        SyntheticFaceSource("300w_68", "test", 4, subsets="lfw")


def test_step_divisors_schedule_matches_mhhn_closed_form():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = StepDivisorsLR(optimizer, [20, 50, 100, 150], [2, 5, 10, 10])
    lrs = []
    for _ in range(160):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [1e-3] * 20 + [5e-4] * 30 + [1e-4] * 50 + [1e-5] * 50 + [1e-6] * 10
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


# --- paper tables from records ------------------------------------------------------------------------------


def _tagged_record(preds: dict, experiment: str, test: str) -> dict:
    """A record of the fixture predictions, its subsets renamed as ``preds["subsets"]``, tagged by the runner."""
    record = fixture_record({k: v[:, :2] if k == "subset_mask" else v for k, v in preds.items()})
    metric = NMEMetric(NORMALIZERS, [str(s) for s in preds["subsets"]])
    metric.update(torch.from_numpy(preds["pred"]), torch.from_numpy(preds["target"]),
                  {n: torch.from_numpy(preds["norm"][:, i]) for i, n in enumerate(NORMALIZERS)},
                  torch.from_numpy(preds["index"]), torch.from_numpy(preds["subset_mask"]),
                  torch.from_numpy(preds["visible"]))
    record["metrics"] = metric.compute()
    record["experiment"] = {"paper": "tiny", "name": experiment, "test": test, "data": "synthetic"}
    record["protocol"]["primary_normalizer"] = "bbox"
    return record


def test_paper_table_cells_are_rescored_from_predictions(tmp_path):
    """Reproduced cells equal an independent NME of the stored arrays, the derived mean is the mean of the bins,
    Delta = reproduced - reported, and rows keep the paper's order."""
    manifest = load_manifest(tiny_manifest(tmp_path))
    preds = fixture_predictions(5)
    preds["subsets"] = np.array(["yaw_0_30", "yaw_30_60"])  # the fixture has two subset columns
    write_record(_tagged_record(preds, "hg-aflw2000", "aflw2000"), preds,
                 tmp_path / "res")
    reproduced = Reproduced(manifest, tmp_path / "res")
    references = load_references()
    layout = load_layouts().get("tab", "Table 7")
    values = table_values(layout, references, reproduced, {"3DDFA": "hg-aflw2000"})
    table = build_tables(layout, values, with_reproduced=True)[0]
    assert [row[0] for row in table.rows] == list(dict.fromkeys(references[(references.paper == "tab") &
                                                                           (references.table == "Table 7")].method))
    err = np.linalg.norm(preds["pred"] - preds["target"], axis=-1).mean(1) / preds["norm"][:, 1] * 100
    for column, label in ((0, "0° to 30°"), (1, "30° to 60°")):
        rows = preds["subset_mask"][:, column]
        assert find_value(values, layout, "3DDFA", label).reproduced == pytest.approx(err[rows].mean(), rel=1e-9)
    # yaw_60_90 is not in these predictions: the bin and the mean over bins stay empty, never a wrong number.
    assert find_value(values, layout, "3DDFA", "60° to 90°").reproduced is None
    assert find_value(values, layout, "3DDFA", "Mean").reproduced is None
    cell = find_value(values, layout, "3DDFA", "0° to 30°")
    assert cell.delta == pytest.approx(cell.reproduced - 3.78)
    row = next(r for r in table.rows if r[0] == "3DDFA")
    image_std = err[preds["subset_mask"][:, 0]].std()  # the reproduced std over images, in parentheses
    assert row[1:4] == ["3.78", f"{cell.reproduced:.2f} ({image_std:.2f})", f"{cell.reproduced - 3.78:+.2f}"]
    assert next(r for r in table.rows if r[0] == "SDM")[2] == "—"


def test_derived_mean_over_yaw_bins(tmp_path):
    manifest = load_manifest(tiny_manifest(tmp_path))
    preds = fixture_predictions(6)
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 3, len(preds["index"]))
    preds["subset_mask"] = np.eye(3, dtype=bool)[bins]
    preds["subsets"] = np.array(["yaw_0_30", "yaw_30_60", "yaw_60_90"])
    record = _tagged_record(preds, "hg-aflw2000", "aflw2000")
    write_record(record, preds, tmp_path / "res")
    layout = load_layouts().get("tab", "Table 7")
    values = table_values(layout, load_references(), Reproduced(manifest, tmp_path / "res"), {"3DDFA": "hg-aflw2000"})
    per_image = per_image_nme(torch.from_numpy(preds["pred"]), torch.from_numpy(preds["target"]),
                              torch.from_numpy(preds["norm"][:, 1])).numpy() * 100
    expected = np.mean([per_image[bins == b].mean() for b in range(3)])
    assert find_value(values, layout, "3DDFA", "Mean").reproduced == pytest.approx(expected, rel=1e-9)


# --- reproduce end to end -----------------------------------------------------------------------------------


def test_reproduce_on_synthetic_data_is_resumable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(tiny_manifest(tmp_path))
    opts = options(tmp_path)
    assert runner.reproduce(manifest, opts) == 0
    # Both synthetic stand-ins have the same configuration: the second experiment reuses the first training.
    assert "the same training as hg-300w" in capsys.readouterr().out
    folder = runner.results_dir(manifest, opts)
    records = load_records(folder)
    assert sorted(r["experiment"]["name"] for r in records) == ["hg-300w", "hg-aflw2000"]
    for record in records:
        assert record["experiment"]["total_batch"] == 16 and record["experiment"]["fit"]["monitor"] == "val/nme"
        assert record["cost"]["params"] > 0 and record["cost"]["macs"] > 0
        assert "best" in Path(record["checkpoint"]["path"]).name  # selected on validation, not the last epoch
    assert len({r["checkpoint"]["sha256"] for r in records}) == 1
    tables = (folder / "tables" / "tables.md").read_text()
    assert "SYNTHETIC DATA" in tables and "## TAB Table 2 (synthetic)" in tables and "hg-aflw2000" in tables
    page = (folder / "tables" / "tables.html").read_text()
    assert "<table" in page and "http" not in page

    # Run again: nothing is trained or tested again.
    assert runner.reproduce(manifest, opts) == 0
    assert "done earlier" in capsys.readouterr().out
    assert len(load_records(folder)) == 2

    # An interrupted experiment: no record and no finished fit, but a last.ckpt -> it resumes from there.
    first = next(r for r in records if r["experiment"]["name"] == "hg-300w")
    Path(first["_path"]).unlink()
    run = runner.run_dir(manifest, manifest.experiment("hg-300w"), opts)
    (run / "fit.json").unlink()
    assert runner.reproduce(manifest, opts) == 0
    out = capsys.readouterr().out
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in out
    assert len(load_records(folder)) == 2


def test_test_args_change_the_test_passes_only_and_keep_one_training(tmp_path):
    """Table V's "MSE+SDT": the HGs training, tested with another decoder. test_args are never part of the fit."""
    experiments = [
        {"name": "hg", "method": "HGs", "data": str(DATA / "300w.yaml"), "roots": {"root": "300w"},
         "tests": [{"name": "300w", "dataset": "300W", "synthetic": "300w"}]},
        {"name": "hg-soft", "method": "HGs (soft-argmax)", "data": str(DATA / "300w.yaml"),
         "roots": {"root": "300w"}, "test_args": ["--model.init_args.decoder=soft_argmax"],
         "tests": [{"name": "300w", "dataset": "300W", "synthetic": "300w"}]},
    ]
    manifest = load_manifest(tiny_manifest(tmp_path, experiments=experiments))
    plain, soft = manifest.experiments
    assert soft.test_args == ("--model.init_args.decoder=soft_argmax",)
    for data in ("synthetic", "real"):
        opts = options(tmp_path, data=data)
        fits = [runner.compose_args(manifest, e, None, opts, "fit") for e in (plain, soft)]
        assert runner.training_key(fits[0]) == runner.training_key(fits[1])
        assert "--model.init_args.decoder=soft_argmax" not in fits[1]
        assert "--model.init_args.decoder=soft_argmax" in runner.compose_args(manifest, soft, soft.tests[0], opts, "t")
    raw = yaml.safe_load(manifest.path.read_text())
    raw["experiments"][0]["test_arg"] = ["--model.init_args.decoder=argmax"]  # a typo is an error, not ignored
    manifest.path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="unknown keys"):
        load_manifest(manifest.path)


def test_real_data_run_stops_on_missing_dataset(tmp_path, capsys):
    manifest = load_manifest(tiny_manifest(tmp_path))
    code = runner.reproduce(manifest, runner.RunOptions(data="real", data_root=tmp_path / "none",
                                                        results=tmp_path / "r", workdir=tmp_path / "w"))
    out = capsys.readouterr().out
    assert code == 1 and "300w: no folder" in out and "DATA=synthetic" in out
    assert not (tmp_path / "r").exists()


def _run_cli(manifest: Path, tmp: Path, devices: int) -> dict[str, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT)}
    tmp.mkdir()
    out = subprocess.run([sys.executable, "-m", "leaderboard", "reproduce", str(manifest), "--data", "synthetic",
                          "--devices", str(devices), "--accelerator", "cpu", "--no-wandb", "--cost-repeats", "0",
                          "--no-render"], capture_output=True, text=True, timeout=600, cwd=tmp, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {r["experiment"]["name"]: r for r in load_records(tmp / "results" / "reproduce" / "tiny" / "synthetic")}


def test_two_process_ddp_reproduce_equals_single_process(tmp_path):
    """`reproduce --devices 2` (Lightning's DDP, 2 CPU processes) against `--devices 1` on the same manifest.

    The mean-shape baseline's records are equal: the same evaluation, sharded and gathered. The hourglass trains
    under DDP with the total batch of 16 split into 2 x 8; its weights cannot equal the single-process ones on
    a CPU (BatchNorm statistics over 8 faces instead of 16: torch's SyncBatchNorm is GPU-only), so its run is
    checked for what DDP must keep: every test face once, the batch split, checkpoint selection."""
    tests = [{"name": "300w", "dataset": "300W", "synthetic": "300w"}]
    manifest = tiny_manifest(tmp_path, ["--data.init_args.shuffle=false", "--data.init_args.augment=null"], [
        {"name": "mean-shape", "method": "Mean shape", "fit": False, "tests": tests,
         "args": ["--model=lightning_modules.mean_shape.MeanShapeModule"]},
        {"name": "hg-300w", "method": "HGs", "tests": tests}])
    single = _run_cli(manifest, tmp_path / "one", 1)
    double = _run_cli(manifest, tmp_path / "two", 2)
    a, b = single["mean-shape"], double["mean-shape"]
    assert a["n_images"] == b["n_images"] == 18  # 18 faces over 2 processes: one is padded in, counted once
    for normalizer, per_subset in a["metrics"].items():
        for subset, summary in per_subset.items():
            for key, value in summary.items():
                assert b["metrics"][normalizer][subset][key] == pytest.approx(value, rel=1e-6, nan_ok=True), \
                    (normalizer, subset, key)
    pa = load_predictions(a, tmp_path / "one" / "results" / "reproduce" / "tiny" / "synthetic")
    pb = load_predictions(b, tmp_path / "two" / "results" / "reproduce" / "tiny" / "synthetic")
    np.testing.assert_array_equal(pa["index"], np.arange(18))
    np.testing.assert_array_equal(pa["index"], pb["index"])
    np.testing.assert_allclose(pa["pred"], pb["pred"], rtol=1e-6)
    hg1, hg2 = single["hg-300w"], double["hg-300w"]
    assert (hg1["experiment"]["world_size"], hg2["experiment"]["world_size"]) == (1, 2)
    assert (hg1["experiment"]["per_process_batch"], hg2["experiment"]["per_process_batch"]) == (16, 8)
    assert hg2["experiment"]["sync_batchnorm"] is False  # CPU
    assert hg2["n_images"] == 18 and "best" in Path(hg2["checkpoint"]["path"]).name
    two = tmp_path / "two" / "results" / "reproduce" / "tiny" / "synthetic"
    np.testing.assert_array_equal(load_predictions(hg2, two)["index"], np.arange(18))


def test_rendered_paper_tables_golden(tmp_path):
    """The Markdown of a paper table from fixed records, byte for byte (UPDATE_GOLDEN=1 rewrites it)."""
    manifest = load_manifest(tiny_manifest(tmp_path))
    preds = fixture_predictions(7)
    preds["subsets"] = np.array(["common", "challenging"])
    record = _tagged_record(preds, "hg-300w", "300w")
    record.update(record_id="fixed-300w", created="2026-01-01T00:00:00+00:00", test_set="synthetic-300w")
    record["protocol"]["auc_rule"] = "trapezoid, grid step 0.0001"
    record["experiment"] |= {"fit": {"monitor": "val/nme", "mode": "min", "epochs": 3}, "world_size": 1,
                             "total_batch": 16}
    write_record(record, preds, tmp_path / "res")
    markdown = to_markdown(paper_document("tab", manifest, tmp_path / "res", True, tables=["Table 2"]))
    golden = ROOT / "tests" / "data" / "golden" / "paper_tables.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(markdown)
    assert markdown == golden.read_text()
    frame = pd.read_csv(ROOT / "leaderboard" / "references" / "paper_results.csv")
    assert len(frame) > 1000  # the reference numbers ship with the project


def test_synthetic_seeds_and_batch_apply_to_synthetic_runs_only(tmp_path):
    path = tiny_manifest(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["seeds"] = 5
    raw["synthetic"] |= {"seeds": 2, "batch": 8}
    path.write_text(yaml.safe_dump(raw))
    manifest = load_manifest(path)
    synthetic, real = manifest.for_data("synthetic"), manifest.for_data("real")
    assert [e.seeds for e in synthetic.experiments] == [2, 2] and synthetic.total_batch == 8
    assert real is manifest and [e.seeds for e in real.experiments] == [5, 5] and real.total_batch == 16
    args, _ = runner.batch_args(synthetic, options(tmp_path))
    assert "--data.init_args.batch_size=8" in args
