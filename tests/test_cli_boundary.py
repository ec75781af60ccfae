"""The command-line entry points: bad data, configs and checkpoints end in one short message (exit status 2) and
never a traceback unless asked for; every run ends by printing where its outputs are; no empty log folders."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import make_300w, write_pts
from PIL import Image
from runner_fixtures import tiny_manifest

from datamodules.files import DatasetError
from datamodules.w300 import read_pts
from experiments.cli import cli
from experiments.errors import describe
from leaderboard.__main__ import main as leaderboard_main
from leaderboard.store import load_records

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "experiments" / "hourglass" / "synthetic.yaml"
TINY = ["--data.init_args.train_size=12", "--data.init_args.val_size=2", "--data.init_args.test_size=5",
        "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false"]
CONFIG_300W = """
trainer:
  logger: {class_path: pytorch_lightning.loggers.CSVLogger, init_args: {save_dir: runs, name: tiny}}
  enable_progress_bar: false
  callbacks: [{class_path: leaderboard.callback.EvaluationRecorder, init_args: {results_dir: results, method: tiny}}]
model:
  class_path: lightning_modules.hourglass.StackedHourglassModule
  init_args: {num_stacks: 1, depth: 2, channels: 16}
data:
  class_path: datamodules.w300.W300DataModule
  init_args: {root: 300W, check_counts: false, input_size: 64, batch_size: 2, num_workers: 0, val_size: 1}
"""


def one_message(code: int, text: str, *expected: str) -> None:
    """Exit status 2, one short message (fewer than 8 lines of output in all), no traceback, the expected parts."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in text and len(lines) < 8, text[-3000:]
    for part in expected:
        assert part in text, (part, text[-3000:])


@pytest.fixture
def w300(tmp_path, monkeypatch) -> Path:
    """A tiny 300W tree and a config reading it, in the working directory."""
    monkeypatch.chdir(tmp_path)
    make_300w(tmp_path / "300W", per_folder=2)
    (tmp_path / "300w.yaml").write_text(CONFIG_300W)
    return tmp_path


def test_a_missing_dataset_root_says_the_root_does_not_exist(w300):
    """As a user runs it; before: 49 lines ending in a folder inside the root."""
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "test", "--config", "300w.yaml",
                          "--data.init_args.root=/nowhere/300W"], capture_output=True, text=True, timeout=300,
                         cwd=w300, env=os.environ | {"PYTHONPATH": str(ROOT)})
    one_message(out.returncode, out.stdout + out.stderr, "/nowhere/300W: 300W folder is missing: this dataset root "
                "does not exist", "datamodules.check")
    assert not (w300 / "runs").exists()  # refused before any logger made a folder


def test_bad_annotations_and_foreign_files_are_one_message(w300, capfd):
    pts = sorted((w300 / "300W" / "ibug").glob("*.pts"))[0]
    write_pts(pts, read_pts(pts)[:67])  # a 67-point .pts in the test set
    one_message(cli(["test", "--config", "300w.yaml"]), capfd.readouterr().err,
                f"{pts.relative_to(w300)}: expected 68 points, found 67")
    jpegs = w300 / "jpegs"  # plain JPEGs, no annotations
    jpegs.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64)).save(jpegs / f"photo{i}.jpg")
    one_message(cli(["test", "--config", "300w.yaml", f"--data.init_args.root={jpegs}"]), capfd.readouterr().err,
                f"{jpegs / 'afw'}: 300W folder is missing")


def test_a_truncated_checkpoint_is_one_message_naming_it(tmp_path, capfd):
    good = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    code = cli(["test", "--config", str(SYNTHETIC), "--ckpt_path", str(truncated)])
    one_message(code, capfd.readouterr().err, f"cannot read {truncated} as a torch checkpoint: damaged (truncated?)")


def test_config_errors_name_the_file_line_or_field(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SYNTHETIC.read_text().replace("num_stacks: 2", "num_stacks: [2"))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "num_stacks: [2" in text)
    one_message(cli(["fit", "--config", str(bad)]), capfd.readouterr().err, f"{bad}:", "YAML syntax error",
                f"at line {line}")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(SYNTHETIC.read_text().replace("lightning_modules.hourglass.", "lightning_modules.hourglas."))
    code = cli(["fit", "--config", str(wrong)])
    err = capfd.readouterr().err
    one_message(code, err, '"model"', "lightning_modules.hourglas.StackedHourglassModule", "--help")
    assert "Given value" not in err and "num_stacks" not in err  # the key and the problem, not the whole dict
    one_message(cli(["fit", "--config", str(SYNTHETIC), "--trainer.max_epochz=1"]), capfd.readouterr().err,
                "unrecognized arguments: --trainer.max_epochz=1")
    one_message(cli(["fit", "--config", str(tmp_path / "none.yaml")]), capfd.readouterr().err,
                f"{tmp_path / 'none.yaml'}: config file does not exist")


