"""FaceDataset: crops, augments and tensorises the faces of a source (the sample contract of ``datamodules.base``),
with the collate function and worker seeding every datamodule shares.

A face is cut to its crop window once per fetch; two ways keep that cost out of later epochs: the on-disk crop
cache (``cache_dir``, for large image datasets) and :meth:`FaceDataset.preload` (``in_memory``), which crops
every face once at setup and keeps the windows in memory (small datasets, generated faces).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm import tqdm

from datamodules.augment import AugmentConfig, build_augmentation
from datamodules.cache import CropCache, CroppedFace, cache_key
from datamodules.crop import NORMALIZERS, AnnotatedFace, CropProtocol, crop_matrix, original_normalizers
from datamodules.faces import FaceSource
from datamodules.files import ON_ERROR, DatasetError
from landmarks.geometry import apply_affine, matrix_scale, warp_to_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pixel_scale(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """mean and std (RGB fractions of 255) in pixel units, float32: one set of constants both ways."""
    return np.asarray(mean, dtype=np.float32) * 255, np.asarray(std, dtype=np.float32) * 255


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) RGB pixels -> the sample contract's (3, H, W) float32 image, (pixel - 255 mean) / (255 std)."""
    mean_px, std_px = _pixel_scale(mean, std)
    return torch.from_numpy(((image.astype(np.float32) - mean_px) / std_px).transpose(2, 0, 1).copy())


def denormalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B, 3, S, S) normalised images -> (B, S, S, 3) uint8 RGB: :func:`normalize_image` undone with the same
    float32 constants (exact, after rounding, for images it made)."""
    mean_px, std_px = _pixel_scale(mean, std)
    pixels = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1) * std_px + mean_px
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _checked(face: AnnotatedFace, source: FaceSource) -> AnnotatedFace:
    """``face`` when its landmarks have the layout's shape and are finite; a DatasetError naming it otherwise."""
    name, k = source.name, source.layout.num_points
    if face.landmarks.shape != (k, 2):
        raise DatasetError(face.image_id, f"{name}: landmarks of shape {face.landmarks.shape}, expected ({k}, 2)")
    if not np.isfinite(face.landmarks).all():
        raise DatasetError(face.image_id, f"{name}: non-finite landmark coordinates")
    return face


class FaceDataset(Dataset):
    """Crops, augments and tensorises the faces ``indices`` of a source.

    With augmentation, the crop window is ``margin`` times the protocol's crop (same pixel scale); the
    augmentation runs on the window and the centre ``input_size`` square is kept, so rotations and zoom-outs
    show image context instead of borders. Without augmentation the window is the crop itself.

    ``cache_dir`` keeps each cropped window on disk (see ``datamodules.cache``) so later epochs skip decoding;
    :meth:`preload` keeps them in memory instead.
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
        self.mean, self.std = tuple(mean), tuple(std)
        self.on_error, self.skipped = on_error, 0
        self.memory: dict[int, CroppedFace | DatasetError] | None = None  # filled by preload()
        self.norms: dict[int, np.ndarray] = {}  # original-image normalisers of the faces in memory
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

    def preload(self, workers: int = 0) -> None:
        """Crop every face once (in ``workers`` processes, with a progress bar when it takes a while) and keep the
        crop windows (and the faces' normalisers) in memory, so an epoch costs augmentation only.

        The windows are one read-only (N, S, S, 3) uint8 array, N * S * S * 3 bytes (S = ``window``): 27.6 kB a
        face at 96 px, 55 MB for 2,000 faces. Forked DataLoader workers share it copy-on-write (nothing writes to
        it); under the "spawn" start method each worker gets a copy. Cropping is deterministic, so every process
        and worker holds the same windows as it would crop itself, and samples are unchanged (same crops, same
        augmentation stream). A face that fails to load keeps its error, raised (or skipped) when it is drawn.
        """
        if self.memory is not None:
            return
        windows = np.empty((len(self.indices), self.window, self.window, 3), np.uint8)
        faces: list[tuple[int, CroppedFace | DatasetError]] = []
        # A generator of its own: a DataLoader draws its workers' base seed from it, which must not move the global
        # torch stream (it shuffles the training faces; the same seed must give the same run as without preload).
        loader = DataLoader(_Cropping(self), batch_size=32, num_workers=workers, collate_fn=list,
                            generator=torch.Generator())
        bar = tqdm(total=len(self.indices), desc=f"cropping {self.source.name} into memory", unit="face", delay=2.0,
                   disable=rank_zero_only.rank != 0 or not sys.stderr.isatty())
        for batch in loader:
            for index, face in batch:
                if isinstance(face, CroppedFace):
                    windows[len(faces)] = face.image
                    face = replace(face, image=None)
                    try:
                        self.norms[index] = original_normalizers(face, self.source.layout, self.crop, self.source.name)
                    except DatasetError as error:
                        face = error
                faces.append((index, face))
            bar.update(len(batch))
        bar.close()
        windows.setflags(write=False)
        self.memory = {index: replace(face, image=windows[k]) if isinstance(face, CroppedFace) else face
                       for k, (index, face) in enumerate(faces)}

    def cropped(self, index: int) -> CroppedFace:
        """Face ``index`` of the source cut to the crop window (from memory or the cache when it is there)."""
        if self.memory is not None:
            face = self.memory[index]
            if isinstance(face, DatasetError):
                raise face
            return face
        face = self.cache.get(index) if self.cache is not None else None
        if face is not None:
            return face
        raw = _checked(self.source.load(index), self.source)
        matrix = crop_matrix(raw, self.crop, self.window, self.crop.scale * self.window / self.input_size,
                             self.source.name)
        face = CroppedFace(
            image=warp_to_crop(raw.image, matrix, self.window), matrix=matrix,
            landmarks=np.asarray(raw.landmarks, dtype=np.float64), visible=np.asarray(raw.visible, dtype=bool),
            image_id=raw.image_id, original_size=tuple(raw.image.shape[:2]), subsets=tuple(raw.subsets),
            boxes={k: np.asarray(v, dtype=np.float64) for k, v in raw.boxes.items()},
        )
        if self.cache is not None:
            self.cache.put(index, face)
        return face

    def crop_landmarks(self, index: int) -> np.ndarray:
        """The (K, 2) float32 landmarks of face ``index`` in its un-augmented ``input_size`` crop, exactly as a
        sample without augmentation carries them, from the annotation alone: the in-memory face when there is
        one, else :meth:`FaceSource.annotation` (which decodes nothing for sources that parse up front)."""
        if self.memory is not None:
            face = self.cropped(index)
        else:
            face = _checked(self.source.annotation(index), self.source)
        matrix = crop_matrix(face, self.crop, self.input_size, self.crop.scale, self.source.name)
        return apply_affine(np.asarray(face.landmarks, dtype=np.float64), matrix).astype(np.float32)

    def mean_landmarks(self) -> np.ndarray:
        """The (K, 2) float64 mean of :meth:`crop_landmarks` over the faces of this dataset (each face once;
        with ``on_error="skip"`` unusable faces are left out, with one warning)."""
        points, errors = [], []
        for index in self.indices:
            try:
                points.append(self.crop_landmarks(index))
            except DatasetError as error:
                if self.on_error == "raise":
                    raise
                errors.append(str(error))
        if errors:
            warnings.warn(f"{self.source.name}: mean shape without {len(errors)} unusable face(s): {errors[:5]}",
                          stacklevel=2)
        if not points:
            raise DatasetError(self.source.name, "no usable face to average")
        return np.stack(points).astype(np.float64).mean(0)

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
        norms = self.norms[index] if self.memory is not None else \
            original_normalizers(face, self.source.layout, self.crop, self.source.name)
        norms = norms * matrix_scale(matrix)
        return {
            "image": normalize_image(image, self.mean, self.std),
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


class _Cropping(Dataset):
    """(index, cropped face) of position i of a FaceDataset, for :meth:`FaceDataset.preload` in worker processes;
    a face that fails comes back as its DatasetError."""

    def __init__(self, dataset: FaceDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.indices)

    def __getitem__(self, i: int) -> tuple[int, CroppedFace | DatasetError]:
        index = self.dataset.indices[i]
        try:
            return index, self.dataset.cropped(index)
        except DatasetError as error:
            return index, error


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
