"""Per-dataset leaderboards from evaluation records: Markdown, LaTeX and one self-contained HTML page.

    python -m leaderboard render --results DIR [--results DIR2 ...] --out OUTDIR [--normalizer N]
                                 [--thresholds 0.08 0.1] [--baseline METHOD] [--bootstrap 2000] [--seed 0]
                                 [--title T] [--no-pictures]

Layout. Records are collected from every ``--results`` folder and from every ``records`` folder below it
(``--results results/reproduce`` finds each experiment's folder). One leaderboard per test-set identity: its
name *and* its content (image count and a digest of the sorted image ids, ``leaderboard.store.image_set``), so
records on other images never share a table; a test set evaluated on several image sets gets one leaderboard
each, titled with its image count (and "partial", and the digest where two have the same count). When several
records of one identity share a label (``label``, else ``method``) the newest (``created``) replaces the older
ones, and the command's output and the page (above the tables) say so. A row carries its marks beside the
method's name: "synthetic data", "partial". Each leaderboard has a header stating how every number was
computed, a table of the full test set
(rows: methods, best full-set NME first; NME with its CI, FR@t and AUC@t per threshold, cost columns, a paired
test against a baseline), a compact "NME by subset" table when the test set has subsets, and one CED plot per
subset. Written to ``OUTDIR/leaderboard.{md,tex,html}`` and ``OUTDIR/plots/*.png``; these are derived views,
so re-rendering replaces them.

Pictures (the command's default; ``--no-pictures`` leaves them out; off by default for callers of
:func:`render_leaderboards`): each test set's section also shows every method's per-landmark error on the mean
face (``OUTDIR/landmarks/``) and its failure gallery, the worst and median faces the evaluation recorder saved
beside the record (copied to ``OUTDIR/gallery/``), and a last section draws the training curves of every
training behind the records (``OUTDIR/curves/``). ``leaderboard.pictures`` says how each is computed.

Statistics. Every number is re-scored from the stored per-image predictions, with bootstrap intervals and a
paired test against a baseline; ``leaderboard.board`` says exactly how.

Modules. ``leaderboard.entries`` collects the records, ``leaderboard.board`` computes and formats the numbers,
``leaderboard.sections`` assembles one test set's leaderboard (facts, tables, CED plots), ``leaderboard.document``
writes Markdown, LaTeX and HTML; this module ties them together and is the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Also imported from here by others: the collecting and frame functions (tests).
from leaderboard.board import leaderboard_frame, subset_frame
from leaderboard.document import Document, Section, write_document
from leaderboard.entries import (
    NoRecordsError,
    collect_entries,
    group_by_identity,
    identify,
    keep_newest,
    load_usable,
)
from leaderboard.pictures import curves_section
from leaderboard.sections import build_section, identity_titles

__all__ = ["NoRecordsError", "collect_entries", "keep_newest", "leaderboard_frame", "load_usable", "main",
           "render_leaderboards", "subset_frame", "leaderboard_sections"]


def render_leaderboards(results_dirs: list[Path], out_dir: Path, normalizer: str | None = None,
                        thresholds: Sequence[float] | None = None, baseline: str | None = None, n_boot: int = 2000,
                        seed: int = 0, title: str = "Leaderboard", before: Sequence[Section] = (),
                        say: Callable[[str], None] | None = print, pictures: bool = False) -> dict[str, Path]:
    """Render every test set's leaderboard found under ``results_dirs`` into ``out_dir``; returns the paths
    ``{"markdown", "latex", "html"}``. ``before``: sections placed first (the runner's paper tables). ``say``
    is given each notice that a newer record replaced an older one (default: printed, so every command that
    renders says it; None: silent). ``pictures``: per-landmark errors and failure galleries in each test set's
    section, and a last section of training curves (``leaderboard.pictures``). Raises :class:`NoRecordsError`
    when there is no record."""
    sections, notes = leaderboard_sections(results_dirs, out_dir, normalizer, thresholds, baseline, n_boot, seed,
                                           say, pictures)
    return write_document(Document(title, [*before, *sections], notes=notes), out_dir, "leaderboard")


def leaderboard_sections(results_dirs: list[Path], out_dir: Path, normalizer: str | None = None,
                         thresholds: Sequence[float] | None = None, baseline: str | None = None, n_boot: int = 2000,
                         seed: int = 0, say: Callable[[str], None] | None = None,
                         pictures: bool = False) -> tuple[list[Section], list[str]]:
    """One section per test-set identity (CED plots written under ``out_dir/plots``) and the page's notes;
    ``say`` gets each replacement notice. ``pictures``: see :func:`render_leaderboards`."""
    out_dir = Path(out_dir)
    entries, notes = collect_entries([Path(d) for d in results_dirs])
    if not entries:
        raise NoRecordsError(f"no evaluation records under {', '.join(map(str, results_dirs))} (looked for "
                             f"records/*.json in each folder and below)")
    if baseline is not None and not any(baseline in (e.label, e.record["method"]) for e in entries):
        raise ValueError(f"no record of a method {baseline!r}; methods: {sorted({e.label for e in entries})}")
    entries, unknown = identify(entries)
    notes += unknown
    groups = group_by_identity(entries)
    titles = identity_titles(groups)
    sections, shown = [], []
    for key, group in groups.items():
        group, replaced = keep_newest(group)
        section = build_section(titles[key], group, out_dir, normalizer, thresholds, baseline, n_boot, seed,
                                replaced, pictures)
        if section is None:
            notes.append(f"{titles[key]}: no record could be scored under normaliser {normalizer}; left out.")
            continue
        sections.append(section)
        shown += group
        for line in replaced if say else ():
            say(f"render: {titles[key]}: {line}")
    curves = curves_section(shown, out_dir) if pictures else None
    return sections + ([curves] if curves is not None else []), notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard render", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, action="append", required=True,
                        help="a results folder (records/ and predictions/, or folders holding them); repeatable")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced files: leaderboard.*)")
    parser.add_argument("--normalizer", help="default: each test set's primary normaliser")
    parser.add_argument("--thresholds", type=float, nargs="+", help="FR/AUC thresholds (default: the protocol's)")
    parser.add_argument("--baseline", help="method (label) for the paired tests (default: the best NME)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--title", default="Leaderboard")
    parser.add_argument("--no-pictures", action="store_true",
                        help="leave out the per-landmark errors, failure galleries and training curves")
    args = parser.parse_args(argv)
    try:
        paths = render_leaderboards(args.results, args.out, args.normalizer, args.thresholds, args.baseline,
                                    args.bootstrap, args.seed, args.title, say=print, pictures=not args.no_pictures)
    except (NoRecordsError, ValueError) as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
