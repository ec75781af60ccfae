"""Regenerate ``tests/data/ci/hourglass_synthetic.ckpt``, the checkpoint our own CI gates (``make ci-checkpoint``,
which then rewrites the baseline record with ``make ci-baseline``; README "Gating CI on metrics").

The demo hourglass (``experiments/hourglass/synthetic.yaml``: 2 stacks of depth 3, 64 channels, 96 px crops)
trained briefly on the synthetic faces, on the CPU, with the config's own data and model: a checkpoint's identity
holds the model's hyper-parameters and the training set's size, and ``ci-gate`` tests it with the config unchanged.
Only the length differs from the demo (``--epochs`` of ``--batches`` batches; the cosine schedule's T_max stays
the config's, part of the identity): 150 steps leave the model well off the mean shape, so that a change to
decoding, cropping or the metrics moves its numbers, in minutes on 2 cores. The checkpoint selected on the
validation split keeps what a test needs (weights, hyper-parameters, identity, Lightning's version), not the
optimiser's state: 2.1 MB instead of about 6 MB. It loads with ``weights_only=True`` like every checkpoint of the suite.

    python tests/data/ci/make_checkpoint.py [--config CFG] [--out CKPT] [--epochs N] [--batches B]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # runnable as a script from anywhere
    sys.path.insert(0, str(ROOT))

from experiments.cli import main as cli_main  # noqa: E402
from lightning_modules.training import read_checkpoint  # noqa: E402

KEPT = ("state_dict", "hyper_parameters", "hparams_name", "identity", "pytorch-lightning_version", "epoch",
        "global_step", "datamodule_hyper_parameters")  # what a test reads, and where the weights came from


def train(config: Path, epochs: int, batches: int, workdir: Path) -> tuple[Path, float]:
    """Fit the config for ``epochs`` epochs of ``batches`` batches on the CPU (logging to CSV in ``workdir``: the
    config's learning-rate monitor needs a logger); the checkpoint selected on the validation split, and its
    validation NME."""
    cli = cli_main(["--config", str(config), f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu",
                    f"--trainer.limit_train_batches={batches}",
                    '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": '
                    f'{{"save_dir": "{workdir}"}}}}', "--trainer.enable_progress_bar=false",
                    f"--trainer.default_root_dir={workdir}"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    selector = cli.trainer.checkpoint_callback
    return Path(selector.best_model_path), float(selector.best_model_score)


def strip(source: Path, target: Path) -> None:
    """Save the entries of :data:`KEPT` of ``source`` to ``target`` (plain data: loads with weights_only=True)."""
    content = read_checkpoint(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: content[key] for key in KEPT if key in content}, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "hourglass" / "synthetic.yaml")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "hourglass_synthetic.ckpt")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=50, help="training batches per epoch (of 16 faces)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        best, nme = train(args.config, args.epochs, args.batches, Path(workdir))
        strip(best, args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, selected {best.name} (validation NME {nme:.2f} %), "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
