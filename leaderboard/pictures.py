"""Pictures in the report pages: per-landmark error on the mean face, failure galleries and training curves.

A number says how much a method errs; these say where. For every leaderboard section (one test set) the report
shows, per method:

- **per-landmark error** (:func:`landmark_errors`, :func:`plot_landmark_errors`): the mean over the test images
  of each landmark's point-to-point error divided by the image's normaliser, in percent (so the mean over the
  landmarks is the NME), drawn as coloured dots on the mean face with a colour bar. The mean face
  (:func:`mean_face`) is the mean of the ground-truth shapes after each is box-normalised: centred on the centre
  of its landmarks' bounding box and divided by sqrt(w * h) of that box (the bbox normaliser's face size), so a
  face's position and size in its image do not count. Each figure has its own colour scale (read its bar): it
  shows which landmarks drift for that method;
- **failure gallery**: the pictures the evaluation recorder saved beside the record (``leaderboard.gallery``),
  its worst and median faces, copied under the report folder; a record made before galleries gets a note;

and, after the leaderboards, a section of **training curves** (``leaderboard.curves``), one figure per training
behind the records (trainings shared by several experiments drawn once).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from landmarks.layouts import LandmarkLayout, get_layout  # noqa: E402
from landmarks.metrics import FULL  # noqa: E402
from leaderboard.curves import fit_log_dirs, plot_curves, read_curves  # noqa: E402
from leaderboard.document import Figure, FigureGroup, Section, slug  # noqa: E402
from leaderboard.entries import Entry  # noqa: E402
from leaderboard.gallery import pictures_dir, read_pictures  # noqa: E402
from leaderboard.plots import DPI, TITLE_CHARS, WIDTH_PX, write_png  # noqa: E402
from leaderboard.scoring import subset_rows  # noqa: E402
from leaderboard.store import atomic_write_bytes, load_predictions  # noqa: E402

WORST_LABELLED = 5  # the landmarks with the largest errors get their index written beside the dot


def landmark_errors(predictions: dict[str, np.ndarray], normalizer: str, subset: str = FULL) -> np.ndarray:
    """(K,) mean over the images of ``subset`` of ``||pred_k - target_k|| / d`` (fractions; every landmark, as
    the NME counts them), so their mean over k is the set's NME."""
    names = [str(n) for n in predictions["normalizers"]]
    if normalizer not in names:
        raise KeyError(f"unknown normaliser {normalizer!r}; the predictions have {names}")
    rows = subset_rows(predictions, subset)
    error = np.linalg.norm(np.asarray(predictions["pred"], np.float64)[rows]
                           - np.asarray(predictions["target"], np.float64)[rows], axis=-1)  # (N, K) pixels
    return (error / np.asarray(predictions["norm"], np.float64)[rows, names.index(normalizer), None]).mean(0)


def mean_face(shapes: np.ndarray) -> np.ndarray:
    """(N, K, 2) ground-truth shapes -> (K, 2): each centred on its landmarks' box centre and divided by the
    box's sqrt(w * h), then averaged (unit face size, image axes: y down)."""
    shapes = np.asarray(shapes, dtype=np.float64)
    low, high = shapes.min(1, keepdims=True), shapes.max(1, keepdims=True)
    size = np.sqrt(np.prod(np.maximum(high - low, 1e-9), axis=-1, keepdims=True))  # (N, 1, 1)
    return ((shapes - (low + high) / 2) / size).mean(0)


