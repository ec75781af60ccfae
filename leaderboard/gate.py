"""CI gate: does a new evaluation record regress against a baseline record on any subset?

    python -m leaderboard gate --record NEW.json --baseline OLD.json [--normalizer N]
                               [--tol nme=0.05 fr=0.5 auc=0.005] [--rel-tol 0.02] [--metrics nme fr@0.1 auc@0.1]

A metric regresses when it moves the wrong way (NME and FR up, AUC down) by more than its tolerance: the larger
of its absolute tolerance, in the metric's own unit, and ``--rel-tol`` x |baseline|. Absolute tolerances are
per metric, because the units differ: NME and FR in percentage points (NME 3.10 % -> 3.16 % is +0.06), AUC as
a fraction of 1 (0.512 -> 0.506 is -0.006). ``--tol`` sets them by kind (``nme``, ``fr``, ``auc``: the name
before ``@``) or by exact metric (``fr@0.08=1``, which wins over its kind); kinds not named keep the defaults
of :data:`DEFAULT_TOLERANCES`. ``--abs-tol PP`` is one tolerance for every metric in percentage points (an
AUC is compared as a percentage: ``--abs-tol 0.5`` lets AUC fall by 0.005); ``--tol`` wins over it.

The two records must be of the same test-set identity: the same test set name, the same sample of it
(``protocol.sample``: faces per subset, seed and the digest of the chosen ids, ``datamodules.sample``; or both
of every face), image count and image set (the digest of the sorted image ids, ``leaderboard.store.image_set``; a
record written before records carried it gets it from its predictions beside it, and where they are absent only
the name and count are compared, which the output says), and the same protocol (layout, crop, input size,
annotation), with every subset of the baseline. Prints a table of every compared value and exits 1 on a
regression, 2 when the records cannot be compared. ``python -m leaderboard ci-gate`` (``leaderboard.ci_gate``)
evaluates a checkpoint and gates its record in one go, with these tolerances and this table.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard.store import ImageSetIdentity, RecordError, identity, load_predictions, load_record

DEFAULT_METRICS = ("nme", "fr@0.1", "auc@0.1")
COMPARED_PROTOCOL = ("layout", "crop", "input_size", "annotation")
# Absolute tolerances of the command line, per metric kind, in the kind's unit (UNITS).
DEFAULT_TOLERANCES = {"nme": 0.05, "fr": 0.5, "auc": 0.005}
UNITS = {"nme": "percentage points", "fr": "percentage points", "auc": "fraction of 1"}
PERCENT_SCALE = {"nme": 1.0, "fr": 1.0, "auc": 0.01}  # one percentage point in each kind's unit (--abs-tol)


def metric_kind(metric: str) -> str:
    """``nme`` for ``nme``, ``nme_visible``, ``nme_std``; ``fr`` for ``fr@0.1``; ``auc`` for ``auc@0.08``."""
    return re.match(r"[a-z]*", metric).group(0)


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move the wrong way: ``max(absolute, relative x |baseline|)``. ``absolute`` maps a
    metric (``fr@0.08``) or its kind (``fr``) to a tolerance in the metric's unit (:data:`UNITS`); a metric
    named by neither gets 0. The default, nothing named and no relative part, lets nothing move."""

    absolute: Mapping[str, float] = field(default_factory=dict)
    relative: float = 0.0

    def absolute_for(self, metric: str) -> float:
        return float(self.absolute.get(metric, self.absolute.get(metric_kind(metric), 0.0)))

    def allowed(self, metric: str, baseline: float) -> float:
        return max(self.absolute_for(metric), self.relative * abs(baseline))


def higher_is_better(metric: str) -> bool:
    return metric_kind(metric) == "auc"


def check_same_test_set(record: dict[str, Any], baseline: dict[str, Any]) -> tuple[str, str | None]:
    """Raise ValueError unless both records are of one test-set identity (name, image count, image set).
    Returns the test set in words, and a caveat when the image sets could not be compared (an old record
    without its predictions), else None."""
    if record["test_set"] != baseline["test_set"]:
        raise ValueError(f"different test sets: {record['test_set']!r} vs baseline {baseline['test_set']!r}")
    check_same_sample(record["protocol"].get("sample"), baseline["protocol"].get("sample"))
    keys = [_identity(r) for r in (record, baseline)]
    new, old = (str(k) if k else f"{r['test_set']} ({r['n_images']} images)" for k, r in zip(
        keys, (record, baseline), strict=True))
    if record["n_images"] != baseline["n_images"] or (None not in keys and keys[0] != keys[1]):
        raise ValueError(f"different test-set contents: {new} vs baseline {old}; numbers on other images are "
                         f"not comparable (evaluate both on the same images)")
    if None in keys:
        which = "the new record" if keys[0] is None else "the baseline"
        return old, (f"{which} was written before records carried an image set and its predictions are not "
                     f"beside it: only the test set's name and image count ({record['n_images']}) were compared")
    return old, None


