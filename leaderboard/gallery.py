"""Failure galleries and test overlays: face crops with prediction and ground truth drawn, saved beside a record.

Benchmarkers look at faces: a mean NME hides whether a method fails on profiles, on occlusions or everywhere a
little. After a test pass the evaluation recorder (``leaderboard.callback.EvaluationRecorder``) calls
:func:`save_pictures`, which writes, beside the record::

    <results>/pictures/<record_id>/
        worst-01-<image>.jpg ...    the N faces with the largest per-image NME (N = ``gallery_size``, default 8)
        median-01-<image>.jpg ...   the N faces around the median per-image NME
        overlay-001-<image>.jpg ... the first N faces of the test split (``--save-overlays N``)
        pictures.json               the index, written last: which face each file shows and its NME

Per-image NME is the one definition (``leaderboard.scoring.rescore_nme`` over the stored predictions) under the
record's primary normaliser, in percent. Worst: the N largest, largest first; median: the N consecutive faces
in the middle of the ascending order (positions ``(n - N) // 2`` on), smallest first; ties keep the
predictions' order (stable sorts), so a gallery is reproducible from the record alone.

Pictures are drawn in crop coordinates on the crop the model saw (un-augmented, the dataset's own crop
protocol), re-fetched from the test dataset by index after the test, so nothing is kept during the pass and
memory stays bounded whatever the test set's size. Small crops are enlarged to :data:`MIN_SIDE` pixels so the
marks read (``leaderboard.overlays.draw_face``: prediction green dots, ground truth red rings, yellow error
lines). Files are written atomically and never replace one (record ids are unique).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from landmarks.geometry import apply_affine
from leaderboard.overlays import draw_face, write_image
from leaderboard.scoring import rescore_nme
from leaderboard.store import atomic_write_bytes

MIN_SIDE = 192  # px: crops smaller than this (synthetic 64 px faces) are enlarged before drawing
INDEX = "pictures.json"
KINDS = ("worst", "median", "overlays")


class CropSource(Protocol):
    """What :func:`save_pictures` needs of a test dataset (``datamodules.dataset.FaceDataset``): its source
    indices, its crop side and the un-augmented crop window of a face."""

    indices: Sequence[int]
    input_size: int

    def cropped(self, index: int) -> Any: ...


def pick_worst(nme: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest per-image NMEs, largest first (ties: earlier position first)."""
    return np.argsort(-np.asarray(nme, dtype=np.float64), kind="stable")[:max(n, 0)]


def pick_median(nme: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` faces in the middle of the ascending NME order, smallest first: sorted positions
    ``(len - n) // 2`` to ``(len - n) // 2 + n - 1`` (every face when there are fewer than ``n``)."""
    order = np.argsort(np.asarray(nme, dtype=np.float64), kind="stable")
    start = max(0, (len(order) - n) // 2)
    return order[start:start + max(n, 0)]


def pick_first(index: np.ndarray, dataset_order: Sequence[int], n: int) -> np.ndarray:
    """Positions (into ``index``) of the first ``n`` faces in the test split's order ``dataset_order``."""
    where = {int(i): p for p, i in enumerate(np.asarray(index).tolist())}
    return np.array([where[int(i)] for i in dataset_order if int(i) in where][:max(n, 0)], dtype=np.int64)


def pictures_dir(results_dir: Path, record_id: str) -> Path:
    """The folder of a record's pictures: ``<results>/pictures/<record_id>``."""
    return Path(results_dir) / "pictures" / record_id


def read_pictures(results_dir: Path, record_id: str) -> dict[str, Any] | None:
    """A record's picture index (``pictures.json``), None when it has none (recorded before galleries existed,
    with ``gallery_size=0``, or its pictures were interrupted before the index was written)."""
    path = pictures_dir(results_dir, record_id) / INDEX
    return json.loads(path.read_text()) if path.is_file() else None


def face_picture(dataset: CropSource, index: int, pred: np.ndarray, target: np.ndarray,
                 caption: str | None = None, min_side: int = MIN_SIDE) -> np.ndarray:
    """Face ``index`` of ``dataset`` in its un-augmented crop, enlarged to ``min_side`` if smaller, with the
    predicted and ground-truth landmarks (both (K, 2) in original-image pixels) drawn and ``caption`` at the top
    left. Returns an RGB uint8 image."""
    face = dataset.cropped(int(index))
    pad = int(getattr(dataset, "pad", 0))  # an augmenting dataset crops a wider window around the crop
    side = int(dataset.input_size)
    image = np.ascontiguousarray(face.image[pad:pad + side, pad:pad + side])
    matrix = np.array(face.matrix, dtype=np.float64)
    matrix[:, 2] -= pad
    scale = max(1.0, min_side / side)
    if scale > 1:
        image = cv2.resize(image, (round(side * scale),) * 2, interpolation=cv2.INTER_CUBIC)

    def to_picture(points: np.ndarray) -> np.ndarray:  # original pixels -> crop -> enlarged (pixel centres kept)
        return (apply_affine(np.asarray(points, dtype=np.float64), matrix) + 0.5) * scale - 0.5

    return draw_face(image, to_picture(pred), truth=to_picture(target), caption=caption, caption_at=(0.0, 0.0))


def _file_part(image_id: str) -> str:
    """An image id as a short file-name part (letters, digits, ``_`` and ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(image_id)).strip("-")[-48:] or "face"


def save_pictures(results_dir: Path, record: dict[str, Any], predictions: dict[str, Any], dataset: CropSource,
                  gallery_size: int = 8, overlays: int = 0) -> Path | None:
    """Write a record's gallery (``gallery_size`` worst and median faces) and ``overlays`` first test faces
    under :func:`pictures_dir`, then the index; returns the index's path (None when nothing was asked)."""
    if gallery_size <= 0 and overlays <= 0:
        return None
    normalizer = record["protocol"]["primary_normalizer"]
    nme = rescore_nme({k: np.asarray(v) for k, v in predictions.items()}, normalizer) * 100
    index, image_ids = np.asarray(predictions["index"]), [str(i) for i in predictions.get("image_id", [])]
    folder = pictures_dir(results_dir, record["record_id"])
    chosen = {"worst": pick_worst(nme, gallery_size), "median": pick_median(nme, gallery_size),
              "overlays": pick_first(index, dataset.indices, overlays)}
    listing: dict[str, Any] = {"record_id": record["record_id"], "normalizer": normalizer, "n_images": len(nme),
                               "rule": "per-image NME (%) under the primary normaliser; worst: largest first; "
                                       "median: the middle of the ascending order"}
    for kind, positions in chosen.items():
        listing[kind] = []
        for rank, p in enumerate(positions, 1):
            image_id = image_ids[p] if image_ids else str(int(index[p]))
            stem = {"worst": f"worst-{rank:02d}", "median": f"median-{rank:02d}", "overlays": f"overlay-{rank:03d}"}
            name = f"{stem[kind]}-{_file_part(image_id)}.jpg"
            picture = face_picture(dataset, int(index[p]), predictions["pred"][p], predictions["target"][p],
                                   f"NME {nme[p]:.1f}%")
            write_image(folder / name, picture)
            listing[kind].append({"file": name, "index": int(index[p]), "image_id": image_id,
                                  "nme": round(float(nme[p]), 4)})
    text = json.dumps(listing, indent=2) + "\n"
    return atomic_write_bytes(folder / INDEX, text.encode())
