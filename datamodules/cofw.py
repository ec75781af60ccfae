"""COFW (29 points, train + test) and COFW-68 (the COFW test faces re-annotated with 300W's 68 points).

Expected layout under ``root`` (one DATA_ROOT sub-folder ``COFW``; DATASETS.md, "COFW" and "COFW-68"):

    COFW_train_color.mat                        IsTr, phisTr, bboxesTr   (1,345 faces, MATLAB v7.3 = HDF5)
    COFW_test_color.mat                         IsT,  phisT,  bboxesT    (507 faces)
    COFW68_Data/test_annotations/{i}_points.mat Points (68x2), Occ (1x68), i = 1..507 (MATLAB v5)
    COFW68_Data/cofw68_test_bboxes.mat          bboxes (507x4, x y w h)

When a colour file is absent the original grey release is read instead (``COFW_train.mat`` /
``COFW_test.mat``, MATLAB v5, same variables and face order); the file used is recorded as ``protocol["file"]``.
Either MATLAB version is read (v7.3 with h5py, older ones with scipy).

``phis`` is N x 87: x1..x29, y1..y29, occlusion1..29 (1 = occluded, so ``visible`` is its negation);
``bboxes`` is N x 4 [x y w h], attached as the "given" box [x, y, x + w, y + h]. Coordinates are MATLAB's,
1-based; ``one_based=True`` (default) subtracts 1 from points and boxes so pixel centres sit at integers,
``False`` keeps the file's numbers. The choice is recorded with every result; it shifts absolute
coordinates by one pixel and leaves every NME unchanged.

COFW-68 annotation ``i`` belongs to the i-th image of the COFW test ``.mat``. Its ``Points`` are 1-based too,
so ``one_based`` shifts them the same way: the cofw68-benchmark is MATLAB throughout and draws ``Points`` and
the boxes (``rectangle('Position', bboxes(i, :))``) straight over ``imshow(IsT{i})``, whose pixel centres are
1..W; the boxes come from 300W's 1-based detector protocol. COFW-68 is test-only: models train on 300W
(``train_root``), or on 300W-LP with ``train_set="300w_lp"`` (TAB, Table 5), whose faces have no published box,
so their "given" box is their landmark box (recorded as ``protocol["given_box"]``); COFW-68 test faces are
cropped on the published box, whose sqrt(w * h) is also the "bbox" normaliser (TAB, GlomFace "NME_bbx"). The
benchmark's own NME divides by the distance between the eye centres (means of points 36-41 and 42-47), which
is the 68-point layout's "inter_pupil" normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import scipy.io

from datamodules.aflw2000 import w300lp_source
from datamodules.base import (
    CropProtocol,
    FaceLandmarkDataModule,
    FaceRecord,
    FaceSource,
    RecordSource,
    check_points,
)
from datamodules.files import DatasetError, Problems, check_count, dataset_root, load_mat, require_file
from datamodules.w300 import TRAIN_FOLDERS, w300_source
from landmarks.geometry import points_bbox
from landmarks.layouts import COFW_29, W300_68, LandmarkLayout

# Split -> (file names under the root, colour first; published number of faces).
SPLITS: dict[str, tuple[tuple[str, str], int]] = {
    "train": (("COFW_train_color.mat", "COFW_train.mat"), 1345),
    "test": (("COFW_test_color.mat", "COFW_test.mat"), 507),
}
# Default crops: the published box enlarged 1.25x (COFW-68: also its sqrt(w * h) as the "bbox" normaliser).
COFW_CROP = CropProtocol(box_source="given", scale=1.25)
COFW68_CROP = CropProtocol(box_source="given", scale=1.25, bbox_norm_source="given")
MAT_PREFIXES = ("Is", "phis", "bboxes")  # + "Tr" (train) or "T" (test)
COFW68_ANNOTATIONS = "COFW68_Data/test_annotations"
COFW68_BOXES = "COFW68_Data/cofw68_test_bboxes.mat"
COFW68_SIZE = 507


@dataclass
class CofwData:
    """The contents of a COFW ``.mat``, as in the file (1-based coordinates)."""

    images: list[np.ndarray]  # (H, W, 3) uint8 RGB; grey images replicated to three channels
    landmarks: np.ndarray  # (N, 29, 2) float64
    occluded: np.ndarray  # (N, 29) bool
    boxes: np.ndarray  # (N, 4) float64, x y w h


def _variable(path: Path, names: list[str], prefix: str) -> str:
    for name in (prefix + "Tr", prefix + "T"):
        if name in names:
            return name
    raise DatasetError(path, f"missing variable {prefix}Tr / {prefix}T (the file has {sorted(names)})")


def _rgb(image: np.ndarray, path: Path, number: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(path, f"image {number} is {image.dtype} {image.shape}, expected uint8 H x W (x 3)")
    return np.ascontiguousarray(image)


def _read_v73(path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """HDF5 shows MATLAB arrays transposed; a cell array is a dataset of references into ``#refs#``."""
    with h5py.File(path, "r") as f:
        names = [k for k in f if not k.startswith("#")]
        cells, phis, boxes = (f[_variable(path, names, p)] for p in MAT_PREFIXES)
        if h5py.check_ref_dtype(cells.dtype) is None:
            raise DatasetError(path, f"{cells.name.lstrip('/')} is not a cell array of images")
        images = [np.asarray(f[ref]).T for ref in np.asarray(cells).ravel()]
        return images, np.asarray(phis, dtype=np.float64).T, np.asarray(boxes, dtype=np.float64).T


