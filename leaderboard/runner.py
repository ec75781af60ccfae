"""``python -m leaderboard reproduce <paper>``: run a paper's manifest end to end and render its tables.

    python -m leaderboard reproduce hourglass --data synthetic            # laptop CPU, minutes
    python -m leaderboard reproduce hourglass --data-root /datasets --devices 8           # one 8-GPU node
    srun python -m leaderboard reproduce hourglass --data-root /datasets --devices 8 --nodes 4   # SLURM
    (``make reproduce-<paper> [DATA=synthetic] [GPUS=N] [NODES=M] [DATA_ROOT=...]`` wraps these)

For every experiment of ``experiments/<paper>/manifest.yaml``, in order (a stage 1 before the experiments that
start from its checkpoint, ``init_from``), and for each of its seeds (``seeds``):

1. **fit** with LightningCLI on the composed configs (the paper's shared configs, then the experiment's data
   configs, or the manifest's synthetic config with ``--data synthetic``), checkpoints in
   ``<workdir>/<paper>/<data>/<experiment>[/seed-<i>]/checkpoints``; the checkpoint is selected on the validation
   split carved from the training faces (``ModelCheckpoint`` on ``val/nme``), never on a test set. Training i
   of N > 1 runs with ``--seed_everything`` = the configs' seed + i; a stage 2 gets stage 1's selected checkpoint
   as ``--model.init_args.init_from`` (and ``init_modules``), and its summary and records name that checkpoint
   with its SHA-256;
2. **test** the selected checkpoint on every test set of the experiment; each pass writes one evaluation
   record + predictions (``EvaluationRecorder``) under ``<results>/<paper>/<data>/``, with the experiment, its
   seed, the stage-1 link, the world size, the total batch and the model's cost (parameters, MACs, images/s);
3. render the paper's tables (reported / reproduced / difference, ``leaderboard.paper_tables``) and the
   per-dataset leaderboards with CED plots, per-landmark errors, failure galleries and training curves
   (``leaderboard.render``, ``leaderboard.pictures``).

Resumable, per seed: a test with a record is skipped, a finished fit (``fit.json`` beside its checkpoints) is
not repeated, and an interrupted fit resumes from its ``last.ckpt``; ``--only stage2`` also runs (or reuses)
the stage 1 it starts from. On real data the dataset checker runs first
and the runner stops with a clear message if a dataset is missing or incomplete.

Scale-out is Lightning's: ``--devices N --nodes M`` selects DDP (``strategy=ddp``; Lightning re-launches this
command once per extra local process, or picks up torchrun / SLURM variables when they launched it). The
manifest's total batch is split over the ``N x M`` processes, so the learning rate stays the paper's; BatchNorm
is synchronised across processes (``--no-sync-bn`` to turn it off), so its statistics also see the paper's batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities.rank_zero import rank_zero_only

import experiments  # noqa: F401  (environment defaults: offline wandb, no albumentations update check)
from experiments.outputs import finish_wandb
from leaderboard.launch import (  # noqa: F401  (re-exported: the runner's helpers)
    batch_args,
    check_datasets,
    config_lr,
    new_invocation,
    sync_bn,
    trainer_args,
    training_seed,
)
from leaderboard.manifest import Experiment, Manifest, ManifestError, TestSpec, available_papers, load_manifest
from leaderboard.store import RecordError, atomic_write_bytes, load_records, sha256_file

DATA_MODES = ("real", "synthetic")
# The runner hands LightningCLI its arguments on purpose while sys.argv holds its own command line.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


@dataclass
class RunOptions:
    """How to run a manifest (command-line options of ``reproduce``)."""

    data: str = "real"
    data_root: Path = Path("data")
    results: Path = Path("results/reproduce")
    workdir: Path = Path("runs/reproduce")
    devices: int = 1
    nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "ddp"
    total_batch: int | None = None
    sync_bn: bool = True
    check: str = "files"
    only: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    cost_repeats: int = 10
    wandb: bool = True
    render: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.devices * self.nodes


def say(message: str) -> None:
    """Progress for people: printed by the first process only, flushed at once."""
    if rank_zero_only.rank == 0:
        print(message, flush=True)


def results_dir(manifest: Manifest, opts: RunOptions) -> Path:
    return opts.results / manifest.paper / opts.data


def run_dir(manifest: Manifest, experiment: Experiment, opts: RunOptions, seed_index: int = 0) -> Path:
    """Checkpoints and logs of one training: ``<experiment>/seed-<i>`` when the experiment has several seeds."""
    folder = opts.workdir / manifest.paper / opts.data / experiment.name
    return folder / f"seed-{seed_index}" if experiment.seeds > 1 else folder


# --- composing the LightningCLI arguments ------------------------------------------------------------------


def compose_args(manifest: Manifest, experiment: Experiment, test: TestSpec | None, opts: RunOptions,
                 stage: str, seed_index: int = 0, init: dict[str, Any] | None = None) -> list[str]:
    """The LightningCLI arguments of one fit (``test=None``) or one test pass of training ``seed_index``; a fit
    that starts from a stage-1 checkpoint gets it from ``init`` (``stage1_link``)."""
    configs = config_files(manifest, experiment, opts, test)
    args = [arg for config in configs for arg in ("--config", str(config))]
    if opts.data == "synthetic":
        if not manifest.synthetic_config:
            raise ManifestError(f"{manifest.path}: no `synthetic` config; this paper cannot run on synthetic data")
        args += [*experiment.args, *experiment.synthetic_args]
        if test is not None:
            args.append(f"--data.init_args.subsets={test.synthetic}")
    else:
        args += [f"--data.init_args.{arg}={root}" for arg, root in dataset_roots(experiment, opts, test).items()]
        args += list(experiment.args)
        if test is not None:
            args += list(test.args)
    if test is not None:
        args += list(experiment.test_args)
    seed = training_seed(configs, seed_index, experiment.seeds)
    if seed is not None:
        args.append(f"--seed_everything={seed}")
    if init is not None and test is None:
        args.append(f"--model.init_args.init_from={init['checkpoint']}")
        if init.get("modules") is not None:
            args.append(f"--model.init_args.init_modules={json.dumps(init['modules'])}")
    args += batch_args(manifest, opts, configs)[0]
    name = experiment.name + (f"/seed-{seed_index}" if experiment.seeds > 1 else "")
    args += trainer_args(opts, run_dir(manifest, experiment, opts, seed_index), stage, name, manifest.paper)
    return [*args, *opts.overrides]


def config_files(manifest: Manifest, experiment: Experiment, opts: RunOptions,
                 test: TestSpec | None = None) -> tuple[Path, ...]:
    """The paper's shared configs, the experiment's data configs (or the synthetic stand-in), then the experiment's
    own configs (``config``: e.g. TAB's stage 1, which changes the model and what checkpoints select on)."""
    data = manifest.synthetic_config if opts.data == "synthetic" else (test and test.data) or experiment.data
    return (*manifest.config, *data, *experiment.config)


def dataset_roots(experiment: Experiment, opts: RunOptions, test: TestSpec | None = None) -> dict[str, str]:
    """Datamodule argument -> the dataset's folder under the data root (``datamodules.registry.DATASETS``): the
    experiment's, or a test pass's own (a test on another benchmark's data)."""
    from datamodules.registry import DATASETS

    roots = {}
    for arg, dataset in ((test and test.roots) or experiment.roots).items():
        if dataset not in DATASETS:
            raise ManifestError(f"experiment {experiment.name}: unknown dataset {dataset!r} in roots; "
                                f"known: {sorted(DATASETS)}")
        roots[arg] = str(DATASETS[dataset].root(opts.data_root))
    return roots


# --- one experiment ----------------------------------------------------------------------------------------


def finished_tests(manifest: Manifest, experiment: Experiment, opts: RunOptions,
                   seed_index: int = 0) -> dict[str, dict]:
    """Test name -> its record, for the tests of training ``seed_index`` of ``experiment`` that have one."""
    done = {}
    folder = results_dir(manifest, opts)
    if not (folder / "records").is_dir():
        return done
    for record in load_records(folder):
        tag = record.get("experiment") or {}
        if (tag.get("paper"), tag.get("name"), tag.get("data"), tag.get("seed_index", 0)) == (
                manifest.paper, experiment.name, opts.data, seed_index):
            done[tag.get("test")] = record
    return done


def seed_tag(manifest: Manifest, experiment: Experiment, opts: RunOptions, seed_index: int) -> dict[str, Any]:
    """What every record and fit summary of training ``seed_index`` says about its seed."""
    seed = training_seed(config_files(manifest, experiment, opts), seed_index, experiment.seeds)
    return {"seed": seed, "seed_index": seed_index, "seeds": experiment.seeds}


def _callback(trainer, kind: type):
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


def stage1_link(manifest: Manifest, experiment: Experiment, opts: RunOptions,
                seed_index: int = 0) -> dict[str, Any] | None:
    """The stage-1 checkpoint training ``seed_index`` starts from (``init_from``): stage 1's experiment, seed,
    selected checkpoint with its SHA-256, and its training key. Stage 1 is trained here if it has not been."""
    if experiment.init_from is None:
        return None
    stage1 = manifest.experiment(experiment.init_from.experiment)
    index = seed_index if stage1.seeds > 1 else 0
    say(f"    stage 1: {stage1.name}" + (f" (seed {index})" if stage1.seeds > 1 else ""))
    fitted = fit(manifest, stage1, opts, index)
    modules = experiment.init_from.modules
    return {"experiment": stage1.name, "seed_index": index, "checkpoint": fitted["checkpoint"],
            "sha256": sha256_file(fitted["checkpoint"]), "key": fitted["key"],
            "modules": None if modules is None else list(modules)}


def fit(manifest: Manifest, experiment: Experiment, opts: RunOptions, seed_index: int = 0) -> dict[str, Any]:
    """Train (or resume, or reuse a finished training); returns the fit summary with the selected checkpoint."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from experiments.cli import main as cli_main
    from leaderboard.callback import EvaluationRecorder

    if not experiment.fit:
        say("    fit: none (an evaluation-only baseline)")
        return {"checkpoint": None, "monitor": None, "note": "evaluation-only baseline: nothing to fit"}
    run = run_dir(manifest, experiment, opts, seed_index)
    marker, started = run / "fit.json", run / "training.json"
    link = stage1_link(manifest, experiment, opts, seed_index)
    args = compose_args(manifest, experiment, None, opts, "fit", seed_index, link)
    key = training_key(args, None if link is None else link["key"])
    if marker.is_file():
        summary = json.loads(marker.read_text())
        check_unchanged("this finished training", summary.get("key"), key, marker)
        if Path(summary["checkpoint"]).is_file():
            say(f"    fit: done earlier, selected checkpoint {summary['checkpoint']}")
            return summary
    for other in manifest.experiments:  # e.g. synthetic stand-ins of different datasets: one training serves all
        for index in range(other.seeds):
            done = run_dir(manifest, other, opts, index) / "fit.json"
            if (other.name, index) != (experiment.name, seed_index) and done.is_file():
                summary = json.loads(done.read_text())
                if summary.get("key") == key and Path(summary["checkpoint"]).is_file():
                    say(f"    fit: the same training as {other.name} (identical configuration); using its checkpoint")
                    return summary | {"shared_with": other.name}
    cli = cli_main(args, run=False)
    checkpoint = _callback(cli.trainer, ModelCheckpoint)
    if checkpoint is None or checkpoint.monitor is None:
        raise ManifestError(f"experiment {experiment.name}: its config needs a ModelCheckpoint monitoring a "
                            "validation metric (the checkpoint is selected on the validation split)")
    checkpoint.dirpath = str(run / "checkpoints")
    recorder = _callback(cli.trainer, EvaluationRecorder)
    if recorder is not None:  # the checkpoints then say which row of the paper they train (their identity)
        recorder.method = experiment.method
    last = run / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume and started.is_file():  # an interrupted training resumes only under the same configuration
        check_unchanged("this interrupted training", json.loads(started.read_text()).get("key"), key, started)
    if cli.trainer.is_global_zero:
        atomic_write_bytes(started, json.dumps({"key": key}).encode(), overwrite=True)
    say(f"    fit: {'resuming from ' + str(last) if resume else 'training'} ({opts.world_size} process(es))")
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume, weights_only=True)
    selected = checkpoint.best_model_path or checkpoint.last_model_path
    if not selected:
        raise RuntimeError(f"experiment {experiment.name}: training saved no checkpoint")
    score = checkpoint.best_model_score
    summary = {"checkpoint": selected, "key": key, "monitor": checkpoint.monitor, "mode": checkpoint.mode,
               "score": None if score is None else float(score), "epochs": cli.trainer.current_epoch,
               "fit_seconds": round(time.perf_counter() - start, 1), "log_dir": cli.trainer.log_dir,
               "loggers": [{"type": type(lg).__name__, "version": str(lg.version)} for lg in cli.trainer.loggers],
               "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               **seed_tag(manifest, experiment, opts, seed_index), "init_from": link}
    if cli.trainer.is_global_zero:
        atomic_write_bytes(marker, json.dumps(summary, indent=2).encode(), overwrite=True)
    say(f"    fit: selected {selected} ({checkpoint.monitor} = {summary['score']})")
    return summary


def check_unchanged(what: str, stored: str | None, key: str, where: Path) -> None:
    """Refuse to reuse a training or a record made under another configuration (a silently stale number)."""
    if stored is not None and stored != key:
        raise ManifestError(f"{where}: {what} was made with another configuration (training key {stored}; the "
                            f"manifest and options now give {key}): a config or override changed since. Move it "
                            "(with its run folder and records) out of the way to redo it, or restore the "
                            "configuration.")


def training_key(args: list[str], stage1_key: str | None = None) -> str:
    """Identifies a training by everything that shapes it: the configs' contents and the overrides (not where
    it logs). Two experiments with the same key train the same model on the same data with the same seed. A
    training that starts from a stage-1 checkpoint is keyed by stage 1's key (``stage1_key``), not by the
    checkpoint's path, so that it is the same training wherever stage 1 ran and another one when stage 1 changes."""
    skip = ("--trainer.default_root_dir=", "--trainer.logger=", *(("--model.init_args.init_from=",) if stage1_key
                                                                   else ()))
    parts = []
    for i, arg in enumerate(args):
        if arg.startswith(skip):
            continue
        parts.append(Path(arg).read_text() if i and args[i - 1] == "--config" else arg)
    if stage1_key is not None:
        parts.append(f"stage 1: {stage1_key}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def test(manifest: Manifest, experiment: Experiment, spec: TestSpec, fitted: dict[str, Any],
         opts: RunOptions, seed_index: int = 0) -> Path | None:
    """One test pass of the selected checkpoint; returns the record's path (on the first process)."""
    from experiments.cli import main as cli_main
    from leaderboard.callback import EvaluationRecorder

    cli = cli_main(compose_args(manifest, experiment, spec, opts, f"test-{spec.name}", seed_index), run=False)
    recorder = _callback(cli.trainer, EvaluationRecorder)
    if recorder is None:
        recorder = EvaluationRecorder()
        cli.trainer.callbacks.append(recorder)
    recorder.results_dir = results_dir(manifest, opts)
    recorder.method = experiment.method
    recorder.paper = manifest.references
    recorder.cost_repeats = opts.cost_repeats
    recorder.experiment = {"paper": manifest.paper, "name": experiment.name, "test": spec.name, "data": opts.data,
                           "dataset": spec.dataset, "manifest": str(manifest.path), "fit": fitted,
                           **seed_tag(manifest, experiment, opts, seed_index), "init_from": fitted.get("init_from"),
                           **batch_args(manifest, opts, config_files(manifest, experiment, opts))[1], **opts.extra}
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=fitted["checkpoint"], weights_only=True)
    return recorder.last_record


