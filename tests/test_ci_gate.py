"""Issue 20, CI on small subsets: the stratified test sample against a sorted-hash reference, the same faces in one
and two DDP processes, the gate's refusal of different samples, and ``ci-gate`` on the committed checkpoint and
baseline (passes with nothing moved; perturbed weights fail with the table; mismatches are refused before anything
is evaluated).

Run as a script (``python tests/test_ci_gate.py DEVICES RESULTS``) it is the DDP run the sample test launches.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from record_fixtures import fixture_predictions, fixture_record

from leaderboard.__main__ import main as leaderboard_main
from leaderboard.store import image_set, load_predictions, load_record, sha256_file, write_record

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "tests" / "data" / "ci"
CKPT, BASELINE = CI / "hourglass_synthetic.ckpt", CI / "hourglass_synthetic_baseline.json"
CONFIG = ROOT / "experiments" / "hourglass" / "synthetic.yaml"
CPU = ["--trainer.accelerator=cpu", "--data.init_args.num_workers=0"]  # as `make ci-gate`


def reference_sample(ids, tags, subsets, per_subset, seed):
    """The sample by its definition, written independently: hex digests of "<seed>:<id>" sorted with numpy, the
    first ``per_subset`` of all faces and of each subset's members, as a set of ids."""
    keys = np.array([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids])
    ids = np.array(ids)
    chosen = set(ids[np.argsort(keys, kind="stable")][:per_subset])
    for name in subsets:
        members = np.array([name in t for t in tags])
        chosen |= set(ids[members][np.argsort(keys[members], kind="stable")][:per_subset])
    return chosen


def random_faces(n, seed):
    rng = np.random.default_rng(seed)
    names = ("pose", "blur", "rare")
    tags = [tuple(name for name, p in zip(names, (0.3, 0.2, 0.03), strict=True) if rng.random() < p)
            for _ in range(n)]
    return [f"face_{rng.integers(1e9):09d}_{i}" for i in range(n)], tags, names


@pytest.mark.parametrize("per_subset, seed", [(1, 0), (5, 0), (5, 7), (40, 1), (500, 2)])
def test_stratified_sample_matches_the_sorted_hash_reference(per_subset, seed):
    from datamodules.sample import stratified_sample

    ids, tags, names = random_faces(300, seed=per_subset)
    chosen = stratified_sample(ids, tags, names, per_subset, seed)
    assert chosen == sorted(chosen) and len(set(chosen)) == len(chosen)
    assert {ids[i] for i in chosen} == reference_sample(ids, tags, names, per_subset, seed)
    assert len(chosen) <= per_subset * (1 + len(names))
    for name in names:  # every subset holds at least min(N, its size) of the sample's faces
        size = sum(name in t for t in tags)
        assert sum(name in tags[i] for i in chosen) >= min(per_subset, size)
    # The same faces whatever the order of the list
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = stratified_sample([ids[i] for i in order], [tags[i] for i in order], names, per_subset, seed)
    assert {ids[order[i]] for i in shuffled} == {ids[i] for i in chosen}


def test_stratified_sample_seeds_and_bad_input():
    from datamodules.sample import stratified_sample

    ids, tags, names = random_faces(200, seed=3)
    assert stratified_sample(ids, tags, names, 5, 0) != stratified_sample(ids, tags, names, 5, 1)
    assert stratified_sample(ids, tags, names, 1000, 0) == list(range(200))  # N beyond every subset: all faces
    with pytest.raises(ValueError, match="at least one"):
        stratified_sample(ids, tags, names, 0)
    with pytest.raises(ValueError, match="unique"):
        stratified_sample(["a", "a"], [(), ()], names, 1)


def test_datamodule_tests_on_the_sample_and_records_it():
    from datamodules.synthetic import SyntheticFaceDataModule

    kwargs = dict(train_size=8, val_size=2, test_size=60, image_size=64, input_size=32, num_workers=0)
    dm = SyntheticFaceDataModule(test_per_subset=3, test_sample_seed=5, **kwargs)
    dm.setup("test")
    source = dm.test_source
    ids = [source.image_id(i) for i in range(len(source))]
    tags = [source.load(i).subsets for i in range(len(source))]
    expected = reference_sample(ids, tags, source.subset_names, 3, 5)
    indices = dm.datasets["test"].indices
    assert {ids[i] for i in indices} == expected and len(indices) < 60
    assert [dm.datasets["test"][k]["meta"]["image_id"] for k in range(len(indices))] == [ids[i] for i in indices]
    sample = dm.protocol()["sample"]
    assert sample == {"per_subset": 3, "seed": 5, "n_images": len(expected),
                      "digest": image_set({"image_id": sorted(expected)})["digest"]}
    everything = SyntheticFaceDataModule(**kwargs)
    everything.setup("test")
    assert everything.datasets["test"].indices == list(range(60)) and "sample" not in everything.protocol()
    with pytest.raises(ValueError, match="test_per_subset"):
        SyntheticFaceDataModule(test_per_subset=0, **kwargs)


