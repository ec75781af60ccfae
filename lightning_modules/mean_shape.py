"""Mean-shape baseline: predicts the mean training shape (in crop pixels) for every face.

The floor every trained model must clear. There is nothing to fit: when evaluation starts (``validate``,
``test`` or ``predict``), the module averages the landmarks of the datamodule's training crops, un-augmented
(the validation faces are not used), so the mean lives in the same crop frame as the faces it is tested on.
Every process computes the same mean, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from lightning_modules.base import LandmarkModule


class MeanShapeModule(LandmarkModule):
    """Predicts ``mean_shape`` (K, 2), the mean of the training crops' landmarks."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("mean_shape", torch.full((self.layout.num_points, 2), float("nan")))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if torch.isnan(self.mean_shape).any() and datamodule is not None:
            crops = datamodule.training_crops()
            loader = DataLoader(crops, batch_size=64, num_workers=datamodule.num_workers,
                                collate_fn=lambda samples: torch.stack([s["landmarks"] for s in samples]))
            total = sum(batch.double().sum(0) for batch in loader)
            self.mean_shape.copy_(total / len(crops))

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
