"""dlib's ensemble of regression trees (Kazemi & Sullivan, CVPR 2014) as an evaluation-only peer.

What runs: dlib's ``shape_predictor`` with ``shape_predictor_68_face_landmarks.dat``, the model dlib publishes,
trained by dlib on iBUG 300-W (68 points in the 300W markup: layout ``300w_68``; COFW-68, AFLW2000-3D and Masked 300W
use the same markup). It comes with the ``peers`` extra (``pip install -e .[peers]``: the ``dlib-bin`` wheel and
``face-recognition-models``, which ships the model file). The file is found with ``importlib.util.find_spec``,
without importing that package: its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ships.

Licences: dlib is Boost-licensed; the model is trained on iBUG 300-W, whose licence excludes commercial use
(dlib-models' README: the model "can't be used in a commercial product"; ask Imperial College London otherwise),
so it is for research only. Which 300-W images dlib trained on is not stated beside the file: 300W test faces may
not be unseen by it.

Protocol (stored as ``protocol.peer`` in every record, ``peer_protocol``): the module sees exactly the crop every
other model of the benchmark sees (the datamodule's crop protocol, e.g. 300W's ground-truth landmark box x 1.25 at
256 px), turned back into uint8 RGB with the datamodule's mean / std. dlib's predictor also needs a face box, and
it was trained on the boxes of dlib's HOG face detector (dlib-models' README: the model "expects the bounding boxes
from the face detector to be aligned a certain way, the way dlib's HOG face detector does"), which sit on a face
differently from a landmark box (they centre on the frontal face, not on the extent of a turned face's points).
``box``:

- ``"hog"`` (default): dlib's HOG detector runs on the crop (upsampled once: it then also finds faces that the
  crop cuts at its border) and the predictor gets the detection that overlaps the crop protocol's box most
  (IoU >= 0.3); where there is none (strong rotation, profile), the crop protocol's box as below. The share of
  faces that fell back is an evaluation diagnostic (``diagnostics.box_fallback`` in records).
- ``"crop"``: the crop protocol's box as seen in the crop, squared to its longer side: the centred square of side
  ``input_size / crop scale`` (with a ``centroid`` crop centre the box is not centred: this square is then off by
  the centroid's offset).

The default is measured, not assumed, on the four real 300W-format photos of ``tests/data/300w_pts`` through the
whole pipeline (300W crop: landmark box x 1.25 at 256 px; predict; map back; inter-ocular NME against the ``.pts``),
per photo (breakingbad, einstein, san_test_1, takeo) and their mean, in %:

| box | breakingbad | einstein | san_test_1 | takeo | mean | fell back |
|---|---:|---:|---:|---:|---:|---|
| hog, upsample 1 (default) | 4.66 | 6.47 | 1.85 | 3.46 | 4.11 | none |
| hog, upsample 0 | 44.18 | 6.40 | 2.06 | 3.50 | 14.03 | breakingbad |
| hog, upsample 2 | 7.13 | 12.12 | 2.02 | 3.60 | 6.22 | einstein |
| crop | 44.18 | 12.12 | 2.16 | 3.47 | 15.48 | |

On the turned face of breakingbad the landmark box starts the predictor's mean shape far off and it never recovers;
the HOG box, found at the crop's border only when upsampled, is where dlib was trained to start. (Four faces choose
a default, they do not rank the peer: evaluate it on 300W for that.)
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from datamodules.dataset import IMAGENET_MEAN, IMAGENET_STD, denormalize_images
from landmarks.layouts import W300_68
from leaderboard.store import sha256_file
from lightning_modules.base import LandmarkModule

MODEL_PACKAGE = "face_recognition_models"  # ships the model file; never imported (its __init__ needs pkg_resources)
MODEL_FILE = "models/shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "install the peers extra: pip install -e '.[peers]' (dlib-bin and face-recognition-models)"
BOX_MODES = ("hog", "crop")
MIN_IOU = 0.3  # a detection must overlap the crop protocol's box this much to count as the same face
EVALUATION_ONLY = ("the dlib peer is evaluation-only: dlib's model is pretrained and has nothing to train here; run "
                   "`test`, `validate` or `predict` without a checkpoint")


def model_path() -> Path:
    """The installed ``shape_predictor_68_face_landmarks.dat``, located without importing its package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ImportError(f"dlib's 68-point model file ({MODEL_PACKAGE}/{MODEL_FILE}) was not found: {INSTALL_HINT}")


