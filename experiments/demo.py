"""``make demo``: the whole pipeline on the embedded synthetic faces, on a CPU, in minutes.

1. Evaluate the mean-shape baseline (the mean of the training crops) and fit the stacked-hourglass baseline
   (``experiments/hourglass/synthetic.yaml``) on the same data protocol.
2. Select the hourglass checkpoint on the validation split (carved from the training faces), then test both
   models on the synthetic test split: per-subset NME / FR / AUC under every normaliser.
3. Write one evaluation record + per-image predictions per model, a Markdown table and a CED plot, and print
   where they are, with the checkpoint and the logs, as the last lines (wandb's closing lines come before).

``python -m experiments.demo --help`` lists the options; ``--quick`` shrinks everything for a smoke test. Errors
are one short message (``experiments.errors``; ``--traceback`` for the trace).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (environment defaults)
from experiments.cli import main as cli_main
from experiments.errors import run_guarded
from experiments.outputs import Outputs, finish_loggers, run_outputs
from landmarks.metrics import FULL
from leaderboard.callback import EvaluationRecorder
from leaderboard.plots import plot_ced
from leaderboard.scoring import rescore_nme
from leaderboard.store import atomic_write_bytes, load_predictions, load_record
from leaderboard.tables import render_markdown

CONFIG = Path(__file__).parent / "hourglass" / "synthetic.yaml"
MEAN_SHAPE = [  # same data protocol; nothing to fit: the mean of the un-augmented training crops
    "--model=lightning_modules.mean_shape.MeanShapeModule", "--data.init_args.augment=null",
    '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", '
    '"init_args": {"save_dir": "runs", "name": "mean-shape-synthetic"}}',
]
QUICK = [
    "--data.init_args.train_size=64", "--data.init_args.val_size=16", "--data.init_args.test_size=24",
    "--data.init_args.num_workers=0", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
]


def evaluate(args: list[str], results_dir: Path, workdir: Path, fit: bool,
             method: str | None = None) -> tuple[Path, Outputs]:
    """Fit (if ``fit``), test the best validation checkpoint; returns the evaluation record's path and the run's
    outputs (``experiments.outputs``: checkpoint, logs), its wandb run finished."""
    cli = cli_main(["--config", str(CONFIG), f"--trainer.default_root_dir={workdir}", *args], run=False)
    recorder = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationRecorder))
    recorder.results_dir = results_dir
    recorder.method = method or recorder.method
    if fit:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best" if fit else None, weights_only=True)
    outputs = run_outputs(cli.trainer)
    finish_loggers(cli.trainer)
    return recorder.last_record, outputs


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=Path("results/demo"))
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="logs and checkpoints")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    opts = parser.parse_args(argv)
    start = time.perf_counter()
    extra = QUICK if opts.quick else []
    runs = {
        "mean shape": evaluate([*MEAN_SHAPE, *extra], opts.results_dir, opts.workdir, fit=False,
                               method="Mean shape"),
        "stacked hourglass": evaluate(extra, opts.results_dir, opts.workdir, fit=True),
    }
    records = {name: record for name, (record, _) in runs.items()}
    loaded = {name: load_record(path) for name, path in records.items()}
    for name, record in loaded.items():
        record["label"] = name
    table = opts.results_dir / "demo_results.md"
    # The face-box normaliser (primary: it stays meaningful on profile faces) and the inter-ocular one.
    text = "\n".join(render_markdown(list(loaded.values()), normalizer=n, title=f"Demo: synthetic faces, NME / {n}")
                     for n in ("bbox", "inter_ocular"))
    atomic_write_bytes(table, text.encode(), overwrite=True)
    normalizer = next(iter(loaded.values()))["protocol"]["primary_normalizer"]
    curves = {name: rescore_nme(load_predictions(r, opts.results_dir), normalizer) for name, r in loaded.items()}
    plot = plot_ced(curves, opts.results_dir / "demo_ced.png",
                    title=f"CED, synthetic test split, NME / {normalizer}", xlabel=f"NME ({normalizer})")
    nme = {name: r["metrics"][normalizer][FULL]["nme"] for name, r in loaded.items()}
    print("\n" + "=" * 78)
    for name, r in loaded.items():
        values = ", ".join(f"{r['metrics'][n][FULL]['nme']:6.2f} % / {n}" for n in ("bbox", "inter_ocular"))
        print(f"{name:>20}: NME {values} ({r['n_images']} test faces)")
    print(f"{'records':>20}: " + "\n                      ".join(str(p) for p in records.values()))
    print(f"{'table':>20}: {table}\n{'CED plot':>20}: {plot}")
    for what, where in (item for _, outputs in runs.values() for item in outputs):
        if what.startswith("checkpoint"):
            print(f"{'checkpoint':>20}: {where} (selected on the validation split)")
        elif what.startswith("logs"):
            print(f"{'logs':>20}: {where}")
    print(f"{'wall time':>20}: {time.perf_counter() - start:.0f} s")
    print("=" * 78)
    return nme


if __name__ == "__main__":
    sys.exit(run_guarded(main, None, "experiments.demo"))
