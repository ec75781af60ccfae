"""The square similarity crop of a face (a :class:`CropProtocol`, recorded with every result) and the
normalisers, all computed from a face's annotation: no pixel is needed, so the same functions serve a decoded
:class:`~datamodules.faces.RawFace`, a cached crop and a bare :class:`~datamodules.faces.FaceAnnotation`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from datamodules.cache import CroppedFace
from datamodules.faces import FaceAnnotation, RawFace
from datamodules.files import DatasetError
from landmarks.geometry import points_bbox, square_crop_matrix
from landmarks.layouts import LandmarkLayout
from landmarks.metrics import bbox_size, inter_ocular, inter_pupil

NORMALIZERS = ("inter_ocular", "inter_pupil", "bbox")
LANDMARK_BOX = "landmarks"  # the box of the ground-truth landmarks, always available
CENTERS = ("box", "centroid")
AnnotatedFace = RawFace | FaceAnnotation | CroppedFace  # anything with landmarks, boxes, original_size, image_id


@dataclass(frozen=True)
class CropProtocol:
    """How a face is cropped and which box defines the bbox normaliser; recorded with every result.

    A datamodule's ``crop`` argument is merged into its dataset's default with :func:`resolve_crop`, so a
    config setting only some fields (``crop: {scale: 1.2}``) keeps the dataset's defaults for the others.

    Attributes:
        box_source: key of ``RawFace.boxes`` the crop is built on (``"landmarks"``: the ground-truth box;
            ``"given"``: the rectangle the dataset ships; other datasets add their own, e.g. ``"detector"``).
        scale: crop side = ``scale * max(box width, box height)``.
        center: ``"box"`` (the box centre) or ``"centroid"`` (mean of the ground-truth landmarks, PWC).
        bbox_norm_source: key of ``RawFace.boxes`` whose sqrt(w * h) is the ``bbox`` normaliser.
    """

    box_source: str = LANDMARK_BOX
    scale: float = 1.25
    center: str = "box"
    bbox_norm_source: str = LANDMARK_BOX

    def __post_init__(self) -> None:
        if self.center not in CENTERS:
            raise ValueError(f"crop center must be one of {CENTERS}, got {self.center!r}")
        if not self.scale > 0:
            raise ValueError(f"crop scale must be positive, got {self.scale}")


CropSpec = dict[str, Any] | CropProtocol | None  # a datamodule's ``crop`` argument (dict first: see below)


def resolve_crop(crop: CropSpec, default: CropProtocol) -> CropProtocol:
    """A datamodule's crop: ``default`` with the fields a config sets (``crop: {scale: 1.2}`` keeps the
    dataset's box source), or a complete :class:`CropProtocol`. Configs give a dict, which stays a dict
    through jsonargparse and is merged here; parsing it into a CropProtocol would reset the other fields."""
    if crop is None:
        return default
    if isinstance(crop, CropProtocol):
        return crop
    unknown = set(crop) - {f.name for f in fields(CropProtocol)}
    if unknown:
        raise ValueError(f"unknown crop field(s) {sorted(unknown)}; CropProtocol has "
                         f"{[f.name for f in fields(CropProtocol)]}")
    return replace(default, **crop)


def _box(face: AnnotatedFace, source: str, dataset: str) -> np.ndarray:
    if source == LANDMARK_BOX:
        return points_bbox(np.asarray(face.landmarks, dtype=np.float64))
    if source not in face.boxes:
        raise DatasetError(face.image_id, f"{dataset}: no {source!r} box; this face has "
                                          f"{sorted(face.boxes) + [LANDMARK_BOX]}")
    return np.asarray(face.boxes[source], dtype=np.float64)


def crop_matrix(face: AnnotatedFace, protocol: CropProtocol, size: int, scale: float, dataset: str) -> np.ndarray:
    """The similarity mapping ``face`` into a ``size`` crop of the protocol's box enlarged ``scale`` times.

    Raises :class:`DatasetError` when the box is degenerate or lies entirely outside the image (a box that
    is partly outside is normal for faces at the border).
    """
    box = _box(face, protocol.box_source, dataset)
    h, w = face.original_size
    if not (np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]):
        raise DatasetError(face.image_id, f"{dataset}: degenerate {protocol.box_source!r} box {box.tolist()}")
    if box[2] < 0 or box[3] < 0 or box[0] > w - 1 or box[1] > h - 1:
        raise DatasetError(face.image_id, f"{dataset}: {protocol.box_source!r} box {box.round(1).tolist()} "
                                          f"lies outside the {w}x{h} image")
    center = np.asarray(face.landmarks, dtype=np.float64).mean(0) if protocol.center == "centroid" else None
    return square_crop_matrix(box, scale, size, center=center)


def original_normalizers(face: AnnotatedFace, layout: LandmarkLayout, protocol: CropProtocol,
                         dataset: str) -> np.ndarray:
    """The (3,) normalisers of NORMALIZERS in original-image pixels, from the ground truth."""
    pts = torch.from_numpy(np.asarray(face.landmarks, dtype=np.float64))[None]
    box = torch.from_numpy(_box(face, protocol.bbox_norm_source, dataset))[None]
    return np.array([float(inter_ocular(pts, layout)), float(inter_pupil(pts, layout)), float(bbox_size(box))])
