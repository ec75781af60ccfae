"""Mean-shape baseline: predicts the mean training shape (in crop pixels) for every face.

The floor every trained model must clear. There is nothing to fit: when evaluation starts (``validate``,
``test`` or ``predict``), the base fills the ``mean_shape`` buffer from ``datamodule.mean_shape()``, the mean of
the un-augmented training crops' landmarks (the validation faces are not used), so the mean lives in the same
crop frame as the faces it is tested on. Every process computes the same mean, so the result does not depend on
the number of processes; the buffer is saved with the module.
"""

from __future__ import annotations

import torch

from lightning_modules.base import LandmarkModule


class MeanShapeModule(LandmarkModule):
    """Predicts ``mean_shape`` (K, 2), the mean of the training crops' landmarks."""

    uses_mean_shape = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.mean_shape).any():
            raise RuntimeError("the mean shape is unknown: evaluate through a datamodule with training faces")
        return self.mean_shape.expand(len(images), -1, -1)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def training_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        raise RuntimeError("the mean-shape baseline has nothing to fit: run `test` (or `validate`) directly")

    def configure_optimizers(self) -> None:
        return None
