"""Writers of each dataset's exact on-disk format, shared by the dataset tests and the checker's test: tiny
copies of 300W, WFLW, COFW / COFW-68, AFLW, AFLW2000-3D and 300W-LP with real landmark shapes on small images.

Not a test module: test files import these (a test file never imports another test file); the pytest fixtures
built on them live in ``conftest.py``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from datamodules import w300
from datamodules.cofw import read_cofw68_annotation
from datamodules.w300 import read_pts
from datamodules.wflw import ATTRIBUTES
from landmarks.layouts import W300_68

DATA = Path(__file__).parent / "data"

# --- 300W: <folder>/<stem>.pts (1-based) + an image of the same stem

W300_REAL = sorted((DATA / "300w_pts").glob("*.pts"))


def write_pts(path: Path, points: np.ndarray, newline: str = "\n", end: str = "") -> None:
    body = newline.join(["version: 1", f"n_points:  {len(points)}", "{"] + [f"{x:.6f} {y:.6f}" for x, y in points])
    path.write_text(body + newline + "}" + end)


def write_face(folder: Path, stem: str, points: np.ndarray, suffix: str = ".jpg", size=(96, 80)) -> None:
    """A 300W face: an image (RGB noise, size W x H) and its 1-based .pts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(stem)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{stem}{suffix}")
    write_pts(folder / f"{stem}.pts", points)


def real_shape(i: int, width: float = 96, height: float = 80) -> np.ndarray:
    """A real 68-point shape scaled into a small image (1-based coordinates)."""
    pts = read_pts(W300_REAL[i % len(W300_REAL)])
    pts = (pts - pts.min(0)) / (pts.max(0) - pts.min(0)).max() * (min(width, height) * 0.6)
    return pts + [width * 0.2 + 1, height * 0.2 + 1]


def make_300w(root: Path, per_folder: int = 2, private: bool = False) -> Path:
    keys = [k for k in w300.FOLDERS if private or k not in ("indoor", "outdoor")]
    for key in keys:
        folder = root / w300.FOLDERS[key][0][0]
        for j in range(per_folder):
            stem = f"image_{j:03d} _01" if key == "ibug" else f"{key}_{j}"
            write_face(folder, stem, real_shape(j), ".png" if key.startswith("lfpw") else ".jpg")
    return root


# --- WFLW: WFLW_images/<event>/<image>.jpg + the rect_attr lists and the per-attribute test lists

WFLW_JSON = DATA / "wflw_coco" / "test_wflw.json"
LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{}.txt"
SUBSETS = "WFLW_annotations/list_98pt_test/list_98pt_test_{}.txt"
DRESS = "51--Dresses/51_Dresses_wearingdress_51_377.jpg"  # two faces
FOOTBALL = "36--Football/36_Football_americanfootball_ball_36_415.jpg"
CHEER = "7--Cheering/7_Cheering_Cheering_7_16.jpg"  # a face partly outside the image
IMAGE_SIZES = {DRESS: (96, 128), FOOTBALL: (96, 96), CHEER: (80, 96)}  # (H, W)


@dataclass
class Face:
    image: str
    landmarks: np.ndarray
    box: np.ndarray
    flags: tuple[int, ...]


def real_shapes() -> list[np.ndarray]:
    annotations = json.loads(WFLW_JSON.read_text())["annotations"]
    return [np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2] for a in annotations]


