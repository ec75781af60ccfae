"""AFLW2000-3D (test) and 300W-LP (train), 68 points: the 3DDFA large-pose protocol.

Expected layouts (DATASETS.md, "AFLW2000-3D and 300W-LP"):

    <root>/AFLW2000/image0XXXX.jpg + image0XXXX.mat    (DATA_ROOT sub-folder AFLW2000-3D; 2,000 faces)
    <root>/AFLW2000-3D-Reannotated.pts68.npy           (optional: 3DDFA's re-annotated 2-D ground truth)
    <train_root>/{AFW,HELEN,IBUG,LFPW}/*.jpg + .mat    (DATA_ROOT sub-folder 300W_LP; 61,225 faces)
    <train_root>/{AFW,HELEN,IBUG,LFPW}_Flip/           (their mirrored twins, read with include_flipped=True)

Each face is an image and a MATLAB v5 ``.mat`` of the same stem; a face missing either is a problem.

AFLW2000-3D: ``pt3d_68`` (3 x 68; rows 0-1 are the 2-D ground truth) and ``Pose_Para`` (pitch, yaw, roll in
radians, tx, ty, tz, scale); ``pt2d`` (21 AFLW points) is ignored. Two ground truths exist and the choice is
recorded: ``ground_truth="original"`` (``pt3d_68``, default) or ``"reannotated"`` (3DDFA's
``AFLW2000-3D-Reannotated.pts68.npy``, (2000, 2, 68) ordered by sorted image name, so it needs the complete
folder). The yaw always comes from ``Pose_Para``.

Protocol (3DDFA): subsets by |yaw| in degrees, as stored (not wrapped, so the few |yaw| > 90 faces fall in the
last bin): ``yaw_0_30`` |yaw| <= 30, ``yaw_30_60`` 30 < |yaw| <= 60, ``yaw_60_90`` |yaw| > 60. The NME is
normalised by sqrt(w * h) of the ground-truth 68-point box (the "bbox" normaliser with the default
``bbox_norm_source="landmarks"``), the datamodule's primary normaliser. The reported "mean" is the balanced
mean of the three bin NMEs, derived from the subset NMEs every evaluation records (no separate metric).

300W-LP: each ``.mat`` holds ``pt2d`` (2 x 68) among the 3DMM parameters. Parsing 61k files up front is too
slow, so the source lists image + ``.mat`` pairs and reads ``pt2d`` when a face loads. The ``_Flip`` folders are
left out by default: the shared augmentation already mirrors faces with the layout's re-indexing. COFW-68's
crop protocol, built on a "given" box, asks the source for the landmark box as one (``given_box``).

Coordinates of both are kept as in the files (0-based, as 3DDFA uses them), recorded as ``one_based: False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.base import (
    LANDMARK_BOX,
    FaceAnnotation,
    FaceLandmarkDataModule,
    FaceRecord,
    FaceSource,
    RawFace,
    RecordSource,
    check_points,
)
from datamodules.files import (
    DatasetError,
    Problems,
    check_count,
    dataset_root,
    image_size,
    load_mat,
    read_image,
    require_file,
    require_folder,
)
from datamodules.w300 import W300_CROP
from landmarks.geometry import points_bbox
from landmarks.layouts import W300_68

AFLW2000_FOLDER = "AFLW2000"
AFLW2000_SIZE = 2000
REANNOTATED_FILE = "AFLW2000-3D-Reannotated.pts68.npy"
GROUND_TRUTHS = ("original", "reannotated")
# Subset tag -> upper bound of |yaw| in degrees (inclusive); a face takes the first bin it fits.
YAW_BINS: tuple[tuple[str, float], ...] = (("yaw_0_30", 30.0), ("yaw_30_60", 60.0), ("yaw_60_90", math.inf))
# Faces per bin: yaw_bin over the yaw of all 2,000 faces in 3DDFA's AFLW2000-3D.pose.npy
# (tests/data/aflw2000_3d; degrees, from Pose_Para).
AFLW2000_SUBSETS = {"yaw_0_30": 1312, "yaw_30_60": 383, "yaw_60_90": 305}
W300LP_FOLDERS = ("AFW", "HELEN", "IBUG", "LFPW")
W300LP_SIZE = 61225  # the four folders, before flipping (the _Flip twins double it)


def yaw_bin(yaw_degrees: float) -> str:
    """The yaw subset tag of a face: boundaries go to the lower bin (|yaw| <= 30, <= 60, beyond)."""
    return next(tag for tag, upper in YAW_BINS if abs(yaw_degrees) <= upper)


def read_aflw2000_mat(path: str | Path) -> tuple[np.ndarray, float]:
    """The (68, 2) 2-D ground truth (rows 0-1 of ``pt3d_68``) and the yaw in degrees of one AFLW2000-3D face."""
    mat = load_mat(path, ("pt3d_68", "Pose_Para"))
    pt3d, pose = np.asarray(mat["pt3d_68"], dtype=np.float64), np.asarray(mat["Pose_Para"], dtype=np.float64)
    if pt3d.shape != (3, W300_68.num_points):
        raise DatasetError(path, f"'pt3d_68' has shape {pt3d.shape}, expected (3, {W300_68.num_points})")
    if pose.size != 7:
        raise DatasetError(path, f"'Pose_Para' has {pose.size} values, expected 7 (pitch yaw roll tx ty tz scale)")
    return pt3d[:2].T.copy(), math.degrees(float(pose.ravel()[1]))


def read_w300lp_mat(path: str | Path) -> np.ndarray:
    """The (68, 2) landmarks (``pt2d``, 2 x 68) of one 300W-LP face; raises naming the file when unusable."""
    pt2d = np.asarray(load_mat(path, ("pt2d",))["pt2d"], dtype=np.float64)
    if pt2d.shape != (2, W300_68.num_points):
        raise DatasetError(path, f"'pt2d' has shape {pt2d.shape}, expected (2, {W300_68.num_points})")
    if not np.isfinite(pt2d).all():
        raise DatasetError(path, "non-finite landmark coordinates in 'pt2d'")
    return pt2d.T.copy()


def read_reannotated(path: str | Path, count: int) -> np.ndarray:
    """3DDFA's re-annotated ground truth as (count, 68, 2), rows in sorted image-name order."""
    path = require_file(path, "re-annotated AFLW2000-3D ground truth")
    try:
        points = np.load(path)
    except (OSError, ValueError) as error:
        raise DatasetError(path, f"unreadable .npy file ({error})") from None
    if points.shape != (count, 2, W300_68.num_points):
        raise DatasetError(path, f"shape {points.shape}, expected ({count}, 2, {W300_68.num_points}): one row per "
                                 "image of the folder in sorted name order (it needs the complete folder)")
    return points.transpose(0, 2, 1).astype(np.float64)


