"""300W (68 points): the iBUG folders of ``.pts`` + image pairs, the private set, PWC's splits, Masked 300W.

Expected layout under ``root`` (the folders as iBUG publishes them; DATASETS.md, "300W"):

    afw/  helen/trainset/  helen/testset/  lfpw/trainset/  lfpw/testset/  ibug/
    300W/01_Indoor/  300W/02_Outdoor/          (private test set; ``01_Indoor/`` at the root also works)
    Bounding_Boxes/bounding_boxes_<folder>.mat (optional official boxes: "detector", "ground_truth")

Each face is a ``.pts`` file with an image of the same stem beside it (``.jpg``, ``.png``; any case). File
names may contain spaces (``ibug/image_092 _01.jpg``). ``.pts`` coordinates are 1-based by the iBUG
convention; ``one_based=True`` (default, as menpo) subtracts 1 so pixel centres sit at integers, ``False``
keeps the file's numbers (HRNet, PIPNet). The choice is recorded with every result; it shifts absolute
coordinates by one pixel and leaves every NME unchanged.

Test sets (``test_set``): ``full`` (common + challenging subsets), ``common``, ``challenging``, ``private``
(indoor / outdoor subsets), and ``pwc``: PWC's five evaluation sets (Helen test, LFPW test, 300W indoor and
outdoor, IBUG) as subsets of one pass. PWC crops the ground-truth landmark box enlarged 1.3x around the
landmark centroid: ``crop: {box_source: landmarks, scale: 1.3, center: centroid}`` (its configs set it).

Masked 300W (GlomFace) is the 300W test images with synthetic masks in ``helen/``, ``lfpw/``, ``ibug/``
folders of the same ``.pts`` format; 4-point ``.pts`` files there are face boxes (``<stem>_bb.pts`` and
similar), attached to their face as the "given" box.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.base import (
    CropProtocol,
    FaceLandmarkDataModule,
    FaceRecord,
    FaceSource,
    RecordSource,
    check_points,
)
from datamodules.files import DatasetError, Problems, check_count, dataset_root, find_image, load_mat, require_folder
from landmarks.layouts import W300_68

# Folder key -> (candidate paths under the root, published number of faces).
FOLDERS: dict[str, tuple[tuple[str, ...], int]] = {
    "afw": (("afw",), 337),
    "helen_train": (("helen/trainset",), 2000),
    "helen_test": (("helen/testset",), 330),
    "lfpw_train": (("lfpw/trainset",), 811),
    "lfpw_test": (("lfpw/testset",), 224),
    "ibug": (("ibug",), 135),
    "indoor": (("300W/01_Indoor", "01_Indoor"), 300),
    "outdoor": (("300W/02_Outdoor", "02_Outdoor"), 300),
}
TRAIN_FOLDERS = ("afw", "helen_train", "lfpw_train")
W300_CROP = CropProtocol(box_source="landmarks", scale=1.25)  # the ground-truth landmark box x 1.25 (HRNet, TAB)
# Test set -> {folder key: subset tags of its faces}.
TEST_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "full": {"helen_test": ("common",), "lfpw_test": ("common",), "ibug": ("challenging",)},
    "common": {"helen_test": ("common",), "lfpw_test": ("common",)},
    "challenging": {"ibug": ("challenging",)},
    "private": {"indoor": ("indoor",), "outdoor": ("outdoor",)},
    "pwc": {"helen_test": ("helen",), "lfpw_test": ("lfpw",), "indoor": ("indoor",), "outdoor": ("outdoor",),
            "ibug": ("ibug",)},
}
# Masked 300W folders (test only): folder key -> (paths under its root, faces, subset tags).
MASKED_FOLDERS: dict[str, tuple[tuple[str, ...], int, tuple[str, ...]]] = {
    "helen": (("helen", "helen/testset"), 330, ("common",)),
    "lfpw": (("lfpw", "lfpw/testset"), 224, ("common",)),
    "ibug": (("ibug",), 135, ("challenging",)),
}
BOX_FILE_SUFFIX = re.compile(r"_(bb|bbox|box|rect)$", re.IGNORECASE)
_HEADER = re.compile(r"n_points\s*:\s*(\d+)", re.IGNORECASE)


def read_pts(path: str | Path) -> np.ndarray:
    """The points of an iBUG ``.pts`` file as a float array (K, 2), exactly as written (1-based).

    Reads between ``{`` and ``}``; tolerates a missing final newline, trailing blank lines and any spacing
    in the ``n_points`` header. Raises :class:`DatasetError` naming the file (and line) on a missing brace,
    a non-numeric value or a point count that disagrees with the header.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except FileNotFoundError:
        raise DatasetError(path, "annotation file is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(path, f"unreadable annotation file ({error})") from None
    stripped = [line.strip() for line in lines]
    try:
        start, end = stripped.index("{"), stripped.index("}")
    except ValueError:
        raise DatasetError(path, "no '{ ... }' block of points") from None
    header = next((m for line in stripped[:start] if (m := _HEADER.search(line))), None)
    points = []
    for number, line in enumerate(stripped[start + 1:end], start=start + 2):
        if not line:
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            points.append([float(fields[0]), float(fields[1])])
        except ValueError:
            raise DatasetError(path, f"expected two numbers 'x y', got {line!r}", number) from None
    if header is not None and int(header.group(1)) != len(points):
        raise DatasetError(path, f"header says n_points {header.group(1)} but the file has {len(points)}")
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def read_300w_boxes(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The official boxes of one 300W folder: image file name -> {"detector", "ground_truth"} [x1 y1 x2 y2],
    1-based as in the file."""
    mat = load_mat(path, ("bounding_boxes",), "300W boxes", squeeze_me=True, struct_as_record=False)
    boxes = {}
    for entry in np.atleast_1d(mat["bounding_boxes"]):
        boxes[str(entry.imgName)] = {"detector": np.asarray(entry.bb_detector, dtype=np.float64),
                                     "ground_truth": np.asarray(entry.bb_ground_truth, dtype=np.float64)}
    return boxes


def _resolve(root: Path, candidates: tuple[str, ...]) -> Path:
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    return root / candidates[0]


def _scan_folder(root: Path, folder: Path, tags: tuple[str, ...], shift: float, problems: Problems,
                 boxes: dict[str, dict[str, np.ndarray]]) -> list[FaceRecord]:
    """Faces of one folder: every ``.pts`` of 68 points with its image; 4-point ``.pts`` are face boxes."""
    require_folder(folder, "300W", "*.pts")
    faces, box_files = [], {}
    for pts in sorted(folder.glob("*.pts")):
        try:
            points = read_pts(pts)
        except DatasetError as error:
            problems.report(error.path, error.reason, error.line)
            continue
        if len(points) == 4:  # a 4-point box file (Masked 300W)
            box_files[BOX_FILE_SUFFIX.sub("", pts.stem)] = np.concatenate([points.min(0), points.max(0)]) - shift
            continue
        if not check_points(problems, pts, points, W300_68.num_points):
            continue
        image = find_image(pts.with_suffix(""))
        if image is None:
            problems.report(pts, "no image with this stem (.jpg / .png / ...) beside the annotation")
            continue
        face_boxes = {k: v - shift for k, v in boxes.get(image.name, {}).items()}
        faces.append(FaceRecord(image, points - shift, np.ones(len(points), bool),
                                image.relative_to(root).as_posix(), tags, face_boxes))
    for face in faces:
        if face.image.stem in box_files:
            face.boxes["given"] = box_files[face.image.stem]
    return faces


def _official_boxes(root: Path, folder: Path) -> dict[str, dict[str, np.ndarray]]:
    rel = folder.relative_to(root).as_posix().replace("/", "_")
    path = root / "Bounding_Boxes" / f"bounding_boxes_{rel}.mat"
    return read_300w_boxes(path) if path.is_file() else {}


def w300_source(root: str | Path, folders: dict[str, tuple[str, ...]], name: str, one_based: bool = True,
                on_error: str = "raise", check_counts: bool = True) -> RecordSource:
    """A source over 300W folders (keys of ``FOLDERS``) whose faces carry the given subset tags."""
    root, problems = dataset_root(root, "300W"), Problems(name, on_error)
    shift = 1.0 if one_based else 0.0
    faces, expected, expected_subsets = [], 0, {}
    for key, tags in folders.items():
        if key not in FOLDERS:
            raise ValueError(f"unknown 300W folder {key!r}; expected one of {sorted(FOLDERS)}")
        candidates, size = FOLDERS[key]
        folder = _resolve(root, candidates)
        found = _scan_folder(root, folder, tags, shift, problems, _official_boxes(root, folder))
        check_count(problems, folder, len(found) + _skipped_in(problems, folder), size, check_counts)
        faces += found
        expected += size
        for tag in tags:
            expected_subsets[tag] = expected_subsets.get(tag, 0) + size
    subsets = tuple(dict.fromkeys(tag for tags in folders.values() for tag in tags))
    protocol = {"one_based": one_based, "folders": list(folders)}
    return RecordSource(name, W300_68, faces, subsets, protocol, expected, expected_subsets, problems)


def _skipped_in(problems: Problems, folder: Path) -> int:
    """Faces of ``folder`` skipped as bad: they still count towards the published size (they are reported)."""
    return sum(Path(e.path).parent == folder for e in problems.errors)


def masked_300w_source(root: str | Path, one_based: bool = True, on_error: str = "raise",
                       check_counts: bool = True) -> RecordSource:
    """Masked 300W test faces with common / challenging subsets."""
    root, problems = dataset_root(root, "Masked 300W"), Problems("masked-300w-test", on_error)
    shift = 1.0 if one_based else 0.0
    faces, expected_subsets = [], {"common": 0, "challenging": 0}
    for candidates, size, tags in MASKED_FOLDERS.values():
        folder = _resolve(root, candidates)
        found = _scan_folder(root, folder, tags, shift, problems, {})
        check_count(problems, folder, len(found) + _skipped_in(problems, folder), size, check_counts)
        faces += found
        for tag in tags:
            expected_subsets[tag] += size
    return RecordSource("masked-300w-test", W300_68, faces, ("common", "challenging"), {"one_based": one_based},
                        sum(v[1] for v in MASKED_FOLDERS.values()), expected_subsets, problems)


def check_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """Every 300W folder as its own source, for the dataset checker."""
    return {key: partial(w300_source, root, {key: ()}, f"300w-{key}", **options) for key in FOLDERS}


def check_masked_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    return {"test": partial(masked_300w_source, root, **options)}


class W300DataModule(FaceLandmarkDataModule):
    """300W: train on AFW + Helen train + LFPW train (3,148 faces), test on ``test_set``.

    Args:
        root: the 300W folder (layout in the module docstring).
        test_set: one of ``TEST_SETS`` ("full", "common", "challenging", "private", "pwc").
        train_folders: the training folders (keys of ``FOLDERS``).
        one_based: subtract 1 from the ``.pts`` coordinates (iBUG files are 1-based).
        **kwargs: FaceLandmarkDataModule arguments; ``crop`` fields override the default, the ground-truth
            landmark box enlarged 1.25x (HRNet / TAB protocol).
    """

    layout, default_crop = W300_68, W300_CROP

    def __init__(self, root: str, test_set: str = "full", train_folders: tuple[str, ...] = TRAIN_FOLDERS,
                 one_based: bool = True, **kwargs) -> None:
        if test_set not in TEST_SETS:
            raise ValueError(f"unknown 300W test set {test_set!r}; expected one of {sorted(TEST_SETS)}")
        super().__init__(**kwargs)
        self.root, self.test_set, self.train_folders, self.one_based = root, test_set, tuple(train_folders), one_based

    def _options(self) -> dict:
        return {"one_based": self.one_based, "on_error": self.on_error, "check_counts": self.check_counts}

    def build_source(self, split: str) -> FaceSource:
        if split == "train":
            return w300_source(self.root, {k: () for k in self.train_folders}, "300w-train", **self._options())
        return w300_source(self.root, TEST_SETS[self.test_set], f"300w-{self.test_set}", **self._options())


class Masked300WDataModule(W300DataModule):
    """Masked 300W (test only, GlomFace Table 5): train on 300W, test on the masked common / challenging faces.

    Args:
        root: the Masked 300W folder.
        train_root: the 300W folder the model trains on.
        **kwargs: W300DataModule arguments.
    """

    def __init__(self, root: str, train_root: str, **kwargs) -> None:
        super().__init__(root=train_root, **kwargs)
        self.masked_root = root

    def build_source(self, split: str) -> FaceSource:
        if split == "train":
            return super().build_source(split)
        return masked_300w_source(self.masked_root, **self._options())
