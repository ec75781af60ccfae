"""Import an evaluation made elsewhere: re-score its predictions here, then store it as a new record.

    python -m leaderboard submit --record REC.json --predictions PRED.npz --results DIR [--method NAME]
                                 [--tolerance 1e-6] [--accept-rescored]

The submitted record (JSON) and predictions (.npz, read without unpickling) are untrusted input: the record
must name its ``method`` (or pass ``--method``), ``test_set`` and ``protocol.primary_normalizer``; the
predictions must hold the arrays an evaluation writes (``leaderboard.store.validate_predictions``). Its own
``record_id``, ``created``, ``digest``, ``predictions`` and ``schema_version`` are ignored.

Every normaliser of the predictions, on every subset (``full`` and the predictions' subsets), is re-scored
with ``leaderboard.scoring`` at the thresholds of ``protocol.thresholds`` (default
``landmarks.metrics.DEFAULT_THRESHOLDS``), plus the visible-only NME as ``NMEMetric`` computes it. The
submitted metrics, where present, are compared with the re-scored ones: a value agrees when
``|submitted - rescored| <= tolerance * max(1, |rescored|)`` (both NaN agree); a submitted value that cannot
be re-scored (an unknown normaliser, subset or metric) disagrees. Disagreements are printed as a table.

The stored record always carries the re-scored ``metrics``; the submitted ones are kept under
``submitted_metrics``, and ``submission`` = {source_record, source_predictions, sha256 (of the submitted .npz),
imported, metrics_agree, metrics_compared, source_record_id, source_created}. Image counts are checked as for
every record (``expected``, see ``leaderboard.store``); a test set listed in :data:`KNOWN_TEST_SET_SIZES` also
gets its published size as ``expected.n_images``.

Exit codes: 0: stored (the path of the new record is printed); 1: the submitted metrics disagree with the
re-scored ones and nothing was stored (``--accept-rescored`` stores the re-scored numbers and exits 0);
2: unreadable or invalid input, nothing stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from landmarks.metrics import DEFAULT_THRESHOLDS, FULL, summarize
from leaderboard.scoring import rescore, rescore_nme
from leaderboard.store import (
    RecordError,
    check_image_counts,
    read_npz,
    sha256_file,
    validate_predictions,
    write_record,
)


def published_test_set_sizes() -> dict[str, int]:
    """Test-set name (as the datamodules name their test sources) -> published number of images, from the
    registry of benchmark datasets (``datamodules.registry``)."""
    from datamodules import registry

    return registry.published_test_set_sizes()


# A submitted record of a test set listed here must evaluate that many images (unless ``expected.partial``).
KNOWN_TEST_SET_SIZES: dict[str, int] = published_test_set_sizes()

# Fields of a submitted record that this store sets itself (or that describe the submitter's own store).
REPLACED_FIELDS = ("schema_version", "record_id", "created", "digest", "predictions", "metrics", "n_images",
                   "submitted_metrics", "submission")


class SubmissionError(ValueError):
    """A submitted record or predictions file that cannot be imported."""


def rescore_all(predictions: dict[str, np.ndarray], thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
                ) -> dict[str, dict[str, dict[str, float]]]:
    """``{normalizer: {subset: summary}}`` for every normaliser and subset of the predictions, as
    :class:`landmarks.metrics.NMEMetric` computes it (``nme_visible`` included)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for normalizer in (str(s) for s in predictions["normalizers"]):
        out[normalizer] = {}
        for subset in [FULL, *(str(s) for s in predictions["subsets"])]:
            summary = rescore(predictions, normalizer, subset, thresholds)
            visible = rescore_nme(predictions, normalizer, subset, visible_only=True)
            summary["nme_visible"] = summarize(torch.from_numpy(visible), ())["nme"]
            out[normalizer][subset] = summary
    return out


