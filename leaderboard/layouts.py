"""How the papers print their tables, as data: ``references/table_layouts.yaml`` read into frozen dataclasses.

The reference CSV (``references/paper_results.csv``) holds one reported number per row but not how a table is
printed. Keying cells on (method, dataset, subset, metric) alone loses rows (a method printed under two
normalisations collapses into one) and takes the column order from the CSV instead of the paper. A
:class:`TableLayout` says it instead: the caption, the columns in printed order (header label, spanning group,
the CSV keys each matches, the unit the paper prints), and the row groups (:class:`Section`) in printed order,
each listing its CSV method names. A :class:`Cell` is (section, row, column); rows are keyed by section, so the
same method may sit in several sections.

A cell holds the CSV row whose method is the row's and whose keys equal the keys set on the table, the section
and the column (each key at one level only). ``threshold`` left unset means "empty in the CSV";
``normalization`` left unset means "any". Where the paper prints the same number twice (a repeated row, or the
NME of both blocks of a two-block table) the CSV has two identical rows; they fill their cells in order (the
k-th CSV row the k-th cell in printed order), which is the only rule that does not need the ``note`` column.

:meth:`Layouts.validate_against` checks every table against the CSV: every CSV row lands in exactly one cell,
no cell holds two rows, every row and column of a layout holds a number unless it is marked ``empty`` (printed
without numbers), and it names the paper, table, method and column of each problem. Rendering lives elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

LAYOUTS = Path(__file__).parent / "references" / "table_layouts.yaml"
KEYS = ("dataset", "subset", "metric", "threshold", "normalization")
REQUIRED = ("dataset", "subset", "metric")
FLOPS_CONVENTIONS = ("mac", "2mac")  # multiply-accumulates, or 2 FLOPs per multiply-accumulate
Keys = tuple[tuple[str, Any], ...]


class LayoutError(ValueError):
    """A layout that cannot be read, or that does not fit the reference CSV (all problems, one per line)."""


@dataclass(frozen=True)
class Unit:
    """How a CSV value converts to the number the paper prints: ``printed number = value * scale``.

    ``csv`` and ``printed`` name the two units in words ("parameter count" -> "M"); ``decimals`` is the printed
    precision. FLOPs carry ``flops_convention`` ("mac" or "2mac") and its ``source``, because papers count them
    differently and a reproduced number must be counted the same way to be comparable.
    """

    csv: str
    printed: str
    scale: float = 1.0
    decimals: int = 2
    flops_convention: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise LayoutError(f"unit {self.printed!r}: scale must be positive, not {self.scale}")
        if self.flops_convention not in (None, *FLOPS_CONVENTIONS):
            raise LayoutError(f"unit {self.printed!r}: flops_convention must be one of {FLOPS_CONVENTIONS}")

    def to_printed(self, value: float) -> float:
        """The CSV ``value`` in the paper's printed unit."""
        return value * self.scale

    def format(self, value: float) -> str:
        """The CSV ``value`` as the paper prints it (number only, at the printed precision)."""
        return f"{self.to_printed(value):.{self.decimals}f}"


@dataclass(frozen=True)
class Column:
    """One printed column: its header ``label``, optional spanning ``group``, the CSV keys it matches, the unit
    the paper prints (None: as the CSV stores it) and ``empty`` for a printed column without CSV numbers."""

    id: str
    label: str
    keys: Keys = ()
    group: str | None = None
    unit: Unit | None = None
    empty: bool = False


@dataclass(frozen=True)
class Row:
    """One printed row: the CSV ``method``; ``repeat`` where the paper prints the row a second time in its
    section; ``empty`` where it prints the row without numbers; ``unit`` overriding the column's unit."""

    method: str
    repeat: bool = False
    empty: bool = False
    unit: Unit | None = None


@dataclass(frozen=True)
class Section:
    """A row group in printed order: its ``label`` (None when unnamed), the CSV keys that define it (e.g. the
    normalisation), and the ids of the ``columns`` it prints (None: all; a block of a two-block table)."""

    label: str | None
    rows: tuple[Row, ...]
    keys: Keys = ()
    columns: tuple[str, ...] | None = None

    @property
    def normalization(self) -> str | None:
        """The CSV normalisation that defines this section (None: the section is not defined by one)."""
        return dict(self.keys).get("normalization")


