"""The shared augmentation keeps landmarks on the image structure they mark (dot tests)."""

import numpy as np
import pytest

from datamodules.augment import AugmentConfig, build_augmentation
from landmarks.layouts import W300_68, WFLW_98

SIZE = 96
GEOMETRIC_ONLY = dict(brightness_contrast_p=0.0, blur_p=0.0, dropout_p=0.0)


def dot_image(points: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.zeros((SIZE, SIZE), np.float32)
    for x, y in points:
        img = np.maximum(img, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return np.repeat((img * 255).astype(np.uint8)[..., None], 3, -1)


def centroid(img: np.ndarray) -> np.ndarray:
    w = img[..., 0].astype(np.float64)
    w = w / w.sum()
    return np.array([(w * np.arange(SIZE)[None]).sum(), (w * np.arange(SIZE)[:, None]).sum()])


def run(config, points, image, seed):
    # A fresh pipeline with the same seed draws the same parameters: one transform, applied to several images.
    pipe = build_augmentation(config, W300_68, seed=seed)
    out = pipe(image=image, keypoints=points.astype(np.float32), visible=np.ones(len(points), bool))
    return out["image"], np.asarray(out["keypoints"]), np.asarray(out["visible"])


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_landmark_follows_its_own_dot(flip_p, seed):
    """Render a dot at landmark j alone, transform: the dot lands on the output landmark that now carries j's
    meaning (itself, or its mirror partner after a flip)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(25, 71, (68, 2))
    config = AugmentConfig(rotate=25.0, scale=(0.85, 1.15), translate=0.05, flip_p=flip_p, **GEOMETRIC_ONLY)
    _, out_points, _ = run(config, points, dot_image(points[:1]), seed)
    for j in (0, 8, 17, 36, 45, 48, 66):
        img, _, _ = run(config, points, dot_image(points[j : j + 1]), seed)
        k = W300_68.flip_permutation[j] if flip_p else j
        np.testing.assert_allclose(centroid(img), out_points[k], atol=0.15)


def test_flip_swaps_semantic_sides_and_visibility():
    points = np.random.default_rng(3).uniform(20, 76, (68, 2))
    points[36], points[45] = (30, 40), (66, 40)  # image-left / image-right outer eye corners
    visible = np.ones(68, bool)
    visible[36] = False
    config = AugmentConfig(affine_p=0.0, flip_p=1.0, **GEOMETRIC_ONLY)
    out = build_augmentation(config, W300_68, seed=0)(image=np.zeros((SIZE, SIZE, 3), np.uint8),
                                                    keypoints=points.astype(np.float32), visible=visible)
    kp, vis = np.asarray(out["keypoints"]), np.asarray(out["visible"])
    # The mirror of the right-eye corner (x = 66 → 29) becomes the new image-left corner 36; flags travel too.
    np.testing.assert_allclose(kp[36], [SIZE - 1 - 66, 40])
    np.testing.assert_allclose(kp[45], [SIZE - 1 - 30, 40])
    assert vis[45] == False and vis[36] == True  # noqa: E712
    assert kp[36, 0] < kp[45, 0]


def test_keypoints_are_never_dropped_even_outside_the_crop():
    points = np.random.default_rng(4).uniform(-30, 130, (98, 2))
    config = AugmentConfig(rotate=40.0, scale=(1.3, 1.4), flip_p=0.5)
    out = build_augmentation(config, WFLW_98, seed=1)(image=np.zeros((SIZE, SIZE, 3), np.uint8),
                                                    keypoints=points.astype(np.float32), visible=np.ones(98, bool))
    assert np.asarray(out["keypoints"]).shape == (98, 2) and len(out["visible"]) == 98


def test_photometric_parts_change_pixels_not_points():
    points = np.random.default_rng(5).uniform(20, 76, (68, 2))
    image = dot_image(points)
    config = AugmentConfig(affine_p=0.0, flip_p=0.0, brightness_contrast_p=1.0, blur_p=1.0, dropout_p=1.0)
    img, kp, _ = run(config, points, image, seed=6)
    np.testing.assert_allclose(kp, points, atol=1e-4)
    assert np.abs(img.astype(int) - image.astype(int)).max() > 10


def test_same_seed_same_stream_and_reseed_changes_it():
    points = np.random.default_rng(7).uniform(20, 76, (68, 2))
    config = AugmentConfig()
    a = build_augmentation(config, W300_68, seed=3)
    b = build_augmentation(config, W300_68, seed=3)
    kw = dict(image=dot_image(points[:3]), keypoints=points.astype(np.float32), visible=np.ones(68, bool))
    np.testing.assert_array_equal(np.asarray(a(**kw)["keypoints"]), np.asarray(b(**kw)["keypoints"]))
    b.set_random_seed(4)
    assert not np.allclose(np.asarray(a(**kw)["keypoints"]), np.asarray(b(**kw)["keypoints"]))


def _rotation_and_scale(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """The similarity taking ``before`` to ``after`` (least squares, complex form): rotation (deg), scale."""
    a = (before - before.mean(0)) @ np.array([1, 1j])
    b = (after - after.mean(0)) @ np.array([1, 1j])
    z = (np.conj(a) @ b) / (np.conj(a) @ a)
    return float(np.degrees(np.angle(z))), float(abs(z))


def test_a_rotation_with_its_own_probability_leaves_the_scale_to_the_affine():
    """``rotate_p`` (TAB: rotation with p = 0.6, scale always): with p = 0 no draw rotates while the scale still
    varies; with p = 1 every draw rotates; None keeps the single affine step (and its random stream)."""
    points = np.random.default_rng(0).uniform(30, 66, (68, 2))
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    base = dict(GEOMETRIC_ONLY, flip_p=0.0, translate=0.0, rotate=60.0, scale=(0.75, 1.25))
    fits = {p: [_rotation_and_scale(points, run(AugmentConfig(**base, rotate_p=p), points, image, s)[1])
                for s in range(12)] for p in (0.0, 1.0)}
    assert all(abs(angle) < 1e-3 for angle, _ in fits[0.0])
    assert np.ptp([scale for _, scale in fits[0.0]]) > 0.05
    assert sum(abs(angle) > 3.0 for angle, _ in fits[1.0]) >= 10
    assert len(build_augmentation(AugmentConfig(**base), W300_68).transforms) + 1 == \
        len(build_augmentation(AugmentConfig(**base, rotate_p=0.6), W300_68).transforms)


@pytest.mark.parametrize("seed", range(6))
def test_scaling_keeps_the_aspect_ratio(seed):
    """One zoom factor for both axes: the transformed points are an exact similarity of the input (a stretch would
    leave a residual)."""
    points = np.random.default_rng(seed).uniform(30, 66, (68, 2))
    config = AugmentConfig(**GEOMETRIC_ONLY, flip_p=0.0, rotate=30.0, scale=(0.7, 1.3), translate=0.05)
    out = run(config, points, np.zeros((SIZE, SIZE, 3), np.uint8), seed)[1]
    a = (points - points.mean(0)) @ np.array([1, 1j])
    b = (out - out.mean(0)) @ np.array([1, 1j])
    z = (np.conj(a) @ b) / (np.conj(a) @ a)
    assert np.abs(b - z * a).max() < 1e-2