def landmark_error_figure(errors: np.ndarray, face: np.ndarray, title: str = "", normalizer: str = "",
                          layout: LandmarkLayout | None = None) -> plt.Figure:
    """Landmark ``k`` drawn at ``face[k]`` coloured by ``errors[k]`` (fractions; shown in %), with a colour
    bar, the layout's boundary polylines in grey and the indices of the :data:`WORST_LABELLED` worst points."""
    errors, face = np.asarray(errors, np.float64) * 100, np.asarray(face, np.float64)
    fig = plt.figure(figsize=(WIDTH_PX / DPI, 4.9), dpi=DPI)
    ax = fig.add_axes((0.04, 0.04, 0.72, 0.8))
    bar_ax = fig.add_axes((0.8, 0.1, 0.035, 0.7))
    for boundary in layout.boundaries if layout is not None else ():
        ax.plot(*face[list(boundary.indices)].T, color="#bbbbbb", lw=1, zorder=1)
    dots = ax.scatter(face[:, 0], face[:, 1], c=errors, cmap="plasma", s=55, edgecolors="black", linewidths=0.5,
                      vmin=0, vmax=max(float(errors.max()), 1e-9), zorder=2)
    for k in np.argsort(-errors, kind="stable")[:WORST_LABELLED]:
        ax.annotate(str(k), face[k], textcoords="offset points", xytext=(5, 4), fontsize=9, zorder=3)
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image axes: y down
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(textwrap.fill(title, TITLE_CHARS), fontsize=10)
    bar = fig.colorbar(dots, cax=bar_ax)
    bar.set_label(f"mean error / {normalizer} (%)" if normalizer else "mean error (%)", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    return fig


def plot_landmark_errors(predictions: dict[str, np.ndarray], path: Path, normalizer: str, title: str = "",
                         layout: LandmarkLayout | None = None) -> Path:
    """The per-landmark error figure of one evaluation's predictions, written atomically as a PNG."""
    return write_png(landmark_error_figure(landmark_errors(predictions, normalizer), mean_face(predictions["target"]),
                                           title, normalizer, layout), path)


def plot_record_landmark_errors(record: dict[str, Any], results_dir: Path, path: Path,
                                normalizer: str | None = None) -> Path:
    """:func:`plot_landmark_errors` of any stored record (its predictions checked against their checksum),
    under ``normalizer`` (default: its primary one)."""
    normalizer = normalizer or record["protocol"]["primary_normalizer"]
    title = f"{record.get('label') or record['method']} on {record['test_set']}: error per landmark ({normalizer})"
    return plot_landmark_errors(load_predictions(record, results_dir), path, normalizer, title,
                                _layout(record))


def _layout(record: dict[str, Any]) -> LandmarkLayout | None:
    try:
        return get_layout(str(record["protocol"].get("layout")))
    except (KeyError, ValueError):  # a layout this code does not know: dots without boundary lines
        return None


def _name(entry: Entry) -> str:
    return slug(f"{entry.record['test_set']}-{entry.label}-{entry.record['record_id'][-8:]}")


# --- the report's groups and sections -------------------------------------------------------------------------


def landmark_group(entries: Sequence[Entry], normalizer: str, out_dir: Path) -> FigureGroup:
    """One figure per entry (predictions loaded), PNGs under ``out_dir/landmarks``."""
    figures = []
    for entry in entries:
        relative = Path("landmarks") / f"{_name(entry)}-{slug(normalizer)}.png"
        title = f"{entry.label}: mean error per landmark ({entry.record['n_images']} faces)"
        plot_landmark_errors(entry.predictions, out_dir / relative, normalizer, title, _layout(entry.record))
        figures.append(Figure(f"{entry.label}: error per landmark ({normalizer})", relative))
    lines = [f"Each dot: one landmark on the mean face (ground-truth shapes centred on their box and scaled to "
             f"unit face size, then averaged), coloured by its mean error over the test images divided by the "
             f"{normalizer} normaliser, in %; the mean over the dots is the NME. The {WORST_LABELLED} worst "
             f"landmarks are numbered (0-based). Each figure has its own colour scale: read its bar."]
    return FigureGroup("Per-landmark error", [("", figures)], lines)


def gallery_groups(entries: Sequence[Entry], out_dir: Path) -> list[FigureGroup]:
    """Per entry with a saved gallery, its worst and median faces (copied under ``out_dir/gallery``); entries
    without one are named in a last group's note."""
    groups, missing = [], []
    for entry in entries:
        listing = read_pictures(entry.results_dir, entry.record["record_id"])
        source = pictures_dir(entry.results_dir, entry.record["record_id"])
        shown = [item for kind in ("worst", "median") for item in (listing or {}).get(kind) or []]
        if not shown or not all((source / item["file"]).is_file() for item in shown):
            missing.append(entry.label)
            continue
        rows = []
        for kind, words in (("worst", "worst"), ("median", "median")):
            figures = []
            for rank, item in enumerate(listing.get(kind) or [], 1):
                relative = Path("gallery") / entry.record["record_id"] / item["file"]
                atomic_write_bytes(out_dir / relative, (source / item["file"]).read_bytes(), overwrite=True)
                figures.append(Figure(f"{words} {rank}: {item['nme']:.2f} % · {item['image_id']}", relative))
            rows.append((f"The {len(figures)} {words} of {listing['n_images']} faces", figures))
        groups.append(FigureGroup(f"Failure gallery: {entry.label}", rows, [
            f"Per-image NME under the {listing['normalizer']} normaliser (the record's primary one). Green dots: "
            "prediction; red rings: ground truth; yellow lines: the error. Faces in the crop the model saw."],
            kind="faces"))
    if missing:
        groups.append(FigureGroup("Failure gallery", [], [
            f"No gallery for {'; '.join(missing)}: recorded before the evaluation recorder saved galleries (or "
            "with gallery_size=0, or its pictures were moved); re-run the test to get one."]))
    return groups


def picture_groups(entries: Sequence[Entry], normalizer: str, out_dir: Path) -> list[FigureGroup]:
    """A leaderboard section's pictures: per-landmark errors, then each method's failure gallery."""
    return [landmark_group(entries, normalizer, Path(out_dir)), *gallery_groups(entries, Path(out_dir))]


def _training_name(entry: Entry) -> str:
    """An entry's training as people know it: the runner's experiment (and seed), else the method's label."""
    experiment = entry.record.get("experiment") or {}
    if not experiment.get("name"):
        return entry.label
    seed = f" seed {experiment['seed_index']}" if (experiment.get("seeds") or 1) > 1 else ""
    return f"{experiment['name']}{seed} ({entry.label})"


def curves_section(entries: Sequence[Entry], out_dir: Path) -> Section | None:
    """"Training curves": one figure per training behind ``entries`` (PNGs under ``out_dir/curves``); None when
    no entry names a training (e.g. records submitted without a run)."""
    trainings: dict[tuple[Path, ...], list[Entry]] = {}
    missing = []
    for entry in entries:
        fit = (entry.record.get("experiment") or {}).get("fit") or {}
        if "experiment" in entry.record and not fit.get("checkpoint"):
            continue  # an evaluation-only baseline: nothing was trained
        folders = tuple(fit_log_dirs(entry.record))
        if folders:
            trainings.setdefault(folders, []).append(entry)
        elif fit.get("log_dir") or (entry.record.get("checkpoint") or {}).get("path"):
            missing.append(f"{_training_name(entry)}: no metrics.csv at {fit.get('log_dir') or 'its run folder'}")
    if not trainings and not missing:
        return None
    section = Section("Training curves", "training-curves", figures_title="Loss, validation NME and learning rate")
    section.lines = ["Per epoch, from the CSV logs of each training (resumed trainings joined, the later log "
                     "winning for a repeated epoch): training loss (the epoch's mean of the logged steps), "
                     "validation NME under the primary normaliser (the star: the selected checkpoint) and learning "
                     "rate. One figure per training; experiments that share a training are named together."]
    section.notes = sorted(set(missing))
    for folders, group in trainings.items():
        # The experiment that ran the training (its run folder holds the logs) first, then those that share it.
        parts = folders[0].parts
        ordered = sorted(group, key=lambda e: (e.record.get("experiment") or {}).get("name") not in parts)
        names = list(dict.fromkeys(_training_name(e) for e in ordered))
        fit = (group[0].record.get("experiment") or {}).get("fit") or {}
        selected = fit.get("score") if fit.get("monitor") == "val/nme" else None
        relative = Path("curves") / f"{slug(names[0])}-{len(section.figures)}.png"
        title = textwrap.fill(names[0] + (f" (+{len(names) - 1} sharing it)" if len(names) > 1 else ""), TITLE_CHARS)
        plot_curves(read_curves(folders), out_dir / relative, title, selected)
        section.figures.append(Figure("Training of " + "; ".join(names), relative))
        section.sources.append(f"{'; '.join(names)}: {', '.join(str(f) for f in folders)}")
    return section
