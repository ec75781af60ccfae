"""WFLW (98 points): the list files of the WFLW release, one face per line, with six attribute subsets.

Expected layout under ``root`` (as the WFLW release unpacks; DATASETS.md, "WFLW"):

    WFLW_images/<event folder>/<file>.jpg                  (e.g. 51--Dresses/51_Dresses_wearingdress_51_377.jpg)
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt   (7,500 lines)
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt    (2,500 lines)
    WFLW_annotations/list_98pt_test/list_98pt_test_{largepose,expression,illumination,makeup,occlusion,blur}.txt
                                                           (optional: only cross-checked against the flags)

A train / test line has 207 space-separated fields: 196 floats ``x0 y0 ... x97 y97``, the face rectangle
``x_min y_min x_max y_max``, six 0/1 flags (pose, expression, illumination, make-up, occlusion, blur) and the
image path relative to ``WFLW_images``. An image can appear on several lines (one face per line), so faces are
indexed by line and named ``"<list file>:<line> <image path>"``. Coordinates are 0-based pixels and are used as
written; some landmarks lie outside the image. The attribute subsets of the test set are the faces whose flag
is 1; the ``list_98pt_test_*.txt`` files (196 floats and the image name per line) say the same thing and are
only compared with the flags, with a warning when they disagree.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from datamodules.files import DatasetError, Problems, check_count, dataset_root, require_file, require_folder
from landmarks.layouts import WFLW_98

# Subset tags in the order of the flags (the reference results table uses these names).
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SUBSET_FILE_TAGS = {"pose": "largepose"}  # tag -> name in list_98pt_test_<name>.txt, where it differs
EXPECTED = {"train": 7500, "test": 2500}
EXPECTED_SUBSETS = {"pose": 326, "expression": 314, "illumination": 698, "makeup": 206, "occlusion": 736,
                    "blur": 773}
WFLW_CROP = CropProtocol(box_source="given", scale=1.25)  # the given rectangle x 1.25 (HRNet, mmpose)
IMAGES = "WFLW_images"
LIST_FOLDER = "WFLW_annotations/list_98pt_rect_attr_train_test"
SUBSET_FOLDER = "WFLW_annotations/list_98pt_test"
COORDINATES = 2 * WFLW_98.num_points
LIST_FIELDS = COORDINATES + 4 + len(ATTRIBUTES) + 1  # 207
SUBSET_FIELDS = COORDINATES + 1
MATCH_TOLERANCE = 1e-3  # px: a subset-file face is the test face of the same image with these landmarks


@dataclass(frozen=True, eq=False)
class WFLWLine:
    """One face of a WFLW train / test list, as written (0-based pixels)."""

    landmarks: np.ndarray  # (98, 2) float64
    box: np.ndarray  # (4,) float64: x_min y_min x_max y_max
    attributes: np.ndarray  # (6,) bool, in ATTRIBUTES order
    image: str  # path relative to WFLW_images
    line: int  # 1-based line number in the list file


def _split_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank line; an unreadable file is one error for all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(path, "annotation file is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(path, f"unreadable annotation file ({error})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split()


def _numbers(problems: Problems, path: Path, fields: list[str], line: int, first: int = 1) -> np.ndarray | None:
    """The fields (numbered from ``first``) as floats, or None after reporting the first that is not a number."""
    values = []
    for column, text in enumerate(fields, start=first):
        try:
            values.append(float(text))
        except ValueError:
            problems.report(path, f"field {column} is not a number: {text!r}", line)
            return None
    return np.asarray(values, dtype=np.float64)


def _parse(path: str | Path, problems: Problems | None, fields_per_line: int,
           ) -> Iterator[tuple[int, np.ndarray, list[str]]]:
    """(line, 98 finite landmarks, remaining fields) of every well-formed line; bad lines are reported."""
    path = Path(path)
    problems = problems if problems is not None else Problems(str(path))
    for line, fields in _split_lines(path):
        if len(fields) != fields_per_line:
            problems.report(path, f"expected {fields_per_line} fields, found {len(fields)}", line)
            continue
        values = _numbers(problems, path, fields[:COORDINATES], line)
        if values is None:
            continue
        points = values.reshape(-1, 2)
        if check_points(problems, path, points, WFLW_98.num_points, line):
            yield line, points, fields[COORDINATES:]


def read_wflw_list(path: str | Path, problems: Problems | None = None) -> list[WFLWLine]:
    """The faces of a ``list_98pt_rect_attr_*.txt`` file, one per non-blank line.

    A bad line (field count, non-numeric or non-finite value, flag other than 0/1) raises a
    :class:`DatasetError` naming the file and line; with ``problems`` it is reported there instead (which
    raises or records it, by its ``on_error``) and skipped.
    """
    path, faces = Path(path), []
    problems = problems if problems is not None else Problems(str(path))
    for line, points, rest in _parse(path, problems, LIST_FIELDS):
        numbers = _numbers(problems, path, rest[:-1], line, first=COORDINATES + 1)
        if numbers is None:
            continue
        box, flags = numbers[:4], numbers[4:]
        if not np.isfinite(box).all():
            problems.report(path, f"non-finite face rectangle {rest[:4]}", line)
        elif not np.isin(flags, (0, 1)).all():
            problems.report(path, f"attribute flags must be 0 or 1, found {rest[4:-1]}", line)
        else:
            faces.append(WFLWLine(points, box, flags.astype(bool), rest[-1], line))
    return faces


def read_wflw_subset_list(path: str | Path, problems: Problems | None = None) -> list[tuple[np.ndarray, str]]:
    """(landmarks (98, 2), image name) of every line of a ``list_98pt_test*.txt`` file (no box, no flags)."""
    return [(points, rest[0]) for _, points, rest in _parse(path, problems, SUBSET_FIELDS)]


def _cross_check(root: Path, records: list[FaceRecord], problems: Problems) -> None:
    """Warn, with counts per attribute, where a subset file and the test list's flags disagree.

    A subset-file face is matched to the test face of the same image (path or bare name) whose landmarks
    agree within MATCH_TOLERANCE. The flags stay the truth: this only exposes a damaged or mixed-up copy.
    """
    by_name: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_name.setdefault(record.image.name, []).append(i)
    notes = []
    for tag in ATTRIBUTES:
        path = root / SUBSET_FOLDER / f"list_98pt_test_{SUBSET_FILE_TAGS.get(tag, tag)}.txt"
        if not path.is_file():
            continue
        listed, unmatched = set(), 0
        for points, image in read_wflw_subset_list(path, problems):
            match = [i for i in by_name.get(Path(image).name, [])
                     if np.abs(records[i].landmarks - points).max() <= MATCH_TOLERANCE]
            listed.update(match[:1])
            unmatched += not match
        flagged = {i for i, record in enumerate(records) if tag in record.subsets}
        if listed != flagged or unmatched:
            notes.append(f"{tag}: {len(listed - flagged)} listed in {path.name} with flag 0, "
                         f"{len(flagged - listed)} flagged but not listed, {unmatched} listed but not in the test list")
    if notes:
        warnings.warn("WFLW test: the subset files disagree with the attribute flags of the test list (the flags "
                      "are used): " + "; ".join(notes), stacklevel=3)


def wflw_source(root: str | Path, split: str, on_error: str = "raise", check_counts: bool = True,
                cross_check_subsets: bool = True) -> RecordSource:
    """The faces of one WFLW split (``"train"`` or ``"test"``), one per list line, subsets from the flags.

    A line whose image is missing is a problem of that line (raised, or skipped with ``on_error="skip"``);
    skipped lines still count towards the published size, so a partial copy needs ``check_counts=False``.
    The test split is compared with the subset files (``cross_check_subsets``) and, with ``check_counts``,
    its subset sizes with the published ones; both only warn.
    """
    if split not in EXPECTED:
        raise ValueError(f"unknown WFLW split {split!r}; expected one of {sorted(EXPECTED)}")
    root, name = dataset_root(root, "WFLW"), f"wflw-{split}"
    problems = Problems(name, on_error)
    images = require_folder(root / IMAGES, "WFLW images")
    path = require_file(root / LIST_FOLDER / f"list_98pt_rect_attr_{split}.txt", f"WFLW {split} list")
    records = []
    for face in read_wflw_list(path, problems):
        image = images / face.image
        if not image.is_file():
            problems.report(path, f"image {IMAGES}/{face.image} is missing", face.line)
            continue
        tags = tuple(tag for tag, flag in zip(ATTRIBUTES, face.attributes, strict=True) if flag)
        records.append(FaceRecord(image, face.landmarks, np.ones(WFLW_98.num_points, bool),
                                  f"{path.name}:{face.line} {face.image}", tags, {"given": face.box}))
    skipped = sum(error.path == str(path) for error in problems.errors)
    check_count(problems, path, len(records) + skipped, EXPECTED[split], check_counts)
    expected_subsets = EXPECTED_SUBSETS if split == "test" else {}
    if split == "test" and cross_check_subsets:
        _cross_check(root, records, problems)
    if expected_subsets and check_counts:
        found = {tag: sum(tag in record.subsets for record in records) for tag in ATTRIBUTES}
        if found != expected_subsets:
            warnings.warn(f"WFLW test: attribute subset sizes {found} differ from the published {expected_subsets}",
                          stacklevel=2)
    protocol = {"annotation": path.name, "coordinates": "0-based as in the file"}
    return RecordSource(name, WFLW_98, records, ATTRIBUTES, protocol, EXPECTED[split], expected_subsets, problems)


def check_sources(root: str | Path, **options) -> dict[str, Callable[[], FaceSource]]:
    """Both WFLW splits, for the dataset checker."""
    return {split: partial(wflw_source, root, split, **options) for split in EXPECTED}


class WFLWDataModule(FaceLandmarkDataModule):
    """WFLW: train on the 7,500 training faces, test on the 2,500 test faces with the six attribute subsets.

    Protocol: landmarks are used as written (0-based pixels, all visible); the subsets are the faces whose
    attribute flag is 1 in the test list (tags ``ATTRIBUTES``; the file ``largepose`` is tag ``pose``); the
    primary normaliser is the inter-ocular distance (outer eye corners 60 and 72), as WFLW papers report; the
    ``bbox`` normaliser is the ground-truth landmark box.

    Args:
        root: the WFLW folder (layout in the module docstring).
        cross_check_subsets: compare the test flags with the ``list_98pt_test_*.txt`` files (warns only).
        **kwargs: FaceLandmarkDataModule arguments. ``crop`` default: the given face rectangle, centred, side =
            1.25 x its longer side (HRNet and mmpose: centre of the rectangle, scale = longer side / 200, x 1.25).
            PIPNet enlarges the rectangle 1.2x instead: ``crop: {scale: 1.2}`` (fields not set keep these
            defaults).
    """

    layout, default_crop = WFLW_98, WFLW_CROP

    def __init__(self, root: str, cross_check_subsets: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.cross_check_subsets = root, cross_check_subsets

    def _options(self) -> dict:
        return {"on_error": self.on_error, "check_counts": self.check_counts,
                "cross_check_subsets": self.cross_check_subsets}

    def build_source(self, split: str) -> FaceSource:
        return wflw_source(self.root, split, **self._options())
