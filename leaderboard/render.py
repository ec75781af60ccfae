"""Per-dataset leaderboards from evaluation records: Markdown, LaTeX and one self-contained HTML page.

    python -m leaderboard render --results DIR [--results DIR2 ...] --out OUTDIR [--normalizer N]
                                 [--thresholds 0.08 0.1] [--baseline METHOD] [--bootstrap 2000] [--seed 0]
                                 [--title T]

Layout. Records are collected from every ``--results`` folder and from every ``records`` folder below it
(``--results results/reproduce`` finds each experiment's folder). One leaderboard per test set; when several
records of a test set share a label (``label``, else ``method``) the newest (``created``) is kept and a note
says so. Each leaderboard has a header stating how every number was computed, a table of the full test set
(rows: methods, best full-set NME first; NME with its CI, FR@t and AUC@t per threshold, cost columns, a paired
test against a baseline), a compact "NME by subset" table when the test set has subsets, and one CED plot per
subset. Written to ``OUTDIR/leaderboard.{md,tex,html}`` and ``OUTDIR/plots/*.png``; these are derived views,
so re-rendering replaces them.

Statistics. Every number is re-scored from the stored per-image predictions (``leaderboard.scoring``); the
stored metrics are not used. NME is the mean over images of the per-image NME (mean point-to-point error
divided by the normaliser), in percent; FR@t is the percent of images with NME > t; AUC@t is the area under
the CED curve over [0, t] divided by t (trapezoid rule on a ``AUC_STEP`` grid). The NME interval is a
percentile bootstrap of the mean (``leaderboard.stats.bootstrap_ci``: images resampled with replacement,
``--bootstrap`` resamples, ``--seed``). The paired test compares each method with the baseline (default: the
best full-set NME) on the same images, matched by dataset index (``aligned_nme``): the mean per-image NME
difference, method minus baseline, in percentage points (negative: better than the baseline), with a
paired-bootstrap interval, and the two-sided Wilcoxon signed-rank p-value (``paired_test``). Evaluations on
different image sets are not paired ("n/a (different images)").
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmarks.metrics import AUC_STEP, DEFAULT_THRESHOLDS, FULL
from leaderboard.plots import plot_ced
from leaderboard.scoring import rescore, rescore_nme
from leaderboard.stats import aligned_nme, bootstrap_ci, paired_test
from leaderboard.store import RecordError, atomic_write_bytes, load_predictions, load_record

CONFIDENCE = 0.95
MISSING = "—"
PROTOCOL_KEYS = ("layout", "crop", "input_size", "annotation", "flip_test")


class NoRecordsError(ValueError):
    """No evaluation record was found in the given results folders."""


@dataclass
class Entry:
    """One evaluation on a leaderboard: its record, the results folder it came from, and its predictions."""

    label: str
    record: dict[str, Any]
    results_dir: Path
    predictions: dict[str, np.ndarray] | None = None


@dataclass
class Table:
    """A formatted table: strings only, the first column names the method."""

    title: str
    frame: pd.DataFrame


@dataclass
class Section:
    """Everything shown for one test set, independent of the output format."""

    test_set: str
    anchor: str
    warning: str | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, Path]] = field(default_factory=list)  # (caption, path relative to the output folder)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- collecting


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


# ----------------------------------------------------------------------------------------------- numbers


def subsets_of(entries: Sequence[Entry]) -> list[str]:
    """``full`` then every subset any entry's predictions have, in order of first appearance."""
    out = [FULL]
    for entry in entries:
        out += [s for s in map(str, entry.predictions.get("subsets", [])) if s not in out]
    return out


def has_subset(entry: Entry, subset: str) -> bool:
    return subset == FULL or subset in [str(s) for s in entry.predictions.get("subsets", [])]


def per_image_nme(entry: Entry, normalizer: str, subset: str = FULL) -> np.ndarray:
    """Per-image NME in percent, re-scored from the entry's predictions."""
    return rescore_nme(entry.predictions, normalizer, subset) * 100


def nme_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    return bootstrap_ci(values, CONFIDENCE, n_boot, seed) if len(values) else (np.nan, np.nan)