def list_pairs(folder: Path, problems: Problems, image_suffix: str = ".jpg") -> list[tuple[Path, Path] | None]:
    """(image, .mat) of every stem of a folder in sorted order, None (reported) where either file is missing.

    Positions follow the sorted stems, the order of per-folder arrays such as the re-annotated ground truth.
    """
    require_folder(folder, folder.name, f"*{image_suffix}")
    stems = sorted({p.stem for p in folder.glob(f"*{image_suffix}")} | {p.stem for p in folder.glob("*.mat")})
    pairs = []
    for stem in stems:
        image, mat = folder / f"{stem}{image_suffix}", folder / f"{stem}.mat"
        missing = image if not image.is_file() else mat if not mat.is_file() else None
        if missing is not None:
            problems.report(missing, "file is missing (every face needs an image and a .mat of the same stem)")
        pairs.append(None if missing is not None else (image, mat))
    return pairs


def aflw2000_source(root: str | Path, ground_truth: str = "original", reannotated_file: str | Path | None = None,
                    on_error: str = "raise", check_counts: bool = True) -> RecordSource:
    """The 2,000 AFLW2000-3D test faces with yaw subsets; ``ground_truth`` picks the landmarks."""
    if ground_truth not in GROUND_TRUTHS:
        raise ValueError(f"ground_truth must be one of {GROUND_TRUTHS}, got {ground_truth!r}")
    root, name = dataset_root(root, "AFLW2000-3D"), "aflw2000-3d"
    folder, problems = root / AFLW2000_FOLDER, Problems(name, on_error)
    pairs = list_pairs(folder, problems)
    reannotated_file = Path(reannotated_file) if reannotated_file is not None else root / REANNOTATED_FILE
    reannotated = read_reannotated(reannotated_file, len(pairs)) if ground_truth == "reannotated" else None
    faces = []
    for row, pair in enumerate(pairs):
        if pair is None:
            continue
        image, mat = pair
        try:
            points, yaw = read_aflw2000_mat(mat)
        except DatasetError as error:
            problems.report(error.path, error.reason)
            continue
        if not math.isfinite(yaw):
            problems.report(mat, "non-finite yaw in 'Pose_Para'")
            continue
        where = mat if reannotated is None else f"{reannotated_file} row {row} ({image.name})"
        points = points if reannotated is None else reannotated[row]
        if not check_points(problems, where, points, W300_68.num_points):
            continue
        faces.append(FaceRecord(image, points, np.ones(len(points), bool), image.relative_to(root).as_posix(),
                                (yaw_bin(yaw),)))
    check_count(problems, folder, len(faces) + len(problems.errors), AFLW2000_SIZE, check_counts)
    protocol = {"ground_truth": ground_truth, "one_based": False, "yaw_bins": [tag for tag, _ in YAW_BINS]}
    if reannotated is not None:
        protocol["reannotated_file"] = reannotated_file.name
    return RecordSource(name, W300_68, faces, tuple(AFLW2000_SUBSETS), protocol, AFLW2000_SIZE, AFLW2000_SUBSETS,
                        problems)


@dataclass
class MatFace:
    """One listed 300W-LP face: its files only; the landmarks are read from ``mat`` when it loads."""

    image: Path
    mat: Path
    image_id: str
    subsets: tuple[str, ...] = ()


