"""PWC benchmark (paper 002, issue 17 "Speed"), a ``make bench`` section: one training step of the PWC detector
and the share of it that the pixel-wise loss takes.

The detector's logits are (B, 69, 224, 224): the softmax cross-entropy over 69 classes at every one of 50,176
pixels (eq. 2), and for the hybrid loss (eq. 3) a second softmax and the soft-argmax over the same tensor, are
the part of a step that does not shrink with the network. Measured, on the CPU:

* one training step of ``PWCModule(approach="pwc")`` as Lightning runs it (``training_terms``: images in the
  module's memory order, forward, ``pixel_labels`` + ``pwc_loss`` inside ``training_loss``; backward; Adam), in
  fp32 and under bf16-mixed autocast, with and without ``channels_last`` (set through the module, as a config
  would: ``configure_model`` turns the weights, ``prepare_images`` the inputs);
* ``pixel_labels`` + ``pwc_loss`` forward and backward on given fp32 logits, and the same with ``hybrid_loss``
  (soft-argmax coordinates); on NCHW logits and on the NHWC logits a ``channels_last`` network hands on. The
  loss runs in fp32 under autocast too (``training_loss`` casts the logits up), so the same timing serves for
  the bf16-mixed step;
* ``pixel_labels`` alone: the class map built on the logits' device from the landmarks, inside the step.

Shares: a PWC loss over the PWC step with the same precision and memory order. A hybrid step is the same network
with the loss swapped, so the hybrid share is ``h / (step - p + h)`` (p, h: the two loss timings), the step
itself not measured twice. The batch (``BATCH``) is below the paper's 16 for time; loss and network both grow
with it, but Adam's update of the 82.9 M parameters does not, so at 16 the loss shares are somewhat larger than
here. Labels and losses do not depend on where the points lie, so uniform random points in
the crop stand in for faces; the images are uniform noise in [0, 1] (the networks' input range).

Every configuration lives at once and they are timed in turns (one call of each per round, median over rounds),
so that the load of other processes on a shared machine falls on all of them alike.

Standalone: ``python benchmarks/bench_pwc.py [--quick]`` prints the table.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # importable by path, and runnable as a script
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from landmarks.layouts import get_layout  # noqa: E402
from landmarks.pixelwise import hybrid_loss, pixel_labels, pwc_loss  # noqa: E402
from lightning_modules.base import LandmarkModule  # noqa: E402
from lightning_modules.pwc import PWCModule  # noqa: E402

INPUT_SIZE = 224  # the paper's crop and map side
QUICK_SIZE = 64  # --quick: a smoke run of the same code (the networks take any multiple of 32)
LAYOUT = "300w_68"  # 68 landmarks: 69 classes, as in the paper
# By --quick. Full: the paper's width at batch 4, not its 16: a 16-image fp32 step takes ~4x a 4-image one (~30 s
# on 2 CPU cores), and four configurations of it would not fit the section's ~2 minutes. Quick: a smoke run.
WIDTH = {False: 64, True: 4}
BATCH = {False: 4, True: 2}
REPEATS = {False: 2, True: 1}  # timed rounds after one warm-up call of each configuration
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "pwc_loss": lambda logits, labels, points: pwc_loss(logits, labels),
    "hybrid_loss (soft-argmax)": lambda logits, labels, points: hybrid_loss(logits, labels, points)["loss"],
}


def section_title(quick: bool) -> str:
    """The ``make bench`` heading: the sizes, and why they are not the paper's batch of 16."""
    sizes = (f"{QUICK_SIZE} px, width {WIDTH[quick]}, batch {BATCH[quick]}: quick smoke sizes (the paper's: "
             f"{INPUT_SIZE} px, 64, 16)" if quick else
             f"{INPUT_SIZE} px, width {WIDTH[quick]} = the paper's, batch {BATCH[quick]}: a step at the paper's 16 "
             "takes ~4x as long, past the section's 2 minutes on a CPU")
    return f"PWC training step and loss share (approach pwc, {sizes})"