def run_experiment(manifest: Manifest, experiment: Experiment, opts: RunOptions) -> list[Path]:
    """Every training of ``experiment`` (one per seed) and its tests, skipping what has a record."""
    written: list[Path] = []
    for index in range(experiment.seeds):
        if experiment.seeds > 1:
            say(f"    seed {index + 1}/{experiment.seeds} "
                f"(seed_everything={seed_tag(manifest, experiment, opts, index)['seed']})")
        done = finished_tests(manifest, experiment, opts, index)
        stored = {(r.get("experiment") or {}).get("fit", {}).get("key") for r in done.values()} - {None}
        if stored and experiment.fit:
            link = stage1_link(manifest, experiment, opts, index)
            key = training_key(compose_args(manifest, experiment, None, opts, "fit", index, link),
                               None if link is None else link["key"])
            for record in done.values():
                check_unchanged("this record", (record.get("experiment") or {}).get("fit", {}).get("key"), key,
                                Path(record["_path"]))
        written += [Path(r["_path"]) for r in done.values()]
        if not experiment.test:  # a stage 1: its selected checkpoint is what later experiments start from
            fitted = fit(manifest, experiment, opts, index)
            say(f"    trained only (test: false): checkpoint {fitted['checkpoint']}")
            continue
        todo = [t for t in experiment.tests if t.name not in done]
        if not todo:
            say(f"    done earlier: {len(done)} record(s)")
            continue
        fitted = fit(manifest, experiment, opts, index)
        for spec in todo:
            say(f"    test: {spec.name} ({spec.dataset})")
            path = test(manifest, experiment, spec, fitted, opts, index)
            if path is not None:
                written.append(path)
                say(f"    record: {path}")
    return written