def cost_numbers(record: dict[str, Any]) -> dict[str, float]:
    """Params (M), MACs (G) and images/s at batch 1 and 32 of a record's ``cost`` (NaN where absent)."""
    cost = record.get("cost") or {}
    rate = cost.get("images_per_s") or {}
    value = lambda v, scale=1.0: np.nan if v is None else float(v) / scale  # noqa: E731
    return {"params_m": value(cost.get("params"), 1e6), "macs_g": value(cost.get("macs"), 1e9),
            "ips_1": value(rate.get("1", rate.get(1))), "ips_32": value(rate.get("32", rate.get(32)))}


def choose_baseline(frame: pd.DataFrame, entries: Sequence[Entry], baseline: str | None) -> str | None:
    """The label of ``baseline`` (matched by label, then by method name), else of the best NME."""
    if baseline is not None:
        for entry in entries:
            if baseline in (entry.label, entry.record["method"]) and entry.label in frame.index:
                return entry.label
    ranked = frame["nme"].dropna()
    return str(ranked.index[0]) if len(ranked) else None


NOT_TESTED = {"diff": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan, "p_bootstrap": np.nan,
              "p_wilcoxon": np.nan}


def paired_numbers(entry: Entry, base: Entry | None, normalizer: str, subset: str, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """The paired test of ``entry`` against ``base`` (method minus baseline, percentage points)."""
    empty = NOT_TESTED
    if base is None:
        return empty | {"paired": "no baseline"}
    if entry is base:
        return empty | {"paired": "baseline"}
    if not (has_subset(entry, subset) and has_subset(base, subset)):
        return empty | {"paired": "missing subset"}
    try:
        a, b = aligned_nme(entry.predictions, base.predictions, normalizer, subset)
    except ValueError:
        return empty | {"paired": "different images"}
    if len(a) == 0:
        return empty | {"paired": "no images"}
    r = paired_test(a, b, CONFIDENCE, n_boot, seed)
    return {"diff": r.mean_difference, "diff_ci_low": r.ci_low, "diff_ci_high": r.ci_high,
            "p_bootstrap": r.p_bootstrap, "p_wilcoxon": r.p_wilcoxon, "paired": "tested"}


def method_row(entry: Entry, normalizer: str, subset: str, thresholds: Sequence[float], n_boot: int,
               seed: int) -> dict[str, Any]:
    """Re-scored summary, NME interval and cost of one entry on one subset."""
    row: dict[str, Any] = {"record_id": entry.record["record_id"]}
    if not has_subset(entry, subset):
        return row | {"n": 0, "nme": np.nan, "nme_ci_low": np.nan, "nme_ci_high": np.nan} | cost_numbers(entry.record)
    summary = rescore(entry.predictions, normalizer, subset, tuple(thresholds))
    low, high = nme_ci(per_image_nme(entry, normalizer, subset), n_boot, seed)
    row |= {"n": int(summary["n"]), "nme": summary["nme"], "nme_ci_low": low, "nme_ci_high": high}
    row |= {f"{kind}@{t:g}": summary[f"{kind}@{t:g}"] for t in thresholds for kind in ("fr", "auc")}
    return row | cost_numbers(entry.record)


def leaderboard_frame(entries: Sequence[Entry], normalizer: str, subset: str = FULL,
                      thresholds: Sequence[float] = DEFAULT_THRESHOLDS, baseline: str | None = None,
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per entry (index: label), best NME first: ``n``, ``nme`` and its interval (percent), ``fr@t``
    (percent), ``auc@t`` (fraction), cost (``params_m``, ``macs_g``, ``ips_1``, ``ips_32``), and the paired test
    against the baseline (``diff`` and its interval in percentage points, ``p_bootstrap``, ``p_wilcoxon``,
    ``paired``: "baseline", "tested", "different images", ...). ``baseline`` is a label or method name
    (default: the best NME); ``frame.attrs["baseline"]`` is the label used. Entries need their predictions
    (:func:`load_usable`) and distinct labels (:func:`keep_newest`)."""
    rows = {e.label: method_row(e, normalizer, subset, thresholds, n_boot, seed) for e in entries}
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_values("nme", kind="stable", na_position="last")
    frame.index.name = "method"
    chosen = choose_baseline(frame, entries, baseline)
    by_label = {e.label: e for e in entries}
    paired = {label: paired_numbers(by_label[label], by_label.get(chosen), normalizer, subset, n_boot, seed)
              for label in frame.index}
    frame = frame.join(pd.DataFrame.from_dict(paired, orient="index"))
    frame.attrs["baseline"] = chosen
    return frame


def subset_frame(entries: Sequence[Entry], normalizer: str, subsets: Sequence[str], n_boot: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """Methods x (subset, {n, nme, nme_ci_low, nme_ci_high}) in entry order; NaN where a method lacks a subset."""
    rows = {}
    for entry in entries:
        row = {}
        for subset in subsets:
            values = per_image_nme(entry, normalizer, subset) if has_subset(entry, subset) else np.array([])
            low, high = nme_ci(values, n_boot, seed)
            mean = float(values.mean()) if len(values) else np.nan
            row |= {(subset, "n"): len(values), (subset, "nme"): mean, (subset, "nme_ci_low"): low,
                    (subset, "nme_ci_high"): high}
        rows[entry.label] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["subset", "value"])
    frame.index.name = "method"
    return frame


# ----------------------------------------------------------------------------------------------- formatting


def _num(value: float, digits: int, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return MISSING
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _with_ci(value: float, low: float, high: float, digits: int = 2, signed: bool = False) -> str:
    if pd.isna(value):
        return MISSING
    ci = "" if pd.isna(low) else f" [{_num(low, digits, signed)}, {_num(high, digits, signed)}]"
    return _num(value, digits, signed) + ci


def _p_value(p: float) -> str:
    return MISSING if pd.isna(p) else f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _paired_cell(row: pd.Series) -> str:
    status = row["paired"]
    if status == "tested":
        return _with_ci(row["diff"], row["diff_ci_low"], row["diff_ci_high"], signed=True)
    return {"baseline": "baseline", "different images": "n/a (different images)"}.get(status, f"n/a ({status})")


def format_full(frame: pd.DataFrame, thresholds: Sequence[float], with_cost: bool) -> pd.DataFrame:
    """The full-set table as strings, from :func:`leaderboard_frame`."""
    out = pd.DataFrame({"Method": frame.index})
    out["NME (%) [95% CI]"] = [_with_ci(r.nme, r.nme_ci_low, r.nme_ci_high) for r in frame.itertuples()]
    for t in thresholds:
        out[f"FR@{t:g} (%)"] = [_num(v, 2) for v in frame.get(f"fr@{t:g}", [np.nan] * len(frame))]
        out[f"AUC@{t:g}"] = [_num(v, 4) for v in frame.get(f"auc@{t:g}", [np.nan] * len(frame))]
    if with_cost:
        for column, title, digits in (("params_m", "Params (M)", 2), ("macs_g", "MACs (G)", 2),
                                      ("ips_1", "img/s @1", 1), ("ips_32", "img/s @32", 1)):
            out[title] = [_num(v, digits) for v in frame[column]]
    baseline = frame.attrs.get("baseline")
    out[f"ΔNME vs {baseline} (pp) [95% CI]"] = [_paired_cell(row) for _, row in frame.iterrows()]
    out["Wilcoxon p"] = [_p_value(p) for p in frame["p_wilcoxon"]]
    return out


def format_subsets(frame: pd.DataFrame, subsets: Sequence[str]) -> pd.DataFrame:
    """The "NME by subset" table as strings, from :func:`subset_frame`."""
    out = pd.DataFrame({"Method": frame.index})
    for subset in subsets:
        part = frame[subset]
        out[f"{subset} (%)"] = [_with_ci(r.nme, r.nme_ci_low, r.nme_ci_high) for r in part.itertuples()]
    return out


# ----------------------------------------------------------------------------------------------- sections


def slug(text: str) -> str:
    """A GitHub-style heading anchor (lowercase; letters, digits, ``-`` and ``_``)."""
    return re.sub(r"[^a-z0-9_-]", "", text.strip().lower().replace(" ", "-")) or "section"


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
    p = entries[0].record["protocol"]
    crop = p.get("crop") or {}
    text = (f"layout {p.get('layout')}, crop box {crop.get('box_source')} x {crop.get('scale')}, input "
            f"{p.get('input_size')} px, flip test {p.get('flip_test')}")
    if p.get("annotation"):
        text += f", annotation {p.get('annotation')}"
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
    labels = [e.label for e in entries if (e.record.get("experiment") or {}).get("data") == "synthetic"]
    if not labels:
        return None
    return (f"SYNTHETIC DATA: {', '.join(labels)} evaluated on synthetic faces, not the real benchmark. These "
            f"numbers check the pipeline; they are not comparable with published results.")


def _facts(test_set: str, entries: Sequence[Entry], full: pd.DataFrame, by_subset: pd.DataFrame,
           subsets: Sequence[str], normalizer: str, thresholds: Sequence[float], n_boot: int,
           seed: int) -> list[tuple[str, str]]:
    protocol, _ = _protocol(entries)
    level = f"{CONFIDENCE:.0%}"
    facts = [
        ("Test set", f"{test_set}; images: {_counts(by_subset, subsets)}"),
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
           thresholds: Sequence[float], out_dir: Path) -> list[tuple[str, Path]]:
    by_label = {e.label: e for e in entries}
    plots = []
    for subset in subsets:
        curves = {label: per_image_nme(by_label[label], normalizer, subset) / 100 for label in order
                  if has_subset(by_label[label], subset)}
        relative = Path("plots") / f"ced__{_file_slug(test_set)}__{_file_slug(subset)}__{_file_slug(normalizer)}.png"
        caption = f"CED, {test_set}, {subset} ({normalizer})"
        plot_ced(curves, out_dir / relative, max(thresholds), title=caption)
        plots.append((caption, relative))
    return plots


def primary_normalizer(entries: Sequence[Entry]) -> str:
    """The primary normaliser most of the entries' protocols name (the first one named on a tie)."""
    names = [e.record["protocol"]["primary_normalizer"] for e in entries]
    return max(dict.fromkeys(names), key=names.count)


def build_section(test_set: str, entries: Sequence[Entry], out_dir: Path, normalizer: str | None = None,
                  thresholds: Sequence[float] | None = None, baseline: str | None = None, n_boot: int = 2000,
                  seed: int = 0) -> Section | None:
    """The leaderboard of one test set (its CED plots written under ``out_dir/plots``); None when no entry
    can be scored."""
    section = Section(test_set, slug(test_set))
    entries, section.notes = keep_newest(entries)
    norm = normalizer or primary_normalizer(entries)
    entries, left_out = load_usable(entries, norm)
    section.notes += left_out
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
    section.facts = _facts(test_set, order, full, by_subset, subsets, norm, thresholds, n_boot, seed)
    with_cost = any(e.record.get("cost") for e in order)
    section.tables.append(Table("Full test set", format_full(full, thresholds, with_cost)))
    if len(subsets) > 1:
        section.tables.append(Table("NME by subset (%) [95% CI]", format_subsets(by_subset, subsets)))
    section.plots = _plots(test_set, order, list(full.index), norm, subsets, thresholds, out_dir)
    section.notes += _protocol(order)[1] + [n for e in order for n in _expected_notes(e, by_subset, subsets)]
    section.sources = [_source(e) for e in order]
    return section


# ----------------------------------------------------------------------------------------------- output formats


def to_markdown(sections: Sequence[Section], title: str, notes: Sequence[str] = ()) -> str:
    parts = [f"# {title}", "", "Generated by `python -m leaderboard render`; do not edit by hand.", ""]
    parts += [f"- [{s.test_set}](#{s.anchor})" for s in sections] + [""]
    parts += [f"- Note: {n}" for n in notes] + ([""] if notes else [])
    for s in sections:
        parts += [f"## {s.test_set}", ""]
        if s.warning:
            parts += [f"> **⚠ {s.warning}**", ""]
        parts += [f"- **{key}:** {text}" for key, text in s.facts] + [""]
        for table in s.tables:
            cells = table.frame.map(lambda v: str(v).replace("|", "\\|"))
            align = ("left",) + ("right",) * (cells.shape[1] - 1)
            parts += [f"### {table.title}", "", cells.to_markdown(index=False, colalign=align,
                                                                   disable_numparse=True), ""]
        parts += ["### CED curves", ""] + [f"![{caption}]({path.as_posix()})" for caption, path in s.plots] + [""]
        if s.notes:
            parts += ["**Notes**", ""] + [f"- {n}" for n in s.notes] + [""]
        parts += ["**Records**", ""] + [f"- {src}" for src in s.sources] + [""]
    return "\n".join(parts)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---",
                 "–": "--", "Δ": r"$\Delta$", "⚠": "", "≥": r"$\geq$", "×": r"$\times$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX (special characters escaped, the few non-ASCII symbols used here translated)."""
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return "{}" + out if out.startswith("[") else out


def latex_table(table: Table, caption: str) -> list[str]:
    frame = table.frame
    row = lambda cells: " & ".join(latex_escape(c) for c in cells) + r" \\"  # noqa: E731
    return [r"\begin{table}[htbp]", r"\centering", r"\small", f"\\caption{{{latex_escape(caption)}}}",
            r"\begin{tabular}{l" + "r" * (frame.shape[1] - 1) + "}", r"\toprule", row(frame.columns), r"\midrule",
            *(row(cells) for cells in frame.itertuples(index=False)), r"\bottomrule", r"\end{tabular}",
            r"\end{table}", ""]


def to_latex(sections: Sequence[Section], title: str, notes: Sequence[str] = ()) -> str:
    parts = ["% Generated by `python -m leaderboard render`; do not edit by hand.",
             r"% Needs \usepackage{booktabs} (and graphicx for the plots, under plots/).",
             f"% {latex_escape(title)}", ""]
    parts += [f"% Note: {latex_escape(n)}" for n in notes]
    for s in sections:
        parts += [f"\\section*{{{latex_escape(s.test_set)}}}", ""]
        if s.warning:
            parts += [f"\\noindent\\textbf{{{latex_escape(s.warning)}}}", ""]
        parts += [r"\begin{itemize}"] + [f"\\item \\textbf{{{latex_escape(k)}:}} {latex_escape(t)}"
                                         for k, t in s.facts] + [r"\end{itemize}", ""]
        for table in s.tables:
            parts += latex_table(table, f"{s.test_set}: {table.title}")
        if s.notes:
            parts += [r"\paragraph{Notes}", r"\begin{itemize}"] + [f"\\item {latex_escape(n)}" for n in s.notes]
            parts += [r"\end{itemize}", ""]
        parts += [r"\paragraph{Records}", r"\begin{itemize}"] + [f"\\item {latex_escape(x)}" for x in s.sources]
        parts += [r"\end{itemize}", ""]
    return "\n".join(parts)


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #ccc; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-top: 2px solid #333; border-bottom: 1px solid #333; }
tbody tr:last-child td { border-bottom: 2px solid #333; } tbody tr:nth-child(even) { background: #f6f6f6; }
.warning { background: #fde2e1; border: 2px solid #c0392b; color: #922; font-weight: bold; padding: 0.6em 1em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; flex: 0 1 440px; } img { max-width: 100%; }
table { display: block; max-width: 100%; overflow-x: auto; }
figcaption { font-size: 0.85em; color: #555; } .notes li { color: #444; }
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>\n"
                   for cells in table.frame.itertuples(index=False))
    return (f"<h3>{html.escape(table.title)}</h3>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n"
            "</table>")


def html_figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def to_html(sections: Sequence[Section], title: str, out_dir: Path, notes: Sequence[str] = (),
            preamble: str = "") -> str:
    """The page; ``preamble`` is trusted HTML placed before the leaderboards (the runner's paper tables)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{e(title)}</h1>",
             "<p>Generated by <code>python -m leaderboard render</code>; do not edit by hand.</p>",
             "<nav><h2>Contents</h2><ul>"]
    parts += [f'<li><a href="#{e(s.anchor)}">{e(s.test_set)}</a></li>' for s in sections] + ["</ul></nav>"]
    if notes:
        parts += ['<ul class="notes">'] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
    if preamble:
        parts.append(preamble)
    for s in sections:
        parts.append(f'<section id="{e(s.anchor)}"><h2>{e(s.test_set)}</h2>')
        if s.warning:
            parts.append(f'<p class="warning">⚠ {e(s.warning)}</p>')
        parts += ["<ul>"] + [f"<li><b>{e(k)}:</b> {e(t)}</li>" for k, t in s.facts] + ["</ul>"]
        parts += [html_table(t) for t in s.tables]
        parts += ["<h3>CED curves</h3>", '<div class="plots">']
        parts += [html_figure(caption, (out_dir / path).read_bytes()) for caption, path in s.plots] + ["</div>"]
        if s.notes:
            parts += ["<h3>Notes</h3>", '<ul class="notes">'] + [f"<li>{e(n)}</li>" for n in s.notes] + ["</ul>"]
        parts += ["<h3>Records</h3>", '<ul class="notes">'] + [f"<li>{e(x)}</li>" for x in s.sources]
        parts += ["</ul>", "</section>"]
    return "\n".join(parts + ["</body>", "</html>", ""])


# ----------------------------------------------------------------------------------------------- entry points


def render_leaderboards(results_dirs: list[Path], out_dir: Path, normalizer: str | None = None,
                        thresholds: Sequence[float] | None = None, baseline: str | None = None, n_boot: int = 2000,
                        seed: int = 0, title: str = "Leaderboard", html_preamble: str = "") -> dict[str, Path]:
    """Render every test set's leaderboard found under ``results_dirs`` into ``out_dir``; returns the paths
    ``{"markdown", "latex", "html"}``. Raises :class:`NoRecordsError` when there is no record."""
    out_dir = Path(out_dir)
    entries, notes = collect_entries([Path(d) for d in results_dirs])
    if not entries:
        raise NoRecordsError(f"no evaluation records under {', '.join(map(str, results_dirs))} (looked for "
                             f"records/*.json in each folder and below)")
    if baseline is not None and not any(baseline in (e.label, e.record["method"]) for e in entries):
        raise ValueError(f"no record of a method {baseline!r}; methods: {sorted({e.label for e in entries})}")
    sections = []
    for test_set, group in group_by_test_set(entries).items():
        section = build_section(test_set, group, out_dir, normalizer, thresholds, baseline, n_boot, seed)
        if section is None:
            notes.append(f"{test_set}: no record could be scored under normaliser {normalizer}; left out.")
        else:
            sections.append(section)
    outputs = {"markdown": (out_dir / "leaderboard.md", to_markdown(sections, title, notes)),
               "latex": (out_dir / "leaderboard.tex", to_latex(sections, title, notes)),
               "html": (out_dir / "leaderboard.html", to_html(sections, title, out_dir, notes, html_preamble))}
    written = {key: atomic_write_bytes(path, text.encode("utf-8"), overwrite=True) for key, (path, text) in
               outputs.items()}
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard render", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, action="append", required=True,
                        help="a results folder (records/ and predictions/, or folders holding them); repeatable")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced files: leaderboard.*)")
    parser.add_argument("--normalizer", help="default: each test set's primary normaliser")
    parser.add_argument("--thresholds", type=float, nargs="+", help="FR/AUC thresholds (default: the protocol's)")
    parser.add_argument("--baseline", help="method (label) for the paired tests (default: the best NME)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--title", default="Leaderboard")
    args = parser.parse_args(argv)
    try:
        paths = render_leaderboards(args.results, args.out, args.normalizer, args.thresholds, args.baseline,
                                    args.bootstrap, args.seed, args.title)
    except (NoRecordsError, ValueError) as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
