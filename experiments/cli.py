"""LightningCLI entry point: ``python -m experiments.cli fit|validate|test|predict --config CONFIG.yaml``.

Configs name the model, datamodule, loggers and callbacks by import path (``class_path``); there is no other
registry. The model's landmark layout and input size are linked to the datamodule's, so a config states them
once. The resolved config is saved beside every run (``config.yaml`` in the run's log folder) and inside its
checkpoints, which load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import experiments  # noqa: F401  (sets WANDB_MODE / NO_ALBUMENTATIONS_UPDATE defaults before the imports below)
from datamodules.base import FaceLandmarkDataModule
from lightning_modules.base import LandmarkModule


class FaceAlignmentCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.layout_name", "model.init_args.layout", apply_on="instantiate")
        parser.link_arguments("data.input_size", "model.init_args.input_size", apply_on="instantiate")


def main(args: list[str] | None = None, run: bool = True) -> FaceAlignmentCLI:
    return FaceAlignmentCLI(
        LandmarkModule,
        FaceLandmarkDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        auto_configure_optimizers=False,  # modules take optimizer / lr_scheduler callables as init args
        save_config_kwargs={"overwrite": False},
    )


if __name__ == "__main__":
    main()