# --- the whole manifest ------------------------------------------------------------------------------------


def reproduce(manifest: Manifest, opts: RunOptions) -> int:
    """Run every (selected) experiment of ``manifest``, then render its tables. Returns an exit code."""
    start = time.perf_counter()
    new_invocation()
    unknown = set(opts.only) - {e.name for e in manifest.experiments}
    if unknown:
        raise ManifestError(f"unknown experiments {sorted(unknown)}; {manifest.path} has "
                            f"{[e.name for e in manifest.experiments]}")
    capped, manifest = manifest, manifest.for_data(opts.data)  # fewer seeds on synthetic faces, if it says so
    experiments_ = manifest.run_order(opts.only)  # with the stage-1 experiments they start from, those first
    say(f"== reproduce {manifest.paper}: {manifest.title}\n   data: {opts.data}; {len(experiments_)} experiment(s); "
        f"{opts.devices} device(s) x {opts.nodes} node(s); results: {results_dir(manifest, opts)}")
    if capped is not manifest:
        say(f"   synthetic data: at most {manifest.synthetic_seeds} training(s) per experiment (the paper's protocol "
            f"has up to {max(e.seeds for e in capped.experiments)})")
    if opts.data == "real" and opts.check != "none":
        problems = check_datasets(experiments_, opts)
        if problems:
            say("\nCannot reproduce on real data; the dataset checker found:\n  " + "\n  ".join(problems) +
                f"\nPut each dataset as README.md ('Datasets') describes under DATA_ROOT={opts.data_root}, "
                "or run the same protocol on synthetic faces with DATA=synthetic.")
            return 1
    records: list[Path] = []
    for i, experiment in enumerate(experiments_, 1):
        tests = f"tests {[t.name for t in experiment.tests]}" if experiment.test else "trained only"
        say(f"\n[{i}/{len(experiments_)}] {experiment.name}: {experiment.method}, {tests} "
            f"({time.perf_counter() - start:.0f} s elapsed)")
        records += run_experiment(manifest, experiment, opts)
    wall = time.perf_counter() - start
    finish_wandb()  # wandb's closing lines before the summary, not after it
    if rank_zero_only.rank == 0:
        outputs = render_outputs(manifest, opts) if opts.render else {}
        stages = trained_only(manifest, experiments_, opts)
        summary = {"paper": manifest.paper, "data": opts.data, "wall_seconds": round(wall, 1),
                   "records": [str(p) for p in records], "trained_only": stages,
                   "outputs": {k: str(v) for k, v in outputs.items()},
                   "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        folder = results_dir(manifest, opts)
        atomic_write_bytes(folder / "reproduce.json", json.dumps(summary, indent=2).encode(), overwrite=True)
        say(f"\n== {manifest.paper} ({opts.data}): {len(records)} record(s) in {wall:.0f} s")
        for name, stage in stages.items():
            say(f"   stage 1 {name}: {stage['checkpoint']} (sha256 {str(stage['sha256'])[:12]})")
        for name, path in {"records": folder / "records", "summary": folder / "reproduce.json", **outputs,
                           "runs": opts.workdir / manifest.paper / opts.data}.items():
            say(f"   {name:>12}: {path}")
    return 0


def trained_only(manifest: Manifest, experiments_: list[Experiment], opts: RunOptions) -> dict[str, dict[str, Any]]:
    """The selected checkpoints of the trained-only experiments (``test: false``, e.g. TAB's stage-1 boundary
    estimators, which later experiments start from): name (``/seed-i``) -> checkpoint, SHA-256, selection score."""
    out = {}
    for experiment in (e for e in experiments_ if not e.test):
        for index in range(experiment.seeds):
            marker = run_dir(manifest, experiment, opts, index) / "fit.json"
            if marker.is_file():
                fitted = json.loads(marker.read_text())
                name = experiment.name + (f"/seed-{index}" if experiment.seeds > 1 else "")
                out[name] = {"checkpoint": fitted["checkpoint"], "sha256": sha256_file(fitted["checkpoint"]),
                             "monitor": fitted.get("monitor"), "score": fitted.get("score")}
    return out


def render_outputs(manifest: Manifest, opts: RunOptions) -> dict[str, Path]:
    """The paper's tables the manifest fills (tables.md / .tex / .html, ``leaderboard.paper_tables``) and one
    report page: those tables and figures, then the per-dataset leaderboards with statistics, cost and CED plots."""
    from leaderboard.document import write_document
    from leaderboard.figures import copy_figures
    from leaderboard.paper_tables import paper_document
    from leaderboard.render import render_leaderboards

    folder = results_dir(manifest, opts)
    tables = paper_document(manifest.references, manifest, folder, opts.data == "synthetic", tables=[
        spec.table for spec in manifest.tables], command="python -m leaderboard reproduce", out_dir=folder / "tables")
    outputs = write_document(tables, folder / "tables", "tables")
    copy_figures(tables.sections, folder / "tables", folder / "report")  # the report repeats these sections
    boards = render_leaderboards([folder], folder / "report", title=f"{manifest.title} ({opts.data} data)",
                                 before=tables.sections, pictures=True)
    return {f"tables {kind}": path for kind, path in outputs.items()} | \
        {f"report {kind}": path for kind, path in boards.items()}


def parse_args(argv: list[str]) -> tuple[str, RunOptions]:
    parser = argparse.ArgumentParser(prog="python -m leaderboard reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paper", help=f"a paper with a manifest ({', '.join(available_papers())}) or a manifest path")
    parser.add_argument("--data", choices=DATA_MODES, default="real",
                        help="real benchmark data under --data-root, or the embedded synthetic faces")
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("DATA_ROOT", "data")))
    parser.add_argument("--results", type=Path, default=Path("results/reproduce"),
                        help="records go to RESULTS/<paper>/<data>/")
    parser.add_argument("--workdir", type=Path, default=Path("runs/reproduce"), help="checkpoints and logs")
    parser.add_argument("--devices", type=int, default=1, help="processes (GPUs) per node")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (torchrun / SLURM launch)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, gpu, cpu, ...")
    parser.add_argument("--strategy", default="ddp", help="Lightning strategy when processes > 1")
    parser.add_argument("--total-batch", type=int, help="total batch over all processes (default: the paper's)")
    parser.add_argument("--no-sync-bn", action="store_true", help="per-process BatchNorm statistics under DDP")
    parser.add_argument("--check", choices=("files", "decode", "none"), default="files",
                        help="dataset check before real-data runs: files and annotations, also decode, or none")
    parser.add_argument("--only", nargs="+", default=(), help="run only these experiments")
    parser.add_argument("--override", action="append", default=[], metavar="ARG",
                        help="extra LightningCLI argument for every run, e.g. --override=--trainer.max_epochs=1")
    parser.add_argument("--cost-repeats", type=int, default=10, help="timed passes for images/s (0: no cost)")
    parser.add_argument("--no-wandb", action="store_true", help="CSV logs only")
    parser.add_argument("--no-render", action="store_true", help="skip the tables at the end")
    a = parser.parse_args(argv)
    if a.devices < 1 or a.nodes < 1:
        parser.error("--devices and --nodes must be at least 1")
    return a.paper, RunOptions(
        data=a.data, data_root=a.data_root, results=a.results, workdir=a.workdir, devices=a.devices, nodes=a.nodes,
        accelerator=a.accelerator, strategy=a.strategy, total_batch=a.total_batch, sync_bn=not a.no_sync_bn,
        check=a.check, only=tuple(a.only), overrides=tuple(a.override), cost_repeats=a.cost_repeats,
        wandb=not a.no_wandb, render=not a.no_render)


def main(argv: list[str] | None = None) -> int:
    paper, opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        manifest = load_manifest(paper)
        return reproduce(manifest, opts)
    except (ManifestError, RecordError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
