"""The embedded synthetic face dataset: procedural faces with exact landmarks, no download.

Faces come from a 3-D shape model fitted to the real AFLW2000-3D ground truth (``datamodules/data``), posed
and rendered with OpenCV (``face_model``, ``face_render``), in the 68-point (300W) or 98-point (WFLW) layout,
with WFLW-style attribute tags (pose, expression, illumination, make-up, occlusion, blur) as test subsets.

Every face is generated on the fly from ``(seed, split, index)``: deterministic, any size, and identical in
every worker and process. The "train" split is the source of the training and validation faces (the
validation split is carved from it by the shared base); "test" is a disjoint stream.

Each face also carries a ``jittered`` box, a detector-like box (the ground-truth box shifted and rescaled by a
few percent), which the default crop protocol uses so that the model cannot rely on perfectly centred faces.
"""

from __future__ import annotations

import numpy as np

from datamodules.base import CropProtocol, CropSpec, FaceLandmarkDataModule, FaceSource, RawFace, resolve_crop
from datamodules.face_render import ATTRIBUTES, render_face
from landmarks.geometry import points_bbox
from landmarks.layouts import get_layout

SPLITS = {"train": 0, "test": 1}
JITTERED_BOX = "jittered"
SYNTHETIC_CROP = CropProtocol(box_source=JITTERED_BOX, scale=1.25)


class SyntheticFaceSource(FaceSource):
    """``size`` procedural faces of one split.

    Args:
        layout: layout name ("300w_68" or "wflw_98").
        split: "train" or "test" (independent random streams).
        size: number of faces.
        seed: dataset seed; the same seed gives the same faces.
        image_size: side of the generated (square) image.
        attribute_rate: probability of each attribute per face.
        box_jitter: std of the jittered box's shift and log-scale, as fractions of the face size.
    """

    subset_names = ATTRIBUTES

    def __init__(self, layout: str, split: str, size: int, seed: int = 0, image_size: int = 256,
                 attribute_rate: float = 0.2, box_jitter: float = 0.05) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        self.layout = get_layout(layout)
        self.split, self.size, self.seed = split, size, seed
        self.image_size, self.attribute_rate, self.box_jitter = image_size, attribute_rate, box_jitter
        self.name = f"synthetic-{self.layout.name}-{split}"
        self.protocol = {"seed": seed, "image_size": image_size, "attribute_rate": attribute_rate,
                         "box_jitter": box_jitter}

    def __len__(self) -> int:
        return self.size

    def image_id(self, index: int) -> str:
        return f"{self.name}-{index:06d}"

    def load(self, index: int) -> RawFace:
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}: face {index} out of range 0..{self.size - 1}")
        face = render_face(np.random.default_rng([self.seed, SPLITS[self.split], index]), self.layout,
                           self.image_size, self.attribute_rate)
        # The box jitter has its own stream, so changing it never changes the faces.
        jitter = np.random.default_rng([self.seed, SPLITS[self.split], index, 1]).normal(0, self.box_jitter, 3)
        box = points_bbox(face.landmarks)
        centre, side = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        face_size = float(np.sqrt(side.prod()))
        centre = centre + jitter[:2] * face_size
        side = side * np.exp(jitter[2])
        return RawFace(
            image=face.image, landmarks=face.landmarks, visible=face.visible, image_id=self.image_id(index),
            subsets=face.attributes, boxes={JITTERED_BOX: np.concatenate([centre - side / 2, centre + side / 2])},
        )


class SyntheticFaceDataModule(FaceLandmarkDataModule):
    """Synthetic faces through the shared datamodule base.

    Args:
        layout: "300w_68" or "wflw_98".
        train_size: faces in the "train" split (training + validation).
        test_size: faces in the test split.
        image_size: side of the generated images (the crop then resizes to ``input_size``).
        attribute_rate: probability of each WFLW-style attribute per face.
        data_seed: seed of the generated faces (``seed`` seeds the validation split and augmentation).
        crop: crop protocol; default: the jittered box enlarged 1.25x.
        **kwargs: FaceLandmarkDataModule arguments (input_size, batch_size, augment, ...).
    """

    def __init__(self, layout: str = "300w_68", train_size: int = 2000, test_size: int = 500,
                 image_size: int = 256, attribute_rate: float = 0.2, data_seed: int = 0,
                 crop: CropSpec = None, **kwargs) -> None:
        super().__init__(layout=layout, crop=resolve_crop(crop, SYNTHETIC_CROP), **kwargs)
        self.sizes = {"train": train_size, "test": test_size}
        self.image_size, self.attribute_rate, self.data_seed = image_size, attribute_rate, data_seed

    def build_source(self, split: str) -> SyntheticFaceSource:
        return SyntheticFaceSource(self.layout_name, split, self.sizes[split], self.data_seed, self.image_size,
                                   self.attribute_rate)
