"""CED plots from per-image NMEs.

Sized to be read at 1:1 in the HTML pages (``leaderboard.document``: figures are 560 px wide there): 560 px
wide PNGs, 10-11 pt text at 100 dpi (13-15 px), and the legend below the axes, one line per method with its
AUC, so it never covers a curve however many methods there are. ``styles`` pins a curve's colour and line
style, so that one method looks the same in every panel and figure of a document (``leaderboard.figures``).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from leaderboard.store import atomic_write_bytes  # noqa: E402

WIDTH_PX, DPI = 560, 100  # the width the HTML page shows figures at, so the PNG is seen at 1:1
AXES_HEIGHT_IN, LEGEND_LINE_IN = 3.4, 0.21
TITLE_CHARS, TITLE_LINE_IN = 60, 0.2  # a title line wider than the axes is wrapped; each extra line adds room


Styles = Mapping[str, Mapping[str, Any]]  # curve label -> matplotlib line keywords (color, linestyle, ...)


def ced_figure(curves: Mapping[str, np.ndarray], max_threshold: float = 0.10, title: str = "",
               xlabel: str = "NME", ylabel: str = "fraction of images", styles: Styles | None = None) -> plt.Figure:
    """The CED figure of each named array of per-image NMEs (fractions), up to ``max_threshold``; the legend,
    under the axes, gives each curve's AUC@max_threshold. ``styles`` (by label) overrides a curve's line
    keywords (the default: the colour cycle in order, width 2)."""
    from landmarks.metrics import auc, ced

    grid = np.linspace(0, max_threshold, 501)
    title = "\n".join(textwrap.fill(line, TITLE_CHARS) for line in title.splitlines())
    height = AXES_HEIGHT_IN + 0.5 + LEGEND_LINE_IN * max(len(curves), 1) + TITLE_LINE_IN * title.count("\n")
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height), dpi=DPI)
    bottom = (0.5 + LEGEND_LINE_IN * max(len(curves), 1)) / height  # the legend's room under the axes
    ax = fig.add_axes((0.13, bottom + 0.06, 0.82, AXES_HEIGHT_IN / height - 0.14))
    for label, nme in curves.items():
        nme = np.asarray(nme, dtype=np.float64)
        nme = nme[~np.isnan(nme)]
        area = float(auc(nme, max_threshold))
        style = {"lw": 2, **((styles or {}).get(label) or {})}
        ax.plot(grid * 100, ced(nme, grid).numpy(), label=f"{label} (AUC@{max_threshold:g} = {area:.4f})", **style)
    ax.set_xlim(0, max_threshold * 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{xlabel} (%)", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    if curves:
        ax.legend(loc="upper left", bbox_to_anchor=(-0.13, -0.15), fontsize=10, frameon=False, borderaxespad=0)
    return fig


def plot_ced(curves: Mapping[str, np.ndarray], path: Path, max_threshold: float = 0.10, title: str = "",
             xlabel: str = "NME", ylabel: str = "fraction of images", styles: Styles | None = None) -> Path:
    """:func:`ced_figure` written atomically as a PNG at ``path``."""
    return write_png(ced_figure(curves, max_threshold, title, xlabel, ylabel, styles), path)


def write_png(fig: plt.Figure, path: Path) -> Path:
    """A figure saved atomically as a PNG at ``path`` (replacing it: figures are derived views) and closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue(), overwrite=True)
