"""Checkpoints carry what they were trained on; a run whose config says otherwise is refused with the differing
fields (or, with --checkpoint_wins, built from the checkpoint, and the record says so); evaluation-time choices
(decoder, flip test, batch size, test set) may differ; damaged or foreign files are one message naming them."""

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from datamodules.synthetic import SYNTHETIC_CROP
from experiments.cli import cli
from experiments.cli import main as cli_main
from leaderboard.store import load_records
from lightning_modules.training import (
    CheckpointError,
    CheckpointMismatch,
    identity_differences,
    read_checkpoint,
    saved_identity,
)

ROOT = Path(__file__).resolve().parents[1]
HOURGLASS = ROOT / "experiments" / "hourglass"
# The reproduce stand-in (1 stack, 64 px) and the demo config (2 stacks, 96 px): the case.
SYNTHETIC = ROOT / "experiments" / "data" / "synthetic_small.yaml"
TRAINED_WITH = ["--config", str(HOURGLASS / "model.yaml"), "--config", str(SYNTHETIC), "--config",
                str(HOURGLASS / "synthetic_small.yaml")]
DEMO = ["--config", str(HOURGLASS / "synthetic.yaml")]
TINY = ["--data.init_args.train_size=20", "--data.init_args.val_size=4", "--data.init_args.test_size=6",
        "--data.init_args.num_workers=0", "--data.init_args.cache_dir=null", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false"]
QUIET = ["--trainer.logger=false"]  # both configs name an EvaluationRecorder writing to results/


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 1-stack, 64 px checkpoint fitted as `make reproduce-hourglass DATA=synthetic` fits it (one step)."""
    work = tmp_path_factory.mktemp("fit")
    cwd = Path.cwd()
    os.chdir(work)
    try:
        cli_main(["fit", *TRAINED_WITH, *TINY, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                  f"--trainer.default_root_dir={work}"])
    finally:
        os.chdir(cwd)
    return next(work.glob("**/last.ckpt"))


def _records(folder: Path) -> list[dict]:
    return load_records(folder) if (folder / "records").is_dir() else []


def test_checkpoint_carries_what_it_was_trained_on(trained):
    small = yaml.safe_load(SYNTHETIC.read_text())
    shrunk = yaml.safe_load((HOURGLASS / "synthetic_small.yaml").read_text())["model"]["init_args"]
    small["model"]["init_args"] |= shrunk
    identity = torch.load(trained, weights_only=True)["identity"]
    assert identity["model_class"] == yaml.safe_load((HOURGLASS / "model.yaml").read_text())["model"]["class_path"]
    for key in ("num_stacks", "depth", "channels", "foreground_weight"):
        assert identity["model"][key] == small["model"]["init_args"][key]
    assert identity["model"]["input_size"] == small["data"]["init_args"]["input_size"] == 64
    assert identity["model"]["layout"] == small["data"]["init_args"]["layout"]
    assert identity["data"]["crop"] == asdict(SYNTHETIC_CROP)
    assert identity["data"]["train_set"]["faces"] == 20
    assert identity["data"]["train_set"]["annotation"]["image_size"] == small["data"]["init_args"]["image_size"]
    assert identity["method"] == "HGs"  # the config's EvaluationRecorder names the method


def test_a_test_with_another_config_is_refused_with_the_differing_fields(trained, tmp_path):
    """The issue's case, as a user runs it: the demo config (2 stacks, 96 px) on a 1-stack, 64 px checkpoint."""
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "test", *DEMO, *TINY, "--ckpt_path", str(trained)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=os.environ | {"PYTHONPATH": str(ROOT)})
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text
    assert f"{trained}: the checkpoint was trained with other settings" in out.stderr
    assert "model.num_stacks: checkpoint 1, this run 2" in out.stderr
    assert "model.input_size: checkpoint 64, this run 96" in out.stderr
    assert "--checkpoint_wins" in out.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()  # refused before anything ran


def test_checkpoint_wins_builds_the_model_from_the_checkpoint_and_the_record_says_so(trained, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["test", *DEMO, *TINY, *QUIET, "--ckpt_path", str(trained), "--checkpoint_wins=true"]) == 0
    (record,) = _records(tmp_path / "results")
    assert record["config"]["model"]["num_stacks"] == 1 and record["protocol"]["input_size"] == 64
    assert record["checkpoint"]["overrides"]["model.num_stacks"] == {"checkpoint": 1, "config": 2}
    assert record["checkpoint"]["overrides"]["model.input_size"] == {"checkpoint": 64, "config": 96}
    assert record["method"] == "HGs"  # what was evaluated, not the demo config's "HGs (2 stacks, synthetic)"


