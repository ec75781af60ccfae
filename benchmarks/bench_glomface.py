"""GlomFace benchmark (paper 000, issue 18 "Speed"), a ``make bench`` section: one training step of the cascade,
the share of it that patch extraction takes, and where an iteration's forward goes.

Four 35,840 x 1,024 fully connected layers of the WHM hold 146.8 M of the 161.3 M parameters; the patch CNN (run on
all K patches) and the PHM's non-local blocks hold almost none but do much of the arithmetic. Measured, on the CPU,
for 68 points, 224 px crops, 40 px patches, T = 4 iterations (the paper's model, ``experiments/glomface``):

* one training step as Lightning runs it (``bench_pwc.pwc_step_fn``: ``training_terms`` = the T-iteration forward
  from the jittered mean shape + the eq. 3 loss; backward; an Adam step over every parameter). The EMA of the
  weights that the configs add (a callback after the step) is not part of it;
* the step's patch extractions: T calls of ``extract_patches`` on the step's batch, forward only (each timed call
  runs the T calls ``EXTRACTION_LOOPS`` times and the mean is kept: they take milliseconds, within the load's
  noise). The images are data (no gradient) and the points are detached, so the patches need no backward: nothing
  of the extraction runs in the backward pass (``tests/test_demo_and_bench.py`` checks that the step's patches
  carry no gradient);
* the split of an iteration's forward: the patch CNN, the PHM (non-local blocks over regions, groups, the whole)
  and the WHM (RNN state, group, part, pair and local-shape FCs), timed inside the timed steps' forwards by a
  forward pre-hook and a forward hook on each sub-module (:class:`ForwardClock`), as the mean over the step's T
  iterations, median over steps; beside them ``GlomNet`` (the three + the reshapes between them) and the whole
  cascade forward (patch extraction included). The backward is not split.

The step and the extraction are timed in turns (``bench_pwc.interleaved_medians``), so the load of other processes
falls on both alike. The mean shape is a plausible stand-in, 68 points spread uniformly over the middle half of the
crop; the images are uniform noise in [0, 1]. Neither changes the cost: ``grid_sample`` reads every patch pixel
wherever it lies, and the networks do the same arithmetic on any input. The extraction's point sets are T draws of
the jittered initial shape, as training draws L^0.

Standalone: ``python benchmarks/bench_glomface.py [--quick]`` prints the table.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # importable by path, and runnable as a script
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from bench_pwc import interleaved_medians, pwc_step_fn  # noqa: E402  (benchmarks/ is on sys.path, as for bench.py)
from torch import nn  # noqa: E402

from lightning_modules.components.patches import extract_patches  # noqa: E402
from lightning_modules.glomface import GlomFaceModule  # noqa: E402

LAYOUT = "300w_68"  # the official hierarchy's 68 points
INPUT_SIZE, PATCH_SIZE = 224, 40  # the paper's crop and training patch
# By --quick. Full: the batch of 16 (a step took 8.7 s on the 2 cores beside another training, 24-40 s under
# a heavier load; the section ~30 s). Quick: a smoke run.
BATCH = {False: 16, True: 2}
REPEATS = {False: 2, True: 1}  # timed rounds after WARMUP untimed calls of each
WARMUP = 1
EXTRACTION_LOOPS = 10  # the step's extractions are repeated this often per timed call (a few ms: one call is noise)
PIECES = {"patch CNN": "cnn", "PHM (non-local blocks)": "phm", "WHM (fully connected layers)": "whm"}


def glomface_title(quick: bool) -> str:
    """The ``make bench`` heading, with the sizes measured."""
    return (f"GlomFace training step and patch-extraction share (68 points, {INPUT_SIZE} px crops, {PATCH_SIZE} px "
            f"patches, T = 4, batch {BATCH[quick]}{': quick smoke size (the issue: 16)' if quick else ''}; "
            "goal: extraction < 5 % of the step)")


class ForwardClock:
    """Wall seconds of every forward call of some named sub-modules, read by a forward pre-hook and a forward hook
    on each: hooks see the call in place (inside the training step), with no copy of the network's wiring. On the
    CPU every op has finished when its Python call returns, so the two readings bound the call's work (on a GPU
    they would need a synchronisation). A context manager: the hooks are removed on exit."""

    def __init__(self, modules: dict[str, nn.Module], clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, list[float]] = {name: [] for name in modules}
        self._started: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(lambda _m, _a, name=name: self._start(name)))
            self._handles.append(module.register_forward_hook(lambda _m, _a, _o, name=name: self._stop(name)))

    def _start(self, name: str) -> None:
        self._started[name] = self.clock()

    def _stop(self, name: str) -> None:
        self.seconds[name].append(self.clock() - self._started.pop(name))

    def per_round(self, name: str, calls: int, skip: int = 0) -> list[float]:
        """Seconds of ``name`` summed over each round of ``calls`` consecutive calls, after ``skip`` rounds."""
        times = self.seconds[name]
        if len(times) % calls:
            raise ValueError(f"{name} was called {len(times)} times, not a multiple of {calls}")
        return [sum(times[i:i + calls]) for i in range(skip * calls, len(times), calls)]

    def __enter__(self) -> ForwardClock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()


def glomface_model(input_size: int, patch_size: int) -> GlomFaceModule:
    """The paper's 68-point model (default hyper-parameters: T = 4, eq. 3 loss, init jitter), its mean shape
    filled with 68 points uniform over the middle half of the crop (fixed seed)."""
    torch.manual_seed(0)
    model = GlomFaceModule(layout=LAYOUT, input_size=input_size, patch_size=patch_size)
    g = torch.Generator().manual_seed(0)
    model.mean_shape.copy_(input_size / 4 + input_size / 2 * torch.rand(model.layout.num_points, 2, generator=g))
    return model


def bench_glomface(quick: bool = False, batch_size: int | None = None, input_size: int = INPUT_SIZE,
                   patch_size: int = PATCH_SIZE) -> pd.DataFrame:
    """The section's table, one row per thing measured: ``calls per step``, ``ms per call``, ``ms per step`` (=
    calls x ms per call), ``% of step``, ``% of GlomNet forward`` (for an iteration's pieces: of one ``GlomNet``
    call) and the pieces' ``parameters (M)``. ``batch_size`` defaults to the section's (``BATCH``)."""
    batch_size = batch_size or BATCH[quick]
    model = glomface_model(input_size, patch_size)
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.rand(batch_size, 3, input_size, input_size, generator=g),
             "landmarks": model.mean_shape + torch.randn(batch_size, model.layout.num_points, 2, generator=g)}
    step = pwc_step_fn(model, batch, autocast=False, part="model")  # puts the model in training mode
    iterations = model.iterations
    shapes = [model.initial_shape(batch_size) for _ in range(iterations)]  # L^0 as training draws it, T times

    def extractions() -> None:
        for _ in range(EXTRACTION_LOOPS):
            for points in shapes:
                extract_patches(batch["image"], points, patch_size)

    modules = {"cascade": model, "GlomNet": model.net} | {name: getattr(model.net, attr)
                                                          for name, attr in PIECES.items()}
    with ForwardClock(modules) as clock:
        t = interleaved_medians({"step": step, "extract": extractions}, REPEATS[quick], warmup=WARMUP)
    forward = {name: statistics.median(clock.per_round(name, 1 if name == "cascade" else iterations, WARMUP))
               for name in modules}  # seconds per step (summed over its T iterations)

    def row(measured: str, calls: int, seconds: float, module: nn.Module | None = None) -> dict[str, object]:
        return {"measured": measured, "calls per step": calls, "ms per call": 1e3 * seconds / calls,
                "ms per step": 1e3 * seconds, "% of step": 100 * seconds / t["step"], "% of GlomNet forward": None,
                "parameters (M)": None if module is None else sum(p.numel() for p in module.parameters()) / 1e6}

    rows = [row("training step: forward (T iterations) + eq. 3 loss + backward + Adam", 1, t["step"], model),
            row("the step's forward: the cascade, patch extraction included", 1, forward["cascade"]),
            row("patch extraction: extract_patches on the step's batch (forward only: no gradient)", iterations,
                t["extract"] / EXTRACTION_LOOPS)]
    for name in PIECES:
        rows.append(row(f"an iteration's forward: {name}", iterations, forward[name], modules[name])
                    | {"% of GlomNet forward": 100 * forward[name] / forward["GlomNet"]})
    rows.append(row("an iteration's forward: GlomNet (the three + reshapes)", iterations, forward["GlomNet"], model.net)
                | {"% of GlomNet forward": 100.0})
    return pd.DataFrame(rows, dtype=object)  # None stays None: a blank cell, not "nan", where a column does not apply


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    print(f"## {glomface_title(quick)}\n")
    print(bench_glomface(quick).to_markdown(index=False, floatfmt=".4g"))