def sampled_record(tmp_path, name, sample):
    predictions = fixture_predictions(0)
    record = fixture_record(predictions, name)
    if sample is not None:
        record["protocol"]["sample"] = sample
    return write_record(record, predictions, tmp_path)


def test_gate_refuses_records_of_different_samples(tmp_path, capsys):
    twenty = {"per_subset": 20, "seed": 0, "n_images": 40, "digest": "sha256:" + "a" * 64}
    base = sampled_record(tmp_path, "base", twenty)
    gate = lambda new: leaderboard_main(["gate", "--record", str(new), "--baseline", str(base)])  # noqa: E731
    assert gate(sampled_record(tmp_path, "same", dict(twenty))) == 0
    for other in (twenty | {"seed": 1}, twenty | {"per_subset": 10}, twenty | {"digest": "sha256:" + "b" * 64}, None):
        capsys.readouterr()
        assert gate(sampled_record(tmp_path, "other", other)) == 2
        err = capsys.readouterr().err
        assert "different samples" in err and "20 faces per subset, seed 0 (40 faces, ids aaaaaaaaaaaa)" in err


# --- the same sample in one and two processes (a real 2-process gloo run) ----------------------------------------

def ddp_run(devices: int, results: Path) -> None:
    """Test the mean shape on a sample of 40 synthetic test faces with ``devices`` CPU processes; rank 0 prints the
    record's path (Lightning's DDP launcher runs this file again for the second process)."""
    from experiments.cli import main
    from leaderboard.callback import EvaluationRecorder

    cli = main(["--config", str(CONFIG), "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
                f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}", "--trainer.logger=false",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={results}/runs", "--model=lightning_modules.mean_shape.MeanShapeModule",
                "--data.init_args.augment=null", "--data.init_args.train_size=12", "--data.init_args.val_size=2",
                "--data.init_args.test_size=40", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
                "--data.init_args.input_size=64", "--data.init_args.image_size=128",
                "--data.init_args.test_per_subset=2", "--data.init_args.test_sample_seed=3"], run=False)
    recorder = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationRecorder))
    recorder.results_dir = results
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    if cli.trainer.is_global_zero:
        print(f"RECORD {recorder.last_record}")


def run_script(devices: int, results: Path) -> dict:
    results.mkdir(parents=True)
    with socket.socket() as s:  # a free rendezvous port, so concurrent test runs never join each other's group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    out = subprocess.run([sys.executable, __file__, str(devices), str(results)], capture_output=True, text=True,
                         timeout=600, cwd=results, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    path = next(line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("RECORD "))
    return load_record(path)


def test_sample_is_the_same_in_one_and_two_processes(tmp_path):
    from datamodules.synthetic import SyntheticFaceSource

    single, double = run_script(1, tmp_path / "single"), run_script(2, tmp_path / "ddp")
    source = SyntheticFaceSource("300w_68", "test", 40, image_size=128)
    ids = [source.image_id(i) for i in range(40)]
    expected = reference_sample(ids, [source.load(i).subsets for i in range(40)], source.subset_names, 2, 3)
    for record, results in ((single, tmp_path / "single"), (double, tmp_path / "ddp")):
        assert set(load_predictions(record, results)["image_id"].tolist()) == expected
        assert record["n_images"] == len(expected) < 40
        assert record["image_set"]["digest"] == record["protocol"]["sample"]["digest"]
    assert single["protocol"]["sample"] == double["protocol"]["sample"]
    assert single["image_set"] == double["image_set"]
    for normalizer, per_subset in single["metrics"].items():
        for subset, summary in per_subset.items():
            assert double["metrics"][normalizer][subset] == pytest.approx(summary, rel=1e-9, nan_ok=True)