def test_evaluation_time_choices_may_differ(trained, tmp_path, monkeypatch, capfd):
    """The manifests' test_args (decoder, SDT window, flip test) and the loader's sizes change no trained field;
    the command line's values are the ones used (LightningCLI's default would take the checkpoint's)."""
    monkeypatch.chdir(tmp_path)
    args = ["--model.init_args.codec.decoder=soft_argmax", "--model.init_args.codec.window=15",
            "--model.init_args.flip_test=true", "--data.init_args.batch_size=3", "--data.init_args.subsets=300w"]
    assert cli(["test", *TRAINED_WITH, *TINY, *QUIET, *args, "--ckpt_path", str(trained)]) == 0
    (record,) = _records(tmp_path / "results")
    assert record["config"]["model"]["codec"]["decoder"] == "soft_argmax"
    assert record["config"]["model"]["codec"]["window"] == 15 and record["protocol"]["flip_test"] is True
    assert record["test_set"] == "synthetic-300w_68-test-300w" and "overrides" not in record["checkpoint"]
    assert "outputs:" in capfd.readouterr().out


def test_the_module_refuses_a_mismatch_outside_the_cli(trained, tmp_path, monkeypatch):
    """The runner and the demo call trainer.test(ckpt_path=...) themselves: the module compares before loading
    the weights, for checkpoints with an identity and for older ones (their hyper-parameters)."""
    monkeypatch.chdir(tmp_path)
    other = cli_main([*TRAINED_WITH, *TINY, *QUIET, "--data.init_args.input_size=96", "--trainer.default_root_dir=a"],
                     run=False)
    with pytest.raises(CheckpointMismatch, match=r"model\.input_size: checkpoint 64, this run 96") as error:
        other.trainer.test(other.model, datamodule=other.datamodule, ckpt_path=str(trained), weights_only=True)
    assert set(error.value.differences) == {"model.input_size"}
    old = torch.load(trained, weights_only=True)
    del old["identity"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointMismatch, match=r"model\.input_size: checkpoint 64, this run 96"):
        other.trainer.test(other.model, datamodule=other.datamodule, ckpt_path=str(tmp_path / "old.ckpt"))
    same = cli_main([*TRAINED_WITH, *TINY, *QUIET, "--trainer.default_root_dir=b"], run=False)  # the same: accepted
    same.trainer.test(same.model, datamodule=same.datamodule, ckpt_path=str(trained), weights_only=True)
    assert len(_records(tmp_path / "results")) == 1


def test_damaged_and_foreign_checkpoint_files_are_named(trained, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cannot read {truncated} as a torch checkpoint: damaged"):
        read_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state.pt")  # a bare state_dict, not a Lightning checkpoint
    with pytest.raises(CheckpointError, match=r"state\.pt is not a Lightning checkpoint"):
        saved_identity(read_checkpoint(tmp_path / "state.pt"), tmp_path / "state.pt")


def test_identity_differences_hand_worked():
    saved = {"model": {"num_stacks": 1, "codec": {"stride": 4, "decoder": "sdt"}, "mean": (0.5, 0.5)},
             "data": {"crop": {"scale": 1.25}, "dataset": "a.B"}, "method": "HGs", "only_saved": 1}
    current = {"model": {"num_stacks": 2, "codec": {"stride": 4, "decoder": "argmax_quarter"}, "mean": [0.5, 0.5]},
               "data": {"crop": {"scale": 1.3}, "dataset": "c.D"}, "method": "MHHN"}
    free = ("method", "data.dataset", "model.codec.decoder")
    assert identity_differences(saved, current, free) == {"model.num_stacks": (1, 2), "data.crop.scale": (1.25, 1.3)}
    assert identity_differences(saved, current) == {"model.num_stacks": (1, 2), "data.crop.scale": (1.25, 1.3),
                                                    "model.codec.decoder": ("sdt", "argmax_quarter"),
                                                    "data.dataset": ("a.B", "c.D"), "method": ("HGs", "MHHN")}
    assert identity_differences(saved, saved) == {}