@dataclass(frozen=True)
class Cell:
    """One (section, row, column) of a table: ``keys`` are the merged CSV keys (threshold always present)."""

    section: int
    row: int
    column: str
    method: str
    keys: Keys
    unit: Unit | None

    def describe(self, layout: TableLayout) -> str:
        """Where the cell is, in words, for error messages."""
        label = layout.sections[self.section].label
        where = f"section {label!r}" if label else f"section {self.section + 1}"
        return f"{self.method!r} in {where}, column {layout.column(self.column).label!r} ({self.column})"


@dataclass(frozen=True)
class TableLayout:
    """One printed table of one paper (see the module docstring); validates its own structure.

    ``keys`` are the CSV keys shared by every cell; ``stub`` is the printed header of the method column and
    ``section_stub`` that of a left column holding the section labels (None where the paper prints none);
    ``transposed`` says the paper prints the methods across and the columns down (the layout is still methods
    x columns, so code reads every table the same way).
    """

    paper: str
    table: str
    caption: str
    columns: tuple[Column, ...]
    sections: tuple[Section, ...]
    keys: Keys = ()
    stub: str | None = "Method"
    section_stub: str | None = None
    transposed: bool = False

    def __post_init__(self) -> None:
        problems = self._structure_problems()
        if problems:
            raise LayoutError("\n".join(f"{self.paper} {self.table}: {p}" for p in problems))

    def _structure_problems(self) -> list[str]:
        out: list[str] = []
        ids = [c.id for c in self.columns]
        out += [f"column id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        labels = [s.label for s in self.sections if s.label]
        out += [f"section label {s!r} is used twice" for s in sorted({s for s in labels if labels.count(s) > 1})]
        if not self.columns or not self.sections:
            out.append("a table needs columns and sections")
        for section in self.sections:
            out += [f"section {section.label!r} prints unknown column {c!r}" for c in section.columns or ()
                    if c not in ids]
            seen: set[str] = set()
            for row in section.rows:
                if row.method in seen and not row.repeat:
                    out.append(f"method {row.method!r} is listed twice in section {section.label!r}"
                               " (mark a row the paper prints twice with repeat: true)")
                if row.repeat and row.method not in seen:
                    out.append(f"method {row.method!r} is marked repeat before it appears in {section.label!r}")
                seen.add(row.method)
        try:
            cells = self.cells()
        except LayoutError as error:
            return [*out, str(error)]
        by_keys: dict[tuple, Cell] = {}
        for cell in cells:
            key = (cell.section, cell.row, cell.keys)
            if key in by_keys:
                out.append(f"columns {by_keys[key].column!r} and {cell.column!r} match the same CSV keys")
            by_keys[key] = cell
            keys = dict(cell.keys)
            if keys.get("metric") == "FLOPs" and (cell.unit is None or cell.unit.flops_convention is None):
                out.append(f"FLOPs cell {cell.describe(self)} needs a unit with flops_convention")
        return out

    def column(self, column_id: str) -> Column:
        """The column with id ``column_id``."""
        for column in self.columns:
            if column.id == column_id:
                return column
        raise KeyError(f"{self.paper} {self.table} has no column {column_id!r}")

    def columns_of(self, section: Section) -> tuple[Column, ...]:
        """The columns ``section`` prints, in printed order."""
        if section.columns is None:
            return self.columns
        return tuple(c for c in self.columns if c.id in section.columns)

    def cells(self) -> tuple[Cell, ...]:
        """Every cell that can hold a number, in printed order: section by section, row by row, left to right
        (for a ``transposed`` table this is the paper's column by column order)."""
        out = []
        for s, section in enumerate(self.sections):
            for r, row in enumerate(section.rows):
                if row.empty:
                    continue
                for column in self.columns_of(section):
                    if column.empty:
                        continue
                    keys = _merge((self.keys, section.keys, column.keys))
                    missing = [k for k in REQUIRED if k not in keys]
                    if missing:
                        raise LayoutError(f"column {column.id!r} of section {section.label!r} sets no "
                                          f"{', '.join(missing)}")
                    out.append(Cell(s, r, column.id, row.method, tuple(sorted(keys.items())),
                                    row.unit or column.unit))
        return tuple(out)

    def assign(self, references: pd.DataFrame) -> tuple[dict[Cell, list[Any]], list[str]]:
        """(cell -> index labels of its CSV rows, problems) for this table's rows of ``references``."""
        rows = references[(references.paper == self.paper) & (references.table == self.table)]
        name, problems = f"{self.paper} {self.table}", []
        if rows.empty:
            return {}, [f"{name}: the CSV has no rows for this table"]
        cells = self.cells()
        by_method: dict[str, list[Cell]] = {}
        for cell in cells:
            by_method.setdefault(cell.method, []).append(cell)
        groups: dict[tuple, list[Any]] = {}  # identical CSV rows (a number printed twice), in CSV order
        for index, row in rows.iterrows():
            groups.setdefault((row["method"], *(_csv(row, k) for k in KEYS)), []).append(index)
        assigned: dict[Cell, list[Any]] = {cell: [] for cell in cells}
        for (method, *values), indices in groups.items():
            csv = dict(zip(KEYS, values, strict=True))
            found = [c for c in by_method.get(method, []) if _fits(dict(c.keys), csv)]
            what = f"CSV row {indices[0]} ({method}, {', '.join(f'{k}={v}' for k, v in csv.items())})"
            if not found:
                problems.append(f"{name}: {what} falls in no cell")
            elif len(found) != len(indices):
                places = "; ".join(c.describe(self) for c in found)
                problems.append(f"{name}: {what} occurs {len(indices)} time(s) in the CSV but fits "
                                f"{len(found)} cell(s): {places}")
            else:  # one row, one cell; or a number printed k times: the k-th CSV row fills the k-th cell
                for cell, index in zip(found, indices, strict=True):
                    assigned[cell].append(index)
        for cell, indices in assigned.items():
            if len(indices) > 1:
                problems.append(f"{name}: cell {cell.describe(self)} is hit by CSV rows {indices}")
        return assigned, problems + self._usage_problems(assigned, set(rows["method"]))

    def _usage_problems(self, assigned: dict[Cell, list[Any]], methods: set[str]) -> list[str]:
        """Rows and columns that hold no CSV number although not marked ``empty``."""
        name, out = f"{self.paper} {self.table}", []
        hit = [c for c, indices in assigned.items() if indices]
        for s, section in enumerate(self.sections):
            for r, row in enumerate(section.rows):
                if row.empty:  # no cells: a CSV number for it falls in no cell and is reported there
                    continue
                if row.method not in methods:
                    out.append(f"{name}: unknown method {row.method!r} (section {section.label!r}): the CSV has "
                               f"no row of that name in this table")
                elif not any(c.section == s and c.row == r for c in hit):
                    out.append(f"{name}: row {row.method!r} of section {section.label!r} holds no CSV number")
        for column in self.columns:
            if not column.empty and not any(c.column == column.id for c in hit):
                out.append(f"{name}: column {column.label!r} ({column.id}) holds no CSV number")
        return out

    def match(self, references: pd.DataFrame) -> dict[Cell, pd.DataFrame]:
        """The CSV rows of every cell in printed order (an empty frame for a cell the paper prints as "-");
        raises :class:`LayoutError` if the table does not fit the CSV."""
        assigned, problems = self.assign(references)
        if problems:
            raise LayoutError("\n".join(problems))
        return {cell: references.loc[indices] for cell, indices in assigned.items()}

    def lookup(self, references: pd.DataFrame, cell: Cell) -> pd.DataFrame:
        """The CSV row(s) of one ``cell`` (at most one for a layout that validates)."""
        return self.match(references)[cell]


@dataclass(frozen=True)
class Layouts:
    """Every table layout of the five papers, in file order."""

    tables: tuple[TableLayout, ...]

    def __iter__(self) -> Iterator[TableLayout]:
        return iter(self.tables)

    def get(self, paper: str, table: str) -> TableLayout:
        """The layout of ``paper``'s ``table`` (the CSV's names)."""
        for layout in self.tables:
            if (layout.paper, layout.table) == (paper, table):
                return layout
        raise KeyError(f"no layout for {paper} {table!r}; {paper} has {[t.table for t in self.of(paper)]}")

    def of(self, paper: str) -> tuple[TableLayout, ...]:
        """The layouts of one paper, in file order."""
        return tuple(t for t in self.tables if t.paper == paper)

    def validate_against(self, references: pd.DataFrame) -> None:
        """Raise :class:`LayoutError` listing every mismatch between the layouts and ``references``."""
        problems = []
        named = {(t.paper, t.table) for t in self.tables}
        for paper, table in references[["paper", "table"]].drop_duplicates().itertuples(index=False):
            if (paper, table) not in named:
                problems.append(f"{paper} {table}: the CSV has this table but no layout describes it")
        for layout in self.tables:
            problems += layout.assign(references)[1]
        if problems:
            raise LayoutError(f"{len(problems)} problem(s):\n" + "\n".join(problems))


def load_layouts(path: Path = LAYOUTS) -> Layouts:
    """Read the layouts YAML (``yaml.safe_load``) into :class:`Layouts`."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return Layouts(tuple(_table(paper, name, spec) for paper, tables in raw.items() for name, spec in tables.items()))


def _fields(spec: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise LayoutError(f"{where}: expected a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise LayoutError(f"{where}: unknown field(s) {unknown}; allowed: {list(allowed)}")
    return spec


def _keys(spec: dict[str, Any]) -> Keys:
    """The CSV keys a table / section / column sets: threshold as a float, the others as text (None: empty)."""
    out = []
    for key in KEYS:
        if key in spec:
            value = spec[key]
            if value is not None:
                value = float(value) if key == "threshold" else str(value)
            out.append((key, value))
    return tuple(out)


def _unit(spec: Any, where: str) -> Unit | None:
    if spec is None:
        return None
    fields = _fields(spec, ("csv", "printed", "scale", "decimals", "flops_convention", "source"), where)
    return Unit(**{**fields, "scale": float(fields.get("scale", 1.0))})


def _row(spec: Any, where: str) -> Row:
    if isinstance(spec, str):
        return Row(spec)
    fields = _fields(spec, ("method", "repeat", "empty", "unit"), where)
    return Row(str(fields["method"]), bool(fields.get("repeat", False)), bool(fields.get("empty", False)),
               _unit(fields.get("unit"), f"{where} {fields['method']}"))


def _table(paper: str, name: str, spec: Any) -> TableLayout:
    where = f"{paper} {name}"
    spec = _fields(spec, ("caption", "stub", "section_stub", "transposed", "columns", "sections", *KEYS), where)
    columns = []
    for c in spec.get("columns") or ():
        c = _fields(c, ("id", "label", "group", "unit", "empty", *KEYS), f"{where} column")
        label = str(c["label"])
        columns.append(Column(str(c.get("id", label)), label, _keys(c), c.get("group"),
                              _unit(c.get("unit"), f"{where} column {label}"), bool(c.get("empty", False))))
    sections = []
    for s in spec.get("sections") or ():
        s = _fields(s, ("label", "rows", "columns", *KEYS), f"{where} section")
        shown = None if s.get("columns") is None else tuple(str(c) for c in s["columns"])
        label = None if s.get("label") is None else str(s["label"])
        sections.append(Section(label, tuple(_row(r, f"{where} row") for r in s.get("rows") or ()),
                                _keys(s), shown))
    return TableLayout(paper, str(name), " ".join(str(spec.get("caption", "")).split()), tuple(columns),
                       tuple(sections), _keys(spec), spec.get("stub", "Method"), spec.get("section_stub"),
                       bool(spec.get("transposed", False)))


def _merge(levels: tuple[Keys, ...]) -> dict[str, Any]:
    """The keys of table, section and column in one mapping; a key set at two levels is an error."""
    merged: dict[str, Any] = {"threshold": None}
    set_by: set[str] = set()
    for keys in levels:
        for key, value in keys:
            if key in set_by:
                raise LayoutError(f"key {key!r} is set at two levels (table / section / column)")
            set_by.add(key)
            merged[key] = value
    return merged


def _csv(row: pd.Series, key: str) -> Any:
    value = row[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if key == "threshold" else str(value)


def _fits(cell: dict[str, Any], csv: dict[str, Any]) -> bool:
    """A CSV row's keys fit a cell's: every key the cell sets is equal (an unset normalization fits any)."""
    return all(csv[key] == value for key, value in cell.items())