def import_dlib() -> Any:
    """The ``dlib`` module, or an ImportError saying how to install it."""
    try:
        import dlib
    except ImportError as error:
        raise ImportError(f"dlib is not installed: {INSTALL_HINT}") from error
    return dlib


@functools.lru_cache(maxsize=4)
def shape_predictor(path: str) -> Any:
    """dlib's shape predictor from ``path`` (loaded once per process: about 0.5 s and 100 MB)."""
    return import_dlib().shape_predictor(path)


@functools.lru_cache(maxsize=1)
def face_detector() -> Any:
    """dlib's HOG frontal face detector (one per process)."""
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=4)
def model_sha256(path: str) -> str:
    return sha256_file(Path(path))


def detect_faces(image: np.ndarray, upsample: int = 1) -> list[tuple[np.ndarray, float]]:
    """Faces in an (H, W, 3) uint8 RGB image by dlib's HOG detector, best score first: ``(box, score)`` with
    ``box = [x0, y0, x1, y1]`` the centres of its corner pixels (dlib's inclusive rectangle), the convention of a
    landmark box. ``upsample`` doubles the image that many times first (finds faces from ~40 px at 1)."""
    rects, scores, _ = face_detector().run(np.ascontiguousarray(image), int(upsample), 0.0)
    found = [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
             for r, s in zip(rects, scores, strict=True)]
    return sorted(found, key=lambda face: -face[1])


