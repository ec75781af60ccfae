"""A paper's figures: ECDF curves of the per-image NMSE, re-scored from the stored predictions (``figures:`` in
``experiments/<paper>/manifest.yaml``, :class:`leaderboard.manifest.FigureSpec`).

PWC (paper 002, Sec. 5) compares its models by the empirical cumulative distribution of the per-image NMSE:
Figures 9 and 10 on the 300W test sets, over all 68 landmarks (a) and the 12 eye anchors (b); Figure 13 for
images with and without occlusion; Figure 14 on COFW. Each figure entry becomes one document section, placed
after the tables (``paper_tables.paper_document``), with one PNG per panel under ``<out_dir>/figures/``.

- NMSE of an image over a point set P (``LandmarkLayout.point_set``: "all", "eyes"):
  ``mean_{k in P} ||p_k - g_k|| / d``, with d the normaliser of the figure's test (``TestSpec.normalizer``, else
  the record's primary one; inter-ocular = outer eye corners), the whole face's even for the eye points, as a
  fraction (``scoring.rescore_nme``, the one metric definition).
- ``split: occlusion``: an image is occluded when any of its landmarks is not visible (the stored ``visible``
  flags), whatever the panel's point set. The paper split its 300W validation images by hand (298 occluded);
  flags exist for COFW, so the manifest splits COFW-68 by them.
- Several seeds: one curve per model, pooling the images of every seed's record. The seeds test the same
  images, so the pooled ECDF is the mean of the seeds' ECDFs, and its AUC (in the legend) and its mean NMSE are
  the means over the seeds of the per-seed AUC and NMSE, as the tables report them. Averaging each image's NMSE
  over the seeds first would instead plot the ECDF of an error no trained model makes: the average shrinks the
  spread and hides the failures that the right end of an ECDF is there to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmarks.layouts import get_layout
from landmarks.metrics import AUC_STEP
from leaderboard.document import Figure, Section, slug
from leaderboard.manifest import Experiment, FigureSpec, Manifest, ManifestError, TestSpec
from leaderboard.plots import plot_ced
from leaderboard.reproduced import Reproduced
from leaderboard.scoring import rescore_nme
from leaderboard.store import atomic_write_bytes, load_predictions

POINT_SET_WORDS = {"all": "all {n} landmarks", "eyes": "{n} eye points"}
# split -> the image groups it draws, one panel each: (words, value of the occluded flag; None: every image)
GROUPS: dict[str, tuple[tuple[str, bool | None], ...]] = {
    "none": (("", None),),
    "occlusion": (("occluded images", True), ("images without occlusion", False)),
}
SYNTHETIC_FIGURE_WARNING = ("SYNTHETIC DATA: curves from the synthetic stand-in of each test set; they show that "
                            "the pipeline runs end to end and are not comparable with the paper's figures.")
Loader = Callable[[dict], dict[str, np.ndarray]]


@dataclass
class Panel:
    """One panel of a figure: its letter, what it shows, each curve's per-image NMSE (fractions; the seeds'
    images pooled), each curve's number of images (per seed), and the labels left out because no image of
    theirs falls in the panel's group."""

    letter: str
    title: str
    curves: dict[str, np.ndarray]
    images: dict[str, int]
    empty: tuple[str, ...] = ()


