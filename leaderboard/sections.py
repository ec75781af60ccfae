"""One test set's leaderboard (one test-set identity: name and image set) as a document
:class:`~leaderboard.document.Section`: the header facts stating how every number was computed, which records
replaced older ones, the formatted tables with each row's marks, the CED plots (written as PNG files), notes
and record sources. The writers of ``leaderboard.document`` only lay sections out, so every output format says
the same things.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from landmarks.metrics import AUC_STEP, DEFAULT_THRESHOLDS, FULL
from leaderboard.board import (
    CONFIDENCE,
    MISSING,
    format_full,
    format_subsets,
    leaderboard_frame,
    subset_frame,
)
from leaderboard.document import Figure, Section, Table, slug
from leaderboard.entries import (
    Entry,
    has_subset,
    is_synthetic,
    load_usable,
    marks,
    partial_mark,
    per_image_nme,
    primary_normalizer,
    subsets_of,
)
from leaderboard.pictures import picture_groups
from leaderboard.plots import plot_ced
from leaderboard.store import ImageSetIdentity
from leaderboard.words import protocol_words

PROTOCOL_KEYS = ("layout", "crop", "input_size", "annotation", "flip_test")


def _file_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _counts(frame: pd.DataFrame, subsets: Sequence[str]) -> str:
    parts = []
    for subset in subsets:
        n = frame[(subset, "n")]
        low, high = int(n.min()), int(n.max())
        parts.append(f"{subset} {low}" if low == high else f"{subset} {low}–{high} (differs between methods)")
    return ", ".join(parts)


def _auc_rule(entries: Sequence[Entry]) -> str:
    recorded = sorted({str(e.record["protocol"].get("auc_rule")) for e in entries
                       if e.record["protocol"].get("auc_rule")})
    text = (f"AUC@t = area under the CED curve over [0, t] divided by t (a fraction), trapezoid rule on a "
            f"{AUC_STEP:g} grid")
    return text + (f" (recorded rule: {'; '.join(recorded)})" if recorded else "")


def _protocol(entries: Sequence[Entry]) -> tuple[str, list[str]]:
    """The first entry's protocol in words, and a note for each protocol field on which entries differ."""
    text = protocol_words(entries[0].record["protocol"])
    notes = []
    for key in PROTOCOL_KEYS:
        values = {e.label: e.record["protocol"].get(key) for e in entries}
        if len({repr(v) for v in values.values()}) > 1:
            detail = "; ".join(f"{label}: {value}" for label, value in values.items())
            notes.append(f"The protocols differ in {key} ({detail}): compare with care.")
    return text, notes


def _cost_fact(entries: Sequence[Entry]) -> str:
    devices: dict[str, list[str]] = {}
    for e in entries:
        if e.record.get("cost"):
            cost = e.record["cost"]
            devices.setdefault(f"{cost.get('device', 'unknown device')} at {cost.get('input_size')} px",
                               []).append(e.label)
    where = "; ".join(f"{d} ({', '.join(labels)})" for d, labels in devices.items())
    return (f"Params in millions; MACs in G multiply-accumulates per image, MACs = FLOPs / 2 (matrix multiplies "
            f"and convolutions); throughput in images/s at batch 1 and 32, measured on {where}. {MISSING}: not "
            f"measured.")


def _expected_notes(entry: Entry, frame: pd.DataFrame, subsets: Sequence[str]) -> list[str]:
    expected = entry.record.get("expected") or {}
    wanted = {FULL: expected.get("n_images")} | dict(expected.get("subsets") or {})
    notes = []
    for subset, n in wanted.items():
        if isinstance(n, int) and subset in subsets and int(frame.loc[entry.label, (subset, "n")]) != n:
            got = int(frame.loc[entry.label, (subset, "n")])
            partial = " (a partial evaluation)" if expected.get("partial") else ""
            notes.append(f"{entry.label}: {got} images scored on {subset}, the test set has {n}{partial}.")
    return notes