# --- ci-gate on the committed checkpoint and baseline ----------------------------------------------------------------

def ci_gate(tmp_path, *extra, ckpt=CKPT, baseline=BASELINE):
    return leaderboard_main(["ci-gate", "--config", str(CONFIG), "--ckpt", str(ckpt), "--baseline", str(baseline),
                             "--results", str(tmp_path / "results"), *CPU, *extra])


def test_committed_baseline_states_the_committed_checkpoint_and_its_sample():
    baseline = load_record(BASELINE)
    assert baseline["checkpoint"]["sha256"] == sha256_file(CKPT)
    assert baseline["protocol"]["sample"]["per_subset"] == 20 and baseline["n_images"] <= 140
    assert baseline["image_set"]["digest"] == baseline["protocol"]["sample"]["digest"]
    assert str(ROOT) not in BASELINE.read_text() and "/tmp" not in BASELINE.read_text()  # no machine's paths
    assert CKPT.stat().st_size < 5e6
    content = torch.load(CKPT, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in content and content["identity"]["model"]["num_stacks"] == 2


def test_ci_gate_passes_on_the_committed_files(tmp_path, capsys):
    assert ci_gate(tmp_path) == 0
    out = capsys.readouterr().out
    baseline = load_record(BASELINE)
    compared = len(baseline["metrics"][baseline["protocol"]["primary_normalizer"]]) * 3
    assert f"0 regression(s) in 0 of {compared} compared values moved" in out
    assert "the baseline's)" in out  # the same checkpoint
    record = load_record(next((tmp_path / "results" / "records").glob("*.json")))
    assert record["image_set"] == baseline["image_set"] and record["metrics"] == baseline["metrics"]


def test_ci_gate_fails_with_perturbed_weights(tmp_path, capsys):
    content = torch.load(CKPT, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for value in content["state_dict"].values():
        if value.is_floating_point() and value.ndim > 1:  # convolution weights
            value += 0.5 * value.std() * torch.randn(value.shape, generator=generator)
    perturbed = tmp_path / "perturbed.ckpt"
    torch.save(content, perturbed)
    assert ci_gate(tmp_path, ckpt=perturbed) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "REGRESSED" in line]
    assert any(line.startswith("| full ") and "| nme " in line for line in rows), out
    assert "the baseline's: " in out and "--write-baseline" in out


@pytest.mark.parametrize("extra, message", [
    (["--per-subset", "5"], "--per-subset 5, but the baseline was evaluated on 20 faces per subset, seed 0"),
    (["--seed", "1"], "--seed 1, but the baseline"),
    (["--data.init_args.test_size=400"], "different samples of the test set"),
    (["--data.init_args.subsets=300w"], "the config tests on 'synthetic-300w_68-test-300w'"),
    (["--data.init_args.crop={\"box_source\": \"jittered\", \"scale\": 1.4}"], "different protocol 'crop'"),
    (["--model.init_args.channels=32"], "was trained with other settings than the config states (model.channels: "
                                        "checkpoint 64, config 32)"),
])
def test_ci_gate_refuses_before_evaluating(tmp_path, capsys, extra, message):
    assert ci_gate(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ci-gate: cannot gate: ") and message in err[0], err
    assert not (tmp_path / "results" / "records").exists()  # nothing was evaluated


def test_ci_gate_refuses_missing_files(tmp_path, capsys):
    assert ci_gate(tmp_path, ckpt=tmp_path / "none.ckpt") == 2
    assert "no checkpoint file" in capsys.readouterr().err
    assert ci_gate(tmp_path, baseline=tmp_path / "none.json") == 2
    assert "unreadable record" in capsys.readouterr().err


def test_write_baseline_then_gate_moves_nothing(tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert ci_gate(tmp_path, "--write-baseline", "--per-subset", "2", "--seed", "4", baseline=baseline) == 0
    written = json.loads(baseline.read_text())
    assert written["protocol"]["sample"]["per_subset"] == 2 and written["protocol"]["sample"]["seed"] == 4
    capsys.readouterr()
    assert ci_gate(tmp_path, baseline=baseline) == 0
    assert "0 regression(s) in 0 of" in capsys.readouterr().out
    assert ci_gate(tmp_path, "--tol", "nme=x", baseline=baseline) == 2 and "--tol" in capsys.readouterr().err


if __name__ == "__main__":
    ddp_run(int(sys.argv[1]), Path(sys.argv[2]))
