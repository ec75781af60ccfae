"""``python -m leaderboard ci-gate``: evaluate a checkpoint on a small stratified sample of a test set and gate its
record against a baseline record, in one command (README "Gating CI on metrics").

    python -m leaderboard ci-gate --config CFG [--config CFG2 ...] --ckpt CKPT --baseline RECORD
                                  [--per-subset N] [--seed S] [--results DIR] [--write-baseline]
                                  [--tol nme=0.05 fr=0.5 auc=0.005] [--abs-tol PP] [--rel-tol R]
                                  [--metrics nme fr@0.1 auc@0.1] [--normalizer N]
                                  [LightningCLI options: --data.init_args.root=/datasets/WFLW ...]

Why one command: a CI job wants to know whether a change moved the numbers, and two records are comparable only
when they come from the same faces, protocol and model. So ``ci-gate`` takes the sample from the baseline record
(``protocol.sample``: N faces per subset, the seed and the digest of the chosen ids; ``datamodules.sample``), and
before anything is evaluated refuses (exit 2, one line) when the config's test split gives another test set, another
sample (other faces: the test split changed), another protocol (layout, crop, input size, annotation), or when the
checkpoint was trained with other settings than the config states. Then it tests the checkpoint on the sample with
the config (``experiments.cli``; no logger, no progress bar), writes the record and its predictions under
``--results`` (a record of the run's own, never the baseline), gates it with ``python -m leaderboard gate``'s
tolerances and prints the values that moved. Exit status as ``gate``: 0 nothing regressed, 1 a regression (the
table names it), 2 nothing comparable (or a user error: a bad config, checkpoint or record).

``--write-baseline`` makes the baseline: it evaluates the sample that ``--per-subset`` (default
:data:`DEFAULT_PER_SUBSET`; 0: every test face) and ``--seed`` (default 0) choose and copies the record to
``--baseline``. A baseline written by the same command as the gate reads it passes with nothing moved (CPU
evaluation is deterministic); refresh it so when a change is meant to move the numbers.

Other arguments go to LightningCLI after the configs (``--trainer.accelerator=cpu``,
``--data.init_args.num_workers=0``, a dataset root); the sample options are always ``ci-gate``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from leaderboard.gate import (
    add_gate_arguments,
    check_same_protocol,
    check_same_sample,
    compare,
    report,
    sample_words,
    tolerance_of,
)
from leaderboard.store import RecordError, _json_default, atomic_write_bytes, load_record

DEFAULT_PER_SUBSET = 20  # faces per subset of a new baseline: <= 140 faces on WFLW's 6 attribute subsets + full
TRAINER = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def requested_sample(args: argparse.Namespace, baseline: dict[str, Any] | None) -> tuple[int | None, int]:
    """(faces per subset or None for every face, seed): the baseline's, which ``--per-subset`` / ``--seed`` may
    only repeat; for a new baseline (``baseline`` None) the options' or the defaults."""
    if baseline is None:
        per_subset = DEFAULT_PER_SUBSET if args.per_subset is None else args.per_subset
        return (per_subset or None), (args.seed or 0)
    stated = baseline["protocol"].get("sample")
    per_subset, seed = (stated["per_subset"], stated["seed"]) if stated else (None, 0)
    if args.per_subset is not None and (args.per_subset or None) != per_subset:
        raise ValueError(f"--per-subset {args.per_subset}, but the baseline was evaluated on {sample_words(stated)}")
    if args.seed is not None and stated and args.seed != seed:
        raise ValueError(f"--seed {args.seed}, but the baseline was evaluated on {sample_words(stated)}")
    return per_subset, seed


def build(args: argparse.Namespace, overrides: list[str], per_subset: int | None, seed: int, run_dir: Path) -> Any:
    """The LightningCLI objects (model, datamodule, trainer) of the configs with the sample set; nothing runs."""
    from experiments.cli import main as cli_main

    configs = [item for config in args.config for item in ("--config", str(config))]
    sample = [f"--data.init_args.test_per_subset={'null' if per_subset is None else per_subset}",
              f"--data.init_args.test_sample_seed={seed}"]
    return cli_main([*configs, *TRAINER, f"--trainer.default_root_dir={run_dir}", *overrides, *sample], run=False)


def plain(value: Any) -> Any:
    """``value`` as a record stores it (JSON types: lists, not tuples), for comparison with a read record."""
    return json.loads(json.dumps(value, default=_json_default))


def check_plan(datamodule: Any, baseline: dict[str, Any]) -> None:
    """Before evaluating: the config's test set, sample and protocol are the baseline's (ValueError otherwise)."""
    name = datamodule.test_source.name
    if name != baseline["test_set"]:
        raise ValueError(f"the config tests on {name!r}, the baseline on {baseline['test_set']!r}")
    protocol = plain(datamodule.protocol())
    check_same_sample(protocol.get("sample"), baseline["protocol"].get("sample"))
    check_same_protocol(protocol, baseline["protocol"])


