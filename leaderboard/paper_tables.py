"""Paper tables as the papers print them, the reported number beside the reproduced one.

    python -m leaderboard paper-tables <paper> [--out DIR] [--results DIR] [--data real|synthetic]
    make paper-tables                           # every paper, reported numbers (and reproduced where recorded)

Each table follows its layout (``references/table_layouts.yaml``, read by ``leaderboard.layouts``): the paper's
row groups (normalisation sections, blocks), its column order and header, its units. Reported numbers come
from ``references/paper_results.csv``; a table renders reported-only until a manifest's experiment fills a row
(``tables:`` in ``experiments/<paper>/manifest.yaml``); then every cell of the row shows three numbers:
**reported**, **reproduced** (re-scored from the stored per-image predictions with the cell's own normaliser,
threshold and subset) and **Δ** = reproduced - reported, all in the paper's printed unit. Rows are keyed by
(section, method): a method listed under two normalisations is re-scored under each. A cost cell compares like
with like: parameters in the paper's unit, FLOPs counted as the column's convention (MACs, or 2 x MACs) says.

A reported number whose CSV note says AMBIGUOUS carries a mark (†n) and the note's ambiguous part as a footnote.
An experiment trained with several seeds shows "mean ± std" over its seeds (sample std, n - 1).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.document import Document, Section, Table, slug, write_document
from leaderboard.figures import figure_sections
from leaderboard.layouts import Cell, TableLayout, load_layouts
from leaderboard.manifest import Manifest, ManifestError, available_papers, load_manifest
from leaderboard.reproduced import DIAGNOSTIC_METRICS, NORMALIZERS, Quantity, Reproduced  # noqa: F401 (re-exported)
from leaderboard.words import protocol_words

REFERENCES = Path(__file__).parent / "references" / "paper_results.csv"
PAPERS = ("glomface", "mhhn", "pwc", "propnet", "tab")
KINDS = ("reported", "reproduced", "Δ")
MISSING = "—"
SYNTHETIC_WARNING = ("SYNTHETIC DATA: the reproduced columns come from the synthetic stand-in of each test set "
                     "(same subset names, not the same faces); they show that the pipeline runs end to end and "
                     "are not comparable with the reported numbers.")


def load_references(path: Path = REFERENCES) -> pd.DataFrame:
    """Every reported number, one row each (paper, table, dataset, subset, method, metric, normalization,
    threshold, value, std, is_paper_own_method, note)."""
    return pd.read_csv(path, keep_default_na=True)


@dataclass
class CellValue:
    """One cell in the paper's printed unit: reported (with the paper's std), reproduced (std over images, or
    over seeds when ``seeds`` > 1), and the ambiguity footnote of the reported number, if any."""

    reported: float | None = None
    reported_std: float | None = None
    reproduced: float | None = None
    reproduced_std: float | None = None
    seeds: int = 1
    ambiguity: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.reported is None or self.reproduced is None else self.reproduced - self.reported


def _number(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _ambiguity(note: object) -> str | None:
    """The parts of a CSV note that say AMBIGUOUS (the rest is provenance, not a caveat)."""
    if not isinstance(note, str) or "AMBIGUOUS" not in note:
        return None
    return "; ".join(part.strip() for part in note.split(";") if "AMBIGUOUS" in part) or note


def table_values(layout: TableLayout, references: pd.DataFrame, reproduced: Reproduced | None = None,
                 rows: dict[str, str] | None = None) -> dict[Cell, CellValue]:
    """Every cell of ``layout`` in printed order, with what was reported and (for the rows that ``rows`` maps
    to manifest experiments) what was reproduced, in the paper's printed units."""
    matched = layout.match(references)
    normal = _column_normalizations(matched)
    out = {}
    for cell, csv in matched.items():
        scale = cell.unit.scale if cell.unit is not None else 1.0
        value = CellValue()
        if len(csv):
            row = csv.iloc[0]
            value.reported = _scaled(_number(row["value"]), scale)
            value.reported_std = _scaled(_number(row["std"]), scale)
            value.ambiguity = _ambiguity(row["note"])
        if reproduced is not None and rows and cell.method in rows:
            experiment = reproduced.manifest.experiment(rows[cell.method])
            keys = dict(cell.keys)
            normalization = keys.get("normalization") or (str(csv.iloc[0]["normalization"]) if len(csv) else
                                                          normal.get(cell.column, ""))
            got = reproduced.value(experiment, Quantity.of(cell), normalization, cell.unit)
            if got is not None:
                value.reproduced, value.reproduced_std = _scaled(got[0], scale), _scaled(got[1], scale)
                value.seeds = experiment.seeds
        out[cell] = value
    return out


