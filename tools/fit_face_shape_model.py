"""Fit the 3-D face shape model of the synthetic face generator (one-off; its output is committed).

Usage::

    python tools/fit_face_shape_model.py --src /work/shared/real_samples/aflw2000_3d \
        --out datamodules/synthetic/data/face_shape_model.npz

Input: ``AFLW2000-3D.pts68.npy`` from cleardusk/3DDFA (MIT), shape (2000, 3, 68): rows x, y (image pixels,
y down) and z (positive towards the camera; the nose tip has the largest z in frontal faces) of the 68-point
3-D ground truth of AFLW2000-3D.

Steps:

1. **Outliers.** Every shape is centred and scaled to unit size, then aligned to the mean by generalised
   Procrustes analysis (GPA, proper rotations only). A shape is dropped when

   * its unconstrained Procrustes fit to the mean needs a reflection (det < 0: a left/right-swapped or broken
     annotation), or
   * its RMS residual to the mean exceeds ``median + 5 * 1.4826 * MAD`` of all residuals (a gross
     annotation failure),

   and GPA is re-run on the rest, until no shape is dropped.
2. **Mirror symmetry.** Each kept shape is added a second time, mirrored (x -> -x, points re-indexed with
   the 68-point flip permutation), so that the mean is exactly left/right symmetric and no mode prefers one
   side. GPA is run on the 2N shapes.
3. **Canonical frame.** The GPA frame is rotated so that x runs from the image-left to the image-right eye
   (the mean direction of left->right point pairs), y runs down the face (brow to chin, orthogonalised) and
   z = x cross y points towards the camera (checked: the nose tip has positive z). This is the image frame
   of a frontal face: x right, y down, z towards the viewer (a left-handed frame, as in the source data).
   The origin is the centroid of the 68 mean points and one unit is the mean shape's outer inter-ocular
   distance (points 36-45), so a scale of s pixels per unit gives a frontal face whose inter-ocular
   distance is s pixels.
4. **Mouth opening.** Closed mouths dominate the data, and a symmetric Gaussian mode cannot express "open
   only". The mouth-opening direction is fitted separately: the least-squares regression of the aligned
   shapes on the inner-lip gap g (mean distance of the pairs 61-67, 62-66, 63-65, in model units). The
   model stores that direction per unit gap, the mean gap and the 50/90/99th percentiles of
   the gap; the PCA is fitted to the shapes with the opening regressed out.
5. **PCA** of the residual shapes (204-vectors). The smallest number of components that, with the mouth
   mode, reaches 90 % of the non-rigid variance (the variance of the aligned shapes about their mean) is
   kept (clamped to 8..16; 13 for this data: 3DMM-fitted shapes spread their variance over many modes).
   Stored: the unit components and their standard deviations.
   Each component's ``expression_weight`` is the fraction of its energy on brows, eyes and mouth (points
   17-26, 36-67); the generator scales components by it when asked for strong expressions.

Output (``np.savez_compressed``, float32 arrays):
``mean`` (68, 3), ``components`` (C, 68, 3) unit-norm, ``stddev`` (C,), ``expression_weight`` (C,),
``mouth_open_mode`` (68, 3) per unit gap, ``mouth_gap_mean`` (), ``mouth_gap_percentiles`` (3,) at 50/90/99,
and metadata: ``source``, ``num_shapes`` (kept originals), ``num_excluded``, ``variance_explained`` (C,)
cumulative fractions of the residual variance, ``total_variance_explained`` (incl. the mouth mode),
``frame`` (a sentence describing the axes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from landmarks.layouts import W300_68  # noqa: E402

FLIP = np.array(W300_68.flip_permutation)
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
EXPRESSIVE = np.r_[17:27, 36:68]
TARGET_VARIANCE = 0.90  # of the non-rigid variance, mouth-opening mode included


def normalise(shapes: np.ndarray) -> np.ndarray:
    """Centre (N, 68, 3) shapes on their centroids and scale them to unit Frobenius norm."""
    centred = shapes - shapes.mean(1, keepdims=True)
    return centred / np.linalg.norm(centred, axis=(1, 2), keepdims=True)


def rotation_to(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Kabsch: the proper rotation R minimising ||src @ R - dst||, and det of the unconstrained optimum."""
    u, _, vt = np.linalg.svd(src.T @ dst)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    return u @ fix @ vt, d


