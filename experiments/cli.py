"""LightningCLI entry point: ``python -m experiments.cli fit|validate|test|predict --config CONFIG.yaml``.

Configs name the model, datamodule, loggers and callbacks by import path (``class_path``); there is no other
registry. The model's landmark layout and input size are linked to the datamodule's, so a config states them
once. The resolved config is saved beside every run (``config.yaml`` in the run's log folder) and inside its
checkpoints, which load with ``torch.load(weights_only=True)``.

Checkpoints carry what they were trained on (``LandmarkModule.identity``: model class and hyper-parameters,
layout, input size, crop, normalisation, training set, method). A run given ``--ckpt_path`` whose config states
something else is refused with the differing fields, before anything runs; ``--checkpoint_wins=true`` builds the
model, input size, crop and image normalisation from the checkpoint instead, and the record lists what the
checkpoint overrode (``checkpoint.overrides``) and takes its method and training set. Evaluation-time choices
(``LandmarkModule.evaluation_hparams``: the decoder, flip test, ...) stay the command line's. LightningCLI's own
handling of ``ckpt_path`` (the checkpoint's hyper-parameters silently replace the config's) is replaced by this.

``test --save-overlays N`` also draws the first N test faces (prediction and ground truth on the crop) beside the
evaluation record, with its failure gallery (``leaderboard.gallery``); ``predict --save-overlays N`` draws the first N
predicted faces on their original images beside the predicted landmarks (``experiments.writers.LandmarkWriter``).

Before the trainer is built, the annotations of the splits the command reads are parsed, so that a wrong dataset
root or a bad annotation is reported before any logger starts. A run ends by printing where its outputs are
(``experiments.outputs``). Run as a program, data, config and checkpoint errors are one short message
(``experiments.errors``; ``--traceback`` for the trace).
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse.typing import NonNegativeInt
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import experiments  # noqa: F401  (sets WANDB_MODE / NO_ALBUMENTATIONS_UPDATE defaults before the imports below)
from datamodules.base import FaceLandmarkDataModule
from experiments.errors import ConfigError, check_config_files, run_guarded
from experiments.outputs import finish_loggers, print_outputs, run_outputs
from experiments.writers import LandmarkWriter
from leaderboard.callback import EvaluationRecorder
from lightning_modules.base import LandmarkModule
from lightning_modules.training import CheckpointMismatch, read_checkpoint, saved_identity

SUBCOMMANDS = ("fit", "validate", "test", "predict")
DATA_FIELDS = ("crop", "mean", "std")  # data arguments --checkpoint_wins takes from the checkpoint's identity
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")  # ckpt_path values Lightning resolves itself
# cli() hands LightningCLI the command line (less --traceback) on purpose, as the runner and the demo hand it theirs.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
WINS_HINT = ("Give the config it was trained with (config.yaml in its run folder), or pass --checkpoint_wins=true "
             "to build the model, input size, crop and normalisation from the checkpoint (the record says so).")


class FaceAlignmentCLI(LightningCLI):
    checkpoint_path: str | None = None
    checkpoint_identity: dict[str, Any] | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.layout_name", "model.init_args.layout", apply_on="instantiate")
        parser.link_arguments("data.input_size", "model.init_args.input_size", apply_on="instantiate")
        parser.add_argument("--checkpoint_wins", type=bool, default=False,
                            help="where --ckpt_path was trained with another model or data protocol than the config "
                                 "states, build them from the checkpoint (the record lists what it overrode) "
                                 "instead of refusing the run")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        """``test`` and ``predict`` also take ``--save-overlays N``: pictures of their first N faces, beside the
        record (test) or the predicted landmarks (predict)."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":
            parser.add_argument("--save-overlays", type=NonNegativeInt, default=0,
                                help="write the first N test faces (crop, prediction green, ground truth red) as "
                                     "JPEG files beside the evaluation record (<results_dir>/pictures/<record id>/)")
        if subcommand == "predict":
            parser.add_argument("--save-overlays", type=NonNegativeInt, default=0,
                                help="draw the first N predicted faces on their original images, beside the "
                                     "predicted landmarks (<output_dir>/overlays-<time>/)")
        return parser

    def _parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path`` (a missing, damaged or foreign file: one ``CheckpointError`` naming it) and keep its
        identity for :meth:`instantiate_trainer`; the config stays as given."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path or (str(path).split(":")[0] in LIGHTNING_CKPT_NAMES and not Path(path).is_file()):
            return
        self.checkpoint_path = str(path)
        self.checkpoint_identity = saved_identity(read_checkpoint(path, "--ckpt_path"), path)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Before the trainer (and its loggers) start: read the splits' annotations, and compare the checkpoint
        with the model and data the config built (refuse, or rebuild them from the checkpoint)."""
        overrides = None
        if self.subcommand is not None:
            for split in ("test",) if self.subcommand == "predict" else ("train", "test"):
                self.datamodule.source(split)  # parsed now, and kept: setup() reads the same sources
            overrides = self._check_checkpoint()
        trainer = super().instantiate_trainer(**kwargs)
        method = (self.checkpoint_identity or {}).get("method")
        if overrides and method:  # the record is labelled as what was evaluated
            for callback in trainer.callbacks:
                if isinstance(callback, EvaluationRecorder):
                    callback.method = method
        self._pass_save_overlays(trainer)
        return trainer

    def _pass_save_overlays(self, trainer: Trainer) -> None:
        """``--save-overlays N`` goes to the callback that knows where the run's outputs go: the evaluation recorder
        (test) or the landmark writer (predict)."""
        count = self.config[self.subcommand].get("save_overlays", 0) if self.subcommand in ("test", "predict") else 0
        if not count:
            return
        kind = EvaluationRecorder if self.subcommand == "test" else LandmarkWriter
        takers = [cb for cb in trainer.callbacks if isinstance(cb, kind)]
        if not takers:
            raise ConfigError(f"--save-overlays needs the {kind.__module__}.{kind.__name__} callback in "
                              "trainer.callbacks of the config")
        for callback in takers:
            if kind is EvaluationRecorder:
                callback.save_overlays = count
            else:
                callback.overlays = count

    def _check_checkpoint(self) -> dict[str, tuple[Any, Any]] | None:
        """The fields taken from the checkpoint (None: nothing to compare, or nothing differs)."""
        if self.checkpoint_identity is None:
            return None
        stage = self.subcommand
        differences = self.model.checkpoint_differences(self.checkpoint_identity, self.datamodule, stage)
        if not differences:
            return None
        if not self.config[stage].get("checkpoint_wins"):
            raise CheckpointMismatch(self.checkpoint_path, differences, WINS_HINT)
        self._build_from_checkpoint(self.checkpoint_identity)
        self.model.checkpoint_overrides = differences
        print(f"--checkpoint_wins: {len(differences)} field(s) taken from {self.checkpoint_path}: "
              f"{', '.join(differences)}", file=sys.stderr, flush=True)
        return differences

    def _build_from_checkpoint(self, identity: dict[str, Any]) -> None:
        """Rebuild the model and datamodule with the checkpoint's model class and hyper-parameters (the run's
        evaluation-time ones kept), input size, layout (where the datamodule takes one), crop and normalisation."""
        stage, saved = self.subcommand, copy.deepcopy(identity.get("model") or {})
        for name in self.model.evaluation_hparams:  # the run's decoding, flip test, ... stay
            _copy_field(dict(self.model.hparams), saved, name.split("."))
        data_args = {key: saved.pop(key) for key in ("input_size", "layout") if key in saved}  # linked from the data
        if "layout" not in self.config[stage].data.init_args:
            data_args.pop("layout", None)  # the dataset's own: a difference stays listed, and the record says so
        data_args |= {key: value for key, value in (identity.get("data") or {}).items() if key in DATA_FIELDS}
        config = self.config[stage]
        model = {"class_path": identity.get("model_class") or config.model.class_path, "init_args": saved}
        data = {"class_path": config.data.class_path, "init_args": data_args}
        self.config = self.parser.parse_object({stage: {"model": model, "data": data}}, self.config)
        # LightningCLI.instantiate_classes, less the trainer (built next, by instantiate_trainer); the models'
        # hyper-parameters are read from a dump of the config made once, which is stale now
        if hasattr(self, "config_dump"):
            del self.config_dump
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run, then print where the outputs are as the last lines (wandb finished first, empty log folders
        removed even when the run fails)."""
        try:
            super()._run_subcommand(subcommand)
        finally:
            outputs = run_outputs(self.trainer)
            finish_loggers(self.trainer)
        print_outputs(outputs)


