"""CI metric gate (issue 20), a ``make bench`` section: the wall time of ``make ci-gate``'s command, as CI runs it
(a fresh Python process: imports, config, sample selection, rendering and cropping the sample, the test pass, the
gate), against the same checkpoint on every face of the synthetic test split.

The goal is "well under a minute on a 2-core CPU" for 20 faces per subset; the whole-split row shows what the sample
saves. The whole split is evaluated through ``ci-gate --write-baseline --per-subset 0`` into a temporary folder
(nothing committed is touched). ``--quick`` (a smoke test) times the gate alone.

Standalone: ``python benchmarks/bench_ci_gate.py [--quick]`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "tests" / "data" / "ci"
COMMAND = ["-m", "leaderboard", "ci-gate", "--config", "experiments/hourglass/synthetic.yaml",
           "--ckpt", "tests/data/ci/hourglass_synthetic.ckpt", "--trainer.accelerator=cpu",
           "--data.init_args.num_workers=0"]  # the Makefile's CI_GATE


def timed_run(extra: list[str]) -> tuple[float, int]:
    """Wall seconds and exit status of ``python -m leaderboard ci-gate ... extra`` from the repository root."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *COMMAND, *extra], cwd=ROOT, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - start, out.returncode


def bench_ci_gate(quick: bool) -> pd.DataFrame:
    baseline = CI / "hourglass_synthetic_baseline.json"
    faces = json.loads(baseline.read_text())["n_images"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seconds, code = timed_run(["--baseline", str(baseline), "--results", f"{tmp}/gate"])
        rows.append({"run": "make ci-gate (20 faces per subset, gated)", "faces": faces, "exit": code,
                     "wall s": seconds})
        if not quick:
            whole = Path(tmp) / "whole.json"
            seconds, code = timed_run(["--baseline", str(whole), "--results", f"{tmp}/whole", "--write-baseline",
                                       "--per-subset", "0"])
            rows.append({"run": "every test face (--per-subset 0, record only)",
                         "faces": json.loads(whole.read_text())["n_images"] if whole.is_file() else None,
                         "exit": code, "wall s": seconds})
    frame = pd.DataFrame(rows)
    frame["faces/s"] = frame["faces"] / frame["wall s"]
    return frame


def ci_gate_title() -> str:
    return "CI metric gate: `make ci-gate`'s command, fresh process, demo hourglass on CPU (goal: well under 60 s)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    print(bench_ci_gate(parser.parse_args().quick).to_markdown(index=False, floatfmt=".4g"))
