"""Run by test_ddp.py in a subprocess, with N CPU processes on tiny synthetic data.

1. Test the mean-shape baseline and an untrained, seeded hourglass: rank 0 prints the two record paths as JSON
   (the test compares them with a single-process run).
2. Fit the hourglass for two steps with validation (a DDP training smoke run; its weights depend on how the
   batches were sharded, so it is not compared) and print the validation NME.

Lightning's DDP launcher re-runs this script once per extra process (strategy="ddp", not "ddp_spawn")."""

import json
import sys
from pathlib import Path

from experiments.cli import main
from leaderboard.callback import EvaluationRecorder

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "hourglass" / "synthetic.yaml"
devices, results = int(sys.argv[1]), Path(sys.argv[2])
common = [
    "--config", str(CONFIG), "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
    f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
    '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "%s"}}'
    % (results / "runs"),
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    f"--trainer.default_root_dir={results}/runs", "--data.init_args.train_size=40", "--data.init_args.val_size=8",
    "--data.init_args.test_size=13", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
    "--data.init_args.input_size=64", "--data.init_args.image_size=128",
]
small_hourglass = ["--model.init_args.num_stacks=1", "--model.init_args.depth=2", "--model.init_args.channels=16"]
records = []
for extra in (["--model=lightning_modules.mean_shape.MeanShapeModule", "--data.init_args.augment=null"],
              small_hourglass):
    cli = main([*common, *extra], run=False)
    recorder = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationRecorder))
    recorder.results_dir = results
    cli.trainer.test(cli.model, datamodule=cli.datamodule)
    records.append(str(recorder.last_record))
if cli.trainer.is_global_zero:
    print("RECORDS " + json.dumps(records))

cli = main([*common, *small_hourglass, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                 "--trainer.callbacks=[]"], run=False)
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
if cli.trainer.is_global_zero:
    print("FIT_VAL_NME " + json.dumps(float(cli.trainer.callback_metrics["val/nme"])))
