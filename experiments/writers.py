"""Writing ``predict`` outputs: landmarks in original-image pixels, with image ids, one file per run (and, if asked,
pictures of the first faces with their predicted landmarks)."""

from __future__ import annotations

import datetime as dt
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from leaderboard.overlays import draw_face, write_image
from leaderboard.store import atomic_write_bytes

log = logging.getLogger(__name__)


class LandmarkWriter(BasePredictionWriter):
    """Save ``trainer.predict`` results as ``<output_dir>/landmarks-<UTC time>[-rank<r>].npz`` with arrays
    ``index`` (N,), ``image_id`` (N,) and ``landmarks`` (N, K, 2) in original-image pixels, sorted by index.
    Under DDP each process writes the faces it predicted (its rank in the name). Files are never overwritten.

    ``overlays: N`` also draws the first N predicted faces (by index) on their original images, predictions as
    green dots (``leaderboard.overlays``), as ``overlays-<UTC time>[-rank<r>]/<n>-<index>.jpg`` beside the file.
    """

    def __init__(self, output_dir: str = "predictions", overlays: int = 0) -> None:
        super().__init__(write_interval="epoch")
        if overlays < 0:
            raise ValueError(f"overlays must be >= 0, got {overlays}")
        self.output_dir, self.overlays = Path(output_dir), overlays
        self.last_file: Path | None = None

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        # One list of batch outputs per dataloader when there are several, else one list of batch outputs.
        per_loader = predictions if predictions and isinstance(predictions[0], list) else [predictions]
        batches = [batch for loader in per_loader for batch in loader]
        if not batches:
            return
        index = torch.cat([b["index"] for b in batches]).numpy()
        order = np.argsort(index, kind="stable")
        arrays = {
            "index": index[order],
            "image_id": np.array([i for b in batches for i in b["image_id"]])[order],
            "landmarks": torch.cat([b["landmarks"] for b in batches]).numpy()[order],
        }
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        rank = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        self.last_file = atomic_write_bytes(self.output_dir / f"landmarks-{stamp}{rank}.npz", buffer.getvalue())
        if self.overlays:  # the predicted split's faces, re-read from its source
            source = trainer.datamodule.test_source
            first = list(zip(arrays["index"], arrays["image_id"], arrays["landmarks"], strict=True))[:self.overlays]
            for n, (index, image_id, points) in enumerate(first):
                picture = draw_face(source.load(int(index)).image, points, caption=str(image_id))
                write_image(self.output_dir / f"overlays-{stamp}{rank}" / f"{n + 1:03d}-{index}.jpg", picture)
        # Not printed here (the progress bar is still on that line): the CLI prints it with the run's outputs, last.
        log.debug("predicted landmarks: %s", self.last_file)
