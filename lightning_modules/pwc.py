"""The PWC paper's suite: regression vs heatmap approaches on one backbone, pixel-wise classification, the hybrid
loss and the shape discriminator (paper 002, "A detailed look at CNN-based approaches in facial landmark
detection"; IMPLEMENTATION_NOTES §3; official TF code chihfanhsu/fl_detection).

Every model of Table 2 is a value of :class:`PWCModule` (``experiments/pwc/``):

==================  =====================  ==============================================  =========================
row                 ``approach``           network (``components.pwc_nets``, ``.dan``)     loss (``pixelwise``)
==================  =====================  ==============================================  =========================
Direct              direct                 backbone + FC 1024-256-136 (178,682,440)        mean Euclidean (eq. 1)
Cascaded (DAN)      cascaded               Kowalski's 3-stage DAN at 112 px (35,053,144)   eq. 1 on the last stage
Dist.               distribution           detector, 68 maps (82,871,880)                  KL to sigma-3 Gaussians
Heat. reg.          heatmap                detector, 69 maps (82,947,658)                  L2 with a background map
PWC                 pwc                    detector, 69 classes                            pixel-wise CE (eq. 2)
hybrid              hybrid                 detector, 69 classes                            eq. 2 + 0.25 eq. 1 (eq. 3)
PWC+disc            pwc, discriminator     + ShapeDiscriminator (34,689)                   + adversarial term
hybrid+disc         hybrid, discriminator  + ShapeDiscriminator                            + adversarial term
==================  =====================  ==============================================  =========================

With the discriminator, training alternates 1 discriminator step and 2 detector steps, each on a fresh batch
(``LandmarkModule``'s optimiser parts under manual optimisation). Decoding: the integer argmax of each landmark's
class-probability map (the code's; regression models output coordinates). The validation loss (``val/loss``, the
training loss on the validation faces) selects the checkpoint, as the paper's early stopping does.

Departures (IMPLEMENTATION_NOTES §3, §7.4):

- The coordinate term of the hybrid loss and the adversarial term go through a differentiable soft-argmax
  (``landmarks.pixelwise.soft_argmax``), so that they train the detector as the paper intends; the official code
  feeds them argmax coordinates, which carry no gradient, and minimises the negative of the discriminator's
  objective. ``official=True`` reproduces both exactly (the terms' values only, the sign-flipped discriminator);
  the manifest runs both.
- Checkpoint selection and early stopping use a validation split carved from the training faces (5 %): the
  paper's "validation" sets are its test sets (Table 1), and this suite never selects on a test set.
- The discriminator judges real and predicted shapes in one batch (:meth:`PWCModule.judge`), so that its
  BatchNorm sees both; the code calls it once per kind, and each call's batch statistics hide what differs
  between the kinds (``tests/test_pwc.py``: on a toy problem it stays at chance that way).
- Heatmap regression: the height of the code's Gaussian targets is unknown; peak-1 Gaussians are the default, from
  a measurement (``heatmap_height``: sum-normalised ones do not train on the synthetic stand-in).
- Inputs are the datamodule's crops in [0, 1] (``mean: [0, 0, 0]``, ``std: [1, 1, 1]`` in the configs; the
  networks average RGB to grey as the code does). DAN sees them resized to 112 px (nearest, the code's) and its
  coordinates are mapped back to the 224 crop; it starts from the training faces' mean shape.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from landmarks.heatmaps import argmax_2d
from landmarks.pixelwise import (
    adversarial_loss,
    argmax_coordinates,
    coordinate_loss,
    discriminator_loss,
    distribution_loss,
    heatmap_l2_loss,
    hybrid_loss,
    pixel_labels,
    pwc_loss,
    soft_argmax,
)
from lightning_modules.base import LandmarkModule
from lightning_modules.components.dan import DAN
from lightning_modules.components.pwc_nets import DirectRegression, PWCDetector, ShapeDiscriminator
from lightning_modules.training import OptimizerPart

Approach = Literal["direct", "cascaded", "distribution", "heatmap", "pwc", "hybrid"]
APPROACHES = ("direct", "cascaded", "distribution", "heatmap", "pwc", "hybrid")
CLASSIFIERS = ("pwc", "hybrid")  # the per-pixel classifiers a shape discriminator can follow (Table 2)


class PWCModule(LandmarkModule):
    """One model of the PWC paper's Table 2 (module docstring).

    Args:
        approach: "direct", "cascaded" (DAN), "distribution", "heatmap", "pwc" or "hybrid".
        discriminator: add the shape discriminator (PWC+disc, hybrid+disc).
        beta: weight of the coordinate term of the hybrid loss (0.25).
        sigma: standard deviation of the distribution and heatmap-regression targets, pixels (3).
        heatmap_height: the heatmap-regression targets' Gaussians: "peak" (peak 1, the default) or "sum"
            (normalised to sum 1, the paper's "distribution"); the code's are unknown
            (``landmarks.pixelwise.heatmap_targets``). Measured on the synthetic 300W stand-in (one training each):
            "sum" leaves targets of at most 0.018, the model predicts background everywhere and ends at 93.4 % NME
            by face size; "peak" reaches 6.9 %.
        official: the official code's behaviour: argmax coordinates without gradient in the hybrid and adversarial
            terms, the sign-flipped discriminator objective.
        width: channels of the backbone's first stage (64; smaller only for CPU stand-ins).
        dan_input, dan_stages: DAN's input side (112) and stages (3).
        detector_steps, discriminator_steps: consecutive batches per cycle of each (2 and 1, the code's).
        **kwargs: LandmarkModule arguments (layout, input_size, optimizer, ...).
    """

    uses_mean_shape = True  # DAN's initial shape (a buffer the other approaches carry unused)

    def __init__(
        self,
        approach: Approach = "hybrid",
        discriminator: bool = False,
        beta: float = 0.25,
        sigma: float = 3.0,
        heatmap_height: Literal["sum", "peak"] = "peak",
        official: bool = False,
        width: int = 64,
        dan_input: int = 112,
        dan_stages: int = 3,
        detector_steps: int = 2,
        discriminator_steps: int = 1,
        **kwargs,
    ) -> None:
        if approach not in APPROACHES:
            raise ValueError(f"approach must be one of {APPROACHES}, got {approach!r}")
        if discriminator and approach not in CLASSIFIERS:
            raise ValueError(f"the shape discriminator follows a pixel-wise classifier {CLASSIFIERS}, not "
                             f"{approach!r} (Table 2)")
        super().__init__(**kwargs)
        k = self.layout.num_points
        self.approach, self.beta, self.sigma, self.official = approach, beta, sigma, official
        self.heatmap_height = heatmap_height
        self.dan_input = dan_input
        if approach == "direct":
            self.net: nn.Module = DirectRegression(k, width=width, input_size=self.input_size)
        elif approach == "cascaded":
            self.net = DAN(k, dan_stages, dan_input)
        else:
            self.net = PWCDetector(k if approach == "distribution" else k + 1, width=width)
        self.discriminator = ShapeDiscriminator(k) if discriminator else None
        self.steps = {"detector": detector_steps, "discriminator": discriminator_steps}
        if discriminator:
            self.automatic_optimization = False
        self.val_loss = MeanMetric()

    # --- network ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, C, S, S) of the detectors, (B, K, 2) crop-pixel points of direct regression, every DAN
        stage's (B, K, 2) points in the 112 px input."""
        if self.approach != "cascaded":
            return self.net(images)
        small = F.interpolate(images, size=(self.dan_input, self.dan_input), mode="nearest")
        return self.net(small, self.mean_shape * (self.dan_input / self.input_size))

    def decode(self, outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if self.approach == "direct":
            return outputs.float()
        if self.approach == "cascaded":
            return outputs[-1].float() * (self.input_size / self.dan_input)
        if self.approach == "distribution":  # K spatial distributions, no background: each map's own argmax
            return argmax_2d(outputs.detach().float()).float()
        return argmax_coordinates(outputs.float()).float()

    def coordinates(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) coordinates of a classifier's logits for the coordinate and adversarial terms: soft-argmax
        (differentiable), or the argmax (no gradient) with ``official``."""
        return argmax_coordinates(logits).float() if self.official else soft_argmax(logits)

    # --- losses -------------------------------------------------------------------------------------------
    def training_loss(self, outputs: torch.Tensor | list[torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        """The detector's loss terms (with the adversarial term when a discriminator is present)."""
        points = batch["landmarks"].float()
        if self.approach == "direct":
            loss = coordinate_loss(outputs.float(), points)
            return {"loss": loss, "coordinate": loss}
        if self.approach == "cascaded":
            loss = coordinate_loss(self.decode(outputs), points)  # eq. 1 on the last stage, in crop pixels
            return {"loss": loss, "coordinate": loss}
        logits = outputs.float()
        if self.approach == "distribution":
            loss = distribution_loss(logits, points, self.sigma)
            return {"loss": loss, "distribution": loss}
        if self.approach == "heatmap":
            loss = heatmap_l2_loss(logits, points, self.sigma, height=self.heatmap_height)
            return {"loss": loss, "heatmap": loss}
        labels = pixel_labels(points, logits.shape[-2:])
        if self.approach == "hybrid":
            terms = hybrid_loss(logits, labels, points, self.beta, self.official)
            predicted = terms.pop("points")
        else:
            terms = {"loss": pwc_loss(logits, labels)}
            terms["pwc"] = terms["loss"]
            predicted = self.coordinates(logits) if self.discriminator is not None else None
        if self.discriminator is not None:
            terms["adversarial"] = adversarial_loss(self.judge(points, predicted)[1])
            terms["loss"] = terms["loss"] + terms["adversarial"]
        return terms

    def optimizer_parts(self) -> list[OptimizerPart]:
        if self.discriminator is None:
            return super().optimizer_parts()
        detector = [p for p in self.net.parameters() if p.requires_grad]
        critic = [p for p in self.discriminator.parameters() if p.requires_grad]
        return [OptimizerPart("discriminator", critic, self.optimizer_factory, steps=self.steps["discriminator"]),
                OptimizerPart("detector", detector, self.optimizer_factory, self.scheduler_factory,
                              self.scheduler_interval, steps=self.steps["detector"])]

    def training_terms(self, batch: dict, part: str) -> dict[str, torch.Tensor]:
        if part != "discriminator":
            return self.training_loss(self(self.prepare_images(batch["image"])), batch)
        with torch.no_grad():  # the detector's forward needs no graph in the discriminator's step
            fake = self.coordinates(self(self.prepare_images(batch["image"])).float())
        return {"loss": discriminator_loss(*self.judge(batch["landmarks"].float(), fake), self.official)}

    def judge(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits of (B, K, 2) real and predicted shapes, from ONE batch of both: its
        BatchNorm then normalises real and fake shapes with the same statistics. Two calls (the code's) normalise
        each batch by its own mean and variance, which removes exactly the offsets that tell them apart: on a toy
        problem (real = a mean shape with noise, fake = uniform points) D then stays at chance."""
        logits = self.discriminator(torch.cat([real, fake]))
        return logits[:len(real)], logits[len(real):]

    # --- validation loss (early stopping and checkpoint selection) ----------------------------------------
    def update_diagnostics(self, outputs: torch.Tensor | list[torch.Tensor], batch: dict, stage: str) -> None:
        if stage == "val":
            self.val_loss.update(self.training_loss(outputs, batch)["loss"].detach(), len(batch["image"]))

    def compute_diagnostics(self, stage: str) -> dict[str, float]:
        if stage != "val" or not self.val_loss.update_count:
            return {}
        loss = float(self.val_loss.compute())
        self.val_loss.reset()
        return {"loss": loss}
