"""Where a run's outputs went, printed as its last lines (``experiments.cli``, ``experiments.demo``): the
checkpoints of a fit, the evaluation record and its per-image predictions, predicted landmarks, and the logs.

Lightning prints its metric table and wandb its closing lines at the very end of a run, so these lines come after
both: wandb's run is finished first (:func:`finish_loggers`), and a log folder a run left empty (one that failed
before it logged anything) is removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from experiments.writers import LandmarkWriter
from leaderboard.callback import EvaluationRecorder
from leaderboard.store import RecordError, load_record

Outputs = list[tuple[str, str]]  # (what, where), in the order printed


def run_outputs(trainer: pl.Trainer) -> Outputs:
    """What the trainer's last run wrote: checkpoints (best on validation, last; in a test, the checkpoint it
    used), the evaluation record and its predictions, predicted landmarks, and each logger's folder (wandb: its
    run folder, with the sync command)."""
    items: Outputs = []
    if trainer.state.fn != "fit":  # the checkpoint callbacks hold what the checkpoint's own fit saved
        items += [("checkpoint used", str(trainer.ckpt_path))] if trainer.ckpt_path else []
    for callback in trainer.checkpoint_callbacks if trainer.state.fn == "fit" else ():
        best, last = getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")
        items += [("checkpoint (best)", best)] if best else []
        items += [("checkpoint (last)", last)] if last and last != best else []
    for callback in trainer.callbacks:
        if isinstance(callback, EvaluationRecorder) and callback.last_record:
            items.append(("record", str(callback.last_record)))
            try:
                predictions = callback.results_dir / load_record(callback.last_record)["predictions"]["file"]
                items.append(("predictions", str(predictions)))
            except (RecordError, KeyError):  # the record names its predictions; shown as written
                pass
            if getattr(callback, "last_pictures", None):  # the gallery and --save-overlays pictures
                items.append(("pictures", str(callback.last_pictures.parent)))
        if isinstance(callback, LandmarkWriter) and callback.last_file:
            items.append(("landmarks", str(callback.last_file)))
    for logger in trainer.loggers:
        folder = _log_folder(logger)
        if folder is not None and folder.is_dir() and any(folder.iterdir()):
            offline = isinstance(logger, WandbLogger) and _wandb_offline()
            items.append((f"logs ({type(logger).__name__})",
                          f"{folder}" + (f"  (offline: `wandb sync {folder}` uploads it)" if offline else "")))
    return items


def finish_wandb() -> None:
    """Finish the active wandb run, if any, now: its closing lines ("wandb sync ...") then come before a run's
    summary instead of after it, at the exit of the process."""
    wandb = sys.modules.get("wandb")  # never imported here: only a run that logged to wandb has one to finish
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def finish_loggers(trainer: pl.Trainer) -> None:
    """Finish the wandb run (:func:`finish_wandb`) and remove log folders the run left empty."""
    finish_wandb()
    if not rank_zero_only.rank == 0:
        return
    for logger in trainer.loggers:
        folder = _log_folder(logger)
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@rank_zero_only
def print_outputs(items: Outputs, title: str = "outputs") -> None:
    """``title:`` then one ``what: where`` line per output, after a blank line (never glued to a progress bar)."""
    if not items:
        return
    width = max(len(what) for what, _ in items)
    print("\n".join([f"\n{title}:", *(f"  {what:>{width}}: {where}" for what, where in items)]), flush=True)


def _log_folder(logger: pl.loggers.Logger) -> Path | None:
    """The local folder a logger writes this run to (None: none, or not created)."""
    if isinstance(logger, WandbLogger):
        run = getattr(logger, "_experiment", None)  # never create a run just to ask where it is
        return Path(run.dir).parent if run is not None and getattr(run, "dir", None) else None
    log_dir = getattr(logger, "log_dir", None)
    return Path(log_dir) if log_dir else None


def _wandb_offline() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")  # experiments/__init__.py: the default
