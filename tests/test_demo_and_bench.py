"""Smoke runs of `make demo` (quick sizes) and `make bench` (quick): they run end to end and write their outputs.

The full demo, which must beat the mean shape by a wide margin, is in test_slow.py (`make test-slow`)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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
                  "MHHN SDT decoding", "MHHN MCG block", "Loader-fed training step", "PWC training step"):
        assert title in out.stdout
    assert "GlomFace training step" in out.stdout


@pytest.fixture
def bench_pwc(monkeypatch):
    """``benchmarks/bench_pwc.py`` as a module (benchmarks/ is a folder of scripts, not a package)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_pwc

    return bench_pwc


def test_pwc_bench_table_at_tiny_sizes(bench_pwc):
    """The PWC section at 32 px, width 2, batch 2: every row, each ratio re-derived by hand from the ms column
    (a hybrid step is the PWC step with its loss swapped: share = h / (step - p + h))."""
    rows = bench_pwc.bench_pwc(quick=True, batch_size=2, width=2, input_size=32).to_dict("records")
    assert len(rows) == 9 and all(r["ms"] > 0 for r in rows)
    steps = {(r["measured"].removeprefix("training step, "), r["channels_last"]): r for r in rows
             if r["measured"].startswith("training step")}
    assert set(steps) == {(p, c) for p in ("fp32", "bf16-mixed") for c in (False, True)}
    fp32 = steps["fp32", False]["ms"]
    for r in steps.values():
        assert r["speed-up vs fp32"] == pytest.approx(fp32 / r["ms"])
    losses = [r for r in rows if "fwd + bwd" in r["measured"]]
    pwc = {r["channels_last"]: r["ms"] for r in losses if "pwc_loss" in r["measured"]}
    assert len(losses) == 4 and set(pwc) == {False, True}
    for r in losses:
        p, h = pwc[r["channels_last"]], r["ms"]
        for precision in ("fp32", "bf16-mixed"):
            step = steps[precision, r["channels_last"]]["ms"]
            assert r[f"% of {precision} step"] == pytest.approx(100 * h / (step - p + h))
    labels = rows[-1]
    assert labels["measured"].startswith("pixel_labels alone") and labels["channels_last"] is None
    assert labels["% of fp32 step"] == pytest.approx(100 * labels["ms"] / fp32)
    assert labels["speed-up vs fp32"] is None  # a blank cell, not "nan"