def check_checkpoint(model: Any, datamodule: Any, path: Path) -> None:
    """The checkpoint was trained with the model and data protocol the config states (ValueError listing what
    differs otherwise; a missing or damaged file is a ``CheckpointError``)."""
    from lightning_modules.training import read_checkpoint, saved_identity

    saved = saved_identity(read_checkpoint(path, "--ckpt"), path)
    differences = model.checkpoint_differences(saved, datamodule, "test")
    if differences:
        fields = "; ".join(f"{key}: checkpoint {old!r}, config {new!r}" for key, (old, new) in differences.items())
        raise ValueError(f"{path} was trained with other settings than the config states ({fields}); give the config "
                         f"it was trained with")


def evaluate(cli: Any, checkpoint: Path, results: Path) -> Path:
    """Test ``checkpoint`` on the datamodule's (sampled) test split; the path of the record written."""
    from leaderboard.callback import EvaluationRecorder

    recorder = next((cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationRecorder)), None)
    if recorder is None:  # a config without one still gets its record
        recorder = EvaluationRecorder()
        cli.trainer.callbacks.append(recorder)
    recorder.results_dir = results
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint), weights_only=True,
                     verbose=False)
    if recorder.last_record is None:
        raise RuntimeError("the test pass wrote no record")
    return recorder.last_record


def run_folder(results: Path) -> Path:
    """The folder of this run's config (``<results>/runs/<UTC time>-<random>``, made only if the test runs): never
    one another run wrote, so Lightning's config saver never finds its file there."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return results / "runs" / f"{stamp}-{uuid.uuid4().hex[:8]}"


def one_line(error: BaseException) -> str:
    """An error's message on one line (a CI log greps for one line; a checkpoint error lists fields per line)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard ci-gate", description=__doc__.splitlines()[0],
                                     allow_abbrev=False,
                                     epilog="Other arguments go to LightningCLI (--trainer.accelerator=cpu, ...).")
    parser.add_argument("--config", required=True, type=Path, action="append", help="LightningCLI config (repeat "
                        "to compose several, as experiments.cli does)")
    parser.add_argument("--ckpt", required=True, type=Path, help="the checkpoint to evaluate")
    parser.add_argument("--baseline", required=True, type=Path, help="the baseline record (JSON); written with "
                        "--write-baseline")
    parser.add_argument("--per-subset", type=int, help=f"faces per subset (default: the baseline's; for "
                        f"--write-baseline {DEFAULT_PER_SUBSET}, 0: every test face)")
    parser.add_argument("--seed", type=int, help="seed of the sample (default: the baseline's; else 0)")
    parser.add_argument("--results", type=Path, default=Path("results/ci-gate"),
                        help="where the new record, its predictions and the run's config go (default: %(default)s)")
    parser.add_argument("--write-baseline", action="store_true", help="evaluate and write the record to --baseline "
                        "instead of gating")
    add_gate_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    if args.per_subset is not None and args.per_subset < 0:
        parser.error("--per-subset must be >= 0")
    try:
        tolerance = tolerance_of(args)
        baseline = None if args.write_baseline else load_record(args.baseline)
        per_subset, seed = requested_sample(args, baseline)
        cli = build(args, overrides, per_subset, seed, run_folder(args.results))
        if baseline is not None:
            check_plan(cli.datamodule, baseline)
        check_checkpoint(cli.model, cli.datamodule, args.ckpt)
    except (RecordError, ValueError, KeyError) as error:  # CheckpointError is a ValueError
        print(f"ci-gate: cannot gate: {one_line(error)}", file=sys.stderr)
        return 2
    path = evaluate(cli, args.ckpt, args.results)
    record = load_record(path)
    if baseline is None:
        atomic_write_bytes(args.baseline, path.read_bytes(), overwrite=True)
        print(f"ci-gate: baseline {args.baseline} written: {record['method']} on {record['test_set']}, "
              f"{sample_words(record['protocol'].get('sample'))} (record {path})")
        return 0
    try:
        table = compare(record, baseline, args.normalizer, tuple(args.metrics), tolerance)
    except (RecordError, ValueError, KeyError) as error:
        print(f"ci-gate: cannot gate: {one_line(error)} (record {path})", file=sys.stderr)
        return 2
    code = report(record, baseline, table, args.normalizer, tolerance, args.metrics, only_moved=True,
                  title=f"CI gate on {sample_words(record['protocol'].get('sample'))}")
    ours, theirs = record["checkpoint"]["sha256"], (baseline.get("checkpoint") or {}).get("sha256")
    print(f"checkpoint: {args.ckpt} (sha256 {ours[:12]}; " + ("the baseline's)" if ours == theirs else
          f"the baseline's: {str(theirs)[:12]})"))
    print(f"record: {path}")
    if code:
        print("A change meant to move these numbers refreshes the baseline: the same command with --write-baseline "
              "(make ci-baseline for the suite's own)")
    return code
