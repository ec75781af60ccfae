"""FaceLandmarkDataModule and the sample contract (DESIGN.md, "The sample contract").

Datasets differ only in parsing: a :class:`FaceSource` lists annotated faces and loads one as a
:class:`RawFace` (image + landmarks in original-image pixels; ``datamodules.faces``). Everything else is
shared: the square similarity crop chosen by a :class:`CropProtocol` (data, recorded with every result) and the
normalisers (``datamodules.crop``), the shared augmentation, normalisation to tensors, the collate function and
worker seeding (``datamodules.dataset``), and here the validation split carved from the training data (the test
set is never used for selection) and the training set's mean shape. The public names of those modules are
importable from here too.

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
from dataclasses import asdict, is_dataclass
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.augment import AugmentConfig
from datamodules.crop import (
    CENTERS,
    LANDMARK_BOX,
    NORMALIZERS,
    CropProtocol,
    CropSpec,
    crop_matrix,
    original_normalizers,
    resolve_crop,
)
from datamodules.dataset import IMAGENET_MEAN, IMAGENET_STD, FaceDataset, collate_faces, seed_worker
from datamodules.faces import FaceAnnotation, FaceRecord, FaceSource, RawFace, RecordSource, check_points
from datamodules.files import ON_ERROR, DatasetError
from datamodules.sample import describe_sample, stratified_sample
from landmarks.layouts import LandmarkLayout

__all__ = [
    "CENTERS", "IMAGENET_MEAN", "IMAGENET_STD", "LANDMARK_BOX", "NORMALIZERS", "CropProtocol", "CropSpec",
    "FaceAnnotation", "FaceDataset", "FaceLandmarkDataModule", "FaceRecord", "FaceSource", "RawFace",
    "RecordSource", "check_points", "collate_faces", "crop_matrix", "original_normalizers", "resolve_crop",
    "seed_worker", "split_indices",
]

# The datasets each stage reads (``setup``).
STAGE_DATASETS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def split_indices(n: int, val_size: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into train and validation indices; ``val_size`` < 1 is a fraction."""
    n_val = round(n * val_size) if val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"validation size {val_size} leaves no training data out of {n} faces")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class FaceLandmarkDataModule(pl.LightningDataModule):
    """Shared datamodule: subclasses only say which :class:`FaceSource` each split reads.

    A dataset's datamodule states its protocol as class attributes, resolved here once:

    Attributes:
        layout: the landmark layout of its faces (a class attribute; the synthetic datamodule, which serves two
            layouts, sets it from its ``layout`` argument before calling this ``__init__``).
        default_crop: the crop when a config gives none; a config's ``crop`` dict overrides single fields.
        default_normalizer: the primary normaliser when ``primary_normalizer`` is None.
        default_in_memory: whether faces are kept in memory when ``in_memory`` is None.

    A class whose default differs from this one's writes it again as its signature's default
    (``primary_normalizer: str | None = default_normalizer``), so that LightningCLI, which reads defaults from
    signatures, shows it in ``--help`` and ``--print_config``.

    Args:
        input_size: side of the square crop fed to the model.
        batch_size: per-process batch size.
        num_workers: DataLoader worker processes per process (persistent across epochs).
        val_size: validation split carved from the training faces (fraction < 1, or a count).
        crop: the crop protocol (box source, enlargement, bbox normaliser source); None: ``default_crop``.
        augment: training augmentation (None: none).
        primary_normalizer: the normaliser of the dataset's headline NME (used for checkpoint selection); None:
            ``default_normalizer``.
        mean, std: image normalisation (RGB, fractions of 255).
        seed: seed of the validation split and of the augmentation streams.
        margin: training crop window as a multiple of the crop, so augmentation sees context (>= 1).
        cache_dir: folder for the cache of cropped faces (None: decode every time; see ``datamodules.cache``).
        on_error: ``"raise"`` stops at the first bad file with its name; ``"skip"`` drops bad faces with a
            counted warning and a summary.
        check_counts: enforce the published split sizes (turn off only for a deliberately partial copy).
        shuffle: shuffle the training faces each epoch (off: a fixed order, which with ``augment: null`` makes
            a DDP run see exactly the single-process batches; the runner's equality test uses it).
        in_memory: crop every face of a split once at ``setup`` and keep the crop windows in memory (every
            process holds its own copy, shared by its forked workers: N x window^2 x 3 bytes a split, see
            ``FaceDataset.preload``), so an epoch costs augmentation only; None: ``default_in_memory``.
        test_per_subset: test on a stratified sample of the test split instead of all of it: up to this many
            faces of every subset (``full`` and each named one), chosen by a hash of ``test_sample_seed`` and the
            image id, before anything is cropped (``datamodules.sample``; CI metric gates). None: every face.
        test_sample_seed: the seed of that sample.
    """

    layout: LandmarkLayout
    default_crop: ClassVar[CropProtocol] = CropProtocol()
    default_normalizer: ClassVar[str] = "inter_ocular"
    default_in_memory: ClassVar[bool] = False

    def __init__(
        self,
        input_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 2,
        val_size: float = 0.1,
        crop: CropSpec = None,
        augment: AugmentConfig | None = None,
        primary_normalizer: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
        margin: float = 1.0,
        cache_dir: str | None = None,
        on_error: str = "raise",
        check_counts: bool = True,
        shuffle: bool = True,
        in_memory: bool | None = None,
        test_per_subset: int | None = None,
        test_sample_seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(getattr(self, "layout", None), LandmarkLayout):
            raise TypeError(f"{type(self).__name__} states no landmark layout (class attribute 'layout')")
        primary_normalizer = primary_normalizer or self.default_normalizer
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if primary_normalizer not in NORMALIZERS:
            raise ValueError(f"primary_normalizer must be one of {NORMALIZERS}, got {primary_normalizer!r}")
        self.layout_name = self.layout.name
        self.input_size, self.batch_size, self.num_workers = input_size, batch_size, num_workers
        self.val_size, self.seed, self.mean, self.std = val_size, seed, mean, std
        self.crop = resolve_crop(crop, self.default_crop)
        self.augment = augment
        self.primary_normalizer = primary_normalizer
        self.margin, self.cache_dir, self.on_error, self.check_counts = margin, cache_dir, on_error, check_counts
        self.shuffle = shuffle
        self.in_memory = self.default_in_memory if in_memory is None else in_memory
        if test_per_subset is not None and test_per_subset < 1:
            raise ValueError(f"test_per_subset must be >= 1 (None: every test face), got {test_per_subset}")
        self.test_per_subset, self.test_sample_seed = test_per_subset, test_sample_seed
        self._test_indices: list[int] | None = None
        self.datasets: dict[str, FaceDataset] = {}
        self._sources: dict[str, FaceSource] = {}
        self._mean_shape: torch.Tensor | None = None
        self.save_hyperparameters()
        # What ran, not what the config left to the class; plain data, loadable with weights_only=True.
        resolved = {"layout": self.layout_name, **self.hparams, "primary_normalizer": self.primary_normalizer,
                    "in_memory": self.in_memory}
        self.hparams.clear()
        self.hparams.update({k: asdict(v) if is_dataclass(v) else v for k, v in resolved.items()})

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
            self.datasets["test"] = self._dataset(self.test_source, self.test_indices(), None)
        if self.in_memory:
            for split in STAGE_DATASETS.get(stage, ()):
                self.datasets[split].preload(self.num_workers)

    def test_indices(self) -> list[int]:
        """The test faces evaluated: all of them, or the stratified sample (``test_per_subset``), from the ids and
        subset tags of the annotations; computed once. With ``on_error="skip"`` a face whose annotation cannot be
        read is no candidate."""
        source = self.test_source
        if self.test_per_subset is None:
            return list(range(len(source)))
        if self._test_indices is None:
            candidates, tags = [], []
            for index in range(len(source)):
                try:
                    tags.append(source.annotation(index).subsets)
                except DatasetError:
                    if self.on_error == "raise":
                        raise
                    continue
                candidates.append(index)
            chosen = stratified_sample([source.image_id(i) for i in candidates], tags, source.subset_names,
                                       self.test_per_subset, self.test_sample_seed)
            self._test_indices = [candidates[i] for i in chosen]
        return list(self._test_indices)

    def test_sample(self) -> dict | None:
        """The sample's statement for records (``datamodules.sample.describe_sample``), None without one."""
        if self.test_per_subset is None:
            return None
        ids = [self.test_source.image_id(i) for i in self.test_indices()]
        return describe_sample(self.test_per_subset, self.test_sample_seed, ids)

    def training_crops(self) -> FaceDataset:
        """The training faces (validation split excluded), cropped but not augmented (cropped when drawn, never
        kept in memory: :meth:`mean_shape` needs only their annotations)."""
        train_idx, _ = split_indices(len(self.source("train")), self.val_size, self.seed)
        return self._dataset(self.source("train"), train_idx, None)

    def mean_shape(self) -> torch.Tensor:
        """The (K, 2) float64 mean of the training faces' landmarks (validation split excluded) in their
        un-augmented crops, in crop pixels: the landmarks exactly as un-augmented samples carry them (float32),
        averaged in float64. Computed once and cached; from annotations only (the in-memory faces after
        ``setup("fit")``, else the source's annotations, which decode no image for list-style datasets)."""
        if self._mean_shape is None:
            faces = self.datasets["train"] if "train" in self.datasets else self.training_crops()
            self._mean_shape = torch.from_numpy(faces.mean_landmarks())
        return self._mean_shape.clone()

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
            **({"sample": self.test_sample()} if self.test_per_subset is not None else {}),
        }
