"""Training mechanics that papers share beyond one optimiser: optimiser parts, initial weights, frozen parts.

- :class:`OptimizerPart`: a named group of parameters with its own optimiser, scheduler and number of
  consecutive training batches per cycle. One part is Lightning's automatic optimisation; several parts (PWC's
  detector and shape discriminator, stepped 2 : 1) run under manual optimisation in ``LandmarkModule``.
- :func:`load_initial_weights`: the weights of a checkpoint (a Lightning ``.ckpt`` or a plain state_dict),
  all of them or only named sub-modules (TAB's stage 2 starts from the stage-1 boundary estimator).
- :func:`resolve_submodules`: named sub-modules, with an error listing what exists (frozen parts, ``init_modules``).
- Checkpoint files and identity: :func:`read_checkpoint` (a missing, damaged or foreign file is one
  :class:`CheckpointError` naming it), :func:`data_identity` / :func:`saved_identity` (what a checkpoint was
  trained on: ``LandmarkModule.identity``) and :func:`identity_differences` (why a checkpoint does not fit a run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]
Interval = Literal["epoch", "step"]


@dataclass
class OptimizerPart:
    """Parameters optimised together.

    Attributes:
        name: the part's name, used in logged keys (``train/<name>/loss``) and errors.
        parameters: its trainable parameters (disjoint from every other part's).
        optimizer: builds the optimiser from the parameters.
        scheduler: builds the learning-rate scheduler from the optimiser, or None.
        interval: the scheduler steps once per "epoch", or after each of this part's optimiser "step"s.
        steps: consecutive training batches this part takes in each cycle (manual optimisation); PWC: the
            discriminator 1, then the detector 2, each on a fresh batch.
    """

    name: str
    parameters: list[nn.Parameter]
    optimizer: OptimizerCallable
    scheduler: LRSchedulerCallable | None = None
    interval: Interval = "epoch"
    steps: int = 1

    def __post_init__(self) -> None:
        if self.interval not in ("epoch", "step"):
            raise ValueError(f"part {self.name!r}: scheduler interval must be 'epoch' or 'step', got {self.interval!r}")
        if self.steps < 1:
            raise ValueError(f"part {self.name!r}: steps must be >= 1, got {self.steps}")
        if not self.parameters:
            raise ValueError(f"part {self.name!r} has no trainable parameters (all frozen?)")


def check_parts(parts: Sequence[OptimizerPart]) -> None:
    """Names unique, parameter sets disjoint."""
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"optimizer part names must be unique, got {names}")
    seen: dict[int, str] = {}
    for part in parts:
        for param in part.parameters:
            if id(param) in seen:
                raise ValueError(f"a parameter is in both optimizer parts {seen[id(param)]!r} and {part.name!r}")
            seen[id(param)] = part.name


def cycle_of(parts: Sequence[OptimizerPart]) -> list[int]:
    """Part index of each batch position in one cycle: parts in order, each repeated ``steps`` times."""
    return [i for i, part in enumerate(parts) for _ in range(part.steps)]


def resolve_submodules(model: nn.Module, names: Iterable[str], what: str) -> dict[str, nn.Module]:
    """``{name: model.get_submodule(name)}``; an unknown name is an error listing the model's sub-modules."""
    found = {}
    for name in names:
        try:
            found[name] = model.get_submodule(name)
        except AttributeError:
            children = [n for n, _ in model.named_children()]
            raise ValueError(f"{what}: the model has no sub-module {name!r}; its top-level ones are {children} "
                             "(nested ones as 'parent.child')") from None
    return found


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, foreign, or trained on something other than what the
    run states. The message names the file and what to do; the command-line entry points print it without a
    traceback (``experiments.errors``)."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(message)


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """No file at a checkpoint path."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint trained with other settings than the run states; ``differences``: field -> (checkpoint's
    value, the run's value)."""

    def __init__(self, path: str | Path, differences: Mapping[str, tuple[Any, Any]], remedy: str,
                 limit: int = 12) -> None:
        self.differences = dict(differences)
        rows = [f"  {key}: checkpoint {saved!r}, this run {current!r}"
                for key, (saved, current) in list(differences.items())[:limit]]
        if len(differences) > limit:
            rows.append(f"  ... and {len(differences) - limit} more")
        super().__init__(path, "\n".join([f"{path}: the checkpoint was trained with other settings than this run "
                                          f"states ({len(differences)} field(s)):", *rows, remedy]))


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The content of a checkpoint file, read with ``weights_only=True`` (never unpickling code). A missing file,
    a damaged one (truncated, not a torch file) or one that holds no dict is one :class:`CheckpointError` naming
    ``what`` and the file, instead of torch's traceback."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpoint(path, f"{what}: no checkpoint file {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged or unsafe files
        detail = (str(error).splitlines() or [""])[0].split(". ")[0][:160]  # torch's first sentence
        raise CheckpointError(path, f"{what}: cannot read {path} as a torch checkpoint: damaged (truncated?) or "
                                    f"not a checkpoint ({type(error).__name__}: {detail})") from error
    if not isinstance(content, dict):
        raise CheckpointError(path, f"{what}: {path} holds a {type(content).__name__}, not a checkpoint")
    return content


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in a Lightning checkpoint (``state_dict``) or a plain saved state_dict, read with
    ``weights_only=True``; a missing, damaged or foreign file is one clear error naming it."""
    content = read_checkpoint(path, "init_from")
    state = content.get("state_dict", content)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, f"init_from: {path} holds no state_dict (a Lightning checkpoint or a saved "
                                    "state_dict)")
    return state


IDENTITY = "identity"  # the checkpoint entry LandmarkModule.on_save_checkpoint writes


def data_identity(datamodule: Any, train_set: bool = True) -> dict[str, Any]:
    """The data half of a checkpoint's identity: the datamodule class (``dataset``), the crop protocol, the image
    normalisation and (``train_set``) the training split's name, face count and annotation options. The layout and
    the input size are model hyper-parameters (linked to the datamodule's), so they are in the model half."""
    identity = {"dataset": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
                "crop": asdict(datamodule.crop), "mean": [float(v) for v in datamodule.mean],
                "std": [float(v) for v in datamodule.std]}
    if train_set:
        train = datamodule.source("train")
        identity["train_set"] = {"name": train.name, "faces": len(train), "annotation": dict(train.protocol)}
    return identity


def saved_identity(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """What ``checkpoint`` says it was trained on: its ``identity``, or for a checkpoint written before
    identities, its model hyper-parameters (layout and input size among them). A file that is no Lightning
    checkpoint (a bare state_dict, another program's dict) is a :class:`CheckpointError`."""
    if isinstance(checkpoint.get(IDENTITY), dict):
        return dict(checkpoint[IDENTITY])
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(path, f"{path} is not a Lightning checkpoint (no 'state_dict' entry; it has "
                                    f"{sorted(map(str, checkpoint))[:8]}): give a .ckpt written by a fit")
    hparams = checkpoint.get("hyper_parameters")
    return {"model": dict(hparams)} if isinstance(hparams, Mapping) else {}


def identity_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                         free: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, current value)}`` for the dotted fields (``model.codec.stride``) both identities
    state with different values; fields under a ``free`` prefix are not compared, nor are fields only one side
    states (a checkpoint from an older version of the code, a run without a datamodule)."""
    ours, theirs, free = _flatten(saved), _flatten(current), tuple(free)
    return {key: (value, theirs[key]) for key, value in ours.items()
            if key in theirs and value != theirs[key] and not any(key == f or key.startswith(f"{f}.") for f in free)}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def load_initial_weights(model: nn.Module, path: str | Path, modules: Sequence[str] | None = None) -> list[str]:
    """Copy the weights of the checkpoint at ``path`` into ``model``: every entry (``modules=None``), or only
    those of the named sub-modules (e.g. ``["scbe"]``). The selected keys must match exactly, in names and
    shapes, so a checkpoint of another architecture is refused with the differences. Returns the keys loaded.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    if modules:
        resolve_submodules(model, modules, "init_modules")
        prefixes = tuple(f"{m}." for m in modules)
        own = {k: v for k, v in own.items() if k.startswith(prefixes)}
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        scope = f"sub-modules {list(modules)}" if modules else "the model"
        details = [f"missing in the checkpoint: {_few(missing)}" if missing else "",
                   f"not in {scope}: {_few(unexpected)}" if unexpected else "",
                   f"shape differences: {_few(shapes)}" if shapes else ""]
        raise ValueError(f"init_from: {path} does not fit {scope}; " + "; ".join(d for d in details if d))
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)
    return sorted(state)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")