def _source(entry: Entry) -> str:
    r = entry.record
    text = f"{entry.label}: record {r['record_id']} (created {r['created']}, trained on {r.get('train_set')}"
    if r.get("paper"):
        text += f", paper {r['paper']}"
    exp = r.get("experiment") or {}
    if exp:
        text += f"; experiment {exp.get('paper')} / {exp.get('name')} / {exp.get('test')}, {exp.get('data')} data"
    return text + ")"


def _synthetic_warning(entries: Sequence[Entry]) -> str | None:
    labels = [e.label for e in entries if is_synthetic(e.record)]
    if not labels:
        return None
    return (f"SYNTHETIC DATA: {', '.join(labels)} evaluated on synthetic faces, not the real benchmark. These "
            f"numbers check the pipeline; they are not comparable with published results.")


def _content(key: ImageSetIdentity) -> str:
    ids = "image ids" if key.key == "image_id" else "dataset indices"
    return (f"image set {key.short} (sha256 of the {key.n_images} sorted {ids}; records on other images of this "
            f"test set are in other tables)")


def _facts(entries: Sequence[Entry], full: pd.DataFrame, by_subset: pd.DataFrame, subsets: Sequence[str],
           normalizer: str, thresholds: Sequence[float], n_boot: int, seed: int) -> list[tuple[str, str]]:
    protocol, _ = _protocol(entries)
    level = f"{CONFIDENCE:.0%}"
    key = entries[0].identity
    facts = [
        ("Test set", f"{key.test_set}; images: {_counts(by_subset, subsets)}; {_content(key)}"),
        ("Normaliser", f"{normalizer}; NME = mean over images of (mean point-to-point error / normaliser), in %"),
        ("Thresholds", f"{', '.join(f'{t:g}' for t in thresholds)}; FR@t = % of images with NME > t; "
                       f"{_auc_rule(entries)}"),
        ("Protocol", protocol),
        ("Uncertainty", f"NME [{level} CI]: percentile bootstrap of the mean over images ({n_boot} resamples of "
                        f"the images with replacement, seed {seed})"),
        ("Paired test", f"against {full.attrs.get('baseline')} on the same images (matched by dataset index): "
                        f"mean per-image NME difference, method minus baseline, in percentage points (negative = "
                        f"better than the baseline) with a {level} paired-bootstrap CI ({n_boot} resamples, seed "
                        f"{seed}), and the two-sided Wilcoxon signed-rank p-value"),
        ("Source", "every number re-scored from the stored per-image predictions"),
    ]
    if any(e.record.get("cost") for e in entries):
        facts.insert(4, ("Cost", _cost_fact(entries)))
    return facts


def _plots(test_set: str, entries: Sequence[Entry], order: Sequence[str], normalizer: str, subsets: Sequence[str],
           thresholds: Sequence[float], out_dir: Path) -> list[Figure]:
    by_label = {e.label: e for e in entries}
    plots = []
    for subset in subsets:
        curves = {label: per_image_nme(by_label[label], normalizer, subset) / 100 for label in order
                  if has_subset(by_label[label], subset)}
        relative = Path("plots") / f"ced__{_file_slug(test_set)}__{_file_slug(subset)}__{_file_slug(normalizer)}.png"
        caption = f"CED, {test_set}, {subset} ({normalizer})"
        plot_ced(curves, out_dir / relative, max(thresholds), title=caption)
        plots.append(Figure(caption, relative))
    return plots



def frame_table(title: str, frame: pd.DataFrame) -> Table:
    """A document table from a frame of strings whose first column names the method."""
    return Table(title, [str(c) for c in frame.columns], [[str(v) for v in row] for row in frame.itertuples(
        index=False)])


MARK_NOTES = {"synthetic data": "synthetic data: evaluated on generated faces, not the real benchmark; the "
                                "numbers check the pipeline and are not comparable with published results",
              "partial": "partial: fewer images scored than the test set holds (a limited or deliberately "
                         "partial run)"}