def interleaved_medians(fns: dict[Any, Callable[[], object]], repeats: int, warmup: int = 1,
                        clock: Callable[[], float] = time.perf_counter) -> dict[Any, float]:
    """Median seconds of each function over ``repeats`` rounds, each round calling every function once in turn,
    so that load from other processes falls on every configuration alike instead of on whichever ran during it.
    Each function is first called ``warmup`` times untimed (kernel choice, optimiser state, allocator)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[Any, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pwc_step_fn(model: LandmarkModule, batch: dict, autocast: bool, part: str = "detector") -> Callable[[], None]:
    """One training step as Lightning runs a one-part module: ``training_terms`` (forward and the loss terms of
    ``part``; a plain ``LandmarkModule`` has one, "model"), backward, Adam. (``bench.training_step_fn`` calls
    ``training_loss`` and needs a tensor; PWC's is a dict of terms, and its memory order is the module's own
    switch here.)"""
    model.configure_model()  # the Trainer's hook: channels_last weights when the module asks for them
    model.train()
    optimizer = torch.optim.Adam(model.parameters())

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model.training_terms(batch, part)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def loss_fn(loss: Callable, logits: torch.Tensor, points: torch.Tensor) -> Callable[[], None]:
    """``pixel_labels`` then ``loss``, forward and backward to the (leaf) logits, as the step runs them."""

    def run() -> None:
        logits.grad = None
        loss(logits, pixel_labels(points, tuple(logits.shape[-2:])), points).backward()

    return run


def bench_pwc(quick: bool = False, batch_size: int | None = None, width: int | None = None,
              input_size: int | None = None) -> pd.DataFrame:
    """The section's table: step rows (ms, speed-up vs the fp32 NCHW step), loss rows (ms, % of the fp32 and of
    the bf16-mixed step with the same memory order), and ``pixel_labels`` alone. ``batch_size`` and ``width``
    default to the section's sizes (``BATCH``, ``WIDTH``)."""
    batch_size, width = batch_size or BATCH[quick], width or WIDTH[quick]
    input_size = input_size or (QUICK_SIZE if quick else INPUT_SIZE)
    num_points = get_layout(LAYOUT).num_points
    g = torch.Generator().manual_seed(0)
    points = torch.rand(batch_size, num_points, 2, generator=g) * (input_size - 1)  # crop pixels
    batch = {"image": torch.rand(batch_size, 3, input_size, input_size, generator=g), "landmarks": points}
    runs: dict[tuple, Callable[[], object]] = {}
    for channels_last in (False, True):
        for autocast in (False, True):
            torch.manual_seed(0)
            model = PWCModule(approach="pwc", width=width, layout=LAYOUT, input_size=input_size,
                              channels_last=channels_last)
            runs["step", autocast, channels_last] = pwc_step_fn(model, batch, autocast)
        logits = torch.randn(batch_size, num_points + 1, input_size, input_size, generator=g)  # background + K
        logits = logits.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for name, loss in LOSSES.items():
            runs[name, channels_last] = loss_fn(loss, logits.requires_grad_(), points)
    runs["pixel_labels",] = lambda: pixel_labels(points, (input_size, input_size))
    t = interleaved_medians(runs, REPEATS[quick])

    precisions = {False: "fp32", True: "bf16-mixed"}

    def shares(seconds: float, channels_last: bool, swapped: float = 0.0) -> dict[str, float]:
        """``seconds`` in % of each precision's step (memory order ``channels_last``), its loss ``swapped``."""
        return {f"% of {precision} step": 100 * seconds / (t["step", autocast, channels_last] + swapped)
                for autocast, precision in precisions.items()}

    rows = [{"measured": f"training step, {precisions[autocast]}", "channels_last": channels_last,
             "ms": 1e3 * t["step", autocast, channels_last],
             "speed-up vs fp32": t["step", False, False] / t["step", autocast, channels_last]}
            for channels_last in (False, True) for autocast in (False, True)]
    for name in LOSSES:
        for channels_last in (False, True):
            seconds = t[name, channels_last]
            rows.append({"measured": f"pixel_labels + {name}, fwd + bwd on given logits",
                         "channels_last": channels_last, "ms": 1e3 * seconds}
                        | shares(seconds, channels_last, swapped=seconds - t["pwc_loss", channels_last]))
    rows.append({"measured": "pixel_labels alone (the class map, built on the logits' device)",
                 "ms": 1e3 * t["pixel_labels",]} | shares(t["pixel_labels",], False))
    columns = ["measured", "channels_last", "ms", "speed-up vs fp32", "% of fp32 step", "% of bf16-mixed step"]
    frame = pd.DataFrame(rows, columns=columns).astype(object)
    return frame.where(frame.notna(), None)  # blank cells, not "nan", where a column does not apply


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    print(f"## {section_title(quick)}\n")
    print(bench_pwc(quick).to_markdown(index=False, floatfmt=".4g"))