def sample_words(sample: dict[str, Any] | None) -> str:
    """A sample in words, for messages and table titles: ``20 faces per subset, seed 0 (131 faces, ids
    1a2b3c4d5e6f)``, or ``every test face (no sample)`` for None."""
    if not sample:
        return "every test face (no sample)"
    digest = str(sample.get("digest", "")).removeprefix("sha256:")[:12]
    return (f"{sample.get('per_subset')} faces per subset, seed {sample.get('seed')} ({sample.get('n_images')} "
            f"faces, ids {digest})")


def check_same_sample(sample: dict[str, Any] | None, baseline: dict[str, Any] | None) -> None:
    """Raise ValueError unless both are the same sample of a test set (``protocol.sample``: N faces per subset, the
    seed and the digest of the chosen ids), or both None (every face)."""
    if sample != baseline:
        raise ValueError(f"different samples of the test set: {sample_words(sample)} vs baseline "
                         f"{sample_words(baseline)}; numbers on other faces are not comparable")


def check_same_protocol(protocol: dict[str, Any], baseline: dict[str, Any]) -> None:
    """Raise ValueError unless both protocols agree on :data:`COMPARED_PROTOCOL` (layout, crop, input size,
    annotation). Compare JSON-read protocols (lists, not tuples): records store them so."""
    for key in COMPARED_PROTOCOL:
        if protocol.get(key) != baseline.get(key):
            raise ValueError(f"different protocol {key!r}: {protocol.get(key)!r} vs baseline {baseline.get(key)!r}")


def _identity(record: dict[str, Any]) -> ImageSetIdentity | None:
    """The record's identity; from its predictions beside it (``<results>/records/<id>.json``) for an old
    record, or None when they are absent."""
    if "image_set" in record:
        return identity(record)
    try:
        return identity(record, load_predictions(record, Path(record["_path"]).parent.parent))
    except (RecordError, KeyError):
        return None


def compare(record: dict, baseline: dict, normalizer: str | None = None, metrics: tuple[str, ...] = DEFAULT_METRICS,
            tolerance: Tolerance = Tolerance()) -> pd.DataFrame:
    """One row per (subset, metric): baseline, new, change, allowed change (in the metric's unit), and whether
    it regressed. ``frame.attrs``: ``test_set`` (in words) and ``caveat`` (what could not be checked, or None:
    :func:`check_same_test_set`)."""
    test_set, caveat = check_same_test_set(record, baseline)
    check_same_protocol(record["protocol"], baseline["protocol"])
    normalizer = normalizer or baseline["protocol"]["primary_normalizer"]
    if normalizer not in record["metrics"] or normalizer not in baseline["metrics"]:
        raise ValueError(f"normaliser {normalizer!r} is not in both records")
    new, old = record["metrics"][normalizer], baseline["metrics"][normalizer]
    missing = sorted(set(old) - set(new))
    if missing:
        raise ValueError(f"the new record lacks subsets {missing} of the baseline")
    rows = []
    for subset in old:
        for metric in metrics:
            if metric not in old[subset]:
                raise ValueError(f"metric {metric!r} is not in the baseline (it has {sorted(old[subset])})")
            before, after = float(old[subset][metric]), float(new[subset][metric])
            change = after - before
            worse = -change if higher_is_better(metric) else change
            allowed = tolerance.allowed(metric, before)
            regressed = (math.isnan(after) and not math.isnan(before)) or worse > allowed
            rows.append({"subset": subset, "metric": metric, "baseline": before, "new": after, "change": change,
                         "allowed": allowed, "status": "REGRESSED" if regressed else
                         ("improved" if worse < -allowed else "ok")})
    frame = pd.DataFrame(rows)
    frame.attrs |= {"test_set": test_set, "caveat": caveat}
    return frame


