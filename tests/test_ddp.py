"""Two CPU processes with strategy="ddp" give exactly the single-process metrics (gathered, de-duplicated)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leaderboard.store import load_predictions, load_record

SCRIPT = Path(__file__).parent / "ddp_script.py"


def run(devices: int, results: Path) -> list[dict]:
    results.mkdir(parents=True)
    with socket.socket() as s:  # a free rendezvous port, so concurrent test runs never join each other's group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    out = subprocess.run([sys.executable, str(SCRIPT), str(devices), str(results)], capture_output=True, text=True,
                         timeout=600, cwd=results, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("RECORDS", "FIT_VAL")))
    assert np.isfinite(json.loads(lines["FIT_VAL_NME"]))  # the DDP training run validated
    return [load_record(p) for p in json.loads(lines["RECORDS"])]


def test_two_process_ddp_equals_single_process(tmp_path):
    single = run(1, tmp_path / "single")
    double = run(2, tmp_path / "ddp")
    for a, b in zip(single, double, strict=False):
        # 13 test faces over 2 processes: the sampler pads one shard with a repeated face, which must not count.
        assert a["n_images"] == b["n_images"] == 13
        for normalizer, per_subset in a["metrics"].items():
            for subset, summary in per_subset.items():
                for key, value in summary.items():
                    assert b["metrics"][normalizer][subset][key] == pytest.approx(value, rel=1e-5, nan_ok=True), \
                        (a["method"], normalizer, subset, key)
        pa = load_predictions(a, tmp_path / "single")
        pb = load_predictions(b, tmp_path / "ddp")
        np.testing.assert_array_equal(pa["index"], np.arange(13))
        np.testing.assert_array_equal(pa["index"], pb["index"])
        np.testing.assert_allclose(pa["pred"], pb["pred"], atol=1e-3)
        np.testing.assert_allclose(pa["target"], pb["target"], atol=1e-9)
    assert single[0]["config"]["model_class"].endswith("MeanShapeModule")
    assert single[1]["config"]["model_class"].endswith("StackedHourglassModule")
