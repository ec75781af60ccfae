"""Heatmap losses shared by the papers (torch only).

- :func:`heatmap_weight_map`: AWing's foreground mask M (IMPLEMENTATION_NOTES §0.7): 1 where the 3x3 grey
  dilation of the target map exceeds 0.2, else 0.
- :func:`weighted_heatmap_mse`: mean over pixels of ``(pred - target)^2 * (W * M + 1)``; W = 0 is the plain
  mean-squared error of Newell et al., W = 10 the weighting of AWing.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def heatmap_weight_map(target: torch.Tensor, threshold: float = 0.2, kernel: int = 3) -> torch.Tensor:
    """(B, C, h, w) target maps → (B, C, h, w) float mask: grey_dilation(target, kernel x kernel) > threshold."""
    dilated = F.max_pool2d(target, kernel, stride=1, padding=kernel // 2)
    return (dilated > threshold).to(target.dtype)


def weighted_heatmap_mse(pred: torch.Tensor, target: torch.Tensor, foreground_weight: float = 0.0) -> torch.Tensor:
    """Mean of ``(pred - target)^2 * (foreground_weight * M + 1)`` over every element (M: heatmap_weight_map).

    Sparse Gaussian targets make the plain MSE (weight 0) settle first on all-zero maps; weighting the pixels
    around each peak (AWing: 10) makes the peaks appear an order of magnitude sooner.
    """
    squared = (pred - target).square()
    if foreground_weight:
        squared = squared * (foreground_weight * heatmap_weight_map(target) + 1)
    return squared.mean()
