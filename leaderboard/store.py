"""Evaluation records (JSON) and per-image predictions (.npz): written atomically, never overwritten.

Layout under a results folder::

    records/<record_id>.json       one evaluation of one model on one test set
    predictions/<record_id>.npz    its per-image predictions, ground truth and normalisers in original-image
                                   pixels (index, image_id, pred, target, visible, norm, subset_mask, ...)

A file is first written to a temporary name in the same folder, flushed to disk, then hard-linked to its
final name (``os.link`` fails if the name exists, so two writers can never replace each other's file) and the
temporary name removed. The predictions are written before the record that points to them, and both are
validated before either is written.

Records carry ``schema_version``; readers check it and the required fields, so a record can gain fields in
later versions without breaking old ones. Validation (on write and on read, :class:`RecordError` naming the
file and the problem):

- required fields, finite metric values, and ``metrics[normalizer]["full"]["n"] == n_images``;
- ``digest`` (schema 2): ``"sha256:<hex>"`` of the record's canonical JSON without ``digest`` and without keys
  starting with ``_`` (which readers attach, e.g. ``_path``). A record edited by hand after it was written no
  longer matches; results are re-scored with ``python -m leaderboard submit`` instead. Schema-1 records
  (written before digests) load without one;
- ``expected`` (optional) = ``{"n_images": int | None, "subsets": {name: int | None}, "partial": bool}``: the
  published size of the test set and of its subsets; the record's counts must match unless ``partial``;
- ``image_set`` (written since this field exists; :func:`image_set`) = ``{"n_images", "key", "digest"}``: which
  images were scored, so that a test set's identity is its name *and* its content (:class:`ImageSetIdentity`).
  ``write_record`` computes it from the predictions; for older records readers compute it the same way from the
  stored predictions (:func:`identity`);
- predictions (:func:`validate_predictions`): the checksum, the required arrays, one row per image of the
  record, consistent shapes, unique indices, finite coordinates and normalisers, and the record's
  ``image_set`` where it has one.
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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FULL = "full"  # landmarks.metrics.FULL, not imported: reading records needs no torch (the CI gate stays light)
SCHEMA_VERSION = 2  # 2: records carry a digest
DIGEST_SINCE = 2  # the first schema version whose records must carry a digest
REQUIRED_FIELDS = ("schema_version", "record_id", "created", "method", "test_set", "protocol", "metrics",
                   "n_images", "predictions")
MODIFIED = ("the record was modified after it was written (hand-edited or corrupted): its digest does not match "
            "its content. Records are never edited; re-score the predictions with `python -m leaderboard submit` "
            "instead")
PREDICTION_KEYS = ("index", "pred", "target", "norm", "normalizers", "subset_mask", "subsets", "visible")
IMAGE_SET_KEYS = ("image_id", "index")  # what an image set's digest is taken over, preferred first


class RecordError(ValueError):
    """A record or predictions file that is missing, malformed, or does not match its checksum."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are shared like any file the user writes
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_metrics(metrics: Any, where: str) -> None:
    """``{normalizer: {subset: {key: number}}}``, finite wherever a subset has images (``nme_visible`` may be
    NaN: a subset can hold no visible point)."""
    if not isinstance(metrics, dict) or not metrics:
        raise RecordError(f"{where}: metrics must be a non-empty {{normalizer: {{subset: summary}}}} mapping")
    for normalizer, per_subset in metrics.items():
        if not isinstance(per_subset, dict) or not per_subset:
            raise RecordError(f"{where}: metrics of normaliser {normalizer!r} must be a non-empty {{subset: summary}}")
        for subset, summary in per_subset.items():
            if not isinstance(summary, dict):
                raise RecordError(f"{where}: metric {normalizer}/{subset} must be a {{metric: value}} mapping")
            for key, value in summary.items():
                if not _is_number(value):
                    raise RecordError(f"{where}: metric {normalizer}/{subset}/{key} is not a number ({value!r})")
            if "n" not in summary:
                raise RecordError(f"{where}: metric {normalizer}/{subset} has no image count 'n'")
            for key, value in summary.items():
                if summary["n"] > 0 and key != "nme_visible" and not math.isfinite(value):
                    raise RecordError(f"{where}: metric {normalizer}/{subset}/{key} is {value}")


