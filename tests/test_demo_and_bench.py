"""Smoke runs of `make demo` (quick sizes) and `make bench` (quick): they run end to end and write their outputs.

The full demo, which must beat the mean shape by a wide margin, is in test_slow.py (`make test-slow`)."""

import subprocess
import sys
from pathlib import Path

from leaderboard.store import load_predictions, load_records

ROOT = Path(__file__).parents[1]


def test_quick_demo_writes_records_table_and_plot(tmp_path, monkeypatch, capfd):
    from experiments.demo import main

    monkeypatch.chdir(tmp_path)
    nme = main(["--quick", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "runs")])
    assert set(nme) == {"mean shape", "stacked hourglass"}
    records = load_records(tmp_path / "results")
    assert len(records) == 2
    for record in records:
        assert record["n_images"] == 24 and record["git"]["commit"]
        assert record["protocol"]["crop"]["box_source"] == "jittered"
        preds = load_predictions(record, tmp_path / "results")
        assert preds["pred"].shape == (24, 68, 2)
    hourglass = next(r for r in records if "StackedHourglass" in r["config"]["model_class"])
    assert hourglass["checkpoint"]["path"].endswith(".ckpt") and len(hourglass["checkpoint"]["sha256"]) == 64
    table = (tmp_path / "results" / "demo_results.md").read_text()
    assert "mean shape" in table and "stacked hourglass" in table
    assert (tmp_path / "results" / "demo_ced.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "runs").glob("**/config.yaml"))  # the resolved config is saved with the run
    # The summary is the last lines: records, table, plot, the selected checkpoint and every log folder; wandb's
    # run is finished before it (its closing lines come first, not after the summary).
    lines = capfd.readouterr().out.rstrip().splitlines()
    rule = "=" * 78
    assert lines[-1] == rule
    summary = dict(line.strip().split(": ", 1) for line in lines[len(lines) - lines[::-1].index(rule, 1):-1]
                   if ": " in line)
    assert summary["checkpoint"].split(" (")[0] == hourglass["checkpoint"]["path"]
    logs = [line.split(": ", 1)[1] for line in lines if line.strip().startswith("logs: ")]
    assert len(logs) == 3 and all(Path(p.split("  (")[0]).is_dir() for p in logs)  # 2 CSV folders, 1 wandb run
    assert sys.modules["wandb"].run is None


def test_quick_bench_prints_every_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    for title in ("Synthetic data pipeline", "Heatmap target encoding", "Metric computation", "bf16-mixed",
                  "MHHN SDT decoding", "MHHN MCG block", "Loader-fed training step"):
        assert title in out.stdout
