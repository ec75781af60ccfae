"""CED plots from per-image NMEs."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from leaderboard.store import atomic_write_bytes  # noqa: E402


def plot_ced(curves: Mapping[str, np.ndarray], path: Path, max_threshold: float = 0.10, title: str = "",
             xlabel: str = "NME") -> Path:
    """Cumulative error distribution of each named array of per-image NMEs (fractions), up to
    ``max_threshold``; the legend gives each curve's AUC@max_threshold. Written atomically as PNG."""
    from landmarks.metrics import auc, ced

    grid = np.linspace(0, max_threshold, 501)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for label, nme in curves.items():
        nme = np.asarray(nme, dtype=np.float64)
        nme = nme[~np.isnan(nme)]
        area = float(auc(nme, max_threshold))
        ax.plot(grid * 100, ced(nme, grid).numpy(), lw=2, label=f"{label} (AUC@{max_threshold:g} = {area:.4f})")
    ax.set_xlim(0, max_threshold * 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{xlabel} (%)")
    ax.set_ylabel("fraction of images")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue(), overwrite=True)