def place(points: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """The shape scaled to ``side`` px at (x0, y0), rounded as the files write it (6 decimals)."""
    low = points.min(0)
    moved = (points - low) * side / (points.max(0) - low).max() + [x0, y0]
    return np.array([[float(f"{v:.6f}") for v in p] for p in moved])


def faces() -> dict[str, list[Face]]:
    a, b, c, d = real_shapes()
    shapes = {"a": place(a, 8.3, 20.1, 48), "b": place(b, 70.2, 24.7, 44), "c": place(c, 20.5, 18.25, 56),
              "d": place(d, -6.4, 12.8, 60)}

    def face(image: str, key: str, flags: tuple[int, ...]) -> Face:
        pts = shapes[key]
        return Face(image, pts, np.concatenate([np.floor(pts.min(0)), np.ceil(pts.max(0))]), flags)

    return {"train": [face(DRESS, "a", (0,) * 6), face(DRESS, "b", (0, 0, 0, 0, 1, 0)),
                      face(FOOTBALL, "c", (1, 0, 0, 0, 0, 1))],
            "test": [face(DRESS, "a", (1, 0, 0, 0, 1, 0)), face(DRESS, "b", (0, 1, 0, 0, 0, 0)),
                     face(CHEER, "d", (0, 0, 1, 1, 0, 1))]}


def coords(points: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in points.ravel())


def list_line(face: Face) -> str:
    return " ".join([coords(face.landmarks), *(str(int(v)) for v in face.box), *map(str, face.flags), face.image])


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n\n")  # trailing blank line, as some copies have


def subset_files(root: Path, split_faces: list[Face], members: dict[str, list[int]] | None = None) -> None:
    """The six list_98pt_test_*.txt files; ``members`` overrides the flag-derived membership per tag."""
    for k, tag in enumerate(ATTRIBUTES):
        rows = (members or {}).get(tag, [i for i, f in enumerate(split_faces) if f.flags[k]])
        name = "largepose" if tag == "pose" else tag
        # expression names the image without its folder: both forms occur in copies of the release.
        image = (lambda i: Path(split_faces[i].image).name) if tag == "expression" else lambda i: split_faces[i].image
        write_lines(root / SUBSETS.format(name), [f"{coords(split_faces[i].landmarks)} {image(i)}" for i in rows])


def write_wflw(root: Path) -> dict[str, list[Face]]:
    """A WFLW tree under ``root`` (images, both lists, the subset files) of the faces of :func:`faces`."""
    data = faces()
    rng = np.random.default_rng(0)
    for image, (h, w) in IMAGE_SIZES.items():
        (root / "WFLW_images" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "WFLW_images" / image)
    for split, split_faces in data.items():
        write_lines(root / LIST.format(split), [list_line(f) for f in split_faces])
    subset_files(root, data["test"])
    write_lines(root / "WFLW_annotations/list_98pt_test/list_98pt_test.txt",
          [f"{coords(f.landmarks)} {f.image}" for f in data["test"]])
    return data


# --- COFW: COFW_{train,test}[_color].mat (MATLAB v5 or v7.3), COFW68_Data/

COFW68_REAL = DATA / "cofw68"
COFW_IMAGE_SIZES = ((40, 48), (36, 32), (44, 44))  # (H, W); the second image is grey


def tiny_cofw(n: int = 3, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Images (one grey), phis N x 87 (1-based points inside each image, 0/1 occlusion), bboxes N x 4."""
    rng = np.random.default_rng(seed)
    images, phis, boxes = [], [], []
    for i in range(n):
        h, w = COFW_IMAGE_SIZES[i % 3]
        shape = (h, w) if i % 3 == 1 else (h, w, 3)
        images.append(rng.integers(0, 256, shape, dtype=np.uint8))
        x, y = rng.uniform(6, w - 6, 29), rng.uniform(6, h - 6, 29)
        phis.append(np.concatenate([x, y, rng.integers(0, 2, 29)]))
        boxes.append([5.0, 5.0, w - 10.0, h - 10.0])
    return images, np.array(phis), np.array(boxes)


def write_v5(path: Path, images: list, phis: np.ndarray, boxes: np.ndarray, suffix: str = "T",
             drop: str | None = None) -> Path:
    """A MATLAB v5 file as scipy writes it: ``Is`` a N x 1 cell array."""
    cells = np.empty((len(images), 1), dtype=object)
    for i, image in enumerate(images):
        cells[i, 0] = image
    variables = {f"Is{suffix}": cells, f"phis{suffix}": phis, f"bboxes{suffix}": boxes}
    scipy.io.savemat(path, {k: v for k, v in variables.items() if k != drop})
    return path


def write_v73(path: Path, images: list, phis: np.ndarray, boxes: np.ndarray, suffix: str = "T",
              drop: str | None = None) -> Path:
    """A MATLAB v7.3 file laid out as MATLAB writes it: a 512-byte header, arrays transposed, the cell array a
    (1, N) dataset of references to images in ``#refs#``."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = []
        for i, image in enumerate(images):
            data = f.create_dataset(f"#refs#/{chr(97 + i)}", data=image.T)
            data.attrs["MATLAB_class"] = np.bytes_("uint8")
            refs.append(data.ref)
        variables = {f"Is{suffix}": np.array([refs], dtype=h5py.ref_dtype), f"phis{suffix}": phis.T,
                     f"bboxes{suffix}": boxes.T}
        for name, value in variables.items():
            if name != drop:
                f.create_dataset(name, data=value).attrs["MATLAB_class"] = np.bytes_("cell" if "Is" in name
                                                                                     else "double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + bytes(8) + b"\x00\x02IM")
    return path


def cofw_folder(root: Path, n: int = 3, phis_edit=None) -> tuple[Path, tuple]:
    """COFW train (v7.3 colour name) and test (grey release name, v5) files of ``n`` faces each."""
    root.mkdir(parents=True, exist_ok=True)
    train, test = tiny_cofw(n, seed=1), tiny_cofw(n, seed=2)
    if phis_edit is not None:
        phis_edit(test[1])
    write_v73(root / "COFW_train_color.mat", *train, suffix="Tr")
    write_v5(root / "COFW_test.mat", *test, suffix="T")
    return root, test


def cofw68_folder(root: Path, train_root: Path, annotations: tuple[int, ...] = (1, 2, 3)) -> Path:
    """The three real COFW-68 annotations and boxes, with a COFW test .mat of three images that hold them, and
    a one-face-per-folder 300W training copy."""
    images, phis, boxes = tiny_cofw(3)
    for i in range(3):
        points = read_cofw68_annotation(COFW68_REAL / f"{i + 1}_points.mat")[0]
        w, h = np.ceil(points.max(0)).astype(int) + 12
        images[i] = np.zeros((h, w) if i == 1 else (h, w, 3), np.uint8)
    (root / "COFW68_Data" / "test_annotations").mkdir(parents=True)
    write_v73(root / "COFW_test_color.mat", images, phis, boxes, suffix="T")
    shutil.copy(COFW68_REAL / "cofw68_test_bboxes.mat", root / "COFW68_Data")
    for i in annotations:
        shutil.copy(COFW68_REAL / f"{i}_points.mat", root / "COFW68_Data" / "test_annotations")
    points = read_cofw68_annotation(COFW68_REAL / "1_points.mat")[0]
    for folder in ("afw", "helen/trainset", "lfpw/trainset"):
        (train_root / folder).mkdir(parents=True)
        lines = ["version: 1", "n_points: 68", "{", *(f"{x:.3f} {y:.3f}" for x, y in points), "}"]
        (train_root / folder / "face.pts").write_text("\n".join(lines) + "\n")
        Image.fromarray(np.full((140, 200, 3), 90, np.uint8)).save(train_root / folder / "face.jpg")
    return root


# --- AFLW: AFLWinfo_release.mat (bbox [x1 x2 y1 y2], data 19 x then 19 y, mask_new, nameList cell, ra 1-based)

def write_image(path, height, width):
    """A horizontal grey ramp image of ``height`` x ``width`` pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).copy()).save(path)


NAMES = ["0/image00001.jpg", "0/image00002.jpg", "2/image00003.jpg", "2/image00004.jpg", "3/image00005.jpg",
         "3/image00005.jpg"]  # the last image holds two faces
RA = np.array([3, 6, 1, 5, 2, 4])  # train_size 4: train rows 2 5 0 4, test rows 1 3


def aflw_arrays(seed=0):
    rng = np.random.default_rng(seed)
    n = len(NAMES)
    x1, y1 = rng.uniform(10, 30, n), rng.uniform(10, 25, n)
    x2, y2 = x1 + rng.uniform(50, 70, n), y1 + rng.uniform(45, 60, n)
    xs = x1[:, None] + rng.uniform(0.1, 0.9, (n, 19)) * (x2 - x1)[:, None]
    ys = y1[:, None] + rng.uniform(0.1, 0.9, (n, 19)) * (y2 - y1)[:, None]
    mask = np.ones((n, 19))
    mask[3, [4, 16]] = 0  # test row 3 is not frontal; test row 1 is
    mask[0, 2] = 0
    names = np.empty((n, 1), dtype=object)
    names[:, 0] = NAMES
    return {"bbox": np.stack([x1, x2, y1, y2], 1), "data": np.concatenate([xs, ys], 1), "mask_new": mask,
            "nameList": names, "ra": RA[None].astype(np.float64)}


def make_aflw(root, drop=(), **changes):
    arrays = aflw_arrays() | changes
    scipy.io.savemat(root / "AFLWinfo_release.mat", {k: v for k, v in arrays.items() if k not in drop})
    for name in set(NAMES):
        write_image(root / "flickr" / name, 96, 128)
    return arrays


# --- AFLW2000-3D: AFLW2000/imageXXXXX.jpg + .mat (pt3d_68 3x68, Pose_Para 1x7, pt2d 2x21), re-annotated .npy


def pick_faces(yaw):
    """Real faces across the three yaw bins: two per bin, one of them with a negative yaw where possible."""
    a = np.abs(yaw)
    picks = []
    for low, high in ((0, 30), (30, 60), (60, np.inf)):
        in_bin = np.flatnonzero((a > low) & (a <= high))
        negative = in_bin[yaw[in_bin] < 0]
        picks += [int(in_bin[0]), int(negative[0] if len(negative) else in_bin[1])]
    return sorted(set(picks))


def original_of(shape):
    """A stand-in for the original pt3d_68 ground truth: the real re-annotated shape, moved a little."""
    return shape + np.array([1.5, -2.0])


def make_aflw2000(root, shapes, yaw, picks, drop=()):
    folder = root / "AFLW2000"
    for i in picks:
        write_image(folder / f"image{i:05d}.jpg", 450, 450)
        pt3d = np.vstack([original_of(shapes[i]).T, np.linspace(-50, 50, 68)[None]])
        pose = np.array([[0.1, math.radians(yaw[i]), -0.05, 200.0, 220.0, 0.0, 0.0012]])
        mat = {"pt3d_68": pt3d, "Pose_Para": pose, "pt2d": np.full((2, 21), 100.0)}
        scipy.io.savemat(folder / f"image{i:05d}.mat", {k: v for k, v in mat.items() if k not in drop})
    np.save(root / "AFLW2000-3D-Reannotated.pts68.npy", shapes[picks].transpose(0, 2, 1).astype(np.float32))
    return folder


# --- 300W-LP: {AFW,HELEN,IBUG,LFPW}[_Flip]/*.jpg + .mat (pt2d 2x68), parsed lazily


def make_w300lp(root, shapes, flipped=True):
    faces = [("AFW", "AFW_134212_1_0"), ("AFW", "AFW_134212_1_1"), ("HELEN", "HELEN_100032540_1_0"),
             ("IBUG", "IBUG_image_003_1_0"), ("LFPW", "LFPW_image_test_0001_0")]
    for k, (folder, stem) in enumerate(faces):
        for suffix in ("", "_Flip") if flipped else ("",):
            path = root / f"{folder}{suffix}" / stem
            write_image(path.with_name(stem + ".jpg"), 450, 450)
            points = shapes[k] if not suffix else W300_68.flip_points(shapes[k], 450)
            scipy.io.savemat(path.with_name(stem + ".mat"), {"pt2d": points.T, "Pose_Para": np.zeros((1, 7))})
    return root
