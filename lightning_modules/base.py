"""LandmarkModule: what every face-alignment model shares.

A paper's module implements three things: ``forward(images)`` (network outputs), ``training_loss(outputs,
batch)`` and ``decode(outputs)`` (landmarks in crop pixels). This base owns the rest: validation and test
metrics under every normaliser and subset (exact under DDP), per-subset logging, optional flip testing,
``predict_step`` in original-image coordinates, the per-image test predictions behind evaluation records,
and optimiser / scheduler set-up (dependency-injected, so configs choose them by class path).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from landmarks.geometry import apply_affine, invert_affine, matrix_scale
from landmarks.layouts import LandmarkLayout, get_layout
from landmarks.metrics import DEFAULT_THRESHOLDS, FULL, NMEMetric, PredictionStore

OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]
MONITOR = "val/nme"  # headline validation NME (primary normaliser, all validation faces): select on this


class LandmarkModule(pl.LightningModule, abc.ABC):
    """Base of every landmark model.

    Args:
        layout: landmark layout name; linked to the datamodule's by the CLI.
        input_size: side of the square input crop; linked to the datamodule's by the CLI.
        flip_test: average the prediction with the mirrored prediction of the mirrored image.
        channels_last: keep weights and input images in NHWC memory order (faster convolutions on recent
            CPUs and on tensor cores, especially under bf16 / fp16 autocast).
        optimizer: callable building the optimiser from the parameters (default Adam, lr 1e-3).
        lr_scheduler: callable building a scheduler from the optimiser (stepped per epoch), or None.
        thresholds: NME thresholds of FR and AUC.
    """

    def __init__(
        self,
        layout: str,
        input_size: int = 256,
        flip_test: bool = False,
        channels_last: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    ) -> None:
        super().__init__()
        # The callables are rebuilt from the config when training resumes; keeping them out of the checkpoint
        # keeps it loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.layout: LandmarkLayout = get_layout(layout)
        self.input_size = input_size
        self.flip_test = flip_test
        self.channels_last = channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.thresholds = tuple(thresholds)
        self.example_input_array = torch.zeros(1, 3, input_size, input_size)
        self.subsets: tuple[str, ...] = ()
        self.primary_normalizer = "inter_ocular"
        self.test_results: dict[str, Any] | None = None

    # --- what a paper implements (with ``forward(images)``) ------------------------------------------------
    @abc.abstractmethod
    def training_loss(self, outputs: Any, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss (or a dict of named terms with the total under "loss") for a training batch."""

    @abc.abstractmethod
    def decode(self, outputs: Any) -> torch.Tensor:
        """Network outputs → (B, K, 2) landmarks in crop pixels."""

    # --- set-up --------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.subsets = tuple(datamodule.subset_names)
            self.primary_normalizer = datamodule.primary_normalizer
            if datamodule.layout != self.layout:
                raise ValueError(f"the model predicts {self.layout.name}, the data is {datamodule.layout.name}")
        self.normalizers: tuple[str, ...] = ()
        self.val_metric: NMEMetric | None = None
        self.test_metric: NMEMetric | None = None
        self.test_store = PredictionStore()

    def configure_model(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Input images in the memory order the weights use."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _metric(self, normalizers: tuple[str, ...]) -> NMEMetric:
        return NMEMetric(normalizers, self.subsets, self.thresholds).to(self.device)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau):
            config["monitor"] = MONITOR
        return {"optimizer": optimizer, "lr_scheduler": config}

    # --- prediction ---------------------------------------------------------------------------------------
    def predict_landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised crops → (B, K, 2) landmarks in crop pixels (flip-averaged if enabled)."""
        images = self.prepare_images(images)
        pred = self.decode(self(images))
        if self.flip_test:
            mirrored = self.decode(self(self.prepare_images(images.flip(-1))))
            pred = (pred + self.layout.flip_points(mirrored, images.shape[-1])) / 2
        return pred

    def subset_mask(self, batch: dict) -> torch.Tensor:
        """(B, S) bool: which of the datamodule's subsets each face belongs to."""
        rows = [[name in tags for name in self.subsets] for tags in batch["subsets"]]
        return torch.tensor(rows, dtype=torch.bool, device=self.device).reshape(len(rows), len(self.subsets))

    # --- steps --------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(self(self.prepare_images(batch["image"])), batch)
        terms = loss if isinstance(loss, dict) else {"loss": loss}
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=True,
                      batch_size=len(batch["image"]))
        return terms["loss"]

    def _evaluate(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict, update the stage's metric; returns the predictions and the subset mask."""
        pred = self.predict_landmarks(batch["image"])
        metric = getattr(self, f"{stage}_metric")
        if metric is None:  # built lazily: the normalisers are the keys the batches carry
            self.normalizers = tuple(batch["norm"])
            metric = self._metric(self.normalizers)
            setattr(self, f"{stage}_metric", metric)
        mask = self.subset_mask(batch)
        metric.update(pred, batch["landmarks"], batch["norm"], batch["meta"]["index"], mask, batch["visible"])
        return pred, mask

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    @staticmethod
    def to_original(points: torch.Tensor, batch: dict) -> torch.Tensor:
        """(B, K, 2) crop pixels → original-image pixels, through each face's crop transform (float64)."""
        transform = batch["meta"]["transform"].to(points.device, torch.float64)
        return apply_affine(points.double(), invert_affine(transform))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pred, mask = self._evaluate(batch, "test")
        scale = matrix_scale(batch["meta"]["transform"].to(pred.device, torch.float64))
        self.test_store.update(
            self.to_original(pred, batch),
            self.to_original(batch["landmarks"], batch),
            batch["visible"],
            torch.stack([batch["norm"][n].double() / scale for n in self.normalizers], -1),
            mask,
            batch["meta"]["index"],
        )

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Landmarks in original-image pixels, with the image ids."""
        pred = self.predict_landmarks(batch["image"])
        return {"image_id": batch["meta"]["image_id"], "index": batch["meta"]["index"],
                "landmarks": self.to_original(pred, batch).cpu()}

    # --- epoch ends: gather, log, keep -------------------------------------------------------------------
    def _log_metrics(self, results: dict, stage: str) -> None:
        """Log the primary normaliser's metrics for every subset, and the headline NME of the others.

        Keys: ``{stage}/nme`` (primary normaliser, all faces; checkpoints select on ``val/nme``),
        ``{stage}/{subset}/{metric}`` and ``{stage}/{normalizer}/nme``. Evaluation records keep everything.
        """
        primary = self.primary_normalizer if self.primary_normalizer in results else next(iter(results))
        values = {}
        for subset, summary in results[primary].items():
            if summary["n"] == 0:
                continue
            values |= {f"{stage}/{subset}/{k}": v for k, v in summary.items() if k not in ("n", "nme_visible")}
        values |= {f"{stage}/{norm}/nme": res[FULL]["nme"] for norm, res in results.items() if norm != primary}
        # Every process holds the same gathered values, so sync_dist only averages identical numbers.
        self.log_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}, sync_dist=True)
        self.log(f"{stage}/nme", torch.tensor(results[primary][FULL]["nme"], dtype=torch.float32), prog_bar=True,
                 sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.val_metric is not None and self.val_metric.update_count:
            self._log_metrics(self.val_metric.compute(), "val")
            self.val_metric.reset()

    def on_test_epoch_end(self) -> None:
        if self.test_metric is None or not self.test_metric.update_count:
            return
        metrics = self.test_metric.compute()
        self._log_metrics(metrics, "test")
        self.test_results = {
            "metrics": metrics,
            "predictions": self.test_store.compute() | {"normalizers": list(self.normalizers),
                                                        "subsets": list(self.subsets)},
        }
        self.test_metric.reset()
        self.test_store.reset()
