"""The evaluations a leaderboard shows: records collected from results folders, grouped by test-set identity
(name *and* content: ``leaderboard.store.ImageSetIdentity``), one per label within a group, with their
predictions loaded; what each evaluation's predictions hold (subsets, per-image NME); and the marks a reader
must see beside its numbers (synthetic faces, a partial evaluation).

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
from leaderboard.store import ImageSetIdentity, RecordError, identity, load_predictions, load_record


class NoRecordsError(ValueError):
    """No evaluation record was found in the given results folders."""


@dataclass
class Entry:
    """One evaluation on a leaderboard: its record, the results folder it came from, and its predictions."""

    label: str
    record: dict[str, Any]
    results_dir: Path
    predictions: dict[str, np.ndarray] | None = None
    identity: ImageSetIdentity | None = None  # set by :func:`identify`


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


def identify(entries: Sequence[Entry]) -> tuple[list[Entry], list[str]]:
    """Entries with their test-set identity set (a record written before records carried an ``image_set``
    gets it from its predictions, which are then kept loaded); a note for each one whose identity cannot be
    known (its predictions unreadable), which is left out: it could not be placed with the right images."""
    kept, notes = [], []
    for entry in entries:
        try:
            if "image_set" not in entry.record:
                entry.predictions = entry.predictions or load_predictions(entry.record, entry.results_dir)
            entry.identity = identity(entry.record, entry.predictions)
        except RecordError as error:
            notes.append(f"{entry.label}: left out, its test-set content cannot be known ({error}).")
            continue
        kept.append(entry)
    return kept, notes


def group_by_identity(entries: Sequence[Entry]) -> dict[ImageSetIdentity, list[Entry]]:
    """Entries per test-set identity (:func:`identify` first): test sets in alphabetical order, the larger
    image set of a test set first. Records on other images never share a group."""
    groups: dict[ImageSetIdentity, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.identity, []).append(entry)
    return dict(sorted(groups.items(), key=lambda item: (item[0].test_set, -item[0].n_images, item[0].digest)))


def keep_newest(entries: Sequence[Entry]) -> tuple[list[Entry], list[str]]:
    """One entry per label, the newest by ``created`` (then record id); for each label with several, a note
    saying which record replaces which. Call it on one identity's entries, so that only a record on the same
    images replaces another."""
    by_label: dict[str, list[Entry]] = {}
    for entry in entries:
        by_label.setdefault(entry.label, []).append(entry)
    kept, notes = [], []
    for label, same in by_label.items():
        same = sorted(same, key=lambda e: (e.record["created"], e.record["record_id"]))
        kept.append(same[-1])
        if len(same) > 1:
            older = ", ".join(e.record["record_id"] for e in same[:-1])
            notes.append(f"{label}: {len(same)} records on these images; kept the newest, "
                         f"{same[-1].record['record_id']} (created {same[-1].record['created']}), which replaces "
                         f"the older {older}.")
    return kept, notes


def is_synthetic(record: dict[str, Any]) -> bool:
    """Whether the record's faces were generated (``synthetic``, stored by the evaluation callback; a
    reproduce run's ``experiment.data``), so that its numbers say nothing about the real benchmark."""
    return record.get("synthetic") is True or (record.get("experiment") or {}).get("data") == "synthetic"


def partial_mark(record: dict[str, Any]) -> str | None:
    """"partial" (with "N of M images" where the test set's size is known) when the record scored fewer
    images than its test set holds, or says it is a deliberately partial evaluation; else None."""
    expected = record.get("expected") or {}
    size = expected.get("n_images")
    smaller = isinstance(size, int) and record["n_images"] < size
    if not (expected.get("partial") or smaller):
        return None
    return f"partial: {record['n_images']} of {size} images" if smaller else "partial"


def marks(record: dict[str, Any]) -> list[str]:
    """What a reader must see beside the record's numbers, in its row: synthetic faces, a partial evaluation."""
    return ["synthetic data"] * is_synthetic(record) + [m for m in [partial_mark(record)] if m]


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

