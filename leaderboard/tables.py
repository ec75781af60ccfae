"""Result tables derived from evaluation records (never edited by hand): methods x subsets, per test set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from landmarks.metrics import AUC_STEP, FULL

DEFAULT_METRICS = ("nme", "nme_std", "fr@0.1", "auc@0.1")
DECIMALS = {"nme": 2, "nme_std": 2, "nme_visible": 2, "n": 0}  # fr: 2, auc: 4 (by prefix below)


def _decimals(metric: str) -> int:
    return DECIMALS.get(metric, 4 if metric.startswith("auc") else 2)


def _label(record: dict[str, Any], taken: set[str]) -> str:
    label = record.get("label") or record["method"]
    if label in taken:
        label = f"{label} ({record['record_id'].rsplit('__', 1)[-1]})"
    taken.add(label)
    return label


def metrics_table(records: Sequence[dict[str, Any]], normalizer: str | None = None,
                  metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """One row per record, columns (subset, metric); ``normalizer`` defaults to each record's primary one."""
    rows, taken = {}, set()
    for record in records:
        norm = normalizer or record["protocol"]["primary_normalizer"]
        if norm not in record["metrics"]:
            raise KeyError(f"record {record['record_id']} has no {norm!r} metrics; it has {sorted(record['metrics'])}")
        per_subset = record["metrics"][norm]
        subsets = [FULL] + [s for s in per_subset if s != FULL]
        rows[_label(record, taken)] = {(s, m): per_subset[s].get(m) for s in subsets for m in metrics}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["subset", "metric"])
    return frame


def _format(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy().astype(object)
    for col in frame.columns:
        digits = _decimals(col[1])
        out[col] = [("—" if pd.isna(v) else f"{v:.{digits}f}") for v in frame[col]]
    out.columns = [f"{s} {m}" for s, m in frame.columns]
    return out


def protocol_note(record: dict[str, Any], normalizer: str | None = None) -> str:
    """One line stating how every number of a table was computed."""
    p = record["protocol"]
    norm = normalizer or p["primary_normalizer"]
    crop = p.get("crop", {})
    return (f"Test set `{record['test_set']}`, layout {p.get('layout')}, normaliser **{norm}** over all points; "
            f"NME and FR in %, FR@t = % of images with NME > t; AUC@t as a fraction, trapezoid rule on a "
            f"{AUC_STEP:g} grid over [0, t]; crop: box `{crop.get('box_source')}` x {crop.get('scale')} at "
            f"{p.get('input_size')} px; flip test: {p.get('flip_test')}.")


def render_markdown(records: Sequence[dict[str, Any]], normalizer: str | None = None,
                    metrics: Sequence[str] = DEFAULT_METRICS, title: str = "Results") -> str:
    """Markdown: one table per test set (methods x subsets), each headed by its protocol."""
    if not records:
        raise ValueError("no records to render")
    parts = [f"# {title}", ""]
    by_test_set: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_test_set.setdefault(record["test_set"], []).append(record)
    for test_set, group in by_test_set.items():
        frame = _format(metrics_table(group, normalizer, metrics))
        parts += [f"## {test_set}", "", protocol_note(group[0], normalizer), "",
                  frame.to_markdown(stralign="right"), ""]
    return "\n".join(parts)
