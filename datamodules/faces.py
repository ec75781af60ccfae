"""What a dataset parser hands out: annotated faces of one split (DESIGN.md, "Datasets differ only in parsing").

A :class:`FaceSource` lists the faces of a split and loads one as a :class:`RawFace` (image + landmarks in
original-image pixels). :meth:`FaceSource.annotation` gives the same face without its pixels
(:class:`FaceAnnotation`): all that a crop matrix, the normalisers and the training set's mean shape need, so a
source that parses its annotations up front (:class:`RecordSource`) answers it from the image header alone.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from datamodules.files import Problems, image_size, read_image
from landmarks.layouts import LandmarkLayout


@dataclass
class RawFace:
    """One annotated face as its dataset stores it (original-image pixels, pixel centres at integers)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (K, 2) float
    visible: np.ndarray  # (K,) bool
    image_id: str
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # x1 y1 x2 y2 by source ("given", ...)

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return tuple(self.image.shape[:2])


@dataclass
class FaceAnnotation:
    """A face without its pixels: the annotation and the size of the image it refers to."""

    landmarks: np.ndarray  # (K, 2) float, original-image pixels
    visible: np.ndarray  # (K,) bool
    image_id: str
    original_size: tuple[int, int]  # (H, W)
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)


class FaceSource(abc.ABC):
    """An annotated face list of one split. Subclasses parse a dataset's files; nothing else.

    ``protocol`` holds the annotation choices a result depends on (coordinate origin, which ground truth,
    folder); it is recorded with every result and keys the crop cache. ``expected_size`` and
    ``expected_subsets`` are the published counts the dataset checker compares against.
    """

    name: str
    layout: LandmarkLayout
    subset_names: tuple[str, ...] = ()
    protocol: Mapping[str, Any] = MappingProxyType({})  # read-only default: sources set their own
    expected_size: int | None = None
    expected_subsets: Mapping[str, int] = MappingProxyType({})
    synthetic: bool = False  # generated faces, not a benchmark: records say so, leaderboards mark their rows
    extra_counts: Mapping[str, int] = MappingProxyType({})  # other counts the checker prints (e.g. AFLW's frontal
    # faces under both definitions), compared with nothing
    problems: Problems | None = None  # what the parser skipped (on_error="skip")

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def image_id(self, index: int) -> str:
        """The identifier of face ``index`` (file name, line number), without decoding anything."""

    @abc.abstractmethod
    def load(self, index: int) -> RawFace:
        """Read face ``index``: decode its image and annotation."""

    def annotation(self, index: int) -> FaceAnnotation:
        """Face ``index`` without its pixels. This default decodes the image (a generated face has no other
        way to know its landmarks); sources whose annotations are parsed up front read only the image size."""
        raw = self.load(index)
        return FaceAnnotation(raw.landmarks, raw.visible, raw.image_id, raw.original_size, raw.subsets, raw.boxes)


@dataclass
class FaceRecord:
    """One face of a list-style dataset, parsed up front; its image is decoded only when loaded."""

    image: Path
    landmarks: np.ndarray  # (K, 2) float, original-image pixels, pixel centres at integers
    visible: np.ndarray  # (K,) bool
    image_id: str
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)


class RecordSource(FaceSource):
    """A source whose annotations were parsed into :class:`FaceRecord` s; ``load`` decodes the image file."""

    def __init__(self, name: str, layout: LandmarkLayout, records: list[FaceRecord],
                 subset_names: tuple[str, ...] = (), protocol: dict | None = None,
                 expected_size: int | None = None, expected_subsets: dict[str, int] | None = None,
                 problems: Problems | None = None) -> None:
        self.name, self.layout, self.records, self.subset_names = name, layout, records, tuple(subset_names)
        self.protocol = dict(protocol or {})
        self.expected_size, self.expected_subsets = expected_size, dict(expected_subsets or {})
        self.problems = problems

    def __len__(self) -> int:
        return len(self.records)

    def image_id(self, index: int) -> str:
        return self.records[index].image_id

    def read_image(self, index: int) -> np.ndarray:
        return read_image(self.records[index].image)

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of face ``index``'s image, from the file header (nothing decoded)."""
        return image_size(self.records[index].image)

    def load(self, index: int) -> RawFace:
        r = self.records[index]
        return RawFace(self.read_image(index), r.landmarks, r.visible, r.image_id, r.subsets, r.boxes)

    def annotation(self, index: int) -> FaceAnnotation:
        r = self.records[index]
        return FaceAnnotation(r.landmarks, r.visible, r.image_id, self.image_size(index), r.subsets, r.boxes)


def check_points(problems: Problems, path: str | Path, points: np.ndarray, num_points: int,
                 line: int | None = None) -> bool:
    """Report landmarks of the wrong count or with NaN / infinite values; True when they are usable."""
    if points.shape != (num_points, 2):
        problems.report(path, f"expected {num_points} points, found {points.shape[0]}", line)
        return False
    if not np.isfinite(points).all():
        bad = np.flatnonzero(~np.isfinite(points).all(1)).tolist()
        problems.report(path, f"non-finite landmark coordinates (points {bad})", line)
        return False
    return True
