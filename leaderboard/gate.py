"""CI gate: does a new evaluation record regress against a baseline record on any subset?

    python -m leaderboard gate --record NEW.json --baseline OLD.json [--normalizer N] [--abs-tol 0.1]
                               [--rel-tol 0.02] [--metrics nme fr@0.1 auc@0.1]

A metric regresses when it moves the wrong way (NME and FR up, AUC down) by more than the tolerance: the
absolute tolerance in the metric's own units (NME and FR in percent, AUC as a fraction), or the relative one
as a fraction of the baseline, whichever is larger. Prints a table of every compared value and exits 1 on a
regression, 2 when the records cannot be compared (different test sets, protocols or missing subsets).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.store import RecordError, load_record

DEFAULT_METRICS = ("nme", "fr@0.1", "auc@0.1")
COMPARED_PROTOCOL = ("layout", "crop", "input_size", "annotation")


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 0.0
    relative: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.absolute, self.relative * abs(baseline))


def higher_is_better(metric: str) -> bool:
    return metric.startswith("auc")


def compare(record: dict, baseline: dict, normalizer: str | None = None, metrics: tuple[str, ...] = DEFAULT_METRICS,
            tolerance: Tolerance = Tolerance()) -> pd.DataFrame:
    """One row per (subset, metric): baseline, new, change, allowed change, and whether it regressed."""
    if record["test_set"] != baseline["test_set"]:
        raise ValueError(f"different test sets: {record['test_set']!r} vs baseline {baseline['test_set']!r}")
    for key in COMPARED_PROTOCOL:
        if record["protocol"].get(key) != baseline["protocol"].get(key):
            raise ValueError(f"different protocol {key!r}: {record['protocol'].get(key)!r} vs baseline "
                             f"{baseline['protocol'].get(key)!r}")
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
            allowed = tolerance.allowed(before)
            regressed = (math.isnan(after) and not math.isnan(before)) or worse > allowed
            rows.append({"subset": subset, "metric": metric, "baseline": before, "new": after, "change": change,
                         "allowed": allowed, "status": "REGRESSED" if regressed else
                         ("improved" if worse < -allowed else "ok")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard gate", description=__doc__.splitlines()[0])
    parser.add_argument("--record", required=True, type=Path, help="the new evaluation record (JSON)")
    parser.add_argument("--baseline", required=True, type=Path, help="the baseline record (JSON)")
    parser.add_argument("--normalizer", help="default: the baseline's primary normaliser")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--abs-tol", type=float, default=0.0, help="absolute tolerance (metric units)")
    parser.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance (fraction of baseline)")
    args = parser.parse_args(argv)
    try:
        record, baseline = load_record(args.record), load_record(args.baseline)
        table = compare(record, baseline, args.normalizer, tuple(args.metrics), Tolerance(args.abs_tol, args.rel_tol))
    except (RecordError, ValueError, KeyError) as error:
        print(f"gate: cannot compare: {error}", file=sys.stderr)
        return 2
    normalizer = args.normalizer or baseline["protocol"]["primary_normalizer"]
    print(f"# Gate: {record['method']} vs baseline {baseline['method']} on {record['test_set']} "
          f"({normalizer}; tolerance max({args.abs_tol}, {args.rel_tol} x baseline))\n")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    regressed = table[table["status"] == "REGRESSED"]
    print(f"\n{len(regressed)} regression(s) in {len(table)} compared values")
    return 1 if len(regressed) else 0
