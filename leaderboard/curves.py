"""Training curves from the CSV logs of a fit: training loss, validation NME and learning rate per epoch.

How training went explains a number: a loss still falling at the last epoch, a validation NME that bottomed out
early, a schedule that decayed too soon. Lightning's ``CSVLogger`` writes ``metrics.csv`` with one row per
logging call: step-level rows (``train/loss`` every ``log_every_n_steps``), epoch-level rows (``val/nme`` after
each validation) and the ``LearningRateMonitor``'s rows (``lr-<optimiser>``, logged with a step but no epoch).
:func:`read_curves` turns one training's files into one row per epoch:

- **train loss**: every ``train/...loss`` column (``train/loss``; ``train/<part>/loss`` under manual
  optimisation), the epoch's ``_epoch`` value where Lightning logged one, else the mean of its step values;
- **val/nme**: the epoch's last value (the checkpoint is selected on it);
- **learning rate**: every ``lr-...`` column, its first value in the epoch (the rate the epoch ran at). A row
  without an epoch belongs to the epoch of the next row that has one (the monitor logs at an epoch's start).

A resumed training writes a new folder (the runner's ``logs/fit-<stamp>``): the folders are read in natural
order of their names and a later folder's values replace an earlier one's for the epochs it repeats (an
interrupted epoch is run again from ``last.ckpt``). Columns a run did not log are missing, epochs that logged none
of these columns (a test pass logging into the fit's folder) are dropped, and a logged value that is not finite
(``nan``, ``inf``: read as +inf, and so an epoch's mean loss) is left out of the plot and counted on its panel,
never drawn as zero.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from leaderboard.plots import DPI, WIDTH_PX, write_png  # noqa: E402

VAL_NME = "val/nme"
LOSS = re.compile(r"^train/(?:.+/)?loss(?:_step|_epoch)?$")
PANEL_IN = 2.3  # height of one panel (inches at DPI)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``fit-...-2`` before ``fit-...-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def fit_log_dirs(record: dict[str, Any]) -> list[Path]:
    """The CSV log folders of the training behind a record, oldest first: the runner's ``fit.log_dir`` and its
    sibling ``fit-*`` folders (a resumed training's), else the folder above the checkpoint's ``checkpoints/``
    (a plain ``experiments.cli fit``). Paths as recorded (relative to where the run was started); empty when none
    exists."""
    fit = (record.get("experiment") or {}).get("fit") or {}
    if fit.get("log_dir"):
        folder = Path(fit["log_dir"])
        found = {p for p in folder.parent.glob("fit-*") if (p / "metrics.csv").is_file()}
        found |= {folder} if (folder / "metrics.csv").is_file() else set()
        return sorted(found, key=lambda p: natural_key(p.name))
    checkpoint = (record.get("checkpoint") or {}).get("path")
    if checkpoint and Path(checkpoint).parent.name == "checkpoints":
        run = Path(checkpoint).parent.parent
        return [run] if (run / "metrics.csv").is_file() else []
    return []


def _number(text: str) -> float:
    """A CSV cell: NaN where nothing was logged, +inf where a non-finite value was (``nan``, ``inf``), so that a
    diverged loss stays visible as "not finite" instead of vanishing among the rows that did not log it."""
    try:
        value = float(text) if text.strip() else np.nan
    except ValueError:
        return np.nan
    return value if np.isfinite(value) or text.strip() == "" else np.inf


def _epochs(path: Path) -> pd.DataFrame:
    """One ``metrics.csv`` as one row per epoch (index ``epoch``); see the module docstring."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "epoch" not in raw.columns or raw.empty:
        return pd.DataFrame()
    raw = raw.apply(lambda column: column.map(_number))
    if "step" in raw.columns:
        raw = raw.sort_values("step", kind="stable")
    raw["epoch"] = raw["epoch"].bfill().ffill()  # a row without an epoch: the next row's (LR monitor)
    raw = raw.dropna(subset=["epoch"])
    groups = raw.groupby("epoch", sort=True)
    out = pd.DataFrame(index=pd.Index(sorted(raw["epoch"].unique()), name="epoch"))
    for column in raw.columns:
        if LOSS.match(column):
            name = re.sub(r"_(step|epoch)$", "", column)
            if column.endswith("_epoch") or f"{name}_epoch" not in raw.columns:
                out[name] = groups[column].mean()
        elif column == VAL_NME or column.startswith("lr-"):  # the epoch's last NME, its first rate
            out[column] = groups[column].agg(lambda v, last=column == VAL_NME: v.dropna().iloc[-1 if last else 0]
                                             if v.notna().any() else np.nan)
    out.index = out.index.astype(int)
    return out.dropna(how="all")  # epochs that logged no curve (a test pass logged into the same folder)


def read_curves(paths: Sequence[Path]) -> pd.DataFrame:
    """Per-epoch curves of one training from its log folders (or ``metrics.csv`` files), oldest first; a later
    folder's values replace an earlier one's for the same epoch. Columns: the train loss names, ``val/nme``,
    the ``lr-...`` names, whichever were logged."""
    frame = pd.DataFrame()
    for path in paths:
        path = Path(path)
        epochs = _epochs(path / "metrics.csv" if path.is_dir() else path)
        frame = epochs.combine_first(frame) if not frame.empty else epochs
    return frame.sort_index()


def curves_figure(frame: pd.DataFrame, title: str = "", selected: float | None = None) -> plt.Figure:
    """Three panels over the epochs: training loss, validation NME (``selected``: the checkpoint's score, marked
    at the epoch that reached it) and learning rate; a panel says "not logged" where its column is missing."""
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH_PX / DPI, 3 * PANEL_IN + 0.5), dpi=DPI, sharex=True)
    panels = [("training loss", [c for c in frame.columns if LOSS.match(c)]),
              ("validation NME (%)", [c for c in frame.columns if c == VAL_NME]),
              ("learning rate", [c for c in frame.columns if c.startswith("lr-")])]
    for ax, (label, columns) in zip(axes, panels, strict=True):
        missing = 0
        for column in columns:
            values = frame[column].to_numpy(dtype=np.float64)
            ok = np.isfinite(values)
            missing += int(np.isinf(values).sum())  # logged but not finite (NaN: not logged that epoch)
            ax.plot(frame.index[ok], values[ok], marker="o", ms=3, lw=1.5, label=column)
        if columns and len(columns) > 1:
            ax.legend(fontsize=9, frameon=False)
        if not columns or not frame[columns].notna().to_numpy().any():
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="#777")
        elif missing:
            ax.text(0.99, 0.95, f"{missing} epoch(s) not finite: left out", transform=ax.transAxes, ha="right",
                    va="top", fontsize=9, color="#a33")
        ax.set_ylabel(label, fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    if selected is not None and VAL_NME in frame.columns and np.isfinite(frame[VAL_NME]).any():
        epoch = (frame[VAL_NME] - selected).abs().idxmin()
        axes[1].plot([epoch], [frame.loc[epoch, VAL_NME]], marker="*", ms=14, color="#d62728", ls="none",
                     label=f"selected, epoch {epoch}")
        axes[1].legend(fontsize=9, frameon=False)
    axes[-1].set_xlabel("epoch", fontsize=10)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_curves(frame: pd.DataFrame, path: Path, title: str = "", selected: float | None = None) -> Path:
    """:func:`curves_figure` written atomically as a PNG at ``path``."""
    return write_png(curves_figure(frame, title, selected), path)