def _agree(submitted: Any, rescored: float, tolerance: float) -> bool:
    if not isinstance(submitted, (int, float)) or isinstance(submitted, bool):
        return False
    if math.isnan(submitted) or math.isnan(rescored):
        return math.isnan(submitted) and math.isnan(rescored)
    return abs(submitted - rescored) <= tolerance * max(1.0, abs(rescored))


def compare_metrics(submitted: dict, rescored: dict, tolerance: float) -> tuple[pd.DataFrame, int]:
    """The disagreements (normalizer, subset, metric, submitted, rescored, difference, status) between
    submitted and re-scored metrics, and how many submitted values were compared."""
    rows, compared = [], 0
    for normalizer, per_subset in submitted.items():
        for subset, summary in per_subset.items():
            for metric, value in summary.items():
                compared += 1
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                again = rescored.get(normalizer, {}).get(subset, {}).get(metric)
                if again is None:
                    status, again = "not re-scorable from the predictions", math.nan
                elif _agree(value, again, tolerance):
                    continue
                else:
                    status = "disagrees" if number else "not a number"
                rows.append({"normalizer": normalizer, "subset": subset, "metric": metric,
                             "submitted": value if number else repr(value), "rescored": again,
                             "difference": value - again if number else math.nan, "status": status})
    columns = ["normalizer", "subset", "metric", "submitted", "rescored", "difference", "status"]
    return pd.DataFrame(rows, columns=columns), compared


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SubmissionError(f"{path}: unreadable record ({err})") from err
    if not isinstance(record, dict):
        raise SubmissionError(f"{path}: a record must be a JSON object, got {type(record).__name__}")
    return record


def _thresholds(protocol: dict, where: str) -> tuple[float, ...]:
    thresholds = protocol.get("thresholds", list(DEFAULT_THRESHOLDS))
    if (not isinstance(thresholds, list) or not thresholds
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1 for t in thresholds)):
        raise SubmissionError(f"{where}: protocol.thresholds must be a non-empty list of NME fractions in (0, 1], "
                              f"got {thresholds!r}")
    return tuple(float(t) for t in thresholds)


def _submitted_metrics(record: dict, where: str) -> dict | None:
    metrics = record.get("metrics")
    if metrics is None:
        return None
    if not (isinstance(metrics, dict) and all(isinstance(s, dict) and all(isinstance(m, dict) for m in s.values())
                                              for s in metrics.values())):
        raise SubmissionError(f"{where}: metrics must be a {{normalizer: {{subset: {{metric: value}}}}}} mapping")
    return metrics