def find_value(values: dict[Cell, CellValue], layout: TableLayout, method: str, column: str,
               section: str | None = None) -> CellValue:
    """The value of ``method``'s cell under the column labelled ``column`` (in the section labelled ``section``
    when the method sits in several)."""
    found = [v for c, v in values.items() if c.method == method and layout.column(c.column).label == column
             and (section is None or layout.sections[c.section].label == section)]
    if len(found) != 1:
        raise KeyError(f"{layout.paper} {layout.table}: {len(found)} cells for {method!r} / {column!r} / {section!r}")
    return found[0]


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _column_normalizations(matched: dict[Cell, pd.DataFrame]) -> dict[str, str]:
    """Per column, the normalisation most of its reported numbers use (for a reproduced cell the paper left
    empty)."""
    seen: dict[str, list[str]] = {}
    for cell, csv in matched.items():
        seen.setdefault(cell.column, []).extend(str(n) for n in csv["normalization"] if isinstance(n, str))
    return {column: max(set(norms), key=norms.count) for column, norms in seen.items() if norms}


def _decimals(cell: Cell) -> int:
    if cell.unit is not None:
        return cell.unit.decimals
    return {"AUC": 4, "params": 3, "count": 0, "MSE_boundary_heatmap": 6}.get(dict(cell.keys)["metric"], 2)


def _fmt(value: float | None, std: float | None, digits: int, over_seeds: bool = False) -> str:
    """``4.27 (0.61)`` with a std over images, ``4.27 ± 0.03`` with a std over seeds (``over_seeds``)."""
    if value is None:
        return MISSING
    text = f"{value:.{digits}f}"
    if std is None or math.isnan(std):
        return text
    return f"{text} ± {std:.{digits}f}" if over_seeds else f"{text} ({std:.{digits}f})"


@dataclass
class _Marks:
    """Footnote numbers of the ambiguity notes of one table, in order of first use."""

    notes: list[str]

    def mark(self, note: str | None) -> str:
        if note is None:
            return ""
        if note not in self.notes:
            self.notes.append(note)
        return f" †{self.notes.index(note) + 1}"


def _texts(cell: Cell, value: CellValue, marks: _Marks, with_reproduced: bool) -> list[str]:
    digits = _decimals(cell)
    reported = _fmt(value.reported, value.reported_std, digits) + marks.mark(value.ambiguity)
    if not with_reproduced:
        return [reported]
    delta = MISSING if value.delta is None else f"{value.delta:+.{digits}f}"
    return [reported, _fmt(value.reproduced, value.reproduced_std, digits, value.seeds > 1), delta]


CONVENTION_WORDS = {"mac": "MACs", "2mac": "2 x MACs"}


def _header_label(layout: TableLayout, column_id: str) -> str:
    """The column's label, with the FLOPs convention its cells are counted in. Where rows override it (GlomFace's
    Table 6 copies MAC counts from PropNet beside its own 2 x MAC counts) the header names each convention with
    the rows that use it, so no reader takes the reproduced 2 x MAC numbers for MACs."""
    column = layout.column(column_id)
    if column.unit is None or not column.unit.flops_convention:
        return column.label
    by_convention: dict[str, list[str]] = {}
    for section in layout.sections:
        if section.columns is not None and column_id not in section.columns:
            continue
        for row in section.rows:
            unit = row.unit or column.unit
            by_convention.setdefault(unit.flops_convention, []).append(row.method)
    if len(by_convention) <= 1:
        return f"{column.label} [{CONVENTION_WORDS[column.unit.flops_convention]}]"
    default = column.unit.flops_convention
    others = "; ".join(f"{CONVENTION_WORDS[c]}: {', '.join(rows)}" for c, rows in by_convention.items() if c != default)
    return f"{column.label} [{CONVENTION_WORDS[default]}; {others}]"


def _blocks(layout: TableLayout) -> list[list[int]]:
    """Consecutive sections printing the same columns share one printed table; a new column set (the second
    block of a two-block table) starts another, with its own header, as the paper prints it."""
    blocks: list[list[int]] = []
    for i, section in enumerate(layout.sections):
        if blocks and layout.sections[blocks[-1][0]].columns == section.columns:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def _printed_rows(layout: TableLayout, block: list[int]) -> list[tuple[int, int]]:
    return [(s, r) for s in block for r in range(len(layout.sections[s].rows))]


