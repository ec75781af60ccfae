"""Result tables derived from evaluation records (never edited by hand): methods x subsets, per test set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from landmarks.metrics import AUC_STEP, FULL

DEFAULT_METRICS = ("nme", "fr@0.1", "auc@0.1")
TITLES = {"nme": "NME (%), std in parentheses", "nme_visible": "NME over visible points (%)"}


def _decimals(metric: str) -> int:
    return 4 if metric.startswith("auc") else 2


def _title(metric: str) -> str:
    if metric in TITLES:
        return TITLES[metric]
    kind, _, threshold = metric.partition("@")
    return f"FR@{threshold} (%)" if kind == "fr" else f"AUC@{threshold}" if kind == "auc" else metric


def _label(record: dict[str, Any], taken: set[str]) -> str:
    label = record.get("label") or record["method"]
    if label in taken:
        label = f"{label} ({record['record_id'].rsplit('__', 1)[-1]})"
    taken.add(label)
    return label


def metrics_table(records: Sequence[dict[str, Any]], metric: str = "nme",
                  normalizer: str | None = None) -> pd.DataFrame:
    """Methods x subsets of one metric; ``normalizer`` defaults to each record's primary one."""
    rows, taken = {}, set()
    for record in records:
        norm = normalizer or record["protocol"]["primary_normalizer"]
        if norm not in record["metrics"]:
            raise KeyError(f"record {record['record_id']} has no {norm!r} metrics; it has {sorted(record['metrics'])}")
        per_subset = record["metrics"][norm]
        subsets = [FULL] + [s for s in per_subset if s != FULL]
        rows[_label(record, taken)] = {s: per_subset[s].get(metric) for s in subsets}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns.name = "subset"
    return frame


def _format(frame: pd.DataFrame, metric: str, std: pd.DataFrame | None) -> pd.DataFrame:
    digits = _decimals(metric)
    cell = lambda v: "—" if pd.isna(v) else f"{v:.{digits}f}"  # noqa: E731
    out = frame.map(cell)
    if std is not None:
        out = out + std.map(lambda v: "" if pd.isna(v) else f" ({v:.{digits}f})")
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
    """Markdown: per test set, its protocol, then one table per metric (methods x subsets)."""
    if not records:
        raise ValueError("no records to render")
    parts = [f"# {title}", ""]
    by_test_set: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_test_set.setdefault(record["test_set"], []).append(record)
    for test_set, group in by_test_set.items():
        norm = normalizer or group[0]["protocol"]["primary_normalizer"]
        sizes = ", ".join(f"{s} {int(v['n'])}" for s, v in group[0]["metrics"][norm].items())
        parts += [f"## {test_set}", "", protocol_note(group[0], normalizer), f"Faces: {sizes}.", ""]
        for metric in metrics:
            std = metrics_table(group, "nme_std", normalizer) if metric == "nme" else None
            frame = _format(metrics_table(group, metric, normalizer), metric, std)
            parts += [f"**{_title(metric)}**", "", frame.to_markdown(stralign="right", disable_numparse=True), ""]
    return "\n".join(parts)
