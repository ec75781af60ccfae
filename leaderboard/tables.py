"""Result tables derived from evaluation records (never edited by hand): methods x subsets, per test set, as a
document (``leaderboard.document``); the demo prints and writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from landmarks.metrics import FULL
from leaderboard.document import Document, Section, Table, slug, to_markdown
from leaderboard.words import metric_words, protocol_words

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


def results_document(records: Sequence[dict[str, Any]], normalizer: str | None = None,
                     metrics: Sequence[str] = DEFAULT_METRICS, title: str = "Results") -> Document:
    """Per test set, its protocol, then one table per metric (methods x subsets)."""
    if not records:
        raise ValueError("no records to render")
    by_test_set: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_test_set.setdefault(record["test_set"], []).append(record)
    sections = []
    for test_set, group in by_test_set.items():
        norm = normalizer or group[0]["protocol"]["primary_normalizer"]
        sizes = ", ".join(f"{s} {int(v['n'])}" for s, v in group[0]["metrics"][norm].items())
        section = Section(test_set, slug(test_set), table_titles="bold", facts=[
            ("Test set", f"`{test_set}`; faces: {sizes}"),
            ("Normaliser", f"**{norm}** over all points; {metric_words()}"),
            ("Protocol", protocol_words(group[0]["protocol"])),
        ])
        for metric in metrics:
            std = metrics_table(group, "nme_std", normalizer) if metric == "nme" else None
            frame = _format(metrics_table(group, metric, normalizer), metric, std)
            section.tables.append(Table(_title(metric), ["method", *map(str, frame.columns)],
                                        [[str(i), *map(str, row)] for i, row in zip(frame.index, frame.values,
                                                                                     strict=True)]))
        sections.append(section)
    return Document(title, sections, command="python -m experiments.demo", contents=False)


def render_markdown(records: Sequence[dict[str, Any]], normalizer: str | None = None,
                    metrics: Sequence[str] = DEFAULT_METRICS, title: str = "Results") -> str:
    """Markdown of :func:`results_document`."""
    return to_markdown(results_document(records, normalizer, metrics, title))