def build_tables(layout: TableLayout, values: dict[Cell, CellValue], with_reproduced: bool) -> list[Table]:
    """The printed table(s) of ``layout``: one per block, rows and columns as the paper prints them (methods
    across for a ``transposed`` table)."""
    marks, tables = _Marks([]), []
    by_place = {(c.section, c.row, c.column): (c, v) for c, v in values.items()}
    kinds = KINDS if with_reproduced else ("",)
    for block in _blocks(layout):
        columns = layout.columns_of(layout.sections[block[0]])
        places = _printed_rows(layout, block)
        grid: dict[tuple[int, str], list[str]] = {}
        for s, r in places:
            for column in columns:
                found = by_place.get((s, r, column.id))
                grid[(s, r), column.id] = [MISSING] * len(kinds) if found is None else _texts(*found, marks,
                                                                                              with_reproduced)
        method = lambda s, r: layout.sections[s].rows[r].method  # noqa: E731
        if layout.transposed:
            table = _transposed(layout, places, columns, grid, kinds, method)
        else:
            table = _upright(layout, block, places, columns, grid, kinds, method)
        tables.append(table)
    if marks.notes:
        tables[-1].notes += [f"†{i}: {note}" for i, note in enumerate(marks.notes, 1)]
    return tables


def _upright(layout, block, places, columns, grid, kinds, method) -> Table:
    stub = layout.stub or ""
    leaves = [stub] + [kind or _header_label(layout, c.id) for c in columns for kind in kinds]
    groups = []
    if any(c.group for c in columns):
        groups.append([("", 1)] + _spans([c.group or "" for c in columns], len(kinds)))
    if len(kinds) > 1:
        groups.append([("", 1)] + [(_header_label(layout, c.id), len(kinds)) for c in columns])
    rows = [[method(s, r)] + [text for c in columns for text in grid[(s, r), c.id]] for s, r in places]
    sections, start = [], 0
    for s in block:
        label = layout.sections[s].label
        if label:
            sections.append((start, label))
        start += len(layout.sections[s].rows)
    return Table(layout.table, leaves, rows, groups, sections)


def _transposed(layout, places, columns, grid, kinds, method) -> Table:
    stub = layout.stub or ""
    leaves = [stub] + [kind or method(s, r) for s, r in places for kind in kinds]
    groups = [[("", 1)] + [(method(s, r), len(kinds)) for s, r in places]] if len(kinds) > 1 else []
    rows = [[_header_label(layout, c.id)] + [text for place in places for text in grid[place, c.id]]
            for c in columns]
    return Table(layout.table, leaves, rows, groups)


def _spans(labels: list[str], width: int) -> list[tuple[str, int]]:
    """Runs of equal labels as (label, span x width)."""
    spans: list[tuple[str, int]] = []
    for label in labels:
        if spans and spans[-1][0] == label:
            spans[-1] = (label, spans[-1][1] + width)
        else:
            spans.append((label, width))
    return spans


def _reproduced_lines(reproduced: Reproduced, rows: dict[str, str], datasets: set[str]) -> list[str]:
    """How each reproduced row was obtained (or that it was not run yet), for the tests that fill ``datasets``."""
    lines = []
    for method, name in rows.items():
        experiment = reproduced.manifest.experiment(name)
        tests = [t for t in experiment.tests if t.dataset in datasets or set(t.datasets) & datasets]
        for spec in tests or experiment.tests:
            records = reproduced.runs(experiment, spec)
            if not records:
                lines.append(f"Reproduced {method}: experiment `{name}`, test `{spec.name}`: not run yet.")
                continue
            record = records[0]
            p, tag = record["protocol"], record.get("experiment", {})
            sizes = ", ".join(f"{s} {int(v['n'])}" for s, v in record["metrics"][p["primary_normalizer"]].items())
            fit = tag.get("fit", {})
            ids = ", ".join(f"`{r['record_id']}`" for r in records)
            used = ", ".join(str((r.get("experiment") or {}).get("seed")) for r in records)
            seeds = (f"mean ± standard deviation (n - 1) over {len(records)} seeds (of {experiment.seeds}; seeds "
                     f"{used}), each re-scored from its own predictions" if experiment.seeds > 1 else "one training")
            # An experiment without a fit (a cost-only row, a pretrained peer) selected no checkpoint.
            selection = (f"checkpoint selected on the validation split by {fit.get('monitor', '?')} "
                         f"({fit.get('mode', '?')}) after {fit.get('epochs', '?')} epochs" if experiment.fit
                         else "not trained here (the manifest's fit: false)")
            lines.append(
                f"Reproduced {method}: experiment `{name}`, test set `{record['test_set']}` ({sizes}); "
                f"{protocol_words(p)}; {selection}; {tag.get('world_size', 1)} "
                f"process(es), total batch {tag.get('total_batch')}; {seeds}; record(s) {ids}.")
    return lines