def occluded(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) bool: images with at least one landmark not visible."""
    return ~np.asarray(predictions["visible"], dtype=bool).all(axis=1)


def pooled_nmse(records: list[dict], spec: TestSpec, point_set: str, load: Loader) -> tuple[np.ndarray, np.ndarray]:
    """(per-image NMSE over ``point_set``, occluded flags) of ``records`` (one per seed), their images pooled."""
    nmse, flags = [], []
    for record in records:
        predictions = load(record)
        protocol = record["protocol"]
        points = get_layout(protocol["layout"]).point_set(point_set)
        normalizer = spec.normalizer or protocol["primary_normalizer"]
        nmse.append(rescore_nme(predictions, normalizer, points=points))
        flags.append(occluded(predictions))
    return np.concatenate(nmse), np.concatenate(flags)


def figure_runs(figure: FigureSpec, manifest: Manifest,
                runs: Callable[[Experiment, TestSpec], list[dict]]) -> dict[str, tuple[TestSpec, list[dict]]]:
    """Curve label -> its experiment's test ``figure.test`` and the records of that test (one per seed; none:
    not run yet). ``runs``: ``paper_tables.Reproduced.runs``."""
    out = {}
    for label, name in figure.rows.items():
        experiment = manifest.experiment(name)
        spec = next((t for t in experiment.tests if t.name == figure.test), None)
        if spec is None:  # load_manifest refuses such a figure; a manifest built in code may not have been checked
            raise ManifestError(f"{figure.figure}: experiment {name!r} has no test {figure.test!r}")
        out[label] = (spec, runs(experiment, spec))
    return out


def figure_panels(figure: FigureSpec, runs: dict[str, tuple[TestSpec, list[dict]]], load: Loader) -> list[Panel]:
    """The panels of ``figure``: one per point set of ``figure.landmarks`` and image group of its split, each with
    one curve per label that has records (and images in the group). ``runs``: :func:`figure_runs`."""
    panels: list[Panel] = []
    for point_set in figure.landmarks:
        scored, size = {}, 0
        for label, (spec, found) in runs.items():
            if found:
                scored[label] = pooled_nmse(found, spec, point_set, load)
                size = len(get_layout(found[0]["protocol"]["layout"]).point_set(point_set))
        for words, wanted in GROUPS[figure.split]:
            curves = {label: nmse if wanted is None else nmse[flags == wanted]
                      for label, (nmse, flags) in scored.items()}
            title = ", ".join(w for w in (POINT_SET_WORDS[point_set].format(n=size), words) if w)
            kept = {k: v for k, v in curves.items() if len(v)}
            panels.append(Panel(chr(ord("a") + len(panels)), title, kept,
                                {k: len(v) // len(runs[k][1]) for k, v in kept.items()},
                                tuple(k for k in curves if k not in kept)))
    return panels


def styles(manifest: Manifest, figure: FigureSpec) -> dict[str, dict]:
    """Line colour and style by the experiment's place in the manifest, so that a model looks the same in every
    panel and figure of the document."""
    order = [e.name for e in manifest.experiments]
    out = {}
    for label, name in figure.rows.items():
        i = order.index(name)
        out[label] = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3]}
    return out


def _draw(panel: Panel, figure: FigureSpec, manifest: Manifest, path: Path, synthetic: bool) -> None:
    """One panel as a PNG: the image count in the title when every curve has the same, else in the legend."""
    sizes = set(panel.images.values())
    curves, style = panel.curves, styles(manifest, figure)
    if len(sizes) > 1:
        curves = {f"{k}, n = {panel.images[k]}": v for k, v in panel.curves.items()}
        style = {f"{k}, n = {panel.images[k]}": style[k] for k in panel.curves}
    pooled = ", seeds pooled" if any(len(v) > panel.images[k] for k, v in panel.curves.items()) else ""
    counted = f" ({sizes.pop()} images{pooled})" if len(sizes) == 1 else f" ({pooled[2:]})" if pooled else ""
    title = f"{figure.figure} ({panel.letter}){' (SYNTHETIC DATA)' if synthetic else ''}\n{panel.title}{counted}"
    plot_ced(curves, path, axis_limit(panel, figure, synthetic), title=title, xlabel="NMSE",
             ylabel="ECDF (fraction of images)", styles=style)


def axis_limit(panel: Panel, figure: FigureSpec, synthetic: bool) -> float:
    """The x range: the figure's; on synthetic data (faces turned to +-90 deg, where the eye distance vanishes)
    widened to the 90th percentile of the errors, in steps of 0.05, so that the curves are not all off the axis."""
    values = [np.asarray(v, float) for v in panel.curves.values() if len(v)]
    if not synthetic or not values:
        return figure.x_max
    return max(figure.x_max, float(np.ceil(np.quantile(np.concatenate(values), 0.9) / 0.05) * 0.05))


def figure_section(figure: FigureSpec, manifest: Manifest, runs: Callable[[Experiment, TestSpec], list[dict]],
                   load: Loader, out_dir: Path, synthetic: bool = False) -> Section:
    """One figure as a document section: what it shows and how, then its panels (PNGs under ``out_dir``)."""
    # Titled by the paper key, as the tables are (``paper_tables.table_section``).
    title = f"{manifest.references.upper()} {figure.figure}" + (" (synthetic)" if synthetic else "")
    section = Section(title, slug(title), warning=SYNTHETIC_FIGURE_WARNING if synthetic else None,
                      figures_title=f"{figure.figure}: ECDF of the per-image NMSE")
    records = figure_runs(figure, manifest, runs)
    section.lines.append(f"{figure.figure}: {figure.caption}" if figure.caption else figure.figure)
    section.lines.append(
        f"Each curve: the ECDF of the per-image NMSE on test `{figure.test}` (every image of the test), re-scored "
        "from the stored predictions: the mean point-to-point error over the panel's points divided by the test's "
        f"normaliser (the whole face's, also for the eye points), as a fraction (the axis in %, up to "
        f"{figure.x_max:g}); the legend gives AUC@{figure.x_max:g} (trapezoid rule, step {AUC_STEP:g}).")
    if synthetic:
        section.lines.append("Synthetic data: each panel's axis extends to the 90th percentile of its errors (in "
                             "steps of 0.05), and its AUC to that limit: most synthetic errors exceed the paper's "
                             "range.")
    if figure.split == "occlusion":
        section.lines.append("Occluded: an image with at least one landmark flagged not visible in its annotation "
                             "(the stored visibility), whatever the panel's points.")
    if any(len(found) > 1 for _, found in records.values()):
        section.lines.append("Models trained with several seeds: one curve pooling the images of every seed's "
                             "record, i.e. the mean of the seeds' ECDFs (its AUC is the mean of their AUCs).")
    for label, (_, found) in records.items():
        if not found:
            section.lines.append(f"{label}: experiment `{figure.rows[label]}`, test `{figure.test}`: not run yet.")
        else:
            section.sources.append(f"{label}: " + ", ".join(r["record_id"] for r in found))
    if not any(found for _, found in records.values()):
        return section
    for panel in figure_panels(figure, records, load):
        relative = Path("figures") / f"{slug(manifest.references)}-{slug(figure.figure)}-{panel.letter}.png"
        _draw(panel, figure, manifest, out_dir / relative, synthetic)
        section.figures.append(Figure(f"{figure.figure} ({panel.letter}): {panel.title}", relative))
        if panel.empty:
            section.lines.append(f"{figure.figure} ({panel.letter}): no curve for {', '.join(panel.empty)} (no "
                                 "image in this group).")
    return section


def figure_sections(manifest: Manifest | None, results: Path | None, out_dir: Path | None,
                    synthetic: bool = False) -> list[Section]:
    """A section per figure of ``manifest``, from the records under ``results``, PNGs under ``out_dir`` (none
    without a manifest, records or an output folder: a reported-only document has no figures)."""
    if manifest is None or results is None or out_dir is None or not manifest.figures:
        return []
    reproduced, cache = Reproduced(manifest, results), {}

    def load(record: dict) -> dict[str, np.ndarray]:
        if record["record_id"] not in cache:
            cache[record["record_id"]] = load_predictions(record, results)
        return cache[record["record_id"]]

    return [figure_section(figure, manifest, reproduced.runs, load, Path(out_dir), synthetic)
            for figure in manifest.figures]


def copy_figures(sections: list[Section], source: Path, target: Path) -> None:
    """Copy the PNGs of ``sections`` from the folder of one document to another's (the runner's report page
    repeats the tables document's sections), keeping their relative paths."""
    for section in sections:
        for figure in section.figures:
            atomic_write_bytes(Path(target) / figure.path, (Path(source) / figure.path).read_bytes(), overwrite=True)
