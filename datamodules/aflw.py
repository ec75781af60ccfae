"""AFLW (19 points): the AFLWinfo_release.mat split of Zhu et al. (CCL), full test set and frontal subset.

Expected layout under ``root`` (the DATA_ROOT sub-folder ``AFLW``; DATASETS.md, "AFLW"):

    AFLWinfo_release.mat       (MATLAB v5)
    flickr/<nameList path>     (the AFLW images, e.g. flickr/3/image00035.jpg)

``AFLWinfo_release.mat`` holds one row per face (24,386): ``bbox`` [x1 x2 y1 y2] (note the order), ``data``
(19 x then 19 y), ``mask_new`` (1 = visible), ``nameList`` (paths relative to ``flickr/``) and ``ra``, a
1-based permutation of the rows whose first 20,000 entries are the training faces and the last 4,386 the test
faces. An image can hold several faces, so faces are rows, not files.

The test set is reported as "full" (every test face) and "frontal" (the ``frontal`` subset tag). Two
definitions of a frontal face are in use, and ``frontal`` chooses one (recorded with every result):

- ``"visible_in_box"`` (default): every one of the 19 points visible *and* strictly inside the given face box, as
  SAN's preparation code (D-X-Y/landmark-detection) tests it; the published test lists of SAN, used by most
  later papers, hold 1,165 faces;
- ``"all_visible"``: every point visible (``mask_new`` all 1), the wording of the papers; TAB quotes 1,314.

The stricter definition can only be the smaller set, which is why it is taken for the 1,165 of most papers;
without the images here this was not measured, so the count is not enforced and the dataset checker prints
both counts for the copy it checks. Every paper normalises by face size, sqrt(w * h) of the given box: the
default crop protocol makes that box the ``bbox`` normaliser and the datamodule's primary one.

The coordinate origin of the release is not documented: ``one_based=False`` (default) keeps the file's
numbers, ``True`` subtracts 1 from points and boxes. The choice is recorded with every result; it shifts
absolute coordinates by one pixel and leaves every NME unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.base import (
    CropProtocol,
    FaceLandmarkDataModule,
    FaceRecord,
    FaceSource,
    RecordSource,
    check_points,
)
from datamodules.files import DatasetError, Problems, check_count, dataset_root, load_mat
from landmarks.layouts import AFLW_19

INFO_FILE = "AFLWinfo_release.mat"
IMAGE_FOLDER = "flickr"
TRAIN_SIZE, TEST_SIZE = 20000, 4386  # the split of ``ra`` (Zhu et al., CVPR 2016)
SPLITS = ("train", "test")
FRONTAL = ("visible_in_box", "all_visible")  # the definitions of a frontal face (module docstring); default first
FRONTAL_WORDS = {"visible_in_box": "frontal (19 visible, inside the box)", "all_visible": "frontal (19 visible)"}
# Default crop: the given face box enlarged 1.25x; its sqrt(w * h) is the "bbox" (face-size) normaliser.
AFLW_CROP = CropProtocol(box_source="given", scale=1.25, bbox_norm_source="given")


@dataclass
class AflwInfo:
    """The contents of AFLWinfo_release.mat, one row per face, in the file's coordinates."""

    names: list[str]  # image paths relative to flickr/
    landmarks: np.ndarray  # (N, 19, 2) float
    visible: np.ndarray  # (N, 19) bool
    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2 (reordered from the file's x1 x2 y1 y2)
    train_index: np.ndarray  # 0-based rows of the training faces, in ``ra`` order
    test_index: np.ndarray  # 0-based rows of the test faces, in ``ra`` order


def _cell_text(cell: object) -> str:
    """A string stored in a MATLAB cell (loadmat wraps it in arrays of one element)."""
    while isinstance(cell, np.ndarray):
        cell = cell.ravel()[0] if cell.size else ""
    return str(cell)


def read_aflw_info(path: str | Path, train_size: int = TRAIN_SIZE) -> AflwInfo:
    """Parse AFLWinfo_release.mat; the first ``train_size`` entries of ``ra`` are the training faces.

    Raises :class:`DatasetError` naming the file on a missing variable, a variable of the wrong shape, or an
    ``ra`` that is not a permutation of 1..N: any of them makes the whole split unusable.
    """
    mat = load_mat(path, ("bbox", "data", "mask_new", "nameList", "ra"))
    data = np.asarray(mat["data"], dtype=np.float64)
    k = AFLW_19.num_points
    if data.ndim != 2 or data.shape[1] != 2 * k:
        raise DatasetError(path, f"'data' has shape {data.shape}, expected (N, {2 * k})")
    n = len(data)
    bbox = np.asarray(mat["bbox"], dtype=np.float64)
    mask = np.asarray(mat["mask_new"], dtype=np.float64)
    names = [_cell_text(c) for c in np.asarray(mat["nameList"], dtype=object).ravel()]
    ra = np.asarray(mat["ra"], dtype=np.float64).ravel()
    for name, shape, expected in (("bbox", bbox.shape, (n, 4)), ("mask_new", mask.shape, (n, k)),
                                  ("nameList", (len(names),), (n,)), ("ra", ra.shape, (n,))):
        if shape != expected:
            raise DatasetError(path, f"{name!r} has shape {shape}, expected {expected} (one row per face)")
    if not np.isin(mask, (0, 1)).all():
        raise DatasetError(path, "'mask_new' holds values other than 0 / 1")
    if not np.array_equal(np.sort(ra), np.arange(1, n + 1)):
        raise DatasetError(path, f"'ra' is not a permutation of 1..{n}")
    order = ra.astype(np.int64) - 1
    return AflwInfo(names, np.stack([data[:, :k], data[:, k:]], -1), mask == 1, bbox[:, [0, 2, 1, 3]],
                    order[:train_size], order[train_size:])


def frontal_faces(landmarks: np.ndarray, visible: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """(N,) bool per definition of :data:`FRONTAL`, for (N, 19, 2) points, (N, 19) visibility, (N, 4) boxes."""
    x, y = landmarks[..., 0], landmarks[..., 1]
    inside = (x > boxes[:, None, 0]) & (x < boxes[:, None, 2]) & (y > boxes[:, None, 1]) & (y < boxes[:, None, 3])
    return {"visible_in_box": (visible & inside).all(1), "all_visible": visible.all(1)}


def aflw_source(root: str | Path, split: str, one_based: bool = False, train_size: int = TRAIN_SIZE,
                on_error: str = "raise", check_counts: bool = True, frontal: str = FRONTAL[0]) -> RecordSource:
    """The AFLW faces of ``split`` ("train" or "test"); test faces frontal by the ``frontal`` definition are
    tagged "frontal"; the test source also counts both definitions (``extra_counts``, printed by the checker)."""
    if split not in SPLITS:
        raise ValueError(f"AFLW split must be one of {SPLITS}, got {split!r}")
    if frontal not in FRONTAL:
        raise ValueError(f"frontal must be one of {FRONTAL}, got {frontal!r}")
    root, name = dataset_root(root, "AFLW"), f"aflw-{split}"
    path, problems, shift = root / INFO_FILE, Problems(name, on_error), 1.0 if one_based else 0.0
    info = read_aflw_info(path, train_size)
    is_frontal = frontal_faces(info.landmarks, info.visible, info.boxes)
    faces, counts = [], dict.fromkeys(FRONTAL, 0)
    for row in info.train_index if split == "train" else info.test_index:
        image_id = f"{IMAGE_FOLDER}/{info.names[row]}"
        if not check_points(problems, f"{path} row {row + 1} ({image_id})", info.landmarks[row], AFLW_19.num_points):
            continue
        if not (root / image_id).is_file():
            problems.report(root / image_id, f"image file is missing (row {row + 1} of {INFO_FILE})")
            continue
        tags = ("frontal",) if split == "test" and is_frontal[frontal][row] else ()
        counts = {d: n + int(is_frontal[d][row]) for d, n in counts.items()}
        faces.append(FaceRecord(root / image_id, info.landmarks[row] - shift, info.visible[row], image_id, tags,
                                {"given": info.boxes[row] - shift}))
    expected = TRAIN_SIZE if split == "train" else TEST_SIZE
    check_count(problems, path, len(faces) + len(problems.errors), expected, check_counts)
    protocol = {"one_based": one_based, "train_size": train_size, "frontal": frontal}
    subsets = ("frontal",) if split == "test" else ()
    source = RecordSource(name, AFLW_19, faces, subsets, protocol, expected, {}, problems)
    if split == "test":
        source.extra_counts = {FRONTAL_WORDS[d] + (" <- 'frontal'" if d == frontal else ""): n
                               for d, n in counts.items()}
    return source


def check_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """The AFLW train and test splits, for the dataset checker (the frontal count is printed, not enforced)."""
    return {split: partial(aflw_source, root, split, **options) for split in SPLITS}


class AFLWDataModule(FaceLandmarkDataModule):
    """AFLW-19: train on the 20,000 training faces, test on the 4,386 test faces (subset "frontal").

    Args:
        root: the AFLW folder (layout in the module docstring).
        one_based: subtract 1 from the file's coordinates (the release does not document its origin).
        train_size: how many leading entries of ``ra`` are training faces (20,000; change it only for a
            partial or hand-made copy, together with ``check_counts=False``).
        frontal: which faces form the "frontal" subset: "visible_in_box" (default; SAN's lists, 1,165 faces in
            most papers) or "all_visible" (TAB's 1,314); see the module docstring.
        **kwargs: FaceLandmarkDataModule arguments. ``crop``: fields overriding ``AFLW_CROP``, the given face
            box enlarged 1.25x, also the face-size normaliser. ``primary_normalizer`` default: "bbox", face size,
            sqrt(w * h) of the given box, as every AFLW paper.
    """

    layout, default_crop, default_normalizer = AFLW_19, AFLW_CROP, "bbox"

    def __init__(self, root: str, one_based: bool = False, train_size: int = TRAIN_SIZE,
                 frontal: Literal["visible_in_box", "all_visible"] = "visible_in_box",
                 primary_normalizer: str | None = default_normalizer, **kwargs) -> None:
        super().__init__(primary_normalizer=primary_normalizer, **kwargs)
        if frontal not in FRONTAL:
            raise ValueError(f"frontal must be one of {FRONTAL}, got {frontal!r}")
        self.root, self.one_based, self.train_size, self.frontal = root, one_based, train_size, frontal

    def build_source(self, split: str) -> FaceSource:
        return aflw_source(self.root, split, one_based=self.one_based, train_size=self.train_size,
                           on_error=self.on_error, check_counts=self.check_counts, frontal=self.frontal)