def test_pwc_bench_loss_reaches_the_logits_with_eq2_gradient(bench_pwc):
    """What the loss rows time is forward and backward to the logits: the gradient of the mean cross-entropy is
    (softmax - one-hot) / (B H W), with the one-hot built here by a loop over rounded points."""
    g = torch.Generator().manual_seed(1)
    b, k, size = 2, 5, 8
    points = torch.stack([torch.randperm(size * size, generator=g)[:k] for _ in range(b)])  # distinct pixels
    points = torch.stack([points % size, points // size], -1).double() + 0.3  # (x, y), rounds down
    logits = torch.randn(b, k + 1, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    bench_pwc.loss_fn(bench_pwc.LOSSES["pwc_loss"], logits, points)()
    one_hot = np.zeros((b, k + 1, size, size))
    one_hot[:, 0] = 1
    for i in range(b):
        for j in range(k):
            x, y = (int(v) for v in points[i, j].round())
            one_hot[i, :, y, x] = 0
            one_hot[i, j + 1, y, x] = 1
    expected = (torch.softmax(logits.detach(), 1).numpy() - one_hot) / (b * size * size)
    np.testing.assert_allclose(logits.grad.numpy(), expected, atol=1e-12)


def test_pwc_bench_step_trains_in_the_modules_memory_order(bench_pwc):
    """One bf16-mixed, channels_last step: weights stay NHWC (the module's switch, via ``configure_model``),
    backward reaches every parameter, and Adam moves each one with a non-zero gradient (a conv bias before a
    BatchNorm has none: the normalisation removes it)."""
    model = bench_pwc.PWCModule(approach="pwc", width=2, layout="300w_68", input_size=32, channels_last=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = {"image": torch.rand(2, 3, 32, 32), "landmarks": torch.rand(2, 68, 2) * 31}
    bench_pwc.pwc_step_fn(model, batch, autocast=True)()
    conv = model.net.backbone.stages[1][0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(p.grad is not None for p in model.parameters())
    moved = {n: not torch.equal(p, before[n]) for n, p in model.named_parameters()}
    assert all(moved[n] for n, p in model.named_parameters() if p.grad.abs().max() > 0)
    assert sum(moved.values()) > len(moved) // 2


def test_interleaved_medians_runs_in_turns(bench_pwc):
    """Warm-ups first, then rounds of one call each in turn; the median of each function's own timed calls (a
    scripted clock: each call advances it by its scripted duration)."""
    clock, calls = [0.0], []
    durations = {"a": iter([9.0, 3.0, 1.0, 2.0]), "b": iter([9.0, 5.0, 5.0, 4.0])}  # warm-up first

    def call(name: str):
        def fn() -> None:
            calls.append(name)
            clock[0] += next(durations[name])
        return fn

    medians = bench_pwc.interleaved_medians({n: call(n) for n in durations}, 3, clock=lambda: clock[0])
    assert calls == ["a", "b"] * 4
    assert medians == {"a": 2.0, "b": 5.0}


@pytest.fixture
def bench_glomface(monkeypatch):
    """``benchmarks/bench_glomface.py`` as a module (it imports ``bench_pwc`` from the same folder)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_glomface

    return bench_glomface


def test_glomface_bench_table_at_tiny_sizes(bench_glomface):
    """The GlomFace section for 68 points at 64 px crops, 30 px patches (1x1 CNN features), batch 2 (the WHM's
    BatchNorm1d refuses a training batch of 1): every row, each ratio re-derived from the ms columns, the hooked
    pieces nested inside one another, and the parameter counts against closed forms."""
    rows = bench_glomface.bench_glomface(quick=True, batch_size=2, input_size=64, patch_size=30).to_dict("records")
    assert list(rows[0]) == ["measured", "calls per step", "ms per call", "ms per step", "% of step",
                             "% of GlomNet forward", "parameters (M)"]
    assert len(rows) == 7 and all(r["ms per call"] > 0 for r in rows)
    step, forward, extraction, cnn, phm, whm, net = rows
    assert step["measured"].startswith("training step") and extraction["measured"].startswith("patch extraction")
    assert [r["calls per step"] for r in rows] == [1, 1] + [4] * 5  # T = 4: one extraction and one net per iteration
    for r in rows:
        assert r["ms per step"] == pytest.approx(r["calls per step"] * r["ms per call"])
        assert r["% of step"] == pytest.approx(100 * r["ms per step"] / step["ms per step"])
    for r in (cnn, phm, whm, net):
        assert r["% of GlomNet forward"] == pytest.approx(100 * r["ms per step"] / net["ms per step"])
    assert [r["% of GlomNet forward"] for r in (step, forward, extraction)] == [None] * 3  # blank, not "nan"
    # the pieces run inside GlomNet, GlomNet inside the cascade's forward, the forward inside the step
    assert cnn["ms per step"] + phm["ms per step"] + whm["ms per step"] <= net["ms per step"]
    assert net["ms per step"] <= forward["ms per step"] <= step["ms per step"]
    convs = 3 * 32 * 7 * 7 + 32 * 64 * 5 * 5 + 64 * 128 * 3 * 3 + 2 * (32 + 64 + 128)  # no conv bias; BN gamma, beta
    blocks = 6 + 3 + 1  # non-local blocks: 6 regions, 3 groups, the whole; 4 linear 128 -> 128 maps with bias each
    assert cnn["parameters (M)"] == pytest.approx(convs / 1e6)
    assert phm["parameters (M)"] == pytest.approx(blocks * 4 * (128 * 128 + 128) / 1e6)
    assert net["parameters (M)"] == pytest.approx(cnn["parameters (M)"] + phm["parameters (M)"] + whm["parameters (M)"])
    assert step["parameters (M)"] == pytest.approx(net["parameters (M)"])  # every weight is in the iteration's net


def test_glomface_step_patches_need_no_backward(bench_glomface, monkeypatch):
    """What the extraction row leaves out, the backward, does not exist: in the timed step every patch the
    cascade cuts carries no gradient (data images, detached points), while the step still trains every part."""
    import lightning_modules.glomface as glomface

    original, cut = glomface.extract_patches, []

    def recording(*args, **kwargs):
        cut.append(original(*args, **kwargs))
        return cut[-1]

    monkeypatch.setattr(glomface, "extract_patches", recording)
    model = bench_glomface.glomface_model(64, 30)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = {"image": torch.rand(2, 3, 64, 64), "landmarks": model.mean_shape + torch.randn(2, 68, 2)}
    bench_glomface.pwc_step_fn(model, batch, autocast=False, part="model")()
    assert len(cut) == 4 and not any(p.requires_grad for p in cut)
    for part in ("net.cnn.", "net.phm.", "net.whm."):
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith(part))


def test_forward_clock_times_each_call_in_place(bench_glomface):
    """A scripted clock: the outer module's own work takes 1, the inner one's 2, so each outer call reads 3 and
    each inner 2; rounds sum consecutive calls after the skipped ones; the hooks go on exit."""
    now = [0.0]

    class Tick(torch.nn.Module):
        def __init__(self, seconds: float, inner: torch.nn.Module | None = None) -> None:
            super().__init__()
            self.seconds, self.inner = seconds, inner

        def forward(self, x):
            now[0] += self.seconds
            return self.inner(x) if self.inner is not None else x

    outer = Tick(1.0, Tick(2.0))
    with bench_glomface.ForwardClock({"outer": outer, "inner": outer.inner}, clock=lambda: now[0]) as clock:
        for _ in range(4):
            outer(torch.zeros(1))
    outer(torch.zeros(1))  # not recorded: the hooks are gone
    assert clock.seconds == {"outer": [3.0] * 4, "inner": [2.0] * 4}
    assert clock.per_round("inner", 2) == [4.0, 4.0]
    assert clock.per_round("outer", 1, skip=1) == [3.0] * 3
    with pytest.raises(ValueError, match="multiple"):
        clock.per_round("outer", 3)
