"""Face-alignment metrics: one definition, used everywhere (DESIGN.md, "Metrics").

- Per image: ``NME_i = mean_k ||p_ik - g_ik|| / d_i`` over all K landmarks (or the visible ones).
- NME of a set: mean of NME_i, reported in percent, with its (population, ddof = 0) standard deviation.
- ``FR@t``: percent of images with NME_i > t.
- ``CED(e)``: fraction of images with NME_i <= e.
- ``AUC@t = (1/t) * integral_0^t CED(e) de``, a fraction in [0, 1], trapezoid rule on a grid of step 1e-4.

The functional API takes per-image NMEs as fractions (0.045, not 4.5). The torchmetrics classes keep per-image
values in ``cat`` states together with the dataset index of each image, so that FR, AUC, CED and every subset
come from one pass, and duplicates that a distributed sampler adds to even out its shards are dropped: the
result under DDP is exactly the single-process result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from landmarks.layouts import LandmarkLayout

AUC_STEP = 1e-4
DEFAULT_THRESHOLDS = (0.08, 0.10)
FULL = "full"  # the subset holding every image of a test set


def _t(x: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def per_image_nme(
    pred: torch.Tensor, target: torch.Tensor, norm: torch.Tensor, visible: torch.Tensor | None = None,
    points: Sequence[int] | None = None,
) -> torch.Tensor:
    """(B, K, 2), (B, K, 2), (B,) → (B,) per-image NME as a fraction.

    With ``visible`` (B, K) bool, the mean runs over visible points only (COFW's visible-only protocol); an
    image without a visible point gets NaN. With ``points`` (indices into K, e.g. ``layout.point_set("eyes")``),
    the mean runs over those points only (PWC's eye-anchor NMSE); the normaliser stays the whole face's.
    """
    pred, target, norm = _t(pred), _t(target), _t(norm)
    err = torch.linalg.vector_norm(pred - target, dim=-1)  # (B, K) pixel error per point
    if points is not None:
        err = err[..., list(points)]  # (B, P)
        visible = None if visible is None else _t(visible)[..., list(points)]
    if visible is None:
        mean_err = err.mean(-1)
    else:
        v = _t(visible).to(err.dtype)
        mean_err = (err * v).sum(-1) / v.sum(-1)
    return mean_err / norm


def inter_ocular(target: torch.Tensor, layout: LandmarkLayout) -> torch.Tensor:
    """(B, K, 2) → (B,) distance between the layout's outer eye corners."""
    target = _t(target)
    a, b = layout.outer_eye_corners
    return torch.linalg.vector_norm(target[..., a, :] - target[..., b, :], dim=-1)


def inter_pupil(target: torch.Tensor, layout: LandmarkLayout) -> torch.Tensor:
    """(B, K, 2) → (B,) distance between the pupil centres (means of the layout's pupil groups)."""
    centres = layout.pupil_centres(_t(target))
    return torch.linalg.vector_norm(centres[..., 0, :] - centres[..., 1, :], dim=-1)


def bbox_size(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) boxes as x1, y1, x2, y2 → (B,) sqrt(w * h)."""
    boxes = _t(boxes)
    return ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sqrt()


def failure_rate(nme: torch.Tensor, threshold: float) -> torch.Tensor:
    """Percent of images whose NME (fraction) exceeds ``threshold``."""
    nme = _t(nme).double()
    return (nme > threshold).double().mean() * 100


def ced(nme: torch.Tensor, thresholds: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Cumulative error distribution: fraction of images with NME <= each threshold."""
    nme = _t(nme).double().sort().values
    thresholds = _t(thresholds).to(nme)
    return torch.searchsorted(nme, thresholds, right=True).double() / nme.numel()


def auc(nme: torch.Tensor, threshold: float, step: float = AUC_STEP) -> torch.Tensor:
    """Area under the CED curve up to ``threshold``, divided by it: a fraction in [0, 1].

    Trapezoid rule on the grid 0, step, ..., threshold (the grid ends exactly at ``threshold``).
    """
    n_steps = round(threshold / step)
    if not np.isclose(n_steps * step, threshold):
        raise ValueError(f"threshold {threshold} is not a multiple of the grid step {step}")
    grid = torch.linspace(0.0, threshold, n_steps + 1, dtype=torch.float64)
    curve = ced(nme, grid)
    return torch.trapezoid(curve, grid) / threshold


def summarize(nme: torch.Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """Summary of per-image NMEs (fractions): nme and nme_std in percent, fr@t in percent, auc@t as a fraction.

    NaN entries (images without a visible point) are left out; an empty set gives NaN metrics and n = 0.
    """
    nme = _t(nme).double()
    nme = nme[~nme.isnan()]
    out: dict[str, float] = {"n": float(nme.numel())}
    if nme.numel() == 0:
        nan = float("nan")
        return out | {"nme": nan, "nme_std": nan} | {f"{k}@{t:g}": nan for t in thresholds for k in ("fr", "auc")}
    out["nme"] = float(nme.mean() * 100)
    out["nme_std"] = float(nme.std(correction=0) * 100)
    for t in thresholds:
        out[f"fr@{t:g}"] = float(failure_rate(nme, t))
        out[f"auc@{t:g}"] = float(auc(nme, t))
    return out


def first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``, in increasing index order."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    keep = torch.ones_like(sorted_index, dtype=torch.bool)
    keep[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[keep]


class NMEMetric(Metric):
    """Per-image NME under several normalisers at once, with subset tags; exact under DDP.

    ``update`` takes predictions and ground truth in the same pixel frame, one normaliser tensor (B,) per
    name in ``normalizers`` (taken from the sample's ``norm`` dict), a (B, S) bool subset mask over the
    ``subsets`` vocabulary and each image's dataset index. ``compute`` returns
    ``{normalizer: {subset: summary}}`` with the summary of :func:`summarize`, plus the visible-only NME
    under the key ``nme_visible``. Subset :data:`FULL` always holds every image.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(
        self,
        normalizers: Sequence[str],
        subsets: Sequence[str] = (),
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not normalizers:
            raise ValueError("NMEMetric needs at least one normaliser")
        self.normalizers = tuple(normalizers)
        self.subsets = tuple(s for s in subsets if s != FULL)
        self.thresholds = tuple(thresholds)
        for name in ("index", "nme", "nme_visible", "subset_mask"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        norm: Mapping[str, torch.Tensor],
        index: torch.Tensor,
        subset_mask: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
    ) -> None:
        missing = [n for n in self.normalizers if n not in norm]
        if missing:
            raise KeyError(f"the batch has no normaliser {missing}; it has {sorted(norm)}")
        pred, target = pred.double(), target.double()
        norms = torch.stack([norm[n].double() for n in self.normalizers], -1)  # (B, N)
        vis = visible if visible is not None else torch.ones(target.shape[:2], dtype=torch.bool, device=pred.device)
        # Mean point errors once (a normaliser of 1), then divided by every normaliser: (B, N).
        ones = torch.ones(len(pred), dtype=torch.float64, device=pred.device)
        self.index.append(index.long())
        self.nme.append(per_image_nme(pred, target, ones)[:, None] / norms)
        self.nme_visible.append(per_image_nme(pred, target, ones, vis)[:, None] / norms)
        if subset_mask is None:
            subset_mask = torch.zeros(len(index), len(self.subsets), dtype=torch.bool, device=pred.device)
        if subset_mask.shape != (len(index), len(self.subsets)):
            raise ValueError(f"subset_mask has shape {tuple(subset_mask.shape)}, expected ({len(index)}, "
                             f"{len(self.subsets)}) for subsets {self.subsets}")
        self.subset_mask.append(subset_mask.bool())

    def per_image(self) -> dict[str, torch.Tensor]:
        """The gathered per-image states, one row per distinct image, sorted by dataset index."""
        index = dim_zero_cat(self.index)
        keep = first_occurrences(index)
        return {
            "index": index[keep],
            "nme": dim_zero_cat(self.nme)[keep],
            "nme_visible": dim_zero_cat(self.nme_visible)[keep],
            "subset_mask": dim_zero_cat(self.subset_mask).reshape(len(index), -1)[keep],
        }

    def compute(self) -> dict[str, dict[str, dict[str, float]]]:
        rows = self.per_image()
        n = len(rows["index"])
        masks = {FULL: torch.ones(n, dtype=torch.bool, device=rows["index"].device)}
        masks |= {s: rows["subset_mask"][:, j] for j, s in enumerate(self.subsets)}
        out: dict[str, dict[str, dict[str, float]]] = {}
        for i, normalizer in enumerate(self.normalizers):
            out[normalizer] = {}
            for subset, mask in masks.items():
                summary = summarize(rows["nme"][mask, i], self.thresholds)
                summary["nme_visible"] = summarize(rows["nme_visible"][mask, i], ())["nme"]
                out[normalizer][subset] = summary
        return out


class PredictionStore(Metric):
    """Gathers per-image predictions, ground truth and normalisers (any frame) across processes.

    Used at test time to write the per-image predictions of an evaluation record; ``compute`` returns numpy
    arrays with one row per distinct image, sorted by dataset index.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("index", "pred", "target", "visible", "norm", "subset_mask"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        visible: torch.Tensor,
        norm: torch.Tensor,
        subset_mask: torch.Tensor,
        index: torch.Tensor,
    ) -> None:
        """pred, target (B, K, 2); visible (B, K); norm (B, N); subset_mask (B, S); index (B,)."""
        self.index.append(index.long())
        self.pred.append(pred.double())
        self.target.append(target.double())
        self.visible.append(visible.bool())
        self.norm.append(norm.double())
        self.subset_mask.append(subset_mask.bool())

    def compute(self) -> dict[str, np.ndarray]:
        index = dim_zero_cat(self.index)
        keep = first_occurrences(index)
        n = len(index)
        out = {"index": index[keep]}
        for name in ("pred", "target", "visible", "norm", "subset_mask"):
            value = dim_zero_cat(getattr(self, name))
            out[name] = value.reshape(n, *value.shape[1:])[keep] if n else value
        return {k: v.cpu().numpy() for k, v in out.items()}
