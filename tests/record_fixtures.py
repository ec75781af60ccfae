"""Evaluation records and per-image predictions for the leaderboard tests (store, render, stats, gate, submit,
runner): random 68-point faces with two normalisers and two subsets, and a record whose metrics come from the
project's NMEMetric over exactly those predictions. Shared here, not in a test file, so that no test module
imports another.
"""

import numpy as np
import torch

from landmarks.layouts import W300_68
from landmarks.metrics import NMEMetric, inter_ocular
from leaderboard.store import write_record

NORMALIZERS = ["inter_ocular", "bbox"]
SUBSETS = ["pose", "blur"]


def fixture_predictions(seed: int = 0, n: int = 40, noise: float = 2.0) -> dict:
    """Predictions in the ``.npz`` layout of ``leaderboard.store``: ``n`` faces, Gaussian errors of ``noise``
    pixels, inter-ocular distances of the targets and random face sizes, random visibility and subset masks."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(50, 250, (n, 68, 2))
    pred = target + rng.normal(0, noise, target.shape)
    io = inter_ocular(torch.from_numpy(target), W300_68).numpy()
    norm = np.stack([io, rng.uniform(100, 200, n)], 1)
    return {"index": np.arange(n), "image_id": np.array([f"img{i}" for i in range(n)]), "pred": pred,
            "target": target, "visible": rng.random((n, 68)) > 0.1, "norm": norm,
            "subset_mask": rng.random((n, 2)) > 0.6, "normalizers": np.array(NORMALIZERS),
            "subsets": np.array(SUBSETS)}


def fixture_record(predictions: dict, method: str = "HGs") -> dict:
    """A record of ``predictions`` (before ``write_record`` adds ids and digests), its metrics from NMEMetric."""
    metric = NMEMetric(NORMALIZERS, SUBSETS)
    metric.update(torch.from_numpy(predictions["pred"]), torch.from_numpy(predictions["target"]),
                  {n: torch.from_numpy(predictions["norm"][:, i]) for i, n in enumerate(NORMALIZERS)},
                  torch.from_numpy(predictions["index"]), torch.from_numpy(predictions["subset_mask"]),
                  torch.from_numpy(predictions["visible"]))
    return {"method": method, "test_set": "synthetic-300w_68-test", "train_set": "synthetic-300w_68-train",
            "n_images": len(predictions["index"]), "metrics": metric.compute(),
            "protocol": {"primary_normalizer": "inter_ocular", "layout": "300w_68", "input_size": 128,
                         "crop": {"box_source": "jittered", "scale": 1.25}, "flip_test": False}}


def add(results, seed, noise, method, day, n=40, **extra):
    """Write a fixture record with a fixed id (``<method>__day<day>``) and creation time (2024-05-<day>) under
    ``results``; returns its predictions."""
    predictions = fixture_predictions(seed, n=n, noise=noise)
    record = fixture_record(predictions, method) | extra
    record["record_id"] = f"{method}__day{day}"
    record["created"] = f"2024-05-{day:02d}T12:00:00+00:00"
    write_record(record, predictions, results)
    return predictions


def numpy_nme(predictions, column=0):
    """Per-image NME in percent, computed independently of the project's metric code."""
    error = np.sqrt(((predictions["pred"] - predictions["target"]) ** 2).sum(-1)).mean(-1)
    return error / predictions["norm"][:, column] * 100


def table_rows(markdown: str, first_column: str = "Method") -> dict[str, list[str]]:
    """{first cell: other cells} of the first Markdown table whose header starts with ``first_column``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column}"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows
