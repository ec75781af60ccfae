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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from datamodules.augment import AugmentConfig, build_augmentation
from datamodules.cache import CropCache, CroppedFace, cache_key
from datamodules.files import ON_ERROR, DatasetError, Problems, read_image
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
    """An annotated face list of one split. Subclasses parse a dataset's files; nothing else.

    ``protocol`` holds the annotation choices a result depends on (coordinate origin, which ground truth,
    folder); it is recorded with every result and keys the crop cache. ``expected_size`` and
    ``expected_subsets`` are the published counts the dataset checker compares against.
    """

    name: str
    layout: LandmarkLayout
    subset_names: tuple[str, ...] = ()
    protocol: Mapping[str, Any] = MappingProxyType({})  # read-only default: sources set their own
    expected_size: int | None = None
    expected_subsets: Mapping[str, int] = MappingProxyType({})
    problems: Problems | None = None  # what the parser skipped (on_error="skip")

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def image_id(self, index: int) -> str:
        """The identifier of face ``index`` (file name, line number), without decoding anything."""

    @abc.abstractmethod
    def load(self, index: int) -> RawFace:
        """Read face ``index``: decode its image and annotation."""


@dataclass
class FaceRecord:
    """One face of a list-style dataset, parsed up front; its image is decoded only when loaded."""

    image: Path
    landmarks: np.ndarray  # (K, 2) float, original-image pixels, pixel centres at integers
    visible: np.ndarray  # (K,) bool
    image_id: str
    subsets: tuple[str, ...] = ()
    boxes: dict[str, np.ndarray] = field(default_factory=dict)


class RecordSource(FaceSource):
    """A source whose annotations were parsed into :class:`FaceRecord` s; ``load`` decodes the image file."""

    def __init__(self, name: str, layout: LandmarkLayout, records: list[FaceRecord],
                 subset_names: tuple[str, ...] = (), protocol: dict | None = None,
                 expected_size: int | None = None, expected_subsets: dict[str, int] | None = None,
                 problems: Problems | None = None) -> None:
        self.name, self.layout, self.records, self.subset_names = name, layout, records, tuple(subset_names)
        self.protocol = dict(protocol or {})
        self.expected_size, self.expected_subsets = expected_size, dict(expected_subsets or {})
        self.problems = problems

    def __len__(self) -> int:
        return len(self.records)

    def image_id(self, index: int) -> str:
        return self.records[index].image_id

    def read_image(self, index: int) -> np.ndarray:
        return read_image(self.records[index].image)

    def load(self, index: int) -> RawFace:
        r = self.records[index]
        return RawFace(self.read_image(index), r.landmarks, r.visible, r.image_id, r.subsets, r.boxes)


def check_points(problems: Problems, path: str | Path, points: np.ndarray, num_points: int,
                 line: int | None = None) -> bool:
    """Report landmarks of the wrong count or with NaN / infinite values; True when they are usable."""
    if points.shape != (num_points, 2):
        problems.report(path, f"expected {num_points} points, found {points.shape[0]}", line)
        return False
    if not np.isfinite(points).all():
        bad = np.flatnonzero(~np.isfinite(points).all(1)).tolist()
        problems.report(path, f"non-finite landmark coordinates (points {bad})", line)
        return False
    return True


CENTERS = ("box", "centroid")


@dataclass(frozen=True)
class CropProtocol:
    """How a face is cropped and which box defines the bbox normaliser; recorded with every result.

    A datamodule's ``crop`` argument is merged into its dataset's default with :func:`resolve_crop`, so a
    config setting only some fields (``crop: {scale: 1.2}``) keeps the dataset's defaults for the others.

    Attributes:
        box_source: key of ``RawFace.boxes`` the crop is built on (``"landmarks"``: the ground-truth box;
            ``"given"``: the rectangle the dataset ships; other datasets add their own, e.g. ``"detector"``).
        scale: crop side = ``scale * max(box width, box height)``.
        center: ``"box"`` (the box centre) or ``"centroid"`` (mean of the ground-truth landmarks, PWC).
        bbox_norm_source: key of ``RawFace.boxes`` whose sqrt(w * h) is the ``bbox`` normaliser.
    """

    box_source: str = LANDMARK_BOX
    scale: float = 1.25
    center: str = "box"
    bbox_norm_source: str = LANDMARK_BOX

    def __post_init__(self) -> None:
        if self.center not in CENTERS:
            raise ValueError(f"crop center must be one of {CENTERS}, got {self.center!r}")
        if not self.scale > 0:
            raise ValueError(f"crop scale must be positive, got {self.scale}")


CropSpec = dict[str, Any] | CropProtocol | None  # a datamodule's ``crop`` argument (dict first: see below)


def resolve_crop(crop: CropSpec, default: CropProtocol) -> CropProtocol:
    """A datamodule's crop: ``default`` with the fields a config sets (``crop: {scale: 1.2}`` keeps the
    dataset's box source), or a complete :class:`CropProtocol`. Configs give a dict, which stays a dict
    through jsonargparse and is merged here; parsing it into a CropProtocol would reset the other fields."""
    if crop is None:
        return default
    if isinstance(crop, CropProtocol):
        return crop
    unknown = set(crop) - {f.name for f in fields(CropProtocol)}
    if unknown:
        raise ValueError(f"unknown crop field(s) {sorted(unknown)}; CropProtocol has "
                         f"{[f.name for f in fields(CropProtocol)]}")
    return replace(default, **crop)


def _box(face: RawFace | CroppedFace, source: str, dataset: str) -> np.ndarray:
    if source == LANDMARK_BOX:
        return points_bbox(np.asarray(face.landmarks, dtype=np.float64))
    if source not in face.boxes:
        raise DatasetError(face.image_id, f"{dataset}: no {source!r} box; this face has "
                                          f"{sorted(face.boxes) + [LANDMARK_BOX]}")
    return np.asarray(face.boxes[source], dtype=np.float64)


def crop_matrix(raw: RawFace, protocol: CropProtocol, size: int, scale: float, dataset: str) -> np.ndarray:
    """The similarity mapping ``raw`` into a ``size`` crop of the protocol's box enlarged ``scale`` times.

    Raises :class:`DatasetError` when the box is degenerate or lies entirely outside the image (a box that
    is partly outside is normal for faces at the border).
    """
    box = _box(raw, protocol.box_source, dataset)
    h, w = raw.image.shape[:2]
    if not (np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]):
        raise DatasetError(raw.image_id, f"{dataset}: degenerate {protocol.box_source!r} box {box.tolist()}")
    if box[2] < 0 or box[3] < 0 or box[0] > w - 1 or box[1] > h - 1:
        raise DatasetError(raw.image_id, f"{dataset}: {protocol.box_source!r} box {box.round(1).tolist()} "
                                         f"lies outside the {w}x{h} image")
    center = np.asarray(raw.landmarks, dtype=np.float64).mean(0) if protocol.center == "centroid" else None
    return square_crop_matrix(box, scale, size, center=center)


def original_normalizers(face: RawFace | CroppedFace, layout: LandmarkLayout, protocol: CropProtocol,
                         dataset: str) -> np.ndarray:
    """The (3,) normalisers of NORMALIZERS in original-image pixels, from the ground truth."""
    pts = torch.from_numpy(np.asarray(face.landmarks, dtype=np.float64))[None]
    box = torch.from_numpy(_box(face, protocol.bbox_norm_source, dataset))[None]
    return np.array([float(inter_ocular(pts, layout)), float(inter_pupil(pts, layout)), float(bbox_size(box))])


class FaceDataset(Dataset):
    """Crops, augments and tensorises the faces ``indices`` of a source.

    With augmentation, the crop window is ``margin`` times the protocol's crop (same pixel scale); the
    augmentation runs on the window and the centre ``input_size`` square is kept, so rotations and zoom-outs
    show image context instead of borders. Without augmentation the window is the crop itself.

    ``cache_dir`` keeps each cropped window on disk (see ``datamodules.cache``) so later epochs skip decoding.
    ``on_error="skip"`` replaces a face whose image cannot be used by the next usable one, with a warning
    naming the file (and ``skipped`` counts them in this process); the evaluation metrics de-duplicate by
    dataset index, so a skipped test face is missing, never counted twice.
    """

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
        margin: float = 1.0,
        cache_dir: str | Path | None = None,
        on_error: str = "raise",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if margin < 1:
            raise ValueError(f"crop margin must be >= 1, got {margin}")
        self.source, self.indices, self.input_size, self.crop = source, list(indices), input_size, crop
        self.augment = build_augmentation(augment, source.layout, seed=seed) if augment is not None else None
        self.pad = round(input_size * (margin - 1) / 2) if augment is not None else 0
        self.window = input_size + 2 * self.pad
        self.mean = np.asarray(mean, dtype=np.float32) * 255
        self.std = np.asarray(std, dtype=np.float32) * 255
        self.on_error, self.skipped = on_error, 0
        self.cache = None
        if cache_dir is not None:
            key = cache_key(source=source.name, protocol=dict(source.protocol), faces=len(source), crop=asdict(crop),
                            window=self.window, scale=crop.scale * self.window / input_size)
            self.cache = CropCache(cache_dir, key)

    def __len__(self) -> int:
        return len(self.indices)

    def reseed(self, seed: int) -> None:
        """Give this copy of the dataset (one per worker process) its own augmentation stream."""
        if self.augment is not None:
            self.augment.set_random_seed(seed % 2**32)

    def cropped(self, index: int) -> CroppedFace:
        """Face ``index`` of the source cut to the crop window (from the cache when it is there)."""
        face = self.cache.get(index) if self.cache is not None else None
        if face is not None:
            return face
        raw = self.source.load(index)
        name, k = self.source.name, self.source.layout.num_points
        if raw.landmarks.shape != (k, 2):
            raise DatasetError(raw.image_id, f"{name}: landmarks of shape {raw.landmarks.shape}, expected ({k}, 2)")
        if not np.isfinite(raw.landmarks).all():
            raise DatasetError(raw.image_id, f"{name}: non-finite landmark coordinates")
        matrix = crop_matrix(raw, self.crop, self.window, self.crop.scale * self.window / self.input_size, name)
        face = CroppedFace(
            image=warp_to_crop(raw.image, matrix, self.window), matrix=matrix,
            landmarks=np.asarray(raw.landmarks, dtype=np.float64), visible=np.asarray(raw.visible, dtype=bool),
            image_id=raw.image_id, original_size=tuple(raw.image.shape[:2]), subsets=tuple(raw.subsets),
            boxes={k: np.asarray(v, dtype=np.float64) for k, v in raw.boxes.items()},
        )
        if self.cache is not None:
            self.cache.put(index, face)
        return face

    def __getitem__(self, i: int) -> dict:
        for attempt in range(len(self.indices)):
            index = self.indices[(i + attempt) % len(self.indices)]
            try:
                return self._sample(index)
            except DatasetError as error:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                warnings.warn(f"skipping bad face ({self.skipped} so far in this process): {error}", stacklevel=2)
        raise DatasetError(self.source.name, "every face failed to load")

    def _sample(self, index: int) -> dict:
        face = self.cropped(index)
        image, landmarks, visible = face.image, apply_affine(face.landmarks, face.matrix), face.visible
        if self.augment is not None:
            out = self.augment(image=image, keypoints=landmarks.astype(np.float32), visible=visible)
            image, landmarks, visible = out["image"], np.asarray(out["keypoints"]), np.asarray(out["visible"])
        if self.pad:  # keep the centre input_size square of the window
            image = image[self.pad:self.pad + self.input_size, self.pad:self.pad + self.input_size]
            landmarks = landmarks - self.pad
        matrix = face.matrix.copy()
        matrix[:, 2] -= self.pad  # original image -> final crop (before augmentation)
        norms = original_normalizers(face, self.source.layout, self.crop, self.source.name) * matrix_scale(matrix)
        image = (image.astype(np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "landmarks": torch.from_numpy(landmarks.astype(np.float32)),
            "visible": torch.from_numpy(visible.astype(bool)),
            "norm": {k: torch.tensor(v, dtype=torch.float32) for k, v in zip(NORMALIZERS, norms, strict=True)},
            "subsets": tuple(face.subsets),
            "meta": {
                "index": index,
                "image_id": face.image_id,
                "original_size": tuple(face.original_size),
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
        margin: training crop window as a multiple of the crop, so augmentation sees context (>= 1).
        cache_dir: folder for the cache of cropped faces (None: decode every time; see ``datamodules.cache``).
        on_error: ``"raise"`` stops at the first bad file with its name; ``"skip"`` drops bad faces with a
            counted warning and a summary.
        check_counts: enforce the published split sizes (turn off only for a deliberately partial copy).
        shuffle: shuffle the training faces each epoch (off: a fixed order, which with ``augment: null`` makes
            a DDP run see exactly the single-process batches; the runner's equality test uses it).
    """

    def __init__(
        self,
        layout: str,
        input_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 2,
        val_size: float = 0.1,
        crop: CropSpec = None,
        augment: AugmentConfig | None = None,
        primary_normalizer: str = "inter_ocular",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
        margin: float = 1.0,
        cache_dir: str | None = None,
        on_error: str = "raise",
        check_counts: bool = True,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if primary_normalizer not in NORMALIZERS:
            raise ValueError(f"primary_normalizer must be one of {NORMALIZERS}, got {primary_normalizer!r}")
        self.layout_name = get_layout(layout).name
        self.input_size, self.batch_size, self.num_workers = input_size, batch_size, num_workers
        self.val_size, self.seed, self.mean, self.std = val_size, seed, mean, std
        self.crop = resolve_crop(crop, CropProtocol())
        self.augment = augment
        self.primary_normalizer = primary_normalizer
        self.margin, self.cache_dir, self.on_error, self.check_counts = margin, cache_dir, on_error, check_counts
        self.shuffle = shuffle
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
            source = self.build_source(split)
            if source.problems is not None:
                source.problems.warn()
            self._sources[split] = source
        return self._sources[split]

    @property
    def test_source(self) -> FaceSource:
        return self.source("test")

    def _dataset(self, source: FaceSource, indices: Sequence[int], augment: AugmentConfig | None) -> FaceDataset:
        if source.layout != self.layout:
            raise ValueError(f"{source.name} has layout {source.layout.name}, the datamodule {self.layout_name}")
        return FaceDataset(source, indices, self.input_size, self.crop, augment, self.mean, self.std, self.seed,
                           margin=self.margin, cache_dir=self.cache_dir, on_error=self.on_error)

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
        return self._loader("train", shuffle=self.shuffle)

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
            "annotation": dict(self.test_source.protocol),
            "layout": self.layout_name,
            "input_size": self.input_size,
            "crop": asdict(self.crop),
            "normalizers": list(NORMALIZERS),
            "primary_normalizer": self.primary_normalizer,
            "subsets": list(self.subset_names),
            "val_size": self.val_size,
            "split_seed": self.seed,
        }
