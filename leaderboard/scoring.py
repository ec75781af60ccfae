"""Re-scoring from stored predictions: any normaliser and subset, with the one metric definition."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from landmarks.metrics import DEFAULT_THRESHOLDS, FULL, per_image_nme, summarize


def subset_rows(predictions: dict[str, np.ndarray], subset: str) -> np.ndarray:
    """Boolean row mask of ``subset`` (``full``: every image)."""
    n = len(predictions["index"])
    if subset == FULL:
        return np.ones(n, dtype=bool)
    names = [str(s) for s in predictions["subsets"]]
    if subset not in names:
        raise KeyError(f"unknown subset {subset!r}; the predictions have {[FULL, *names]}")
    return predictions["subset_mask"][:, names.index(subset)].astype(bool)


def rescore_nme(predictions: dict[str, np.ndarray], normalizer: str, subset: str = FULL,
                visible_only: bool = False, points: Sequence[int] | None = None) -> np.ndarray:
    """Per-image NME (fractions) recomputed from original-image predictions, ground truth and normalisers (over
    the landmarks ``points`` only, when given)."""
    names = [str(s) for s in predictions["normalizers"]]
    if normalizer not in names:
        raise KeyError(f"unknown normaliser {normalizer!r}; the predictions have {names}")
    rows = subset_rows(predictions, subset)
    pred, target = torch.from_numpy(predictions["pred"][rows]), torch.from_numpy(predictions["target"][rows])
    norm = torch.from_numpy(predictions["norm"][rows, names.index(normalizer)])
    visible = torch.from_numpy(predictions["visible"][rows]) if visible_only else None
    return per_image_nme(pred, target, norm, visible, points).numpy()


def rescore(predictions: dict[str, np.ndarray], normalizer: str, subset: str = FULL,
            thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """The summary (nme %, nme_std %, fr@t %, auc@t) of one normaliser and subset, from predictions."""
    return summarize(torch.from_numpy(rescore_nme(predictions, normalizer, subset)), thresholds)