def _copy_field(source: dict[str, Any], target: dict[str, Any], path: list[str]) -> None:
    """``target[a][b] = source[a][b]`` for the dotted ``path`` a.b, where both hold it."""
    for key in path[:-1]:
        source, target = source.get(key), target.get(key)
        if not isinstance(source, dict) or not isinstance(target, dict):
            return
    if path[-1] in source and path[-1] in target:
        target[path[-1]] = source[path[-1]]


def main(args: list[str] | None = None, run: bool = True) -> FaceAlignmentCLI:
    """Parse ``args`` (default: the command line), build the model, datamodule and trainer, and run the subcommand
    (``run``). Config errors raise jsonargparse's ``ArgumentError`` (no usage dump); see :func:`cli`."""
    check_config_files(sys.argv[1:] if args is None else args)
    no_exit = {"exit_on_error": False}
    return FaceAlignmentCLI(
        LandmarkModule,
        FaceLandmarkDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        auto_configure_optimizers=False,  # modules take optimizer / lr_scheduler callables as init args
        save_config_kwargs={"overwrite": False},
        parser_kwargs={**no_exit, **{command: no_exit for command in SUBCOMMANDS}},
    )


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.cli``: :func:`main` inside the error boundary (exit status 2 and one message for a
    data, config or checkpoint error)."""
    return run_guarded(lambda args: main(args) and 0, argv, "experiments.cli")


if __name__ == "__main__":
    sys.exit(cli())