def check_image_counts(record: dict[str, Any], where: str) -> None:
    """``n_images`` against every normaliser's full-set count, and against ``expected`` unless it is partial."""
    n_images, metrics = record["n_images"], record["metrics"]
    if not _is_count(n_images):
        raise RecordError(f"{where}: n_images must be a non-negative integer, got {n_images!r}")
    for normalizer, per_subset in metrics.items():
        if FULL not in per_subset:
            raise RecordError(f"{where}: metrics of normaliser {normalizer!r} have no {FULL!r} subset")
        if per_subset[FULL]["n"] != n_images:
            raise RecordError(f"{where}: metric {normalizer}/{FULL}/n counts {per_subset[FULL]['n']:g} images but "
                              f"n_images is {n_images} (images without a finite NME are not counted)")
    expected = record.get("expected")
    if expected is None:
        return
    if not isinstance(expected, dict):
        raise RecordError(f"{where}: expected must be a mapping {{n_images, subsets, partial}}, got {expected!r}")
    n_expected, subsets = expected.get("n_images"), expected.get("subsets") or {}
    if n_expected is not None and not _is_count(n_expected):
        raise RecordError(f"{where}: expected.n_images must be an integer or null, got {n_expected!r}")
    if not isinstance(subsets, dict) or not all(c is None or _is_count(c) for c in subsets.values()):
        raise RecordError(f"{where}: expected.subsets must map subset names to integers or null, got {subsets!r}")
    if expected.get("partial"):
        return  # a deliberately partial evaluation: its counts are what they are
    hint = "(a deliberately partial evaluation must set expected.partial = true)"
    if n_expected is not None and n_images != n_expected:
        raise RecordError(f"{where}: {n_images} images evaluated, but test set {record['test_set']!r} has "
                          f"{n_expected} (expected.n_images) {hint}")
    for subset, count in subsets.items():
        if count is None:
            continue
        for normalizer, per_subset in metrics.items():
            if subset not in per_subset:
                raise RecordError(f"{where}: expected subset {subset!r} ({count} images) is not in the metrics "
                                  f"of normaliser {normalizer!r}")
            if per_subset[subset]["n"] != count:
                raise RecordError(f"{where}: metric {normalizer}/{subset}/n counts {per_subset[subset]['n']:g} "
                                  f"images, but subset {subset!r} has {count} (expected.subsets) {hint}")


def image_set(predictions: dict[str, Any]) -> dict[str, Any]:
    """Which images an evaluation scored: ``{"n_images": N, "key": "image_id" | "index", "digest":
    "sha256:<hex>"}``, the digest taken over ``key`` and then the sorted image ids, one per line (the sorted
    dataset indices where the predictions carry no ids). The order in which the images were scored does not
    count, so two evaluations scored the same images exactly when their image sets are equal; a test set of the
    same name but other images (a 64-image run of a 500-image test set) has another."""
    key = next((k for k in IMAGE_SET_KEYS if k in predictions), None)
    if key is None:
        raise RecordError(f"predictions without {' or '.join(IMAGE_SET_KEYS)}: no way to tell which images they hold")
    values = np.asarray(predictions[key]).tolist()
    names = [str(v) for v in sorted(values if key == "index" else map(str, values))]  # indices sorted as numbers
    text = "\n".join([key, *names])
    return {"n_images": len(names), "key": key, "digest": "sha256:" + hashlib.sha256(text.encode()).hexdigest()}


@dataclass(frozen=True)
class ImageSetIdentity:
    """A test set's identity: its name and its content (how many images, and which: :func:`image_set`).
    Numbers of different identities are never compared (one leaderboard table each; the gate refuses)."""

    test_set: str
    n_images: int
    digest: str
    key: str = "image_id"  # what the digest is taken over: "image_id", or "index" where a record has no ids

    @property
    def short(self) -> str:
        """The first 12 hex digits of the digest, as tables and messages show it."""
        return self.digest.removeprefix("sha256:")[:12]

    def __str__(self) -> str:
        return f"{self.test_set} ({self.n_images} images, image set {self.short})"


def identity(record: dict[str, Any], predictions: dict[str, Any] | None = None) -> ImageSetIdentity:
    """The test-set identity of a record: from its ``image_set``, else (a record written before records
    carried one) from its ``predictions``. Raises :class:`RecordError` when it has neither."""
    stored = record.get("image_set")
    if stored is None:
        if predictions is None:
            raise RecordError(f"{record.get('record_id')}: the record has no image_set (written before records "
                              f"carried one) and its predictions were not given")
        stored = image_set(predictions)
    return ImageSetIdentity(str(record["test_set"]), int(stored["n_images"]), str(stored["digest"]), str(stored["key"]))


def _check_image_set(record: dict[str, Any], where: str) -> None:
    stored = record.get("image_set")
    if stored is None:
        return
    if not (isinstance(stored, dict) and stored.get("key") in IMAGE_SET_KEYS and _is_count(stored.get("n_images"))
            and isinstance(stored.get("digest"), str) and stored["digest"].startswith("sha256:")):
        raise RecordError(f"{where}: image_set must be {{'n_images': int, 'key': one of {list(IMAGE_SET_KEYS)}, "
                          f"'digest': 'sha256:<hex>'}}, got {stored!r}")


