"""An on-disk cache of cropped faces, so that epoch 2 onward never re-decodes full-size images.

A face is cached as the crop window the dataset cuts (before augmentation) together with its annotation, one
uncompressed ``.npz`` per face, written atomically (temporary file + rename) by whichever worker first
decodes it. All worker and DDP processes share the folder. The folder name is a hash of everything the crop
depends on (source name and protocol, crop protocol, window size), so a changed protocol never reads stale
crops; delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class CroppedFace:
    """A face cut out of its image: the crop window and the annotation in original-image pixels."""

    image: np.ndarray  # (S, S, 3) uint8 crop window
    matrix: np.ndarray  # (2, 3) original image -> crop window
    landmarks: np.ndarray  # (K, 2) original-image pixels
    visible: np.ndarray  # (K,) bool
    image_id: str
    original_size: tuple[int, int]
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)


def cache_key(**parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class CropCache:
    """Cropped faces of one (source, crop, window size) under ``root/<key>/<index>.npz``."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.folder = Path(root) / key

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:07d}.npz"

    def get(self, index: int) -> CroppedFace | None:
        path = self._path(index)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                boxes = {k[4:]: z[k] for k in z.files if k.startswith("box_")}
                return CroppedFace(
                    image=z["image"], matrix=z["matrix"], landmarks=z["landmarks"], visible=z["visible"],
                    image_id=str(z["image_id"]), original_size=tuple(int(v) for v in z["original_size"]),
                    subsets=tuple(str(t) for t in z["subsets"]), boxes=boxes,
                )
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is simply rebuilt

    def put(self, index: int, face: CroppedFace) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "image": face.image, "matrix": face.matrix, "landmarks": face.landmarks, "visible": face.visible,
            "image_id": np.array(face.image_id), "original_size": np.array(face.original_size),
            "subsets": np.array(face.subsets, dtype=str),
            **{f"box_{k}": np.asarray(v) for k, v in face.boxes.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self._path(index))  # concurrent writers produce identical entries
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
