"""Evaluation records (JSON) and per-image predictions (.npz): written atomically, never overwritten.

Layout under a results folder::

    records/<record_id>.json       one evaluation of one model on one test set
    predictions/<record_id>.npz    its per-image predictions, ground truth and normalisers in original-image
                                   pixels (index, image_id, pred, target, visible, norm, subset_mask, ...)

A file is first written to a temporary name in the same folder, flushed to disk, then hard-linked to its
final name (``os.link`` fails if the name exists, so two writers can never replace each other's file) and the
temporary name removed. The predictions are written before the record that points to them.

Records carry ``schema_version``; readers check it and the required fields, so a record can gain fields in
later versions without breaking old ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
REQUIRED_FIELDS = ("schema_version", "record_id", "created", "method", "test_set", "protocol", "metrics",
                   "n_images", "predictions")


class RecordError(ValueError):
    """A record or predictions file that is missing, malformed, or does not match its checksum."""


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists; results are never overwritten") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """The current git commit and whether the work tree has uncommitted changes (None outside git)."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True, check=True).stdout  # noqa: E731
        return {"commit": run("rev-parse", "HEAD").strip(), "dirty": bool(run("status", "--porcelain").strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def new_record_id(method: str, test_set: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")  # noqa: E731
    return f"{safe(method)}__{safe(test_set)}__{stamp}__{uuid.uuid4().hex[:8]}"


def _check_finite(metrics: dict, where: str) -> None:
    for normalizer, per_subset in metrics.items():
        for subset, summary in per_subset.items():
            for key, value in summary.items():
                if summary.get("n", 0) > 0 and key != "nme_visible" and not math.isfinite(value):
                    raise RecordError(f"{where}: metric {normalizer}/{subset}/{key} is {value}")


def write_record(record: dict[str, Any], predictions: dict[str, np.ndarray], results_dir: Path) -> Path:
    """Store predictions then the record (with ``record_id``, ``created``, ``schema_version`` and the
    predictions' path and checksum filled in). Returns the record's path."""
    results_dir = Path(results_dir)
    record = dict(record)
    record.setdefault("schema_version", SCHEMA_VERSION)
    record.setdefault("created", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    record.setdefault("record_id", new_record_id(record["method"], record["test_set"]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **predictions)
    pred_path = atomic_write_bytes(results_dir / "predictions" / f"{record['record_id']}.npz", buffer.getvalue())
    record["predictions"] = {"file": str(pred_path.relative_to(results_dir)), "sha256": sha256_file(pred_path)}
    validate_record(record, "new record")
    text = json.dumps(record, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write_bytes(results_dir / "records" / f"{record['record_id']}.json", text.encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a record")


def validate_record(record: dict[str, Any], where: str) -> None:
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise RecordError(f"{where}: missing fields {missing}")
    if record["schema_version"] > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {record['schema_version']} is newer than this code's "
                          f"{SCHEMA_VERSION}; update the project")
    _check_finite(record["metrics"], where)


def load_record(path: Path) -> dict[str, Any]:
    """Read and validate one record."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable record ({err})") from err
    validate_record(record, str(path))
    record["_path"] = str(path)
    return record


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``results_dir/records``, oldest first."""
    paths = sorted((Path(results_dir) / "records").glob("*.json"))
    return sorted((load_record(p) for p in paths), key=lambda r: r["created"])


def load_predictions(record: dict[str, Any], results_dir: Path) -> dict[str, np.ndarray]:
    """The per-image predictions of a record, after checking the file's checksum."""
    path = Path(results_dir) / record["predictions"]["file"]
    if not path.is_file():
        raise RecordError(f"{record['record_id']}: predictions file {path} is missing")
    if sha256_file(path) != record["predictions"]["sha256"]:
        raise RecordError(f"{record['record_id']}: predictions file {path} does not match its checksum")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
