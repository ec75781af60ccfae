"""The evaluations a leaderboard shows: records collected from results folders, one per label, with their
predictions loaded; and what each evaluation's predictions hold (subsets, per-image NME).

Every leaderboard view (numbers, sections, pages) starts from these :class:`Entry` objects, so collecting and
de-duplicating records happens in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landmarks.metrics import FULL
from leaderboard.scoring import rescore_nme
from leaderboard.store import RecordError, load_predictions, load_record


class NoRecordsError(ValueError):
    """No evaluation record was found in the given results folders."""


@dataclass
class Entry:
    """One evaluation on a leaderboard: its record, the results folder it came from, and its predictions."""

    label: str
    record: dict[str, Any]
    results_dir: Path
    predictions: dict[str, np.ndarray] | None = None


def find_results_dirs(paths: Sequence[Path]) -> list[Path]:
    """Each given folder that holds ``records/``, and every folder below it that does."""
    found: list[Path] = []
    for root in map(Path, paths):
        candidates = [root] if (root / "records").is_dir() else []
        if root.is_dir():
            candidates += sorted(p.parent for p in root.rglob("records") if p.is_dir()
                                 and not any(part.startswith(".") for part in p.relative_to(root).parts))
        found += [c for c in candidates if c.resolve() not in {f.resolve() for f in found}]
    return found


def collect_entries(results_dirs: Sequence[Path]) -> tuple[list[Entry], list[str]]:
    """Every readable record (each record id once) with its results folder; problems as messages."""
    entries, problems, seen = [], [], set()
    for results_dir in find_results_dirs(results_dirs):
        for path in sorted((results_dir / "records").glob("*.json")):
            try:
                record = load_record(path)
            except RecordError as error:
                problems.append(f"left out an unreadable record {path.name}: {error}")
                continue
            if record["record_id"] not in seen:
                seen.add(record["record_id"])
                entries.append(Entry(record.get("label") or record["method"], record, results_dir))
    return entries, problems


def group_by_test_set(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    """Entries per test set, test sets in alphabetical order."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.record["test_set"], []).append(entry)
    return dict(sorted(groups.items()))


def keep_newest(entries: Sequence[Entry]) -> tuple[list[Entry], list[str]]:
    """One entry per label, the newest by ``created`` (then record id); a note for each label with several."""
    by_label: dict[str, list[Entry]] = {}
    for entry in entries:
        by_label.setdefault(entry.label, []).append(entry)
    kept, notes = [], []
    for label, same in by_label.items():
        same = sorted(same, key=lambda e: (e.record["created"], e.record["record_id"]))
        kept.append(same[-1])
        if len(same) > 1:
            older = ", ".join(e.record["record_id"] for e in same[:-1])
            notes.append(f"{label}: {len(same)} records; kept the newest, {same[-1].record['record_id']} "
                         f"(created {same[-1].record['created']}); left out the older {older}.")
    return kept, notes


def load_usable(entries: Sequence[Entry], normalizer: str) -> tuple[list[Entry], list[str]]:
    """Entries whose predictions load (checksum) and hold ``normalizer``; a note for each one left out."""
    kept, notes = [], []
    for entry in entries:
        try:
            entry.predictions = entry.predictions or load_predictions(entry.record, entry.results_dir)
        except RecordError as error:
            notes.append(f"{entry.label}: left out, {error}.")
            continue
        names = [str(n) for n in entry.predictions["normalizers"]]
        if normalizer not in names:
            notes.append(f"{entry.label}: left out, its predictions have no normaliser {normalizer} (only "
                         f"{', '.join(names)}).")
            continue
        kept.append(entry)
    return kept, notes


def primary_normalizer(entries: Sequence[Entry]) -> str:
    """The primary normaliser most of the entries' protocols name (the first one named on a tie)."""
    names = [e.record["protocol"]["primary_normalizer"] for e in entries]
    return max(dict.fromkeys(names), key=names.count)


def subsets_of(entries: Sequence[Entry]) -> list[str]:
    """``full`` then every subset any entry's predictions have, in order of first appearance."""
    out = [FULL]
    for entry in entries:
        out += [s for s in map(str, entry.predictions.get("subsets", [])) if s not in out]
    return out


def has_subset(entry: Entry, subset: str) -> bool:
    """Whether the entry's predictions tag ``subset`` (every entry has ``full``): methods may lack subsets."""
    return subset == FULL or subset in [str(s) for s in entry.predictions.get("subsets", [])]


def per_image_nme(entry: Entry, normalizer: str, subset: str = FULL) -> np.ndarray:
    """Per-image NME in percent, re-scored from the entry's predictions."""
    return rescore_nme(entry.predictions, normalizer, subset) * 100

