"""FaceLandmarkDataModule and the sample contract (DESIGN.md, "The sample contract").

Datasets differ only in parsing: a :class:`FaceSource` lists annotated faces and loads one as a
:class:`RawFace` (image + landmarks in original-image pixels). Everything else lives here and is shared:
the square similarity crop chosen by a :class:`CropProtocol` (data, recorded with every result), the
normalisers, the shared augmentation, normalisation to tensors, the collate function, worker seeding and the
validation split carved from the training data (the test set is never used for selection).

A sample is a dict:
    image      (3, S, S) float32, normalised with ``mean`` / ``std``
    landmarks  (K, 2) float32, crop pixels, x then y, pixel centres at integers
    visible    (K,) bool
    norm       {"inter_ocular", "inter_pupil", "bbox"}: float32 scalars in crop pixels, from the ground truth
               in the original image scaled by the crop's scale factor
    subsets    tuple of subset tags
    meta       {"index": dataset index, "image_id": str, "original_size": (H, W),
                "transform": (2, 3) float64 matrix mapping original-image points to crop points}
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from datamodules.augment import AugmentConfig, build_augmentation
from landmarks.geometry import apply_affine, matrix_scale, points_bbox, square_crop_matrix, warp_to_crop
from landmarks.layouts import LandmarkLayout, get_layout
from landmarks.metrics import bbox_size, inter_ocular, inter_pupil

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZERS = ("inter_ocular", "inter_pupil", "bbox")
LANDMARK_BOX = "landmarks"  # the box of the ground-truth landmarks, always available


@dataclass
class RawFace:
    """One annotated face as its dataset stores it (original-image pixels, pixel centres at integers)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (K, 2) float
    visible: np.ndarray  # (K,) bool
    image_id: str
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # x1 y1 x2 y2 by source ("given", ...)


class FaceSource(abc.ABC):
    """An annotated face list of one split. Subclasses parse a dataset's files; nothing else."""

    name: str
    layout: LandmarkLayout
    subset_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def image_id(self, index: int) -> str:
        """The identifier of face ``index`` (file name, line number), without decoding anything."""

    @abc.abstractmethod
    def load(self, index: int) -> RawFace:
        """Read face ``index``: decode its image and annotation."""


@dataclass
class CropProtocol:
    """How a face is cropped and which box defines the bbox normaliser; recorded with every result.

    Attributes:
        box_source: key of ``RawFace.boxes`` the crop is built on (``"landmarks"``: the ground-truth box).
        scale: crop side = ``scale * max(box width, box height)``, centred on the box centre.
        bbox_norm_source: key of ``RawFace.boxes`` whose sqrt(w * h) is the ``bbox`` normaliser.
    """

    box_source: str = LANDMARK_BOX
    scale: float = 1.25
    bbox_norm_source: str = LANDMARK_BOX


def _box(raw: RawFace, source: str, dataset: str) -> np.ndarray:
    if source == LANDMARK_BOX:
        return points_bbox(raw.landmarks)
    if source not in raw.boxes:
        raise KeyError(f"{dataset}: face {raw.image_id!r} has no {source!r} box; it has "
                       f"{sorted(raw.boxes) + [LANDMARK_BOX]}")
    return np.asarray(raw.boxes[source], dtype=np.float64)


def original_normalizers(raw: RawFace, layout: LandmarkLayout, protocol: CropProtocol, dataset: str) -> np.ndarray:
    """The (3,) normalisers of NORMALIZERS in original-image pixels, from the ground truth."""
    pts = torch.from_numpy(np.asarray(raw.landmarks, dtype=np.float64))[None]
    box = torch.from_numpy(_box(raw, protocol.bbox_norm_source, dataset))[None]
    return np.array([float(inter_ocular(pts, layout)), float(inter_pupil(pts, layout)), float(bbox_size(box))])