class W300LPSource(FaceSource):
    """300W-LP faces listed up front and parsed lazily (``records`` give the dataset checker their tags).

    ``given_box``: hand each face its landmark box as the "given" box, computed when the face loads (the landmarks
    are only read then), for crop protocols built on a published box, which 300W-LP has none of (COFW-68's).
    """

    def __init__(self, name: str, records: list[MatFace], protocol: dict, expected_size: int,
                 problems: Problems, given_box: bool = False) -> None:
        self.name, self.layout, self.records, self.protocol = name, W300_68, records, protocol
        self.expected_size, self.expected_subsets, self.problems = expected_size, {}, problems
        self.given_box = given_box

    def __len__(self) -> int:
        return len(self.records)

    def image_id(self, index: int) -> str:
        return self.records[index].image_id

    def _boxes(self, points: np.ndarray) -> dict[str, np.ndarray]:
        return {"given": points_bbox(points)} if self.given_box else {}

    def load(self, index: int) -> RawFace:
        r = self.records[index]
        points = read_w300lp_mat(r.mat)
        return RawFace(read_image(r.image), points, np.ones(len(points), bool), r.image_id, r.subsets,
                       self._boxes(points))

    def annotation(self, index: int) -> FaceAnnotation:
        r = self.records[index]
        points = read_w300lp_mat(r.mat)
        return FaceAnnotation(points, np.ones(len(points), bool), r.image_id, image_size(r.image), r.subsets,
                              self._boxes(points))


def w300lp_source(root: str | Path, include_flipped: bool = False, on_error: str = "raise",
                  check_counts: bool = True, given_box: bool = False) -> W300LPSource:
    """The 300W-LP training faces of the four folders (and their ``_Flip`` twins with ``include_flipped``);
    ``given_box``: their landmark box as the "given" box (:class:`W300LPSource`), recorded as
    ``protocol["given_box"] = "landmarks"`` so that crops cached or checkpoints trained either way stay apart."""
    root, name = dataset_root(root, "300W-LP"), "300w-lp-train"
    problems = Problems(name, on_error)
    folders = [*W300LP_FOLDERS, *(f"{f}_Flip" for f in W300LP_FOLDERS if include_flipped)]
    pairs = [pair for folder in folders for pair in list_pairs(root / folder, problems) if pair is not None]
    records = [MatFace(image, mat, image.relative_to(root).as_posix()) for image, mat in pairs]
    expected = W300LP_SIZE * (2 if include_flipped else 1)
    check_count(problems, root, len(records) + len(problems.errors), expected, check_counts)
    protocol = {"include_flipped": include_flipped, "one_based": False}
    if given_box:
        protocol["given_box"] = LANDMARK_BOX
    return W300LPSource(name, records, protocol, expected, problems, given_box)


def check_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """AFLW2000-3D (original ground truth), for the dataset checker."""
    return {"test": partial(aflw2000_source, root, **options)}


def check_w300lp_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """300W-LP with its flipped twins when they are there, for the dataset checker."""
    flipped = all((Path(root) / f"{f}_Flip").is_dir() for f in W300LP_FOLDERS)
    return {"train": partial(w300lp_source, root, include_flipped=flipped, **options)}


class AFLW2000DataModule(FaceLandmarkDataModule):
    """Train on 300W-LP (``train_root``), test on AFLW2000-3D (``root``) by yaw bin, NME by face size.

    Args:
        root: the AFLW2000-3D folder (holding ``AFLW2000/``; layout in the module docstring).
        train_root: the 300W-LP folder.
        ground_truth: "original" (``pt3d_68``) or "reannotated" (3DDFA's re-annotated 2-D landmarks).
        reannotated_file: the re-annotated ``.npy`` (default ``<root>/AFLW2000-3D-Reannotated.pts68.npy``).
        include_flipped: also train on the ``_Flip`` folders (off: the augmentation flips already).
        **kwargs: FaceLandmarkDataModule arguments. ``crop`` default: the ground-truth 68-point box enlarged
            1.25x, as for 300W. ``primary_normalizer`` default: "bbox", sqrt(w * h) of the ground-truth landmark
            box (3DDFA protocol).
    """

    layout, default_crop, default_normalizer = W300_68, W300_CROP, "bbox"

    def __init__(self, root: str, train_root: str, ground_truth: str = "original",
                 reannotated_file: str | None = None, include_flipped: bool = False,
                 primary_normalizer: str | None = default_normalizer, **kwargs) -> None:
        if ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"ground_truth must be one of {GROUND_TRUTHS}, got {ground_truth!r}")
        super().__init__(primary_normalizer=primary_normalizer, **kwargs)
        self.root, self.train_root, self.ground_truth = root, train_root, ground_truth
        self.reannotated_file, self.include_flipped = reannotated_file, include_flipped

    def build_source(self, split: str) -> FaceSource:
        options = {"on_error": self.on_error, "check_counts": self.check_counts}
        if split == "train":
            return w300lp_source(self.train_root, include_flipped=self.include_flipped, **options)
        return aflw2000_source(self.root, self.ground_truth, self.reannotated_file, **options)
