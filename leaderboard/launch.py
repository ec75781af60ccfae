"""How the runner launches one LightningCLI run: the batch split over processes, the seed, loggers and names, and
the dataset check before a real-data run.

Kept apart from ``leaderboard.runner`` (which walks a manifest) because these read only the run options and the
configs: the per-process batch from the paper's total (and the learning rate under ``lr_scaling: linear``),
synchronised BatchNorm, the seed of each of an experiment's trainings, and the loggers of each run.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from leaderboard.manifest import Experiment, Manifest, ManifestError

if TYPE_CHECKING:
    from leaderboard.runner import RunOptions


def batch_args(manifest: Manifest, opts: RunOptions,
               configs: tuple[Path, ...] = ()) -> tuple[list[str], dict[str, Any]]:
    """Per-process batch from the total batch (and the learning rate if the total changes and the manifest
    says ``lr_scaling: linear``), and what was done (stored in every record)."""
    total = opts.total_batch or manifest.total_batch
    info: dict[str, Any] = {"world_size": opts.world_size, "total_batch": total, "paper_total_batch":
                            manifest.total_batch, "lr_scaling": manifest.lr_scaling, "sync_batchnorm": sync_bn(opts)}
    if total is None:
        return [], info
    if total % opts.world_size:
        raise ManifestError(f"the total batch {total} does not split over {opts.world_size} processes "
                            f"({opts.devices} devices x {opts.nodes} nodes); choose --total-batch")
    info["per_process_batch"] = total // opts.world_size
    args = [f"--data.init_args.batch_size={total // opts.world_size}"]
    paper = manifest.total_batch
    if manifest.lr_scaling == "linear" and paper and total != paper:
        base = config_lr(configs)
        if base is None:
            raise ManifestError(f"{manifest.path}: lr_scaling is linear but no config sets "
                                "model.init_args.optimizer.init_args.lr")
        info["lr"] = base * total / paper
        args.append(f"--model.init_args.optimizer.init_args.lr={info['lr']}")
    return args, info


def config_value(configs: tuple[Path, ...], *keys: str) -> Any:
    """The value the composed configs give the nested key ``keys`` (the last one that sets it wins, as in
    LightningCLI), or None."""
    found = None
    for path in configs:
        node: Any = yaml.safe_load(Path(path).read_text()) or {}
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        found = node if node is not None else found
    return found


def config_lr(configs: tuple[Path, ...]) -> float | None:
    """The learning rate the composed configs set."""
    lr = config_value(configs, "model", "init_args", "optimizer", "init_args", "lr")
    return None if lr is None else float(lr)


def training_seed(configs: tuple[Path, ...], index: int, seeds: int) -> int | None:
    """The seed of training ``index`` of an experiment's ``seeds``: the configs' ``seed_everything`` + index.
    With several seeds and no integer seed in the configs the base is 0; a single training keeps the configs'
    own seed (None when they set none: Lightning then draws one, and the record says which)."""
    base = config_value(configs, "seed_everything")
    if not isinstance(base, int) or isinstance(base, bool):
        if seeds == 1:
            return None
        base = 0
    return base + index


def sync_bn(opts: RunOptions) -> bool:
    """Synchronised BatchNorm under DDP: on GPUs only (torch's SyncBatchNorm has no CPU implementation)."""
    import torch

    on_gpu = opts.accelerator in ("gpu", "cuda") or (opts.accelerator == "auto" and torch.cuda.is_available())
    return opts.sync_bn and opts.world_size > 1 and on_gpu


def trainer_args(opts: RunOptions, run: Path, stage: str, experiment: str, paper: str) -> list[str]:
    """Devices, strategy and loggers of one run (CSV always; wandb for fits), logging into the run folder."""
    args = [f"--trainer.default_root_dir={run}", f"--trainer.devices={opts.devices}",
            f"--trainer.num_nodes={opts.nodes}", f"--trainer.accelerator={opts.accelerator}"]
    if opts.world_size > 1:
        args += [f"--trainer.strategy={opts.strategy}", f"--trainer.sync_batchnorm={str(sync_bn(opts)).lower()}"]
    loggers = [{"class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": str(run), "name": "logs", "version": f"{stage}-{stamp()}"}}]
    if opts.wandb and stage == "fit":
        loggers.append({"class_path": "pytorch_lightning.loggers.WandbLogger",
                        "init_args": {"save_dir": str(run), "project": "face-alignment-benchmark",
                                      "name": f"{paper}/{experiment}", "group": paper}})
    return [*args, f"--trainer.logger={json.dumps(loggers)}"]


_STAMP = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
_INVOCATIONS = itertools.count()
_RUN = {"stamp": _STAMP}


def stamp() -> str:
    """Names this invocation's log folders. Every process agrees: the stamp is inherited by the processes
    Lightning launches, and repeated in-process calls (tests, notebooks) are numbered in the same order."""
    return _RUN["stamp"]


def new_invocation() -> None:
    """A new ``reproduce`` call in this process: its log folders get the next number."""
    base = os.environ.setdefault("FACE_BENCH_RUN_STAMP", _STAMP)
    _RUN["stamp"] = f"{base}-{next(_INVOCATIONS)}"


def check_datasets(selected: list[Experiment], opts: RunOptions) -> list[str]:
    """Run the dataset checker on every dataset the experiments need; the problems found (empty: all good)."""
    from datamodules.check import check_dataset
    from datamodules.registry import DATASETS, checked_as

    problems, seen = [], set()
    for experiment in selected:
        needed = [*experiment.roots.values(), *(d for t in experiment.tests for d in t.roots.values())]
        for dataset in map(checked_as, needed):  # COFW-68's files are checked as COFW's
            if dataset in seen:
                continue
            seen.add(dataset)
            root = DATASETS[dataset].root(opts.data_root)
            if not root.is_dir():
                problems.append(f"{dataset}: no folder {root}")
                continue
            out = sys.stdout if rank_zero_only.rank == 0 else open(os.devnull, "w")  # noqa: SIM115
            if not check_dataset(dataset, root, decode=opts.check == "decode", out=out):
                problems.append(f"{dataset}: incomplete or unreadable copy at {root} (report above)")
    return problems