def prepare(record_path: Path, predictions_path: Path, method: str | None = None
            ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict | None]:
    """The record to store (re-scored metrics, ``submission`` without ``metrics_agree``), the predictions, and
    the submitted metrics. Raises :class:`SubmissionError` or :class:`RecordError` on invalid input."""
    submitted = _read_record(record_path)
    where = str(record_path)
    method = method if method is not None else submitted.get("method")
    if not isinstance(method, str) or not method.strip():
        raise SubmissionError(f"{where}: no method name (a non-empty 'method' field, or --method)")
    test_set = submitted.get("test_set")
    if not isinstance(test_set, str) or not test_set.strip():
        raise SubmissionError(f"{where}: no test set (a non-empty 'test_set' field)")
    protocol = submitted.get("protocol")
    if not isinstance(protocol, dict):
        raise SubmissionError(f"{where}: no protocol (a 'protocol' object with at least 'primary_normalizer')")
    primary = protocol.get("primary_normalizer")
    if not isinstance(primary, str):
        raise SubmissionError(f"{where}: protocol.primary_normalizer is missing")
    thresholds = _thresholds(protocol, where)
    submitted_metrics = _submitted_metrics(submitted, where)
    if not Path(predictions_path).is_file():
        raise SubmissionError(f"{predictions_path}: predictions file not found")
    predictions = read_npz(predictions_path)
    validate_predictions(predictions, None, str(predictions_path))
    n_images = len(predictions["index"])
    normalizers = [str(s) for s in predictions["normalizers"]]
    if primary not in normalizers:
        raise SubmissionError(f"{where}: primary normaliser {primary!r} is not in the predictions ({normalizers})")
    if "n_images" in submitted and submitted["n_images"] != n_images:
        raise SubmissionError(f"{where}: n_images is {submitted['n_images']!r} but {predictions_path} holds "
                              f"{n_images} images")
    try:
        metrics = rescore_all(predictions, thresholds)
    except (ValueError, KeyError) as err:
        raise SubmissionError(f"{predictions_path}: cannot re-score ({err})") from err

    record = {k: v for k, v in submitted.items() if k not in REPLACED_FIELDS and not str(k).startswith("_")}
    record["method"] = method
    record["protocol"] = protocol | {"thresholds": list(thresholds)}
    record |= {"n_images": n_images, "metrics": metrics, "submitted_metrics": submitted_metrics}
    known = KNOWN_TEST_SET_SIZES.get(test_set)
    if known is not None:
        expected = record.get("expected") or {}
        if not isinstance(expected, dict):
            raise SubmissionError(f"{where}: expected must be a mapping, got {expected!r}")
        if expected.get("n_images") not in (None, known):
            raise SubmissionError(f"{where}: expected.n_images is {expected['n_images']!r}, but test set "
                                  f"{test_set!r} has {known} images")
        record["expected"] = expected | {"n_images": known, "subsets": expected.get("subsets") or {}}
    check_image_counts(record, f"{where} with {predictions_path}")
    record["submission"] = {
        "source_record": str(Path(record_path).resolve()),
        "source_predictions": str(Path(predictions_path).resolve()),
        "sha256": sha256_file(predictions_path),
        "imported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source_record_id": submitted.get("record_id"),
        "source_created": submitted.get("created"),
    }
    return record, predictions, submitted_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard submit", description=__doc__.splitlines()[0])
    parser.add_argument("--record", required=True, type=Path, help="the submitted evaluation record (JSON)")
    parser.add_argument("--predictions", required=True, type=Path, help="its per-image predictions (.npz)")
    parser.add_argument("--results", required=True, type=Path, help="the results folder to store the record in")
    parser.add_argument("--method", help="the method's name (default: the record's 'method')")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="agreement tolerance, relative (absolute below 1): default 1e-6")
    parser.add_argument("--accept-rescored", action="store_true",
                        help="store the re-scored metrics even when the submitted ones disagree")
    args = parser.parse_args(argv)
    if not (args.tolerance >= 0):
        print(f"submit: --tolerance must be >= 0, got {args.tolerance}", file=sys.stderr)
        return 2
    try:
        record, predictions, submitted = prepare(args.record, args.predictions, args.method)
    except (SubmissionError, RecordError) as error:
        print(f"submit: invalid submission: {error}", file=sys.stderr)
        return 2
    if submitted is None:
        table, compared = compare_metrics({}, record["metrics"], args.tolerance)
        print("submit: the record has no metrics to compare; storing the re-scored ones")
    else:
        table, compared = compare_metrics(submitted, record["metrics"], args.tolerance)
    agree = table.empty
    record["submission"] |= {"metrics_agree": agree, "metrics_compared": compared}
    if not agree:
        print(f"# Submitted metrics that disagree with the re-scored predictions ({len(table)} of {compared}; "
              f"tolerance {args.tolerance:g})\n")
        print(table.to_markdown(index=False, floatfmt=".10g"))
        if not args.accept_rescored:
            print("\nsubmit: nothing stored; --accept-rescored stores the re-scored metrics instead", file=sys.stderr)
            return 1
        print("\nsubmit: --accept-rescored: storing the re-scored metrics (the submitted ones under "
              "submitted_metrics)")
    else:
        print(f"submit: {compared} submitted metric values agree with the re-scored predictions")
    try:
        path = write_record(record, predictions, args.results)
    except (RecordError, OSError) as error:
        print(f"submit: cannot store the record: {error}", file=sys.stderr)
        return 2
    print(f"record: {path}")
    return 0