def table_section(layout: TableLayout, references: pd.DataFrame, reproduced: Reproduced | None = None,
                  rows: dict[str, str] | None = None, synthetic: bool = False) -> Section:
    """One paper table as a document section: caption, how the numbers were obtained, the printed table(s)."""
    values = table_values(layout, references, reproduced, rows)
    with_reproduced = reproduced is not None and bool(rows)
    title = f"{layout.paper.upper()} {layout.table}" + (" (synthetic)" if synthetic and with_reproduced else "")
    section = Section(title, slug(title), table_titles="none")
    section.lines.append(f"{layout.table}: {layout.caption}")
    csv = references[(references.paper == layout.paper) & (references.table == layout.table)]
    norms = ", ".join(sorted({str(n) for n in csv.normalization if isinstance(n, str)})) or "n/a"
    section.lines.append(f"Reported: normalisation {norms}; numbers in the paper's printed units; the paper's std "
                         "over images in parentheses where it gives one.")
    if with_reproduced:
        section.lines += _reproduced_lines(reproduced, rows, {str(dict(c.keys).get("dataset")) for c in values})
    section.tables = build_tables(layout, values, with_reproduced)
    return section


def paper_sections(paper: str, manifest: Manifest | None = None, results: Path | None = None,
                   synthetic: bool = False, references: pd.DataFrame | None = None,
                   tables: Sequence[str] | None = None) -> list[Section]:
    """Every table of ``paper`` (its CSV key; only ``tables`` if given), in the paper's order; rows the manifest
    maps are reproduced from the records under ``results``."""
    references = load_references() if references is None else references
    reproduced = Reproduced(manifest, results) if manifest is not None and results is not None else None
    maps = {spec.table: spec.rows for spec in manifest.tables} if manifest is not None else {}
    layouts = load_layouts()
    unknown = sorted(set(tables or ()) - {layout.table for layout in layouts.of(paper)})
    if unknown:
        raise KeyError(f"{paper} has no table(s) {unknown}; it has {[t.table for t in layouts.of(paper)]}")
    return [table_section(layout, references, reproduced, maps.get(layout.table), synthetic)
            for layout in layouts.of(paper) if tables is None or layout.table in tables]


def paper_document(paper: str, manifest: Manifest | None = None, results: Path | None = None,
                   synthetic: bool = False, references: pd.DataFrame | None = None,
                   tables: Sequence[str] | None = None, command: str = "python -m leaderboard paper-tables",
                   out_dir: Path | None = None) -> Document:
    """The document of :func:`paper_sections`, titled and marked SYNTHETIC DATA where it is; then, with records
    and an ``out_dir`` for their PNGs, the manifest's figures (``leaderboard.figures``)."""
    title = f"{manifest.title if manifest else paper.upper()}: paper tables" + (" (SYNTHETIC DATA)" if synthetic
                                                                                else "")
    sections = paper_sections(paper, manifest, results, synthetic, references, tables)
    return Document(title, sections + figure_sections(manifest, results, out_dir, synthetic), command=command,
                    warning=SYNTHETIC_WARNING if synthetic else None)


def write_paper_tables(paper: str, out_dir: Path, manifest: Manifest | None = None, results: Path | None = None,
                       synthetic: bool = False) -> dict[str, Path]:
    """``out_dir/tables.{md,tex,html}`` of every table of ``paper``, then its figures (PNGs under figures/)."""
    return write_document(paper_document(paper, manifest, results, synthetic, out_dir=out_dir), Path(out_dir), "tables")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard paper-tables", description=__doc__.splitlines()[0])
    parser.add_argument("paper", choices=PAPERS, help="the paper whose tables to render")
    parser.add_argument("--out", type=Path, help="output folder (default: results/paper-tables/<paper>)")
    parser.add_argument("--results", type=Path, default=Path("results/reproduce"),
                        help="where `reproduce` wrote its records (RESULTS/<paper>/<data>/)")
    parser.add_argument("--data", choices=("real", "synthetic"), default="real",
                        help="which reproduction to show beside the reported numbers")
    args = parser.parse_args(argv)
    manifest = None
    if args.paper in available_papers():
        try:
            manifest = load_manifest(args.paper).for_data(args.data)
        except ManifestError as error:
            print(f"paper-tables: {error}", file=sys.stderr)
            return 2
    folder = args.results / args.paper / args.data
    results = folder if manifest is not None and (folder / "records").is_dir() else None
    out = args.out or Path("results/paper-tables") / args.paper
    paths = write_paper_tables(args.paper, out, manifest, results, synthetic=results is not None and
                               args.data == "synthetic")
    shown = f"reproduced from {folder}" if results is not None else "reported numbers only (no records found)"
    print(f"{args.paper}: {len(load_layouts().of(args.paper))} tables, {shown}")
    for path in paths.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
