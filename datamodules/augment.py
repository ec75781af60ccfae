"""The one augmentation pipeline every datamodule shares (albumentations), configured per experiment.

It runs on the face crop (after the similarity crop of ``datamodules.base``), training split only:
affine (rotate / scale / translate), a horizontal flip that re-indexes landmarks with the layout's flip
permutation (albumentations' own flip mirrors coordinates but keeps left and right labels), coarse dropout as
synthetic occlusion, brightness / contrast, and blur. Keypoints are never dropped (``remove_invisible=False``);
points pushed outside the crop keep their coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from landmarks.layouts import LandmarkLayout


@dataclass
class AugmentConfig:
    """Training augmentation; probabilities of 0 switch a part off.

    Attributes:
        affine_p: probability of the affine part.
        rotate: rotation drawn uniformly from [-rotate, rotate] degrees.
        scale: zoom factor range (> 1 enlarges the face), one factor for both axes (the papers' "scaling";
            albumentations would otherwise draw the x and y factors independently and stretch faces).
        translate: shift drawn uniformly from [-translate, translate] of the crop size, per axis.
        flip_p: probability of the layout-aware horizontal flip.
        dropout_p: probability of coarse dropout (1-``dropout_holes`` grey rectangles whose sides are
            ``dropout_size`` fractions of the crop).
        brightness_contrast_p, brightness, contrast: random brightness / contrast (fractions).
        blur_p, blur_limit: Gaussian or motion blur with kernel up to ``blur_limit`` pixels.
        rotate_p: None (the rotation is part of the affine, applied with ``affine_p``), or a probability of its
            own: the rotation is then a separate step before the scale / translation (TAB: rotation with p = 0.6,
            scale always).
    """

    affine_p: float = 1.0
    rotate: float = 30.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.05
    flip_p: float = 0.5
    dropout_p: float = 0.0
    dropout_holes: tuple[int, int] = (1, 3)
    dropout_size: tuple[float, float] = (0.1, 0.3)
    brightness_contrast_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    blur_p: float = 0.1
    blur_limit: int = 5
    rotate_p: float | None = None


class LayoutHorizontalFlip(A.HorizontalFlip):
    """Horizontal flip that also swaps left and right landmarks with the layout's flip permutation.

    Albumentations mirrors x as ``width - 1 - x`` (pixel centres at integers) and keeps each row's label;
    re-ordering the rows makes point k the mirror of point ``permutation[k]``, as the layout defines it.
    Label fields (e.g. ``visible``) travel with their rows.
    """

    def __init__(self, permutation: tuple[int, ...], p: float = 0.5) -> None:
        super().__init__(p=p)
        self.permutation = np.asarray(permutation)

    def apply_to_keypoints(self, keypoints: np.ndarray, **params) -> np.ndarray:
        flipped = super().apply_to_keypoints(keypoints, **params)
        if len(flipped) != len(self.permutation):
            raise ValueError(f"flip expects {len(self.permutation)} keypoints, got {len(flipped)}")
        return flipped[self.permutation]


def build_augmentation(config: AugmentConfig, layout: LandmarkLayout, seed: int | None = None) -> A.Compose:
    """The albumentations pipeline for ``config``; call it as ``pipe(image=..., keypoints=..., visible=...)``."""
    c = config
    affine = {"interpolation": cv2.INTER_LINEAR, "border_mode": cv2.BORDER_CONSTANT, "fill": 0, "keep_ratio": True}
    own_rotation = c.rotate_p is not None  # None: one affine step, as before (the same random stream)
    transforms = [
        *([A.Affine(rotate=(-c.rotate, c.rotate), p=c.rotate_p, **affine)] if own_rotation else []),
        A.Affine(
            rotate=(0.0, 0.0) if own_rotation else (-c.rotate, c.rotate), scale=c.scale,
            translate_percent=(-c.translate, c.translate), p=c.affine_p, **affine,
        ),
        LayoutHorizontalFlip(layout.flip_permutation, p=c.flip_p),
        A.CoarseDropout(
            num_holes_range=c.dropout_holes, hole_height_range=c.dropout_size, hole_width_range=c.dropout_size,
            fill=128, p=c.dropout_p,
        ),
        A.RandomBrightnessContrast(brightness_limit=c.brightness, contrast_limit=c.contrast, p=c.brightness_contrast_p),
        A.OneOf([A.GaussianBlur(blur_limit=(3, c.blur_limit)), A.MotionBlur(blur_limit=(3, c.blur_limit))], p=c.blur_p),
    ]
    return A.Compose(
        [t for t in transforms if t.p > 0],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False, label_fields=["visible"]),
        seed=seed,
    )
