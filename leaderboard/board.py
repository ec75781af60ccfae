"""The leaderboard of one test set as numbers (:func:`leaderboard_frame`, :func:`subset_frame`) and as tables of
strings (:func:`format_full`, :func:`format_subsets`), independent of the output format.

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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from landmarks.metrics import DEFAULT_THRESHOLDS, FULL
from leaderboard.entries import Entry, has_subset, per_image_nme
from leaderboard.scoring import rescore
from leaderboard.stats import aligned_nme, bootstrap_ci, paired_test

CONFIDENCE = 0.95
MISSING = "—"


def nme_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The bootstrap interval of the mean NME; NaN for an empty subset, which a table shows as missing."""
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