def record_digest(record: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the record's canonical JSON, leaving out ``digest`` and keys starting with ``_``."""
    body = {k: v for k, v in record.items() if k != "digest" and not str(k).startswith("_")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_record(record: dict[str, Any], predictions: dict[str, np.ndarray], results_dir: Path) -> Path:
    """Store predictions then the record (with ``record_id``, ``created``, ``schema_version``, the
    predictions' path and checksum, the ``image_set`` of the predictions (replacing any given one: it is what
    the stored predictions hold), and the record's ``digest`` filled in). Returns the record's path.

    Both are validated first (:func:`validate_record`, :func:`validate_predictions`): nothing is written for
    an invalid record. Keys starting with ``_`` (attached by readers) and a stale ``digest`` are dropped.
    """
    results_dir = Path(results_dir)
    record = {k: v for k, v in record.items() if k != "digest" and not str(k).startswith("_")}
    record["schema_version"] = SCHEMA_VERSION
    record.setdefault("created", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    record.setdefault("record_id", new_record_id(str(record.get("method")), str(record.get("test_set"))))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **predictions)
    data = buffer.getvalue()
    pred_path = results_dir / "predictions" / f"{record['record_id']}.npz"
    record["predictions"] = {"file": str(pred_path.relative_to(results_dir)),
                             "sha256": hashlib.sha256(data).hexdigest()}
    if "index" in predictions:  # else validate_predictions below says what is missing
        record["image_set"] = image_set(predictions)
    try:  # as a reader will see it: JSON types only (tuples as lists, numpy scalars as numbers, string keys)
        record = json.loads(json.dumps(record, default=_json_default))
    except (TypeError, ValueError) as err:
        raise RecordError(f"new record {record['record_id']}: cannot be stored as JSON ({err})") from err
    record["digest"] = record_digest(record)
    where = f"new record {record['record_id']}"
    validate_record(record, where)
    validate_predictions({k: np.asarray(v) for k, v in predictions.items()}, record, f"{where}: predictions")
    atomic_write_bytes(pred_path, data)
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
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
    """Raise :class:`RecordError` (prefixed with ``where``) unless the record is well formed, counts the
    images it should, and (schema 2 on) matches its digest."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise RecordError(f"{where}: missing fields {missing}")
    version = record["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{where}: schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {version} is newer than this code's "
                          f"{SCHEMA_VERSION}; update the project")
    predictions = record["predictions"]
    if not (isinstance(predictions, dict) and isinstance(predictions.get("file"), str)
            and isinstance(predictions.get("sha256"), str)):
        raise RecordError(f"{where}: predictions must be {{'file': path, 'sha256': hex}}, got {predictions!r}")
    modified = "digest" in record and record["digest"] != record_digest(record)
    try:
        _check_metrics(record["metrics"], where)
        check_image_counts(record, where)
        _check_image_set(record, where)
    except RecordError as err:
        if modified:  # say why the content is wrong, and how it came to be
            raise RecordError(f"{err}; {MODIFIED}") from None
        raise
    if "digest" not in record:
        if version >= DIGEST_SINCE:
            raise RecordError(f"{where}: schema-{version} record has no digest; it was not written by "
                              f"write_record (re-score it with `python -m leaderboard submit`)")
        return  # schema 1: written before records carried a digest
    if modified:
        raise RecordError(f"{where}: {MODIFIED}")


def load_record(path: Path) -> dict[str, Any]:
    """Read and validate one record (its digest included); adds ``_path``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable record ({err})") from err
    validate_record(record, str(path))
    record["_path"] = str(path)
    return record


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``results_dir/records``, oldest first."""
    paths = sorted((Path(results_dir) / "records").glob("*.json"))
    return sorted((load_record(p) for p in paths), key=lambda r: r["created"])


def read_npz(path: Path, where: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, never unpickling (object arrays are refused)."""
    where = where or str(path)
    try:
        if not zipfile.is_zipfile(path):
            raise RecordError(f"{where}: unreadable predictions (not an .npz archive of arrays)")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except RecordError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise RecordError(f"{where}: holds pickled Python objects (object arrays), which are never loaded; "
                              f"store plain numeric and string arrays") from err
        raise RecordError(f"{where}: unreadable predictions ({err})") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise RecordError(f"{where}: unreadable predictions ({err})") from err


def load_predictions(record: dict[str, Any], results_dir: Path) -> dict[str, np.ndarray]:
    """The per-image predictions of a record, after checking the file's checksum and its arrays."""
    path = Path(results_dir) / record["predictions"]["file"]
    if not path.is_file():
        raise RecordError(f"{record['record_id']}: predictions file {path} is missing")
    if sha256_file(path) != record["predictions"]["sha256"]:
        raise RecordError(f"{record['record_id']}: predictions file {path} does not match its checksum")
    where = f"{record['record_id']}: predictions file {path}"
    predictions = read_npz(path, where)
    validate_predictions(predictions, record, where)
    return predictions


def _names(value: np.ndarray, key: str, where: str) -> list[str]:
    if value.ndim != 1 or (value.size and value.dtype.kind not in "US"):
        raise RecordError(f"{where}: {key!r} must be a 1-D array of names, got dtype {value.dtype} shape "
                          f"{value.shape}")
    names = [str(s) for s in value]
    if len(set(names)) != len(names):
        raise RecordError(f"{where}: {key!r} repeats names: {names}")
    return names


def validate_predictions(predictions: dict[str, Any], record: dict[str, Any] | None = None, where: str = "") -> None:
    """Raise :class:`RecordError` unless ``predictions`` hold the arrays of an evaluation, consistently.

    Checks: the keys of :data:`PREDICTION_KEYS`; no object arrays; ``index`` (N,) unique integers; ``pred``
    and ``target`` (N, K, 2) finite; ``visible`` (N, K); ``norm`` (N, len(normalizers)) finite and positive;
    ``subset_mask`` (N, len(subsets)); ``image_id`` (if any) (N,). With ``record``: N == ``n_images``, and
    every normaliser and subset of its metrics is in the predictions.
    """
    where = where or "predictions"
    missing = [k for k in PREDICTION_KEYS if k not in predictions]
    if missing:
        raise RecordError(f"{where}: missing arrays {missing} (it has {sorted(predictions)})")
    arrays = {k: np.asarray(v) for k, v in predictions.items()}
    objects = sorted(k for k, v in arrays.items() if v.dtype.kind == "O")
    if objects:
        raise RecordError(f"{where}: arrays {objects} hold Python objects; store plain numeric and string arrays")
    index = arrays["index"]
    if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
        raise RecordError(f"{where}: 'index' must be a 1-D integer array, got dtype {index.dtype} shape {index.shape}")
    n = len(index)
    if len(np.unique(index)) != n:
        values, counts = np.unique(index, return_counts=True)
        raise RecordError(f"{where}: 'index' repeats images {values[counts > 1][:10].tolist()}")
    normalizers = _names(arrays["normalizers"], "normalizers", where)
    subsets = _names(arrays["subsets"], "subsets", where)
    if not normalizers:
        raise RecordError(f"{where}: 'normalizers' is empty")
    pred, target = arrays["pred"], arrays["target"]
    if pred.ndim != 3 or pred.shape[0] != n or pred.shape[2] != 2:
        raise RecordError(f"{where}: 'pred' has shape {pred.shape}, expected ({n}, K, 2) for {n} indices")
    if target.shape != pred.shape:
        raise RecordError(f"{where}: 'target' has shape {target.shape}, 'pred' {pred.shape}")
    shapes = {"visible": (n, pred.shape[1]), "norm": (n, len(normalizers)), "subset_mask": (n, len(subsets))}
    if "image_id" in arrays:
        shapes["image_id"] = (n,)
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise RecordError(f"{where}: {key!r} has shape {arrays[key].shape}, expected {shape}")
    for key in ("pred", "target", "norm", "visible", "subset_mask"):
        if arrays[key].size and arrays[key].dtype.kind not in "biuf":
            raise RecordError(f"{where}: {key!r} must be numeric, got dtype {arrays[key].dtype}")
    for key in ("pred", "target", "norm"):
        bad = ~np.isfinite(arrays[key]).reshape(n, -1).all(1)
        if bad.any():
            raise RecordError(f"{where}: {key!r} is not finite for {int(bad.sum())} image(s), e.g. index "
                              f"{index[bad][:5].tolist()}")
    bad = ~(arrays["norm"] > 0).all(1)
    if bad.any():
        raise RecordError(f"{where}: 'norm' is not positive for {int(bad.sum())} image(s), e.g. index "
                          f"{index[bad][:5].tolist()}")
    if record is None:
        return
    if record.get("n_images") != n:
        raise RecordError(f"{where}: {n} rows, but the record has n_images = {record.get('n_images')!r}")
    metrics = record.get("metrics") or {}
    unknown = sorted(set(metrics) - set(normalizers))
    if unknown:
        raise RecordError(f"{where}: the record's normalisers {unknown} are not in the predictions ({normalizers})")
    unknown = sorted({s for per_subset in metrics.values() for s in per_subset} - {FULL, *subsets})
    if unknown:
        raise RecordError(f"{where}: the record's subsets {unknown} are not in the predictions ({subsets})")
    stored, held = record.get("image_set"), image_set(arrays)
    if stored is not None and held != stored:
        raise RecordError(f"{where}: holds other images (image_set {held['digest']}, {held['n_images']} images by "
                          f"{held['key']}) than the record names ({stored.get('digest')})")