class FaceDataset(Dataset):
    """Crops, augments and tensorises the faces ``indices`` of a source."""

    def __init__(
        self,
        source: FaceSource,
        indices: Sequence[int],
        input_size: int,
        crop: CropProtocol,
        augment: AugmentConfig | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        self.source, self.indices, self.input_size, self.crop = source, list(indices), input_size, crop
        self.augment = build_augmentation(augment, source.layout, seed=seed) if augment is not None else None
        self.mean = np.asarray(mean, dtype=np.float32) * 255
        self.std = np.asarray(std, dtype=np.float32) * 255

    def __len__(self) -> int:
        return len(self.indices)

    def reseed(self, seed: int) -> None:
        """Give this copy of the dataset (one per worker process) its own augmentation stream."""
        if self.augment is not None:
            self.augment.set_random_seed(seed % 2**32)

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        raw = self.source.load(index)
        name = self.source.name
        if raw.landmarks.shape != (self.source.layout.num_points, 2):
            raise ValueError(f"{name}: face {raw.image_id!r} has landmarks of shape {raw.landmarks.shape}, "
                             f"expected ({self.source.layout.num_points}, 2)")
        if not np.isfinite(raw.landmarks).all():
            raise ValueError(f"{name}: face {raw.image_id!r} has non-finite landmark coordinates")
        matrix = square_crop_matrix(_box(raw, self.crop.box_source, name), self.crop.scale, self.input_size)
        image = warp_to_crop(raw.image, matrix, self.input_size)
        landmarks = apply_affine(np.asarray(raw.landmarks, dtype=np.float64), matrix)
        visible = np.asarray(raw.visible, dtype=bool)
        if self.augment is not None:
            out = self.augment(image=image, keypoints=landmarks.astype(np.float32), visible=visible)
            image, landmarks, visible = out["image"], np.asarray(out["keypoints"]), np.asarray(out["visible"])
        norms = original_normalizers(raw, self.source.layout, self.crop, name) * matrix_scale(matrix)
        image = (image.astype(np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "landmarks": torch.from_numpy(landmarks.astype(np.float32)),
            "visible": torch.from_numpy(visible.astype(bool)),
            "norm": {k: torch.tensor(v, dtype=torch.float32) for k, v in zip(NORMALIZERS, norms, strict=False)},
            "subsets": tuple(raw.subsets),
            "meta": {
                "index": index,
                "image_id": raw.image_id,
                "original_size": tuple(raw.image.shape[:2]),
                "transform": torch.from_numpy(matrix),
            },
        }


def collate_faces(samples: list[dict]) -> dict:
    """Stack a list of samples into a batch; ``subsets`` and ``meta.image_id`` stay Python lists."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "landmarks": torch.stack([s["landmarks"] for s in samples]),
        "visible": torch.stack([s["visible"] for s in samples]),
        "norm": {k: torch.stack([s["norm"][k] for s in samples]) for k in samples[0]["norm"]},
        "subsets": [s["subsets"] for s in samples],
        "meta": {
            "index": torch.tensor([s["meta"]["index"] for s in samples], dtype=torch.long),
            "image_id": [s["meta"]["image_id"] for s in samples],
            "original_size": torch.tensor([s["meta"]["original_size"] for s in samples], dtype=torch.long),
            "transform": torch.stack([s["meta"]["transform"] for s in samples]),
        },
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: a distinct augmentation stream per worker (and per epoch, as torch draws a
    new base seed whenever workers start)."""
    info = get_worker_info()
    info.dataset.reseed(info.seed)


def split_indices(n: int, val_size: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into train and validation indices; ``val_size`` < 1 is a fraction."""
    n_val = round(n * val_size) if val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"validation size {val_size} leaves no training data out of {n} faces")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class FaceLandmarkDataModule(pl.LightningDataModule):
    """Shared datamodule: subclasses only say which :class:`FaceSource` each split reads.

    Args:
        layout: landmark layout name (see ``landmarks.layouts.LAYOUTS``); the model is linked to it.
        input_size: side of the square crop fed to the model.
        batch_size: per-process batch size.
        num_workers: DataLoader worker processes per process (persistent across epochs).
        val_size: validation split carved from the training faces (fraction < 1, or a count).
        crop: the crop protocol (box source, enlargement, bbox normaliser source).
        augment: training augmentation (None: none).
        primary_normalizer: the normaliser of the dataset's headline NME (used for checkpoint selection).
        mean, std: image normalisation (RGB, fractions of 255).
        seed: seed of the validation split and of the augmentation streams.
    """

    def __init__(
        self,
        layout: str,
        input_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 2,
        val_size: float = 0.1,
        crop: CropProtocol | None = None,
        augment: AugmentConfig | None = None,
        primary_normalizer: str = "inter_ocular",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if primary_normalizer not in NORMALIZERS:
            raise ValueError(f"primary_normalizer must be one of {NORMALIZERS}, got {primary_normalizer!r}")
        self.layout_name = get_layout(layout).name
        self.input_size, self.batch_size, self.num_workers = input_size, batch_size, num_workers
        self.val_size, self.seed, self.mean, self.std = val_size, seed, mean, std
        self.crop = crop if crop is not None else CropProtocol()
        self.augment = augment
        self.primary_normalizer = primary_normalizer
        self.datasets: dict[str, FaceDataset] = {}
        self._sources: dict[str, FaceSource] = {}
        self.save_hyperparameters()
        for key in ("crop", "augment"):  # keep hparams plain data, loadable with weights_only=True
            if is_dataclass(self.hparams.get(key)):
                self.hparams[key] = asdict(self.hparams[key])

    @property
    def layout(self) -> LandmarkLayout:
        return get_layout(self.layout_name)

    @abc.abstractmethod
    def build_source(self, split: str) -> FaceSource:
        """The source of ``split`` ("train" or "test")."""

    @property
    def subset_names(self) -> tuple[str, ...]:
        """Subset tags of the test set (WFLW attributes, 300W common / challenging, ...)."""
        return self.test_source.subset_names

    def source(self, split: str) -> FaceSource:
        """The (cached) source of ``split``."""
        if split not in self._sources:
            self._sources[split] = self.build_source(split)
        return self._sources[split]

    @property
    def test_source(self) -> FaceSource:
        return self.source("test")

    def _dataset(self, source: FaceSource, indices: Sequence[int], augment: AugmentConfig | None) -> FaceDataset:
        if source.layout != self.layout:
            raise ValueError(f"{source.name} has layout {source.layout.name}, the datamodule {self.layout_name}")
        return FaceDataset(source, indices, self.input_size, self.crop, augment, self.mean, self.std, self.seed)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "train" not in self.datasets:
            train = self.source("train")
            train_idx, val_idx = split_indices(len(train), self.val_size, self.seed)
            self.datasets["train"] = self._dataset(train, train_idx, self.augment)
            self.datasets["val"] = self._dataset(train, val_idx, None)
        if stage in ("test", "predict") and "test" not in self.datasets:
            self.datasets["test"] = self._dataset(self.test_source, range(len(self.test_source)), None)

    def training_crops(self) -> FaceDataset:
        """The training faces (validation split excluded), cropped but not augmented."""
        train_idx, _ = split_indices(len(self.source("train")), self.val_size, self.seed)
        return self._dataset(self.source("train"), train_idx, None)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_faces, worker_init_fn=seed_worker, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(), drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def protocol(self) -> dict:
        """What an evaluation on this datamodule must record: dataset, layout, crop, normalisers, splits."""
        return {
            "dataset": self.test_source.name,
            "layout": self.layout_name,
            "input_size": self.input_size,
            "crop": asdict(self.crop),
            "normalizers": list(NORMALIZERS),
            "primary_normalizer": self.primary_normalizer,
            "subsets": list(self.subset_names),
            "val_size": self.val_size,
            "split_seed": self.seed,
        }
