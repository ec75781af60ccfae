"""LandmarkModule: what every face-alignment model shares, heatmap-based or not.

A paper's module implements three things: ``forward(images)`` (network outputs), ``training_loss(outputs,
batch)`` and ``decode(outputs)`` (landmarks in crop pixels). This base owns the rest: validation and test
metrics under every normaliser and subset (exact under DDP), per-subset logging, optional flip testing,
``predict_step`` in original-image coordinates, the per-image test predictions behind evaluation records,
and optimiser / scheduler set-up (dependency-injected, so configs choose them by class path).

Training beyond one optimiser (``lightning_modules.training``):

- **Several optimisers** (a generator and a discriminator): override :meth:`optimizer_parts` to return one
  ``OptimizerPart`` per optimiser, set ``self.automatic_optimization = False`` and override
  :meth:`training_terms` to compute each part's loss. The base steps the parts in turn (each ``steps``
  consecutive batches per cycle), only the current part's parameters receive gradients, and schedulers step
  per epoch (after validation, so ``ReduceLROnPlateau`` sees it) or after each of their part's steps.
- **Initial weights and frozen parts**: ``init_from`` (a checkpoint; ``init_modules`` limits it to named
  sub-modules) is loaded when a fit starts (a resumed fit then restores its own state over it); ``freeze``
  names sub-modules that get no gradients, are left out of every optimiser and keep BatchNorm in eval mode.
- **The mean shape**: a module with ``uses_mean_shape = True`` gets a ``mean_shape`` buffer (K, 2), the
  training faces' mean in crop pixels (``datamodule.mean_shape()``), filled at set-up and saved in
  checkpoints (the mean-shape baseline; GlomFace's and DAN's initial shapes).

Checkpoints carry what they were trained on (:meth:`LandmarkModule.identity`: model class, hyper-parameters,
crop, normalisation, training set; the evaluation recorder adds the method's name), and a checkpoint whose
identity differs from the run that loads it (a test, validation, prediction or resumed fit with another config)
is refused with the differing fields before its weights are loaded, instead of testing at the wrong input size
or labelling the result with the wrong model. Evaluation-time choices (``evaluation_hparams``) may differ.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, is_dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from landmarks.geometry import apply_affine, invert_affine, matrix_scale
from landmarks.layouts import LandmarkLayout, get_layout
from landmarks.metrics import DEFAULT_THRESHOLDS, FULL, NMEMetric, PredictionStore
from lightning_modules.training import (
    IDENTITY,
    CheckpointMismatch,
    Interval,
    LRSchedulerCallable,
    OptimizerCallable,
    OptimizerPart,
    check_parts,
    cycle_of,
    data_identity,
    identity_differences,
    load_initial_weights,
    resolve_submodules,
    saved_identity,
)

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
        lr_scheduler: callable building a scheduler from the optimiser, or None.
        lr_scheduler_interval: step the scheduler once per "epoch" or after every optimiser "step".
        thresholds: NME thresholds of FR and AUC.
        init_from: checkpoint whose weights initialise the model when a fit starts (None: fresh weights).
        init_modules: load only these sub-modules from ``init_from`` (None: the whole model).
        freeze: sub-modules (e.g. ``["net.stem"]``) left untrained: no gradients, out of the optimisers,
            BatchNorm statistics frozen.
    """

    uses_mean_shape: bool = False  # True: a ``mean_shape`` buffer filled from the datamodule at set-up
    # Hyper-parameters a checkpoint may be used with other values of (a test, validation or prediction; the
    # manifests' test_args): how the trained network is run and scored -- a HeatmapCodec's decoding (decoder, SDT
    # window, reading, frame, fallback distance), flip test, memory order, the FR / AUC thresholds -- and how its
    # training started (initial weights, frozen parts, scheduler interval). Every other hyper-parameter defines
    # the trained model: a checkpoint used with another value is refused. A paper adds its own test-time switches.
    evaluation_hparams: ClassVar[tuple[str, ...]] = (
        "codec.decoder", "codec.window", "codec.sdt_reading", "codec.sdt_frame", "codec.max_offset",
        "flip_test", "channels_last", "thresholds", "init_from", "init_modules", "freeze", "lr_scheduler_interval")

    def __init__(
        self,
        layout: str,
        input_size: int = 256,
        flip_test: bool = False,
        channels_last: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Interval = "epoch",
        thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
        init_from: str | None = None,
        init_modules: list[str] | None = None,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        # The callables are rebuilt from the config when training resumes; keeping them out of the checkpoint
        # keeps it loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self._plain_hyperparameters()
        self.layout: LandmarkLayout = get_layout(layout)
        self.input_size = input_size
        self.flip_test = flip_test
        self.channels_last = channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}")
        self.scheduler_interval = lr_scheduler_interval
        self.init_from, self.init_modules = init_from, list(init_modules) if init_modules else None
        self.frozen_names = list(freeze or [])
        self._initialised_from: str | None = None
        self._manual: list[tuple[OptimizerPart, Any]] = []  # (part, scheduler) under manual optimisation
        if self.uses_mean_shape:
            self.register_buffer("mean_shape", torch.full((self.layout.num_points, 2), float("nan")))
        self.thresholds = tuple(thresholds)
        self.example_input_array = torch.zeros(1, 3, input_size, input_size)
        self.subsets: tuple[str, ...] = ()
        self.primary_normalizer = "inter_ocular"
        self.test_results: dict[str, Any] | None = None
        # Set by the CLI's --checkpoint_wins: the fields it took from the checkpoint, {field: (checkpoint's, config's)}
        self.checkpoint_overrides: dict[str, tuple[Any, Any]] | None = None

    # --- what a paper implements (with ``forward(images)``) ------------------------------------------------
    @abc.abstractmethod
    def training_loss(self, outputs: Any, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss (or a dict of named terms with the total under "loss") for a training batch."""

    @abc.abstractmethod
    def decode(self, outputs: Any) -> torch.Tensor:
        """Network outputs → (B, K, 2) landmarks in crop pixels."""

    def training_terms(self, batch: dict, part: str) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss (or named terms with the total under "loss") of ``part`` on a training batch. One part:
        ``training_loss(forward(images), batch)``; modules with several parts override this."""
        return self.training_loss(self(self.prepare_images(batch["image"])), batch)

    def optimizer_parts(self) -> list[OptimizerPart]:
        """The optimised parameter groups: by default one part, every trainable (not frozen) parameter, with
        the configured optimiser and scheduler."""
        return [OptimizerPart("model", self.trainable_parameters(), self.optimizer_factory, self.scheduler_factory,
                              self.scheduler_interval)]

    def trainable_parameters(self, module: nn.Module | None = None) -> list[nn.Parameter]:
        """Parameters of ``module`` (default: the whole model) that are not frozen."""
        return [p for p in (module or self).parameters() if p.requires_grad]

    # --- set-up --------------------------------------------------------------------------------------------
    def _plain_hyperparameters(self) -> None:
        """Hyper-parameters as plain data (checkpoints load with weights_only=True): dataclasses become dicts,
        private constructor arguments (a paper's network parts, passed by its module) are dropped."""
        for hparams in (self._hparams, self._hparams_initial):
            for key in [k for k in hparams if k.startswith("_")]:
                del hparams[key]
            for key, value in hparams.items():
                if is_dataclass(value) and not isinstance(value, type):
                    hparams[key] = asdict(value)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.subsets = tuple(datamodule.subset_names)
            self.primary_normalizer = datamodule.primary_normalizer
            if datamodule.layout != self.layout:
                raise ValueError(f"the model predicts {self.layout.name}, the data is {datamodule.layout.name}")
            if self.uses_mean_shape and torch.isnan(self.mean_shape).any():
                self.mean_shape.copy_(datamodule.mean_shape().to(self.mean_shape))
        if stage == "fit" and self.init_from and self._initialised_from != self.init_from:
            load_initial_weights(self, self.init_from, self.init_modules)  # a resumed fit restores over this
            self._initialised_from = self.init_from
        self.frozen_modules()  # checks the names and turns their gradients off
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

    def frozen_modules(self) -> dict[str, nn.Module]:
        """The ``freeze`` sub-modules, with their parameters' gradients turned off."""
        frozen = resolve_submodules(self, self.frozen_names, "freeze")
        for module in frozen.values():
            module.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> LandmarkModule:
        """Train mode everywhere but in frozen sub-modules, whose BatchNorm statistics must not move."""
        super().train(mode)
        if mode and getattr(self, "frozen_names", None):
            for module in self.frozen_modules().values():
                module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Lightning does not call ``train()`` when a fit starts (its loops save and restore each sub-module's
        mode), so the frozen sub-modules are put in eval mode here."""
        if self.frozen_names:
            self.train()

    def configure_optimizers(self) -> Any:
        parts = self.optimizer_parts()
        check_parts(parts)
        if len(parts) > 1 and self.automatic_optimization:
            raise RuntimeError(f"{type(self).__name__} has {len(parts)} optimizer parts: set "
                               "self.automatic_optimization = False in its __init__")
        configs, self._manual = [], []
        for part in parts:
            optimizer = part.optimizer(part.parameters)
            scheduler = part.scheduler(optimizer) if part.scheduler is not None else None
            self._manual.append((part, scheduler))
            config: dict[str, Any] = {"optimizer": optimizer}
            if scheduler is not None:
                config["lr_scheduler"] = {"scheduler": scheduler, "interval": part.interval}
                if isinstance(scheduler, ReduceLROnPlateau):
                    config["lr_scheduler"]["monitor"] = MONITOR
            configs.append(config)
        if len(configs) == 1:
            return configs[0] if "lr_scheduler" in configs[0] else configs[0]["optimizer"]
        return configs

    # --- checkpoint identity ------------------------------------------------------------------------------
    def identity(self, datamodule: pl.LightningDataModule | None = None, train_set: bool = True) -> dict[str, Any]:
        """What a checkpoint of this model records about it (``checkpoint["identity"]``): the model class, its
        hyper-parameters (layout and input size among them) and the data protocol of ``datamodule``
        (``training.data_identity``; ``train_set=False`` leaves the training split out, for predictions)."""
        return {"model_class": f"{type(self).__module__}.{type(self).__qualname__}", "model": dict(self.hparams),
                "data": None if datamodule is None else data_identity(datamodule, train_set)}

    def checkpoint_differences(self, saved: dict[str, Any], datamodule: pl.LightningDataModule | None,
                               stage: str) -> dict[str, tuple[Any, Any]]:
        """Fields whose value in a checkpoint's identity (``saved``) differs from this model's and ``datamodule``'s
        for a ``stage`` run: ``{field: (checkpoint's, this run's)}``. Not compared: evaluation-time
        hyper-parameters, the method's name, the datamodule class (models are tested on other datasets by design),
        the training split's annotation options (recorded; some also choose the test split's faces, e.g. AFLW's
        frontal definition), the box behind the bbox normaliser (how a test set is scored, not what the model saw;
        e.g. COFW-68's published boxes) and, in a prediction, the training split."""
        current = self.identity(datamodule, train_set=stage != "predict")
        free = ("method", "data.dataset", "data.train_set.annotation", "data.crop.bbox_norm_source",
                *(f"model.{name}" for name in self.evaluation_hparams))
        return identity_differences(saved, current, free)

    def _datamodule(self) -> pl.LightningDataModule | None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return datamodule if hasattr(datamodule, "source") else None  # a face datamodule (FaceLandmarkDataModule)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write the identity (callbacks may have added to it first: the evaluation recorder's method name)."""
        checkpoint[IDENTITY] = {**checkpoint.get(IDENTITY, {}), **self.identity(self._datamodule())}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, before its weights are loaded, a checkpoint trained on something else than this run states,
        unless ``checkpoint_overrides`` is set (the CLI's ``--checkpoint_wins`` rebuilt the model from it).
        ``load_from_checkpoint`` (no trainer) builds the model from the checkpoint itself: nothing to compare."""
        if self._trainer is None:
            return
        path = self.trainer.ckpt_path
        differences = self.checkpoint_differences(saved_identity(checkpoint, path), self._datamodule(),
                                                  self.trainer.state.fn)
        if differences and self.checkpoint_overrides is None:
            raise CheckpointMismatch(path, differences, "Use it with the configuration it was trained with (the "
                                                        "config.yaml of its run).")

    # --- prediction ---------------------------------------------------------------------------------------
    def predict_landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised crops → (B, K, 2) landmarks in crop pixels (flip-averaged if enabled)."""
        images = self.prepare_images(images)
        outputs = self(images)
        self._outputs = outputs  # the un-mirrored outputs, for update_diagnostics in an evaluation step
        pred = self.decode(outputs)
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
        if not self.automatic_optimization:
            return self._manual_step(batch, batch_idx)
        loss = self.training_terms(batch, "model")
        terms = loss if isinstance(loss, dict) else {"loss": loss}
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=True,
                      batch_size=len(batch["image"]))
        return terms["loss"]

    def _manual_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One batch for the part whose turn it is: its loss, backward, optimiser step, step-wise scheduler."""
        index = cycle_of([part for part, _ in self._manual])[batch_idx % sum(p.steps for p, _ in self._manual)]
        part, scheduler = self._manual[index]
        optimizers = self.optimizers()
        optimizer = optimizers[index] if isinstance(optimizers, list) else optimizers
        self.toggle_optimizer(optimizer)  # gradients only for this part's parameters
        loss = self.training_terms(batch, part.name)
        terms = loss if isinstance(loss, dict) else {"loss": loss}
        optimizer.zero_grad()
        self.manual_backward(terms["loss"])
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        if scheduler is not None and part.interval == "step":
            scheduler.step()
        self.log_dict({f"train/{part.name}/{k}": v.detach() for k, v in terms.items()}, prog_bar=True,
                      batch_size=len(batch["image"]))
        return terms["loss"].detach()

    def on_train_epoch_end(self) -> None:
        """Under manual optimisation Lightning steps no scheduler: step the per-epoch ones here (this hook runs
        after the epoch's validation, so a plateau scheduler sees its metric)."""
        if self.automatic_optimization:
            return
        for part, scheduler in self._manual:
            if scheduler is None or part.interval != "epoch":
                continue
            if isinstance(scheduler, ReduceLROnPlateau):
                if MONITOR not in self.trainer.callback_metrics:
                    raise RuntimeError(f"part {part.name!r}: ReduceLROnPlateau needs {MONITOR}, which was not "
                                       "logged this epoch (no validation?)")
                scheduler.step(self.trainer.callback_metrics[MONITOR])
            else:
                scheduler.step()

    def update_diagnostics(self, outputs: Any, batch: dict, stage: str) -> None:
        """Model-specific quantities of an evaluation batch (e.g. how a decoder fared); none in the base."""

    def compute_diagnostics(self, stage: str) -> dict[str, float]:
        """The stage's diagnostics, gathered over processes and reset (logged, and kept in test records)."""
        return {}

    def _evaluate(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict, update the stage's metric; returns the predictions and the subset mask."""
        self._outputs = None
        pred = self.predict_landmarks(batch["image"])
        outputs, self._outputs = self._outputs, None
        if outputs is not None:  # None: a subclass predicts without the network (an oracle in the tests)
            self.update_diagnostics(outputs, batch, stage)
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

    def _log_diagnostics(self, stage: str) -> dict[str, float]:
        diagnostics = self.compute_diagnostics(stage)
        if diagnostics:
            self.log_dict({f"{stage}/{k}": torch.tensor(v, dtype=torch.float32) for k, v in diagnostics.items()},
                          sync_dist=True)
        return diagnostics

    def on_validation_epoch_end(self) -> None:
        if self.val_metric is not None and self.val_metric.update_count:
            self._log_metrics(self.val_metric.compute(), "val")
            self.val_metric.reset()
        self._log_diagnostics("val")

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
        diagnostics = self._log_diagnostics("test")
        if diagnostics:
            self.test_results["diagnostics"] = diagnostics
        self.test_metric.reset()
        self.test_store.reset()