def predict_shape(image: np.ndarray, box: Sequence[float], path: str | Path | None = None) -> np.ndarray:
    """(68, 2) float64 landmarks of dlib's predictor on an (H, W, 3) uint8 RGB image, started from ``box``
    [x0, y0, x1, y1] (rounded to dlib's integer rectangle). dlib returns whole pixels, centres at integers."""
    dlib = import_dlib()
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    shape = shape_predictor(str(path or model_path()))(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1]."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class DlibERTModule(LandmarkModule):
    """dlib's 68-point shape predictor on the benchmark's crops (evaluation only; protocol in the module docstring).

    Args:
        layout: must be ``300w_68`` (the model's markup); linked to the datamodule's by the CLI.
        input_size: side of the crop it is given; linked to the datamodule's.
        box: ``"hog"`` (dlib's detector on the crop, the crop protocol's box where it finds none) or ``"crop"``.
        hog_upsample: how many times the detector doubles the crop first (1, measured: see the module docstring).
        model_file: another dlib 68-point model file (None: the one of ``face-recognition-models``).
        **kwargs: LandmarkModule arguments (flip_test, thresholds, ...); there is nothing to optimise.
    """

    trained_on = "ibug-300w (dlib shape_predictor_68_face_landmarks)"  # the record's train_set
    # leaderboard.cost: torch sees none of dlib's work (its regression trees), so no parameter or MAC count.
    cost_outside_torch = "dlib's regression trees run outside torch"

    def __init__(self, layout: str = W300_68.name, input_size: int = 256, box: str = "hog",
                 hog_upsample: int = 1, model_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(layout=layout, input_size=input_size, **kwargs)
        if self.layout != W300_68:
            raise ValueError(f"dlib's shape predictor gives the 68 points of the iBUG 300-W markup (layout "
                             f"{W300_68.name}); this run's data has layout {self.layout.name} "
                             f"({self.layout.num_points} points): evaluate it on a 68-point test set")
        if box not in BOX_MODES:
            raise ValueError(f"box must be one of {BOX_MODES}, got {box!r}")
        self.box_mode, self.model_file = box, model_file
        self.hog_upsample = int(hog_upsample)
        self.mean, self.std, self.crop_scale = IMAGENET_MEAN, IMAGENET_STD, 1.25
        self.box_stats = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

    # --- what the crops are ------------------------------------------------------------------------------------
    def configure_input(self, mean: Sequence[float], std: Sequence[float], crop_scale: float) -> None:
        """The image normalisation and crop enlargement of the crops this module will get (``setup`` takes them
        from the datamodule; the photos command sets its own)."""
        self.mean, self.std, self.crop_scale = tuple(mean), tuple(std), float(crop_scale)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._datamodule()
        if datamodule is not None:
            self.configure_input(datamodule.mean, datamodule.std, datamodule.crop.scale)

    def crop_box(self) -> np.ndarray:
        """The crop protocol's box in the crop, squared: side input_size / crop scale, centred."""
        centre, half = (self.input_size - 1) / 2, self.input_size / self.crop_scale / 2
        return np.array([centre - half, centre - half, centre + half, centre + half])

    def to_uint8(self, images: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) normalised crops -> (B, S, S, 3) uint8 RGB: the datamodule's normalisation undone with the
        same float32 constants (exact for crops it normalised)."""
        return denormalize_images(images, self.mean, self.std)

    def face_box(self, crop: np.ndarray) -> tuple[np.ndarray, bool]:
        """The box dlib starts from in one uint8 crop, and whether the HOG mode fell back to the crop's box."""
        fallback = self.crop_box()
        if self.box_mode == "crop":
            return fallback, False
        scored = [(box_iou(box, fallback), box) for box, _ in detect_faces(crop, self.hog_upsample)]
        best = max(scored, key=lambda item: item[0], default=(0.0, None))
        return (best[1], False) if best[0] >= MIN_IOU else (fallback, True)

    # --- the model -------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised crops -> ((B, 68, 2) crop pixels, (B,) bool: the box fell back)."""
        path = self.model_file or str(model_path())
        points, fell_back = [], []
        for crop in self.to_uint8(images):
            box, fallback = self.face_box(crop)
            points.append(predict_shape(crop, box, path))
            fell_back.append(fallback)
        return (torch.from_numpy(np.stack(points)).to(images.device, torch.float32),
                torch.tensor(fell_back, dtype=torch.bool, device=images.device))

    def decode(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return outputs[0]

    def update_diagnostics(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict, stage: str) -> None:
        if self.box_mode == "hog":
            self.box_stats[stage].update(outputs[1].float())

    def compute_diagnostics(self, stage: str) -> dict[str, float]:
        stats = self.box_stats[stage]
        if not stats.update_count:
            return {}
        share = float(stats.compute())
        stats.reset()
        return {"box_fallback": share}

    def peer_protocol(self) -> dict[str, Any]:
        """What an evaluation record states about this peer (``protocol.peer``)."""
        path = self.model_file or str(model_path())
        box = (f"dlib's HOG detector on the crop (upsample {self.hog_upsample}), the detection with the largest IoU "
               f"(>= {MIN_IOU:g}) with the crop protocol's box; that box where none" if self.box_mode == "hog"
               else "the crop protocol's box, squared to its longer side")
        return {"model": "dlib shape_predictor_68_face_landmarks: ensemble of regression trees (Kazemi & Sullivan "
                         "2014), pretrained by dlib on iBUG 300-W", "model_file": Path(path).name,
                "model_sha256": model_sha256(path), "dlib": str(import_dlib().__version__),
                "input": "the crop protocol's crop as uint8 RGB", "box_mode": self.box_mode, "box": box,
                "licence": "dlib: Boost Software License; model trained on iBUG 300-W (no commercial use)"}

    # --- nothing to train --------------------------------------------------------------------------------------
    def training_loss(self, outputs: Any, batch: dict) -> torch.Tensor:
        raise RuntimeError(EVALUATION_ONLY)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raise RuntimeError(EVALUATION_ONLY)

    def configure_optimizers(self) -> None:
        raise RuntimeError(EVALUATION_ONLY)
