"""The embedded synthetic face dataset: procedural faces with exact landmarks, no download.

Faces come from a 3-D shape model fitted to the real AFLW2000-3D ground truth (``data/`` beside this file),
posed and rendered with OpenCV (``face_model``, ``face_render``), in the 68-point (300W) or 98-point (WFLW) layout,
with WFLW-style attribute tags (pose, expression, illumination, make-up, occlusion, blur) as test subsets.

Every face is generated from ``(seed, split, index)``: deterministic, any size, and identical in every worker
and process. The datamodule renders and crops each face once, at ``setup`` (``in_memory``, on by default):
rendering is about three quarters of a sample's CPU time and would otherwise compete with training every epoch.
The "train" split is the source of the training and validation faces (the validation split is carved from it by
the shared base); "test" is a disjoint stream.

``subsets`` chooses how test faces are tagged, so that a paper's experiment on a real benchmark can run
unchanged on synthetic faces and fill the same table cells (``make reproduce-<paper> DATA=synthetic``): the
WFLW attributes, 300W's common / challenging, AFLW2000-3D's yaw bins, AFLW's frontal faces, and so on
(``SUBSET_SCHEMES``). These are stand-ins with the real subsets' names and roughly their meaning, never their
images or difficulty.

Each face also carries a ``jittered`` box, a detector-like box (the ground-truth box shifted and rescaled by a
few percent), which the default crop protocol uses so that the model cannot rely on perfectly centred faces.
"""

from __future__ import annotations

import numpy as np

from datamodules.aflw2000 import YAW_BINS, yaw_bin
from datamodules.base import CropProtocol, FaceLandmarkDataModule, FaceSource, RawFace
from datamodules.synthetic.face_render import ATTRIBUTES, render_face
from landmarks.geometry import points_bbox
from landmarks.layouts import get_layout

SPLITS = {"train": 0, "test": 1}
PWC_PARTS = ("helen", "lfpw", "indoor", "outdoor", "ibug")
# scheme -> subset names. How a face is tagged under each: ``_tags``.
SUBSET_SCHEMES: dict[str, tuple[str, ...]] = {
    "attributes": ATTRIBUTES,  # WFLW: pose, expression, illumination, makeup, occlusion, blur
    "300w": ("common", "challenging"),  # challenging: a large pose or an occluder
    "300w_private": ("indoor", "outdoor"),  # alternate faces (no meaning)
    "aflw": ("frontal",),  # every landmark visible (AFLW's definition)
    "aflw2000": tuple(tag for tag, _ in YAW_BINS),  # |yaw| bins as AFLW2000-3D (boundaries to the lower bin)
    "pwc": PWC_PARTS,  # faces dealt round-robin to PWC's five validation sets (no meaning)
    "none": (),
}
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
        subsets: the subset scheme of ``SUBSET_SCHEMES`` (default: the WFLW attributes).
    """

    synthetic = True

    def __init__(self, layout: str, split: str, size: int, seed: int = 0, image_size: int = 256,
                 attribute_rate: float = 0.2, box_jitter: float = 0.05, subsets: str = "attributes") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if subsets not in SUBSET_SCHEMES:
            raise ValueError(f"unknown subset scheme {subsets!r}; expected one of {sorted(SUBSET_SCHEMES)}")
        self.scheme, self.subset_names = subsets, SUBSET_SCHEMES[subsets]
        self.layout = get_layout(layout)
        self.split, self.size, self.seed = split, size, seed
        self.image_size, self.attribute_rate, self.box_jitter = image_size, attribute_rate, box_jitter
        scheme = "" if subsets == "attributes" else f"-{subsets}"
        self.name = f"synthetic-{self.layout.name}-{split}{scheme}"
        self.protocol = {"seed": seed, "image_size": image_size, "attribute_rate": attribute_rate,
                         "box_jitter": box_jitter, "subsets": subsets}

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
            subsets=self._tags(face, index),
            boxes={JITTERED_BOX: np.concatenate([centre - side / 2, centre + side / 2])},
        )

    def _tags(self, face, index: int) -> tuple[str, ...]:
        if self.scheme == "attributes":
            return face.attributes
        if self.scheme == "300w":
            return ("challenging",) if {"pose", "occlusion"} & set(face.attributes) else ("common",)
        if self.scheme == "300w_private":
            return (self.subset_names[index % 2],)
        if self.scheme == "aflw":
            return ("frontal",) if face.visible.all() else ()
        if self.scheme == "aflw2000":
            return (yaw_bin(float(face.pose[0])),)
        if self.scheme == "pwc":
            return (PWC_PARTS[index % len(PWC_PARTS)],)
        return ()


class SyntheticFaceDataModule(FaceLandmarkDataModule):
    """Synthetic faces through the shared datamodule base.

    Args:
        layout: "300w_68" or "wflw_98".
        train_size: faces in the "train" split (training + validation).
        test_size: faces in the test split.
        image_size: side of the generated images (the crop then resizes to ``input_size``).
        attribute_rate: probability of each WFLW-style attribute per face.
        data_seed: seed of the generated faces (``seed`` seeds the validation split and augmentation).
        subsets: how test faces are tagged (``SUBSET_SCHEMES``): "attributes" (WFLW), "300w", "aflw2000", ...
        in_memory: render and crop every face once, at ``setup`` (default; see ``FaceLandmarkDataModule``).
        **kwargs: FaceLandmarkDataModule arguments (input_size, batch_size, augment, ...). ``crop`` default: the
            jittered box enlarged 1.25x.
    """

    default_crop, default_in_memory = SYNTHETIC_CROP, True

    def __init__(self, layout: str = "300w_68", train_size: int = 2000, test_size: int = 500,
                 image_size: int = 256, attribute_rate: float = 0.2, data_seed: int = 0,
                 subsets: str = "attributes", in_memory: bool | None = default_in_memory, **kwargs) -> None:
        if subsets not in SUBSET_SCHEMES:
            raise ValueError(f"unknown subset scheme {subsets!r}; expected one of {sorted(SUBSET_SCHEMES)}")
        self.layout = get_layout(layout)  # an argument here: the generator serves two layouts
        super().__init__(in_memory=in_memory, **kwargs)
        self.sizes = {"train": train_size, "test": test_size}
        self.image_size, self.attribute_rate, self.data_seed = image_size, attribute_rate, data_seed
        self.subsets = subsets

    def build_source(self, split: str) -> SyntheticFaceSource:
        return SyntheticFaceSource(self.layout_name, split, self.sizes[split], self.data_seed, self.image_size,
                                   self.attribute_rate, subsets=self.subsets if split == "test" else "attributes")