def marked_table(title: str, frame: pd.DataFrame, entries: Sequence[Entry]) -> Table:
    """:func:`frame_table` with each row's marks (:func:`leaderboard.entries.marks`) beside the method's name,
    where its numbers are, and a note under the table saying what each mark shown means."""
    by_label = {e.label: marks(e.record) for e in entries}
    frame = frame.assign(Method=[f"{m} [{'; '.join(by_label[m])}]" if by_label[m] else m for m in frame["Method"]])
    shown = {m.split(":")[0] for ms in by_label.values() for m in ms}
    table = frame_table(title, frame)
    table.notes = [f"[{text}]" for mark, text in MARK_NOTES.items() if mark in shown]
    return table


def identity_titles(groups: Mapping[ImageSetIdentity, Sequence[Entry]]) -> dict[ImageSetIdentity, str]:
    """Each test-set identity's section title: the test set's name alone where it was evaluated on one image
    set; else the name with the image count, "partial" where a record of it is partial, and the image set's
    digest where two image sets have the same count, so that a reader sees why one test set has several."""
    names = Counter(key.test_set for key in groups)
    counts = Counter((key.test_set, key.n_images) for key in groups)
    titles = {}
    for key, entries in groups.items():
        parts = [f"{key.n_images} images"] + ["partial"] * any(partial_mark(e.record) for e in entries)
        if counts[key.test_set, key.n_images] > 1:
            parts.append(f"image set {key.short}")
        titles[key] = key.test_set if names[key.test_set] == 1 else f"{key.test_set} ({', '.join(parts)})"
    return titles


def build_section(title: str, entries: Sequence[Entry], out_dir: Path, normalizer: str | None = None,
                  thresholds: Sequence[float] | None = None, baseline: str | None = None, n_boot: int = 2000,
                  seed: int = 0, replaced: Sequence[str] = (), pictures: bool = False) -> Section | None:
    """The leaderboard of one test-set identity under ``title`` (:func:`identity_titles`; its CED plots
    written under ``out_dir/plots``); None when no entry can be scored. ``entries``: one identity's, with
    distinct labels (``leaderboard.entries.keep_newest``, whose notes are ``replaced``: shown above the
    tables). ``pictures``: also each method's per-landmark error and failure gallery
    (``leaderboard.pictures``)."""
    section = Section(title, slug(title))
    section.lines = [f"**Replaced:** {note}" for note in replaced]
    norm = normalizer or primary_normalizer(entries)
    entries, section.notes = load_usable(entries, norm)
    if not entries:
        return None
    thresholds = tuple(thresholds or entries[0].record["protocol"].get("thresholds") or DEFAULT_THRESHOLDS)
    full = leaderboard_frame(entries, norm, FULL, thresholds, baseline, n_boot, seed)
    if baseline is not None and not any(baseline in (e.label, e.record["method"]) for e in entries):
        section.notes.append(f"No method {baseline} on this test set: the baseline is the best, "
                             f"{full.attrs['baseline']}.")
    order = [e for label in full.index for e in entries if e.label == label]
    subsets = subsets_of(order)
    by_subset = subset_frame(order, norm, subsets, n_boot, seed)
    section.warning = _synthetic_warning(order)
    section.facts = _facts(order, full, by_subset, subsets, norm, thresholds, n_boot, seed)
    with_cost = any(e.record.get("cost") for e in order)
    section.tables.append(marked_table("Full test set", format_full(full, thresholds, with_cost), order))
    if len(subsets) > 1:
        section.tables.append(marked_table("NME by subset (%) [95% CI]", format_subsets(by_subset, subsets), order))
    section.figures = _plots(title, order, list(full.index), norm, subsets, thresholds, out_dir)
    if pictures:
        section.groups = picture_groups(order, norm, out_dir)
    section.notes += _protocol(order)[1] + [n for e in order for n in _expected_notes(e, by_subset, subsets)]
    section.sources = [_source(e) for e in order]
    return section
