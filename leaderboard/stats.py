"""Uncertainty of NME: bootstrap confidence intervals per method and subset, and paired tests between methods.

Both work on per-image NMEs re-scored from stored predictions (``leaderboard.scoring``), so they use the one
metric definition. Resampling is vectorised (a (resamples, n) index matrix per chunk) and seeded, so a table
is reproducible.

- ``bootstrap_ci``: percentile bootstrap of the mean per-image NME (Efron & Tibshirani, ch. 13).
- ``paired_test``: two methods on the same images. The per-image differences are resampled together
  (paired bootstrap) for a CI of the mean difference and a two-sided p-value; the Wilcoxon signed-rank test
  (scipy) is reported beside it as the rank-based check that does not assume a distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from landmarks.metrics import FULL
from leaderboard.scoring import rescore_nme, subset_rows

RESAMPLES = 10_000
CHUNK = 1_000  # resamples per vectorised block: (CHUNK, n) indices bounds the memory


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``resamples`` means of ``values`` resampled with replacement (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"need a non-empty 1-D array of per-image values, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        means[start:start + size] = values[rng.integers(0, len(values), (size, len(values)))].mean(1)
    return means


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (same units as ``values``)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(bootstrap_means(values, resamples, seed), [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedResult:
    """Method A minus method B on the same images (NME in percent: negative means A is better)."""

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    wilcoxon_statistic: float
    p_wilcoxon: float


def paired_test(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = RESAMPLES,
                seed: int = 0) -> PairedResult:
    """Paired bootstrap and Wilcoxon signed-rank test of per-image values ``a`` vs ``b`` (same images, same
    order). The bootstrap p-value is two-sided: twice the smaller share of resampled mean differences on
    either side of zero (at least 1 / resamples)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same images: shapes {a.shape} and {b.shape}")
    diff = a - b
    means = bootstrap_means(diff, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    p_boot = min(1.0, max(2 * min((means <= 0).mean(), (means >= 0).mean()), 1 / resamples))
    if np.all(diff == 0):
        statistic, p_wilcoxon = 0.0, 1.0
    else:
        result = scipy.stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        statistic, p_wilcoxon = float(result.statistic), float(result.pvalue)
    return PairedResult(len(diff), float(diff.mean()), float(low), float(high), float(p_boot), statistic, p_wilcoxon)


def aligned_nme(predictions_a: dict[str, np.ndarray], predictions_b: dict[str, np.ndarray], normalizer: str,
                subset: str = FULL) -> tuple[np.ndarray, np.ndarray]:
    """Per-image NME (percent) of two evaluations on the same images, aligned by dataset index. Raises when
    the two do not cover the same images (a paired test on different images means nothing)."""
    out = []
    for predictions in (predictions_a, predictions_b):
        nme = rescore_nme(predictions, normalizer, subset) * 100
        index = np.asarray(predictions["index"])[subset_rows(predictions, subset)]
        order = np.argsort(index)
        out.append((index[order], nme[order]))
    (index_a, nme_a), (index_b, nme_b) = out
    if not np.array_equal(index_a, index_b):
        only_a, only_b = np.setdiff1d(index_a, index_b), np.setdiff1d(index_b, index_a)
        raise ValueError(f"the two evaluations cover different images ({len(only_a)} only in the first, "
                         f"{len(only_b)} only in the second): not a paired comparison")
    return nme_a, nme_b
