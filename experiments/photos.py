"""``python -m experiments.photos PHOTOS_DIR --out OUT (--ckpt CKPT | --peer dlib)``: landmarks on one's own photos.

Every image under PHOTOS_DIR (jpg, png, ppm, bmp, ...; greyscale too; EXIF rotation honoured, so coordinates refer
to the photo as a viewer shows it) is searched for faces (dlib's HOG detector; ``--boxes FILE`` gives them instead,
``--whole-image`` takes each image as one face crop). Each face is cut as the model's own crop protocol cuts it
(``--ckpt``: the crop scale, input size and image normalisation its checkpoint records; ``--peer dlib``: the
default protocol, the box x 1.25 at 256 px, dlib starting from the detector's box as its own pipeline does, or from
its HOG detection inside the crop for given boxes and whole images), the faces are predicted in batches and the
landmarks mapped back to the photo. Per image: ``OUT/<stem>.json`` and ``OUT/<stem>.jpg`` (the landmarks drawn
by ``leaderboard.overlays``).

The box is not the one the model was trained on: a checkpoint's crops were cut around its datamodule's box (the
ground-truth landmark box, a dataset's detector, a jittered box, ...), and a face detector's box differs from it
in size and position. The JSON's ``protocol`` says which box was used and which one the model was trained with,
so the two are never confused; expect some loss of accuracy from the difference.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import experiments  # noqa: F401  (environment defaults)
from datamodules.crop import CropProtocol
from datamodules.dataset import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from datamodules.files import IMAGE_SUFFIXES, DatasetError, read_image
from experiments.errors import run_guarded
from landmarks.geometry import apply_affine, invert_affine, square_crop_matrix, warp_to_crop
from leaderboard.overlays import draw_face, write_image
from leaderboard.store import atomic_write_bytes, sha256_file
from lightning_modules.base import LandmarkModule
from lightning_modules.peers.dlib_ert import DlibERTModule, detect_faces, import_dlib
from lightning_modules.training import CheckpointError, read_checkpoint, saved_identity

BOX_SOURCES = {"detector": "dlib-hog", "boxes": "boxes-file", "whole": "whole-image"}  # how faces were found
COORDINATES = ("pixels of the photo as a viewer shows it (EXIF orientation applied), x then y, the centre of the "
               "top-left pixel at (0, 0)")
EPILOG = """outputs (never overwritten unless --overwrite):
  OUT/<stem>.json  {"image": "<path under PHOTOS_DIR>", "size": [w, h], "faces": [{"box": [x0, y0, x1, y1],
                   "score": s, "landmarks": [[x, y], ...]}], "protocol": {...}}, in pixels of the photo as shown
                   (EXIF rotation applied; pixel centres at integers). score: the detector's (null for given
                   boxes without one and for --whole-image). An image without a face gets "faces": [].
  OUT/<stem>.jpg   the photo with each face's box and landmarks drawn (images with a face).
  A photo in a sub-folder keeps it (OUT/sub/<stem>.json); photos whose stems collide keep their suffix
  (<stem>.png.json).

--boxes FILE: faces given instead of detected, in pixels of the photo as shown, [x0, y0, x1, y1].
  JSON: {"<image>": [[x0, y0, x1, y1], ...]} or {"<image>": [{"box": [x0, y0, x1, y1], "score": s}, ...]}
  CSV:  a header "image,x0,y0,x1,y1" (optionally ",score"), then one row per face.
  <image> is the photo's path under PHOTOS_DIR ("party/img_01.jpg") or its file name where that is unique.
  Photos the file does not name have no face.