def test_traceback_flag_or_environment_shows_the_trace(w300, monkeypatch):
    with pytest.raises(DatasetError, match="this dataset root does not exist"):
        cli(["test", "--config", "300w.yaml", "--data.init_args.root=nowhere", "--traceback"])
    monkeypatch.setenv("FACE_BENCH_TRACEBACK", "1")
    with pytest.raises(DatasetError, match="this dataset root does not exist"):
        cli(["test", "--config", "300w.yaml", "--data.init_args.root=nowhere"])


def test_leaderboard_commands_share_the_boundary(tmp_path, monkeypatch, capfd):
    """A config mistake inside `reproduce` (a wrong override): one message, not LightningCLI's usage dump."""
    monkeypatch.chdir(tmp_path)
    manifest = tiny_manifest(tmp_path)
    code = leaderboard_main(["reproduce", str(manifest), "--data", "synthetic", "--no-wandb", "--only", "hg-300w",
                             "--override=--trainer.max_epochz=1"])
    one_message(code, capfd.readouterr().err, "python -m leaderboard reproduce: ", "--trainer.max_epochz=1")


def test_a_data_loader_worker_error_is_reported_as_the_dataset_error():
    """A DataLoader worker re-raises a DatasetError as a RuntimeError carrying the worker's traceback as text."""
    from torch._utils import ExceptionWrapper

    try:
        raise DatasetError("faces/0001.jpg", "unreadable or truncated image (broken data stream)")
    except DatasetError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(RuntimeError) as error:
        wrapped.reraise()
    message = describe(error.value)
    assert message.splitlines()[0] == "faces/0001.jpg: unreadable or truncated image (broken data stream)"
    assert describe(RuntimeError("CUDA out of memory")) is None  # not a user's error: its traceback stays


def test_a_run_ends_with_where_its_outputs_are(tmp_path):
    """After Lightning's metric table and wandb's closing lines, as a user sees them (one stream)."""
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "test", "--config", str(SYNTHETIC), *TINY,
                          "--model=lightning_modules.mean_shape.MeanShapeModule"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=300, cwd=tmp_path,
                         env=os.environ | {"PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stdout[-3000:]
    lines = out.stdout.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line == "outputs:")
    tail = dict(line.strip().split(": ", 1) for line in lines[start + 1:])
    (record,) = load_records(tmp_path / "results")
    assert Path(tail["record"]) == Path(record["_path"]).relative_to(tmp_path)
    assert (tmp_path / tail["predictions"]).is_file() and (tmp_path / tail["logs (CSVLogger)"]).is_dir()
    assert "wandb sync" in tail["logs (WandbLogger)"]
    before = "\n".join(lines[:start])
    assert "test/nme" in before and "wandb" in before  # the metric table and wandb's lines come first


def test_no_empty_log_folders(tmp_path, monkeypatch):
    """A prediction writes no metrics; its log folder keeps its config. A folder a failed run left empty goes."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from experiments.outputs import finish_loggers

    monkeypatch.chdir(tmp_path)
    assert cli(["predict", "--config", str(SYNTHETIC), *TINY, "--model=lightning_modules.mean_shape.MeanShapeModule",
                '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", '
                '"init_args": {"save_dir": "runs", "name": "p"}}']) == 0
    folders = [p for p in (tmp_path / "runs").glob("p/*") if p.is_dir()]
    assert folders and all(any(p.iterdir()) for p in folders)
    assert np.load(next((tmp_path / "results" / "predicted").glob("*.npz")))["landmarks"].shape == (5, 68, 2)
    logger = CSVLogger(tmp_path / "failed", name="run")
    trainer = pl.Trainer(logger=logger, enable_progress_bar=False)
    Path(logger.log_dir).mkdir(parents=True)  # what a run that fails before logging anything leaves
    finish_loggers(trainer)
    assert not Path(logger.log_dir).exists() and (tmp_path / "failed" / "run").is_dir()
