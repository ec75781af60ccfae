"""Lightning callback that turns every test run into an evaluation record and its predictions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from landmarks.metrics import AUC_STEP
from leaderboard.gallery import save_pictures
from leaderboard.store import git_commit, load_record, sha256_file, write_record
from lightning_modules.training import IDENTITY

log = logging.getLogger(__name__)


class EvaluationRecorder(pl.Callback):
    """At the end of ``trainer.test``, write one record and its per-image predictions under ``results_dir``.

    Args:
        results_dir: the results folder (``records/`` and ``predictions/`` inside).
        method: the method's name in tables (default: the model class name).
        paper: the paper the method comes from, if any.
        cost_repeats: measure parameters, MACs and images/s (``leaderboard.cost``) with this many timed
            passes and store them as ``cost``; 0 skips it (the leaderboard runner turns it on).
        experiment: stored as the record's ``experiment`` (the runner's paper, experiment, test, data mode).
        gallery_size: beside the record, pictures of this many worst and median faces by per-image NME
            (``leaderboard.gallery``; the report pages show them); 0: none.
        save_overlays: also pictures of the first this many test faces (``python -m experiments.cli test
            --save-overlays N``).
    """

    def __init__(self, results_dir: str = "results", method: str | None = None, paper: str | None = None,
                 cost_repeats: int = 0, experiment: dict[str, Any] | None = None, gallery_size: int = 8,
                 save_overlays: int = 0) -> None:
        if gallery_size < 0 or save_overlays < 0:
            raise ValueError(f"gallery_size and save_overlays must be >= 0, got {gallery_size}, {save_overlays}")
        self.results_dir = Path(results_dir)
        self.method, self.paper = method, paper
        self.cost_repeats, self.experiment = cost_repeats, experiment
        self.gallery_size, self.save_overlays = gallery_size, save_overlays
        self.last_pictures: Path | None = None
        self.last_record: Path | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """The method's name joins what the checkpoint says it was trained as (``LandmarkModule.identity``)."""
        checkpoint.setdefault(IDENTITY, {})["method"] = self.method or type(pl_module).__name__

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        if results is None or trainer.sanity_checking:
            return
        if trainer.fast_dev_run:
            rank_zero_info("fast_dev_run: no evaluation record written")
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every process must ask, before rank 0 goes on alone
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        checkpoint = trainer.ckpt_path
        source = datamodule.test_source
        predictions = dict(results["predictions"])
        predictions["image_id"] = [source.image_id(int(i)) for i in predictions["index"]]
        record = {
            "method": self.method or type(pl_module).__name__,
            "paper": self.paper,
            "train_set": getattr(pl_module, "trained_on", None)  # a pretrained peer names what it was trained on
            or _overridden(pl_module).get("data.train_set.name", {}).get("checkpoint")
            or datamodule.source("train").name,
            "test_set": source.name,
            "n_images": int(len(predictions["index"])),
            # the published counts (None where there are none); `partial`: a deliberately smaller copy, or fewer
            # images scored than the test split holds (limit_test_batches): leaderboards mark such rows
            "expected": {"n_images": source.expected_size, "subsets": dict(source.expected_subsets),
                         "partial": not getattr(datamodule, "check_counts", True)
                         or getattr(datamodule, "on_error", "raise") == "skip"
                         or len(predictions["index"]) < len(source)},
            "synthetic": bool(getattr(source, "synthetic", False)),  # generated faces: marked wherever shown
            "protocol": datamodule.protocol() | {
                "thresholds": list(pl_module.thresholds),
                "auc_rule": f"trapezoid, grid step {AUC_STEP:g}",
                "flip_test": bool(getattr(pl_module, "flip_test", False)),
                # a pretrained peer's own protocol (its model file, the face box it is given inside the crop)
                **({"peer": pl_module.peer_protocol()} if hasattr(pl_module, "peer_protocol") else {}),
            },
            "metrics": results["metrics"],
            "config": {
                "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
                "model": _plain(dict(pl_module.hparams)),
                "data": _plain(dict(datamodule.hparams)),
                "file": _config_file(log_dir),
            },
            "checkpoint": {"path": checkpoint, "sha256": sha256_file(checkpoint) if checkpoint else None,
                           **({"overrides": _overridden(pl_module)} if _overridden(pl_module) else {})},
            "seed": _seed(),
            "git": git_commit(Path(__file__).resolve().parent),
            "run": {"log_dir": log_dir, "loggers": [_logger_info(lg) for lg in trainer.loggers]},
        }
        if results.get("diagnostics"):  # e.g. the SDT decoder's fallback share and fitted peak heights
            record["diagnostics"] = {k: float(v) for k, v in results["diagnostics"].items()}
        if self.experiment:
            record["experiment"] = dict(self.experiment)
        if self.cost_repeats:
            from leaderboard.cost import model_cost

            record["cost"] = model_cost(pl_module, pl_module.input_size, self.cost_repeats, pl_module.device)
        self.last_record = write_record(record, predictions, self.results_dir)
        self.last_pictures = self._pictures(datamodule, predictions)
        # Not printed here, where it would land before Lightning's metric table: the CLI, the demo and the runner
        # print it with the run's other outputs, as their last lines.
        log.debug("evaluation record: %s", self.last_record)

    def _pictures(self, datamodule: pl.LightningDataModule, predictions: dict[str, Any]) -> Path | None:
        """The gallery and overlays of the record just written (``leaderboard.gallery``), drawn on the test
        faces re-fetched by index; a datamodule without a cropping test dataset gets none, with a warning."""
        if not (self.gallery_size or self.save_overlays):
            return None
        dataset = (getattr(datamodule, "datasets", None) or {}).get("test")
        if not hasattr(dataset, "cropped"):
            rank_zero_warn(f"no gallery or overlays: {type(datamodule).__name__} has no test dataset to re-fetch "
                           f"faces from")
            return None
        record = load_record(self.last_record)
        return save_pictures(self.results_dir, record, predictions, dataset, self.gallery_size, self.save_overlays)


def _logger_info(logger: pl.loggers.Logger) -> dict[str, Any]:
    """Where a logger keeps this run (for wandb: the run id; offline runs sync later with `wandb sync`)."""
    return {"type": type(logger).__name__, "name": logger.name, "version": str(logger.version),
            "save_dir": logger.save_dir}


def _overridden(pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
    """Fields the CLI's --checkpoint_wins took from the checkpoint: {field: {"checkpoint": ..., "config": ...}}."""
    overrides = getattr(pl_module, "checkpoint_overrides", None) or {}
    return {field: {"checkpoint": saved, "config": given} for field, (saved, given) in overrides.items()}


def _seed() -> int | None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None


def _config_file(log_dir: str | None) -> str | None:
    path = Path(log_dir or ".") / "config.yaml"
    return str(path) if path.is_file() else None


def _plain(value: Any) -> Any:
    """Hyper-parameters as JSON-able data (the CLI stores them as plain dicts already)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_instantiator")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