protocol: the crop follows the model's own protocol (scale, input size, normalisation from the checkpoint),
  but around a box from the detector, the boxes file or the whole image: a different box than the one the model
  was trained on (its datamodule's box source, e.g. the ground-truth landmark box). The JSON's "protocol" names
  both ("box_source" and "trained_box_source"). A centroid-centred crop (PWC) is centred on the box here.

Exit status: 0 when at least one image was read, 1 when none could be, 2 for a usage or checkpoint error.
Unreadable files and images without a face are listed at the end."""


@dataclass
class Landmarker:
    """A model in eval mode and the crop it expects: scale of the box, input size, image normalisation."""

    model: LandmarkModule
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    protocol: dict[str, Any]

    @property
    def input_size(self) -> int:
        return int(self.model.input_size)


@dataclass
class Photo:
    """One readable image and its faces: boxes, scores, and (once predicted) landmarks in its pixels."""

    name: str  # path under PHOTOS_DIR, with / separators
    image: np.ndarray
    boxes: list[np.ndarray]
    scores: list[float | None]
    landmarks: list[np.ndarray | None] = field(default_factory=list)


def checkpoint_landmarker(path: Path, device: torch.device) -> Landmarker:
    """The model of a checkpoint (read with weights_only=True) and the crop protocol its identity records."""
    identity = saved_identity(read_checkpoint(path, "--ckpt"), path)
    data = identity.get("data") or {}
    if not identity.get("model_class") or not data.get("crop"):
        raise CheckpointError(path, f"{path}: the checkpoint records no model class or crop protocol (written before "
                                    "checkpoints carried their identity): train it again to use it on photos")
    module, _, name = str(identity["model_class"]).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, LandmarkModule)):
        raise CheckpointError(path, f"{path}: {identity['model_class']} is not a LandmarkModule")
    model = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    crop = CropProtocol(**data["crop"])
    protocol = {"model": identity["model_class"], "method": identity.get("method"), "checkpoint": str(path),
                "checkpoint_sha256": sha256_file(path),
                "trained_on": (data.get("train_set") or {}).get("name"), "trained_box_source": crop.box_source,
                "crop": {"scale": crop.scale, "center": "box", "input_size": model.input_size,
                         "trained_center": crop.center}}
    return _ready(Landmarker(model, crop.scale, tuple(data["mean"]), tuple(data["std"]), protocol), device)


def dlib_landmarker(device: torch.device, detected: bool) -> Landmarker:
    """dlib's pretrained 68-point predictor on the default crop (box x 1.25, 256 px). On the HOG detector's boxes
    (``detected``) it starts from that box, as dlib's own pipeline does; on given boxes or whole images, from its
    HOG detection inside the crop where there is one (``lightning_modules.peers.dlib_ert``)."""
    model, scale = DlibERTModule(box="crop" if detected else "hog"), CropProtocol().scale
    model.configure_input(IMAGENET_MEAN, IMAGENET_STD, scale)
    protocol = {"model": f"{DlibERTModule.__module__}.{DlibERTModule.__qualname__}", "method": "dlib ERT",
                "trained_on": model.trained_on, "trained_box_source": "dlib's HOG detector",
                "crop": {"scale": scale, "center": "box", "input_size": model.input_size},
                "peer": model.peer_protocol()}
    return _ready(Landmarker(model, scale, IMAGENET_MEAN, IMAGENET_STD, protocol), device)


PEERS = {"dlib": dlib_landmarker}  # --peer NAME


def _ready(landmarker: Landmarker, device: torch.device) -> Landmarker:
    landmarker.model.to(device).eval()
    landmarker.model.configure_model()  # e.g. channels_last weights, as the trainer would
    return landmarker


def list_images(root: Path, exclude: Path) -> list[Path]:
    """Image files below ``root`` by suffix (any case), sorted, leaving out the output folder."""
    exclude = exclude.resolve()
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and exclude not in p.resolve().parents)


def output_stems(names: list[str]) -> dict[str, str]:
    """Output path stem of each image name: the name less its suffix; names whose stems collide keep it."""
    stems = {name: str(Path(name).with_suffix("")) for name in names}
    counts = Counter(stems.values())
    return {name: stem if counts[stem] == 1 else name for name, stem in stems.items()}


def _box(values: Any, where: str) -> np.ndarray:
    box = np.asarray(values, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"{where}: a box is [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {values!r}")
    return box


def read_boxes(path: Path) -> dict[str, list[tuple[np.ndarray, float | None]]]:
    """The faces of a ``--boxes`` file (JSON or CSV, see --help): image name -> [(box, score or None)]."""
    faces: dict[str, list[tuple[np.ndarray, float | None]]] = {}
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            content = json.loads(text)
            if not isinstance(content, dict):
                raise ValueError(f"{path}: expected an object mapping image names to lists of boxes")
            for name, items in content.items():
                for item in items:
                    score = item.get("score") if isinstance(item, dict) else None
                    box = _box(item["box"] if isinstance(item, dict) else item, f"{path}: {name}")
                    faces.setdefault(str(name), []).append((box, None if score is None else float(score)))
        else:
            rows = csv.DictReader(text.splitlines())
            missing = {"image", "x0", "y0", "x1", "y1"} - set(rows.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: the CSV header lacks {sorted(missing)} (image,x0,y0,x1,y1[,score])")
            for line, row in enumerate(rows, start=2):
                box = _box([row[k] for k in ("x0", "y0", "x1", "y1")], f"{path}:{line}")
                score = row.get("score")
                faces.setdefault(row["image"], []).append((box, float(score) if score not in (None, "") else None))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(str(error) if str(path) in str(error) else f"{path}: {error}") from None
    return faces


def match_boxes(given: dict[str, list], names: list[str]) -> tuple[dict[str, list], list[str]]:
    """Given faces by image name (path under PHOTOS_DIR, or a unique file name), and the names matching none."""
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(Path(name).name, []).append(name)
    matched, unmatched = {}, []
    for key, faces in given.items():
        target = key if key in names else (by_file.get(key) or [None, None])
        if isinstance(target, list):
            target = target[0] if len(target) == 1 else None
        if target is None:
            unmatched.append(key)
        else:
            matched.setdefault(target, []).extend(faces)
    return matched, unmatched


def crop_face(image: np.ndarray, box: np.ndarray, landmarker: Landmarker) -> tuple[torch.Tensor, np.ndarray]:
    """The normalised (3, S, S) crop of one face, cut as the model's protocol cuts it, and its 2x3 matrix."""
    matrix = square_crop_matrix(box, landmarker.scale, landmarker.input_size)
    crop = warp_to_crop(image, matrix, landmarker.input_size)
    return normalize_image(crop, landmarker.mean, landmarker.std), matrix


class Predictor:
    """Queues faces, predicts them in batches and maps the landmarks back to their photos."""

    def __init__(self, landmarker: Landmarker, batch_size: int, device: torch.device) -> None:
        self.landmarker, self.batch_size, self.device = landmarker, batch_size, device
        self.queue: list[tuple[Photo, int, torch.Tensor, np.ndarray]] = []

    def add(self, photo: Photo) -> None:
        photo.landmarks = [None] * len(photo.boxes)
        for j, box in enumerate(photo.boxes):
            self.queue.append((photo, j, *crop_face(photo.image, box, self.landmarker)))

    def flush(self) -> None:
        model = self.landmarker.model
        for start in range(0, len(self.queue), self.batch_size):
            chunk = self.queue[start:start + self.batch_size]
            with torch.inference_mode():
                points = model.predict_landmarks(torch.stack([c[2] for c in chunk]).to(self.device))
            points = points.double().cpu().numpy()
            for (photo, j, _, matrix), crop_points in zip(chunk, points, strict=True):
                photo.landmarks[j] = apply_affine(crop_points, invert_affine(matrix))
        self.queue = []


def photo_record(photo: Photo, protocol: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one photo (schema in --help)."""
    h, w = photo.image.shape[:2]
    faces = [{"box": [round(float(v), 2) for v in box], "score": score,
              "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in points]}
             for box, score, points in zip(photo.boxes, photo.scores, photo.landmarks, strict=True)]
    return {"image": photo.name, "size": [int(w), int(h)], "faces": faces, "protocol": protocol}


def write_photo(photo: Photo, out: Path, stem: str, protocol: dict[str, Any], overwrite: bool) -> None:
    """``<stem>.json`` and, where there is a face, ``<stem>.jpg`` with every face drawn."""
    record = photo_record(photo, protocol)
    faces = ",\n".join(f"  {json.dumps(face)}" for face in record["faces"])  # one key a line, one face a line
    lines = [f" {json.dumps(key)}: " + (f"[\n{faces}\n ]" if key == "faces" and faces else json.dumps(value))
             for key, value in record.items()]
    atomic_write_bytes(out / f"{stem}.json", ("{\n" + ",\n".join(lines) + "\n}\n").encode(), overwrite=overwrite)
    if photo.boxes:
        drawn = photo.image
        for j, (box, score, points) in enumerate(zip(photo.boxes, photo.scores, photo.landmarks, strict=True)):
            caption = f"#{j}" + (f" {score:.2f}" if score is not None else "")
            drawn = draw_face(drawn, points, box=box, caption=caption)
        write_image(out / f"{stem}.jpg", drawn, overwrite=overwrite)


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser (kept: usage errors found later go through ``parser.error``, exit status 2) and the options."""
    parser = argparse.ArgumentParser(prog="python -m experiments.photos", description=__doc__.replace("``", ""),
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, metavar="PHOTOS_DIR", help="folder of photos (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", type=Path, help="a checkpoint written by a fit (python -m experiments.cli fit)")
    model.add_argument("--peer", choices=sorted(PEERS), help="a pretrained peer (dlib: pip install -e '.[peers]')")
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument("--boxes", type=Path, metavar="FILE", help="face boxes instead of the detector (format below)")
    faces.add_argument("--whole-image", action="store_true", help="each image is one face crop: its box is the image")
    parser.add_argument("--upsample", type=int, default=1, help="detector upsampling (1: faces from ~40 px; default 1)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="detector score threshold (default 0, dlib's; raise it against false detections)")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per forward pass (default 16)")
    parser.add_argument("--device", default="auto", help="torch device for --ckpt models (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs in OUT")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command (``argv``: the command line without the program). Everything that can be refused is checked
    before the first photo is read (folder, existing outputs, boxes file, checkpoint, dlib), so a mistake never
    leaves half an output folder; a bad photo is listed, never fatal. Returns the exit status."""
    parser, opts = parse_args(list(sys.argv[1:] if argv is None else argv))
    if not opts.photos.is_dir():
        parser.error(f"{opts.photos}: no such folder")
    if opts.batch_size < 1 or opts.upsample < 0:
        parser.error("--batch-size must be >= 1 and --upsample >= 0")
    device = torch.device("cuda" if opts.device == "auto" and torch.cuda.is_available() else
                          "cpu" if opts.device == "auto" else opts.device)
    images = list_images(opts.photos, opts.out)
    names = [p.relative_to(opts.photos).as_posix() for p in images]
    stems = output_stems(names)
    existing = [f"{stems[n]}{s}" for n in names for s in (".json", ".jpg") if (opts.out / f"{stems[n]}{s}").exists()]
    if existing and not opts.overwrite:
        parser.error(f"{opts.out} already holds {len(existing)} output(s) of these photos ({', '.join(existing[:4])}"
                     f"{', ...' if len(existing) > 4 else ''}): pass --overwrite to replace them, or another --out")
    given, unmatched = {}, []
    if opts.boxes is not None:
        try:
            given, unmatched = match_boxes(read_boxes(opts.boxes), names)
        except ValueError as error:
            parser.error(str(error))
    mode = "boxes" if opts.boxes is not None else "whole" if opts.whole_image else "detector"
    try:
        landmarker = (PEERS[opts.peer](device, mode == "detector") if opts.peer
                      else checkpoint_landmarker(opts.ckpt, device))
        if mode == "detector":
            import_dlib()
    except ImportError as error:
        parser.error(f"{error} (or give --boxes FILE / --whole-image instead of the face detector)"
                     if mode == "detector" else str(error))
    protocol = {**landmarker.protocol, "box_source": BOX_SOURCES[mode], "coordinates": COORDINATES}
    if mode == "detector":
        protocol["detector"] = {"name": "dlib HOG frontal face detector", "upsample": opts.upsample,
                                "min_score": opts.min_score}
    predictor = Predictor(landmarker, opts.batch_size, device)
    unreadable, faceless, pending, n_faces, read = [], [], [], 0, 0

    def write_pending() -> None:
        predictor.flush()
        for photo in pending:
            write_photo(photo, opts.out, stems[photo.name], protocol, opts.overwrite)
        pending.clear()

    for path, name in tqdm(list(zip(images, names, strict=True)), desc="photos", unit="image"):
        try:
            image = read_image(path, exif_orientation=True)
        except DatasetError as error:
            unreadable.append(f"{name}: {error.reason}")
            continue
        read += 1
        h, w = image.shape[:2]
        found = (given.get(name, []) if mode == "boxes" else [(np.array([0.0, 0.0, w - 1.0, h - 1.0]), None)]
                 if mode == "whole" else [f for f in detect_faces(image, opts.upsample) if f[1] >= opts.min_score])
        photo = Photo(name, image, [box for box, _ in found], [score for _, score in found])
        if not found:
            faceless.append(name)
            write_photo(photo, opts.out, stems[name], protocol, opts.overwrite)
            continue
        n_faces += len(found)
        predictor.add(photo)
        pending.append(photo)
        if len(predictor.queue) >= opts.batch_size:
            write_pending()
    write_pending()
    print(f"photos: {read} of {len(images)} image(s) read, {read - len(faceless)} with a face ({n_faces} face(s)); "
          f"JSON and overlays in {opts.out}")
    for title, items in (("unreadable", unreadable), ("no face found", faceless),
                         ("--boxes entries naming no image", unmatched)):
        if items:
            print(f"{title} ({len(items)}):\n" + "\n".join(f"  {item}" for item in items))
    if not read:
        print(f"photos: nothing could be processed: no readable image under {opts.photos}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, None, "experiments.photos"))
