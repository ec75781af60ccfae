"""Training steps fed by the synthetic loader vs steps on pre-loaded batches (a ``make bench`` section).

The demo hourglass with the demo's data (``experiments/hourglass/synthetic.yaml``: 96 px crops, batch 16, one
worker, its augmentation), with and without the in-memory faces (``in_memory``), and in memory with the
augmentation in the main process (0 workers): the ratio of the time per training step when the step waits on the
DataLoader to the time per step on the same batches already in memory.
It measures how much the loader's work competes with training on a CPU (goal: at most 1.10 on 2 cores). The
step is forward + loss + backward + Adam, without Lightning's loop around it (the same in both columns).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "hourglass" / "synthetic.yaml"
WARMUP = 3


def demo_parts(in_memory: bool, steps: int, workers: int | None = None
               ) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The demo config's model and datamodule, with enough training faces for ``WARMUP + steps`` batches (the
    optimiser is the bench's own: Adam, as the demo's); ``workers`` overrides the config's DataLoader workers."""
    config = yaml.safe_load(CONFIG.read_text())
    data, model = config["data"], config["model"]
    batch, val = data["init_args"]["batch_size"], data["init_args"]["val_size"]
    data["init_args"] |= {"train_size": val + batch * (WARMUP + steps + 1), "test_size": batch, "in_memory": in_memory}
    if workers is not None:
        data["init_args"]["num_workers"] = workers
    model["init_args"] = {k: v for k, v in model["init_args"].items() if k not in ("optimizer", "lr_scheduler")}
    model["init_args"] |= {"layout": data["init_args"]["layout"], "input_size": data["init_args"]["input_size"]}
    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningModule, "model")
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    parts = parser.instantiate(parser.parse_object({"model": model, "data": data}))
    return parts.model, parts.data


def step_fn(model: pl.LightningModule) -> Callable[[dict], None]:
    """One training step (forward, loss, backward, Adam) of ``model`` on a batch."""
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    if model.channels_last:
        model.to(memory_format=torch.channels_last)

    def step(batch: dict) -> None:
        loss = model.training_loss(model(model.prepare_images(batch["image"])), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def feed_ratio(in_memory: bool, rounds: int, block: int, workers: int | None = None) -> dict:
    """Time ``rounds`` alternating blocks of ``block`` steps: fed by the loader, then the same batches again from
    memory (alternating, so that other load on the machine falls on both)."""
    torch.manual_seed(0)
    model, datamodule = demo_parts(in_memory, rounds * block, workers)
    start = time.perf_counter()
    datamodule.setup("fit")
    setup = time.perf_counter() - start
    step, batches = step_fn(model), iter(datamodule.train_dataloader())
    for _ in range(WARMUP):
        step(next(batches))
    fed = preloaded = 0.0
    for _ in range(rounds):
        seen, start = [], time.perf_counter()
        for _ in range(block):
            seen.append(next(batches))
            step(seen[-1])
        fed += time.perf_counter() - start
        start = time.perf_counter()
        for batch in seen:
            step(batch)
        preloaded += time.perf_counter() - start
    memory = sum(len(d) * d.window**2 * 3 for d in datamodule.datasets.values() if d.memory is not None)
    steps = rounds * block
    return {"in-memory faces": in_memory, "workers": datamodule.num_workers, "setup s": setup,
            "faces in memory MB": memory / 2**20, "loader-fed step ms": fed / steps * 1e3,
            "pre-loaded step ms": preloaded / steps * 1e3, "loader-fed / pre-loaded": fed / preloaded}


def bench_loader_feed(quick: bool = False) -> pd.DataFrame:
    rounds, block = (1, 8) if quick else (3, 10)
    cases = [(False, None), (True, None), (True, 0)]  # the demo's worker count, and augmentation in the main process
    return pd.DataFrame([feed_ratio(in_memory, rounds, block, workers) for in_memory, workers in cases])