def parse_tolerances(items: list[str], abs_tol: float | None) -> dict[str, float]:
    """``["nme=0.05", "fr@0.08=1"]`` over the defaults (or over ``--abs-tol`` in percentage points)."""
    if abs_tol is not None:
        absolute = {kind: abs_tol * scale for kind, scale in PERCENT_SCALE.items()}
    else:
        absolute = dict(DEFAULT_TOLERANCES)
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or metric_kind(name) not in UNITS or not number >= 0:
            raise ValueError(f"--tol {item!r}: expected METRIC=VALUE with METRIC one of {sorted(UNITS)} or a "
                             f"metric such as fr@0.08, and VALUE >= 0")
        absolute[name] = number
    return absolute


def _tolerance_words(tolerance: Tolerance, metrics: list[str]) -> str:
    parts = [f"{m} {tolerance.absolute_for(m):g} ({UNITS.get(metric_kind(m), 'its unit')})" for m in metrics]
    relative = f", or {tolerance.relative:g} x |baseline| where larger" if tolerance.relative else ""
    return "; ".join(parts) + relative


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what is compared and how far it may move (``gate`` and ``ci-gate`` share them)."""
    defaults = " ".join(f"{k}={v:g}" for k, v in DEFAULT_TOLERANCES.items())
    parser.add_argument("--normalizer", help="default: the baseline's primary normaliser")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--tol", nargs="+", action="extend", default=[], metavar="METRIC=VALUE",
                        help=f"absolute tolerance per metric kind (nme, fr, auc) or metric (fr@0.08), in the "
                             f"metric's unit: NME and FR in percentage points, AUC as a fraction of 1 (default: "
                             f"{defaults})")
    parser.add_argument("--abs-tol", type=float, metavar="PP",
                        help="one absolute tolerance for every metric, in percentage points (AUC compared as a "
                             "percentage: 0.5 lets AUC fall by 0.005); --tol wins over it")
    parser.add_argument("--rel-tol", type=float, default=0.0,
                        help="relative tolerance, a fraction of |baseline| (default 0); the larger one applies")


def tolerance_of(args: argparse.Namespace) -> Tolerance:
    """The tolerance the options of :func:`add_gate_arguments` state (ValueError for a malformed ``--tol``)."""
    return Tolerance(parse_tolerances(args.tol, args.abs_tol), args.rel_tol)


def moved(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`compare`'s table whose value changed (a value that became or stopped being NaN
    included), regressions first: what a CI log shows."""
    nan_changed = table["baseline"].isna() != table["new"].isna()
    rows = table[(table["change"].fillna(0) != 0) | nan_changed]
    return rows.sort_values("status", key=lambda s: s != "REGRESSED", kind="stable")


def report(record: dict[str, Any], baseline: dict[str, Any], table: pd.DataFrame, normalizer: str | None,
           tolerance: Tolerance, metrics: list[str], only_moved: bool = False, title: str = "Gate") -> int:
    """Print the gate's verdict (title, tolerances, caveat, the table: every compared value, or with
    ``only_moved`` those that moved) and return the exit status: 1 on a regression, else 0."""
    normalizer = normalizer or baseline["protocol"]["primary_normalizer"]
    print(f"# {title}: {record['method']} vs baseline {baseline['method']} on {table.attrs['test_set']} "
          f"({normalizer})\n\nTolerances: {_tolerance_words(tolerance, metrics)}\n")
    if table.attrs["caveat"]:
        print(f"Note: {table.attrs['caveat']}\n")
    shown = moved(table) if only_moved else table
    if len(shown):
        print(shown.to_markdown(index=False, floatfmt=".4g"))
    regressed = table[table["status"] == "REGRESSED"]
    what = f"{len(shown)} of {len(table)} compared values moved" if only_moved else \
        f"{len(table)} compared values"
    print(f"\n{len(regressed)} regression(s) in {what}")
    return 1 if len(regressed) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard gate", description=__doc__.splitlines()[0])
    parser.add_argument("--record", required=True, type=Path, help="the new evaluation record (JSON)")
    parser.add_argument("--baseline", required=True, type=Path, help="the baseline record (JSON)")
    add_gate_arguments(parser)
    args = parser.parse_args(argv)
    try:
        tolerance = tolerance_of(args)
        record, baseline = load_record(args.record), load_record(args.baseline)
        table = compare(record, baseline, args.normalizer, tuple(args.metrics), tolerance)
    except (RecordError, ValueError, KeyError) as error:
        print(f"gate: cannot compare: {error}", file=sys.stderr)
        return 2
    return report(record, baseline, table, args.normalizer, tolerance, args.metrics)