def _read_v5(path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    mat = scipy.io.loadmat(str(path))  # all of it: reading only some variables would miss a truncated end
    keys = [_variable(path, [k for k in mat if not k.startswith("__")], p) for p in MAT_PREFIXES]
    cells, phis, boxes = (mat[k] for k in keys)
    if cells.dtype != object:
        raise DatasetError(path, f"{keys[0]} is not a cell array of images")
    return list(cells.ravel(order="F")), np.asarray(phis, dtype=np.float64), np.asarray(boxes, dtype=np.float64)


def read_cofw_mat(path: str | Path) -> CofwData:
    """Read a COFW ``.mat`` of either MATLAB version (v7.3 / HDF5 or older), values exactly as in the file.

    Raises :class:`DatasetError` naming the file when it is missing, unreadable or not a ``.mat``, lacks one of
    the ``Is`` / ``phis`` / ``bboxes`` variables, has ``phis`` not N x 87 or ``bboxes`` not N x 4, when the
    variables disagree on N, or when an image is not uint8 grey or RGB.
    """
    path = require_file(path, "COFW .mat")
    try:
        images, phis, boxes = _read_v73(path) if h5py.is_hdf5(path) else _read_v5(path)
    except DatasetError:
        raise
    except Exception as error:  # scipy and h5py raise many types on a truncated or foreign file
        raise DatasetError(path, f"unreadable .mat file ({type(error).__name__}: {error})") from None
    if phis.ndim != 2 or phis.shape[1] != 3 * COFW_29.num_points:
        raise DatasetError(path, f"phis is {' x '.join(map(str, phis.shape))}, expected N x 87 (x, y, occlusion)")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DatasetError(path, f"bboxes is {' x '.join(map(str, boxes.shape))}, expected N x 4 (x y w h)")
    if not len(images) == len(phis) == len(boxes):
        raise DatasetError(path, f"{len(images)} images, {len(phis)} phis rows and {len(boxes)} bboxes rows")
    k = COFW_29.num_points
    return CofwData(images=[_rgb(image, path, i + 1) for i, image in enumerate(images)],
                    landmarks=np.stack([phis[:, :k], phis[:, k:2 * k]], axis=-1),
                    occluded=phis[:, 2 * k:] != 0, boxes=boxes)


def read_cofw68_annotation(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One COFW-68 ``{i}_points.mat``: points (68, 2) float64 as in the file (1-based), occluded (68,) bool."""
    mat = load_mat(path, ("Points", "Occ"), "COFW-68 annotation")
    points, occ = np.asarray(mat["Points"], dtype=np.float64), np.asarray(mat["Occ"]).ravel()
    if points.shape != (W300_68.num_points, 2):
        raise DatasetError(path, f"Points is {' x '.join(map(str, points.shape))}, expected 68 x 2")
    if occ.size != W300_68.num_points:
        raise DatasetError(path, f"Occ has {occ.size} values, expected 68")
    return points, occ != 0


def read_cofw68_boxes(path: str | Path) -> np.ndarray:
    """The COFW-68 face boxes (N, 4) float64 [x y w h] as in the file (507 in the release)."""
    boxes = np.asarray(load_mat(path, ("bboxes",), "COFW-68 boxes")["bboxes"], dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DatasetError(path, f"bboxes is {' x '.join(map(str, boxes.shape))}, expected N x 4 (x y w h)")
    return boxes


def cofw_mat_path(root: str | Path, split: str) -> Path:
    """The ``.mat`` of ``split`` under ``root``: the colour release, else the grey one."""
    if split not in SPLITS:
        raise ValueError(f"unknown COFW split {split!r}; expected one of {sorted(SPLITS)}")
    names, root = SPLITS[split][0], dataset_root(root, "COFW")
    for name in names:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise DatasetError(Path(root) / names[0], f"COFW {split} file is missing (and so is the grey {names[1]})")


class CofwSource(RecordSource):
    """Faces whose images live inside a ``.mat``: decoded once with the annotations and kept in memory."""

    def __init__(self, images: list[np.ndarray], **kwargs) -> None:
        super().__init__(**kwargs)
        self.images = images  # aligned with self.records

    def read_image(self, index: int) -> np.ndarray:
        return self.images[index]

    def image_size(self, index: int) -> tuple[int, int]:
        return tuple(self.images[index].shape[:2])


def _record(problems: Problems, where: str, path: Path, image_id: str, points: np.ndarray, occluded: np.ndarray,
            box: np.ndarray, num_points: int, shift: float) -> FaceRecord | None:
    """A face with its [x y w h] box as "given" [x1 y1 x2 y2]; None (reported) when points or box are bad."""
    if not check_points(problems, where, points, num_points):
        return None
    x, y, w, h = box
    if not (np.isfinite(box).all() and w > 0 and h > 0):
        problems.report(where, f"invalid box [x y w h] {box.tolist()}")
        return None
    return FaceRecord(path, points - shift, ~occluded, image_id, (), {"given": np.array([x, y, x + w, y + h]) - shift})


def _source(name: str, layout: LandmarkLayout, path: Path, images: list, records: list, problems: Problems,
            expected: int, check_counts: bool, protocol: dict) -> CofwSource:
    """The source of the faces whose record is not None (the others were reported); counts enforced."""
    kept = [image for image, record in zip(images, records, strict=True) if record is not None]
    records = [record for record in records if record is not None]
    check_count(problems, path, len(records) + len(problems.errors), expected, check_counts)
    return CofwSource(kept, name=name, layout=layout, records=records, protocol=protocol, expected_size=expected,
                      problems=problems)


def cofw_source(root: str | Path, split: str, one_based: bool = True, on_error: str = "raise",
                check_counts: bool = True) -> CofwSource:
    """The COFW 29-point faces of ``split`` ("train" or "test")."""
    path = cofw_mat_path(root, split)
    data, problems, shift = read_cofw_mat(path), Problems(f"cofw-{split}", on_error), 1.0 if one_based else 0.0
    records = [_record(problems, f"{path}#{i + 1}", path, f"{path.name}#{i + 1}", data.landmarks[i],
                       data.occluded[i], data.boxes[i], COFW_29.num_points, shift) for i in range(len(data.images))]
    return _source(f"cofw-{split}", COFW_29, path, data.images, records, problems, SPLITS[split][1], check_counts,
                   {"one_based": one_based, "file": path.name})


def cofw68_source(root: str | Path, one_based: bool = True, on_error: str = "raise",
                  check_counts: bool = True) -> CofwSource:
    """The 507 COFW test faces with their 68-point annotations and published boxes (test only)."""
    root, problems, shift = Path(root), Problems("cofw68-test", on_error), 1.0 if one_based else 0.0
    path = cofw_mat_path(root, "test")
    data, boxes = read_cofw_mat(path), read_cofw68_boxes(root / COFW68_BOXES)
    if len(boxes) < len(data.images):
        raise DatasetError(root / COFW68_BOXES, f"{len(boxes)} boxes for the {len(data.images)} images of {path.name}")
    records = []
    for i in range(len(data.images)):
        annotation = root / COFW68_ANNOTATIONS / f"{i + 1}_points.mat"
        try:
            points, occluded = read_cofw68_annotation(annotation)
        except DatasetError as error:
            problems.report(error.path, error.reason)
            records.append(None)
            continue
        records.append(_record(problems, str(annotation), path, f"{path.name}#{i + 1}", points, occluded, boxes[i],
                               W300_68.num_points, shift))
    return _source("cofw68-test", W300_68, path, data.images, records, problems, COFW68_SIZE, check_counts,
                   {"one_based": one_based, "file": path.name, "annotations": COFW68_ANNOTATIONS})


def check_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """COFW train and test and COFW-68, for the dataset checker (a missing file raises)."""
    return {"train": partial(cofw_source, root, "train", **options),
            "test": partial(cofw_source, root, "test", **options), "cofw68": partial(cofw68_source, root, **options)}


class COFWDataModule(FaceLandmarkDataModule):
    """COFW: train on the 1,345 training faces, test on the 507 test faces (29 points, occlusion flags).

    Args:
        root: the COFW folder (layout in the module docstring).
        one_based: subtract 1 from the MATLAB coordinates.
        **kwargs: FaceLandmarkDataModule arguments. ``crop`` default: the published box enlarged 1.25x.
            ``primary_normalizer`` default: "inter_pupil", the "COFW NME" of most papers (HRNet, PIPNet and
            mmpose use "inter_ocular", the outer eye corners 8-9).
    """

    layout, default_crop, default_normalizer = COFW_29, COFW_CROP, "inter_pupil"

    def __init__(self, root: str, one_based: bool = True, primary_normalizer: str | None = default_normalizer,
                 **kwargs) -> None:
        super().__init__(primary_normalizer=primary_normalizer, **kwargs)
        self.root, self.one_based = root, one_based

    def _options(self) -> dict:
        return {"one_based": self.one_based, "on_error": self.on_error, "check_counts": self.check_counts}

    def build_source(self, split: str) -> FaceSource:
        return cofw_source(self.root, split, **self._options())


def _w300_train(dm: COFW68DataModule) -> FaceSource:
    """300W's training faces (AFW + Helen train + LFPW train), parsed up front: their landmark box as "given"."""
    source = w300_source(dm.train_root, {k: () for k in TRAIN_FOLDERS}, "300w-train", **dm._options())
    for record in source.records:
        record.boxes.setdefault("given", points_bbox(record.landmarks))
    source.protocol["given_box"] = "landmarks"
    return source


def _w300lp_train(dm: COFW68DataModule) -> FaceSource:
    """300W-LP's faces, parsed when they load: the source adds their landmark box as "given" then."""
    return w300lp_source(dm.train_root, include_flipped=dm.include_flipped, on_error=dm.on_error,
                         check_counts=dm.check_counts, given_box=True)


# train_set -> the training faces (TAB's Table 5 trains on 300W-LP; the benchmark's protocol on 300W).
TRAIN_SETS: dict[str, Callable[[COFW68DataModule], FaceSource]] = {"300w": _w300_train, "300w_lp": _w300lp_train}


class COFW68DataModule(FaceLandmarkDataModule):
    """COFW-68 (test only): train on 300W (AFW + Helen train + LFPW train) or 300W-LP, test on the 507 COFW-68
    faces.

    Args:
        root: the COFW folder (with ``COFW68_Data/``).
        train_root: the folder of the training set: 300W, or 300W-LP with ``train_set="300w_lp"``.
        one_based: subtract 1 from the MATLAB and ``.pts`` coordinates (300W-LP's are 0-based already and kept).
        train_set: "300w" (the benchmark's protocol) or "300w_lp" (TAB, Table 5: "pretrained on 300W-LP-2D").
            The training split's name ("300w-train" / "300w-lp-train") says which, in checkpoints and records.
        include_flipped: with "300w_lp", also train on its ``_Flip`` folders (off: the augmentation flips
            already); 300W has none, so it is refused there.
        **kwargs: FaceLandmarkDataModule arguments. ``crop`` default: the "given" box enlarged 1.25x, and
            sqrt(w * h) of the published box as the "bbox" normaliser (TAB, GlomFace); training faces (300W,
            300W-LP) have no published box and use their landmark box as "given". ``primary_normalizer`` default:
            "inter_pupil", the benchmark's eye-centre distance (TAB and GlomFace report "bbox" too; every
            normaliser is computed).
    """

    layout, default_crop, default_normalizer = W300_68, COFW68_CROP, "inter_pupil"

    def __init__(self, root: str, train_root: str, one_based: bool = True,
                 train_set: Literal["300w", "300w_lp"] = "300w", include_flipped: bool = False,
                 primary_normalizer: str | None = default_normalizer, **kwargs) -> None:
        if train_set not in TRAIN_SETS:
            raise ValueError(f"train_set must be one of {sorted(TRAIN_SETS)}, got {train_set!r}")
        if include_flipped and train_set != "300w_lp":
            raise ValueError(f"include_flipped reads 300W-LP's _Flip folders: it needs train_set='300w_lp', "
                             f"not {train_set!r}")
        super().__init__(primary_normalizer=primary_normalizer, **kwargs)
        self.root, self.train_root, self.one_based = root, train_root, one_based
        self.train_set, self.include_flipped = train_set, include_flipped

    _options = COFWDataModule._options

    def build_source(self, split: str) -> FaceSource:
        if split != "train":
            return cofw68_source(self.root, **self._options())
        return TRAIN_SETS[self.train_set](self)