def gpa(shapes: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis. Returns aligned unit-size shapes, the mean and the reflection flags."""
    aligned = normalise(shapes)
    mean = aligned[0]
    reflected = np.zeros(len(shapes), bool)
    for _ in range(iterations):
        out = np.empty_like(aligned)
        for i, s in enumerate(aligned):
            r, d = rotation_to(s, mean)
            out[i] = s @ r
            reflected[i] = d < 0
        new_mean = out.mean(0)
        new_mean /= np.linalg.norm(new_mean)
        # Rotate every shape to the new mean on the next round; stop when the mean no longer moves.
        change = np.linalg.norm(new_mean - mean)
        aligned, mean = out, new_mean
        if change < 1e-9:
            break
    return aligned, mean, reflected


def mirror(shapes: np.ndarray) -> np.ndarray:
    """Mirror (N, 68, 3) shapes in x and re-index them (a mirrored face is again a face)."""
    out = shapes[:, FLIP].copy()
    out[..., 0] *= -1
    return out


def canonical_rotation(mean: np.ndarray) -> np.ndarray:
    """The rotation (applied as ``points @ R``) taking the GPA frame to x right, y down, z to the camera."""
    pairs = [(k, int(FLIP[k])) for k in range(68) if FLIP[k] > k]
    x = np.mean([mean[j] - mean[i] for i, j in pairs if mean[j][0] != mean[i][0]], 0)
    # Left-right pairs: i is on the image left in the source data (x increasing from i to j).
    x /= np.linalg.norm(x)
    down = mean[8] - mean[np.r_[17:27]].mean(0)
    y = down - (down @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    r = np.stack([x, y, z], 1)
    if (mean @ r)[30, 2] <= (mean @ r)[[0, 16], 2].mean():
        raise RuntimeError("the nose tip does not point to +z: the source depth axis is not towards the camera")
    return r


def inner_gap(shapes: np.ndarray) -> np.ndarray:
    return np.mean([np.linalg.norm(shapes[:, a] - shapes[:, b], axis=-1) for a, b in INNER_LIP_PAIRS], 0)


def fit(src: Path) -> dict[str, np.ndarray]:
    raw = np.load(src / "AFLW2000-3D.pts68.npy").astype(np.float64).transpose(0, 2, 1)  # (N, 68, 3)
    n_total = len(raw)
    keep = np.isfinite(raw).all((1, 2))
    while True:
        aligned, mean, reflected = gpa(raw[keep])
        residual = np.sqrt(((aligned - mean) ** 2).sum((1, 2)))
        med = np.median(residual)
        mad = 1.4826 * np.median(np.abs(residual - med))
        bad = reflected | (residual > med + 5 * mad)
        if not bad.any():
            break
        idx = np.flatnonzero(keep)
        keep[idx[bad]] = False
        print(f"excluding {bad.sum()} shapes (reflected {reflected.sum()}, residual > {med + 5 * mad:.4f})")
    kept = raw[keep]
    print(f"kept {len(kept)} of {n_total} shapes")

    both = np.concatenate([kept, mirror(kept)])
    aligned, mean, _ = gpa(both)
    r = canonical_rotation(mean)
    aligned = aligned @ r
    mean = aligned.mean(0)  # the mean of the aligned shapes (the GPA mean up to scale)
    offset, unit = mean.mean(0), np.linalg.norm(mean[45] - mean[36])
    aligned = (aligned - offset) / unit
    mean = (mean - offset) / unit

    # Mouth opening: regress the aligned shapes on the inner-lip gap.
    gap = inner_gap(aligned)
    g = gap - gap.mean()
    flat = (aligned - mean).reshape(len(aligned), -1)
    mode = (g @ flat) / (g @ g)
    residual = flat - np.outer(g, mode)

    cov = residual.T @ residual / (len(residual) - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    cumulative = np.cumsum(evals) / evals.sum()
    total_var = (flat**2).sum() / (len(flat) - 1)
    mouth_var = (g @ g) / (len(g) - 1) * (mode @ mode)
    with_mouth = (mouth_var + np.cumsum(evals)) / total_var
    n_comp = int(np.clip(np.searchsorted(with_mouth, TARGET_VARIANCE) + 1, 8, 16))
    comps = evecs[:, :n_comp].T.reshape(n_comp, 68, 3)
    # Sign convention (deterministic): the largest-magnitude coordinate of each component is positive.
    for c in comps:
        flat_c = c.reshape(-1)
        if flat_c[np.argmax(np.abs(flat_c))] < 0:
            c *= -1
    energy = (comps**2).sum(-1)
    expression_weight = energy[:, EXPRESSIVE].sum(1)

    total_explained = with_mouth[n_comp - 1]
    print(f"components: {n_comp}; cumulative residual variance explained: {np.round(cumulative[:n_comp], 4)}")
    print(f"total non-rigid variance explained incl. mouth mode: {total_explained:.4f}")
    print(f"inner-lip gap (units of IOD): mean {gap.mean():.4f}, percentiles 50/90/99 "
          f"{np.percentile(gap, [50, 90, 99]).round(4)}")

    f32 = np.float32
    return {
        "mean": mean.astype(f32),
        "components": comps.astype(f32),
        "stddev": np.sqrt(evals[:n_comp]).astype(f32),
        "expression_weight": expression_weight.astype(f32),
        "mouth_open_mode": mode.reshape(68, 3).astype(f32),
        "mouth_gap_mean": np.array(gap.mean(), f32),
        "mouth_gap_percentiles": np.percentile(gap, [50, 90, 99]).astype(f32),
        "variance_explained": cumulative[:n_comp].astype(f32),
        "total_variance_explained": np.array(total_explained, f32),
        "num_shapes": np.array(len(kept)),
        "num_excluded": np.array(n_total - len(kept)),
        "source": np.array("AFLW2000-3D 68-point 3-D ground truth, AFLW2000-3D.pts68.npy from cleardusk/3DDFA "
                           "test.configs (MIT licence, Copyright (c) 2018 Jianzhu Guo)"),
        "frame": np.array("x to the image right, y down, z towards the camera (left-handed, frontal face); "
                          "origin at the mean shape's centroid; 1 unit = mean outer inter-ocular distance 36-45; "
                          "shapes and their mirror images, GPA-aligned"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="folder holding AFLW2000-3D.pts68.npy")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    args = parser.parse_args()
    model = fit(args.src)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **model)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
