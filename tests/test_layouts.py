"""Paper table layouts (leaderboard/layouts.py, references/table_layouts.yaml) against the reference CSV.

Expected numbers, orders and headers below are typed from the paper texts (../shared/papers), not taken from
the code under test.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leaderboard.layouts import LAYOUTS, LayoutError, Layouts, TableLayout, load_layouts

CSV = LAYOUTS.parent / "paper_results.csv"  # the project copy, never ../shared


@pytest.fixture(scope="module")
def refs() -> pd.DataFrame:
    return pd.read_csv(CSV)


@pytest.fixture(scope="module")
def layouts() -> Layouts:
    return load_layouts()


def _values(layout: TableLayout, refs: pd.DataFrame, section: int, method: str) -> list[float | None]:
    """The reported numbers of one printed row, left to right (None where the paper prints "-")."""
    cells = layout.match(refs)
    return [None if frame.empty else float(frame.value.iloc[0])
            for cell, frame in cells.items() if cell.section == section and cell.method == method]


def _methods(layout: TableLayout) -> list[str]:
    return [row.method for section in layout.sections for row in section.rows]


def test_every_csv_row_lands_in_one_cell(refs: pd.DataFrame, layouts: Layouts) -> None:
    layouts.validate_against(refs)
    assert {(t.paper, t.table) for t in layouts} == set(zip(refs.paper, refs.table, strict=True))
    placed = [i for t in layouts for frame in t.match(refs).values() for i in frame.index]
    assert sorted(placed) == sorted(refs.index)


def test_orders_agree_with_the_csv_transcription(refs: pd.DataFrame, layouts: Layouts) -> None:
    """The CSV was transcribed from the same papers independently, rows in printed order; its column order is
    the printed one except in the tables the review found reordered (their printed order is checked by hand
    below). If the CSV is re-ordered one day, check the paper before touching the layout."""
    reordered = {("glomface", "Table 3"), ("tab", "Table 3"), ("tab", "Table 4")}
    for table in layouts:
        cells = {c: f for c, f in table.match(refs).items() if not f.empty}
        for s, section in enumerate(table.sections):
            first = sorted((f.index[0], c.method) for c, f in cells.items() if c.section == s)
            printed = list(dict.fromkeys(r.method for r in section.rows if not r.empty))
            assert list(dict.fromkeys(m for _, m in first)) == printed, (table.paper, table.table, section.label)
        first_use = sorted((min(f.index[0] for c, f in cells.items() if c.column == col.id), col.id)
                           for col in table.columns if not col.empty)
        if (table.paper, table.table) not in reordered:
            assert [i for _, i in first_use] == [c.id for c in table.columns if not c.empty], table.table


def test_tab_table2_keeps_both_normalisations(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("tab", "Table 2")
    assert [(s.label, s.normalization) for s in table.sections] == [
        ("Inter-pupil Normalization", "inter-pupil"), ("Inter-ocular Normalization", "inter-ocular")]
    assert [c.label for c in table.columns] == ["Common Subset", "Challenging Subset", "Fullset"]
    for section in table.sections:
        assert {"LAB", "AWing", "TAB"} <= {r.method for r in section.rows}
    assert _values(table, refs, 0, "LAB") == [3.42, 6.98, 4.12]
    assert _values(table, refs, 0, "TAB") == [3.81, 6.76, 4.39]
    assert _values(table, refs, 1, "TAB") == [2.75, 4.68, 3.13]
    assert _values(table, refs, 1, "TAB*") == [2.75, 4.74, 3.14]
    assert [r.method for r in table.sections[1].rows][-2:] == ["TAB*", "TAB"]


def test_propnet_table2_keeps_both_normalisations(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("propnet", "Table 2")
    assert [s.normalization for s in table.sections] == ["inter-pupil", "inter-ocular"]
    for section in table.sections:
        assert {"LAB", "AWing", "PropNet"} <= {r.method for r in section.rows}
    assert _values(table, refs, 0, "PropNet") == [3.70, 5.75, 4.10]
    assert _values(table, refs, 1, "PropNet") == [2.67, 3.99, 2.93]
    assert _values(table, refs, 0, "LAB") == [4.20, 7.41, 4.92]
    assert _values(table, refs, 1, "LAB") == [2.98, 5.19, 3.49]


def test_glomface_table4_keeps_ocular_and_bbox(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("glomface", "Table 4")
    assert [(s.label, s.normalization) for s in table.sections] == [
        ("NME_ocular", "inter-ocular"), ("NME_bbx", "bbox")]
    assert _values(table, refs, 0, "GlomFace") == [4.21, 0.79]
    assert _values(table, refs, 1, "GlomFace") == [2.09, 0.39]
    assert _values(table, refs, 1, "LUVLi") == [2.75, None]
    # ODN is printed twice in the paper; both printings hold its numbers
    assert [r.method for r in table.sections[0].rows].count("ODN") == 2
    odn = [frame.index[0] for cell, frame in table.match(refs).items() if cell.method == "ODN" and not frame.empty]
    assert len(set(odn)) == 4


def test_tab_table3_columns_in_printed_order(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("tab", "Table 3")
    got = [(dict(c.keys).get("metric"), dict(c.keys).get("threshold")) for c in table.columns]
    assert got == [("NME", None), ("AUC", 8.0), ("FR", 8.0), ("NME", None), ("AUC", 10.0), ("FR", 10.0)]
    assert [c.label for c in table.columns] == ["NME (%)", "AUC@8% (%)", "FR@8% (%)",
                                                "NME (%)", "AUC@10% (%)", "FR@10% (%)"]
    # each block prints its own three columns; AWing's NME is printed in both blocks
    first, second = (table.columns_of(s) for s in table.sections)
    assert [c.id for c in first + second] == [c.id for c in table.columns]
    awing = {cell.column: frame for cell, frame in table.match(refs).items() if cell.method == "AWing"}
    assert float(awing["NME 8"].value.iloc[0]) == float(awing["NME 10"].value.iloc[0]) == 3.56
    assert awing["NME 8"].index[0] != awing["NME 10"].index[0]
    assert table.columns[1].unit.format(0.5520) == "55.20"


def test_tab_table4_rows_and_columns_as_printed(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("tab", "Table 4")
    assert _methods(table) == ["Human", "Wu et al.", "RAR", "DAC-CSR", "SHN", "PCD-CNN", "Wing", "AWing", "TAB",
                               "DCFE", "AWing", "TAB"]
    assert [r.method for r in table.sections[1].rows] == ["DCFE", "AWing", "TAB"]
    assert [c.label for c in table.columns] == ["NME", "AUC@10%", "FR@10%", "NME", "AUC@8%", "FR@8%"]
    assert _values(table, refs, 1, "DCFE") == [5.27, 0.3586, 7.29]
    assert _values(table, refs, 0, "TAB") == [4.39, 0.5614, 0.20]
    assert _values(table, refs, 1, "TAB") == [4.39, 0.4529, 0.79]


def test_glomface_table3_column_order(layouts: Layouts) -> None:
    table = layouts.get("glomface", "Table 3")
    assert [c.label for c in table.columns] == ["NME_pupil", "FR@8%", "FR@10%"]


def test_units_for_params_and_flops(refs: pd.DataFrame, layouts: Layouts) -> None:
    table = layouts.get("propnet", "Table 8")
    cells = table.match(refs)
    params = next(c for c in cells if c.method == "PropNet" and c.column == "#params (M)")
    assert (params.unit.format(float(cells[params].value.iloc[0])), params.unit.printed) == ("36.30", "M")
    flops = next(c for c in cells if c.method == "PropNet" and c.column == "FLOPS (G)")
    assert (flops.unit.format(float(cells[flops].value.iloc[0])), flops.unit.flops_convention) == ("42.83", "mac")
    glom = {c.method: c.unit.flops_convention for c in layouts.get("glomface", "Table 6").cells()}
    assert glom == {"LAB": "mac", "AWing": "mac", "PropNet": "mac",
                    "GlomFace (t=4, i=5)": "2mac", "GlomFace (t=1, i=5)": "2mac"}


def test_units_reproduce_the_printed_numbers_in_the_csv_notes(refs: pd.DataFrame, layouts: Layouts) -> None:
    """Where the CSV note quotes the printed number ("AUC printed in percent (32.35)", "printed as fraction
    0.0298", '"#params (M)" = 36.30'), the cell's unit turns the stored value back into it."""
    printed = re.compile(r'printed (?:in percent \(|as (?:fraction )?|"#params \(M\)" = )([0-9.]+)')
    checked = 0
    for table in layouts:
        for cell, frame in table.match(refs).items():
            for row in frame.itertuples():
                quoted = printed.search(row.note)
                if quoted:
                    assert cell.unit is not None, (table.paper, table.table, cell.method, cell.column)
                    assert cell.unit.format(row.value) == quoted.group(1), (table.paper, table.table, cell)
                    checked += 1
    assert checked >= 90


def test_transposed_tables(layouts: Layouts) -> None:
    got = {(t.paper, t.table) for t in layouts if t.transposed}
    assert got == {("mhhn", "Table V"), ("mhhn", "Table VI"), ("mhhn", "Table VII"), ("pwc", "Table 2"),
                   *(("propnet", f"Table {i}") for i in range(4, 9))}


def test_empty_rows_and_columns_are_marked(refs: pd.DataFrame, layouts: Layouts) -> None:
    sigma = layouts.get("mhhn", "Table VI").sections[0].rows
    assert [(r.method, r.empty) for r in sigma][0] == ("HGs+HSR (sigma=2)", True)
    assert [c.label for c in layouts.get("glomface", "Table 1").columns if c.empty] == ["Backbone"]


# --- synthetic layouts: the validator must catch each kind of mismatch ---------------------------------------

def _csv(*rows: tuple) -> pd.DataFrame:
    columns = ["paper", "table", "dataset", "subset", "method", "metric", "normalization", "threshold", "value"]
    return pd.DataFrame([("p", "T", "D", "all", *r) for r in rows], columns=columns)


def _load(tmp_path: Path, text: str) -> Layouts:
    path = tmp_path / "layouts.yaml"
    path.write_text(textwrap.dedent(text))
    return load_layouts(path)


SMALL = """
p:
  T:
    caption: toy
    dataset: D
    subset: all
    columns:
      - {label: NME, metric: NME}
      - {label: FR, metric: FR, threshold: 10}
    sections:
      - label: null
        rows: [A, B]
"""
GOOD = [("A", "NME", "inter-ocular", None, 1.0), ("A", "FR", "inter-ocular", 10.0, 2.0),
        ("B", "NME", "inter-ocular", None, 3.0)]


def _problems(layouts: Layouts, refs: pd.DataFrame) -> str:
    with pytest.raises(LayoutError) as error:
        layouts.validate_against(refs)
    return str(error.value)


def test_small_layout_validates_and_looks_up(tmp_path: Path) -> None:
    layouts = _load(tmp_path, SMALL)
    refs = _csv(*GOOD)
    layouts.validate_against(refs)
    table = layouts.get("p", "T")
    cells = table.cells()
    assert [(c.method, c.column) for c in cells] == [("A", "NME"), ("A", "FR"), ("B", "NME"), ("B", "FR")]
    assert list(table.lookup(refs, cells[1]).value) == [2.0]
    assert table.lookup(refs, cells[3]).empty


def test_csv_row_without_cell(tmp_path: Path) -> None:
    text = _problems(_load(tmp_path, SMALL), _csv(*GOOD, ("B", "AUC", "inter-ocular", 10.0, 0.5)))
    assert "p T: CSV row 3 (B, dataset=D, subset=all, metric=AUC" in text and "falls in no cell" in text


def test_cell_hit_twice(tmp_path: Path) -> None:
    # the section sets no normalisation, so B's two normalisations fall in one cell
    text = _problems(_load(tmp_path, SMALL), _csv(*GOOD, ("B", "NME", "inter-pupil", None, 4.0)))
    assert "p T: cell 'B' in section 1, column 'NME' (NME) is hit by CSV rows [2, 3]" in text


def test_unused_column_unless_marked_empty(tmp_path: Path) -> None:
    refs = _csv(*GOOD[::2])  # no FR at all
    assert "p T: column 'FR' (FR) holds no CSV number" in _problems(_load(tmp_path, SMALL), refs)
    _load(tmp_path, SMALL.replace("threshold: 10}", "threshold: 10, empty: true}")).validate_against(refs)


def test_unknown_method_and_unused_row(tmp_path: Path) -> None:
    text = _problems(_load(tmp_path, SMALL.replace("[A, B]", "[A, B, Foo]")), _csv(*GOOD))
    assert "p T: unknown method 'Foo' (section None)" in text
    empty = _load(tmp_path, SMALL.replace("[A, B]", "[A, B, {method: Foo, empty: true}]"))
    empty.validate_against(_csv(*GOOD))


def test_number_printed_twice_needs_two_cells(tmp_path: Path) -> None:
    refs = _csv(*GOOD, ("B", "NME", "inter-ocular", None, 3.0))
    assert "occurs 2 time(s) in the CSV but fits 1 cell(s)" in _problems(_load(tmp_path, SMALL), refs)
    twice = _load(tmp_path, SMALL.replace("[A, B]", "[A, B, {method: B, repeat: true}]"))
    twice.validate_against(refs)
    filled = {(c.row, c.column): list(f.index) for c, f in twice.get("p", "T").match(refs).items() if not f.empty}
    assert filled[(1, "NME")] == [2] and filled[(2, "NME")] == [3]


def test_normalisation_sections_split_a_method(tmp_path: Path) -> None:
    text = SMALL.replace("""      - label: null
        rows: [A, B]""", """      - {label: ocular, normalization: inter-ocular, rows: [A, B]}
      - {label: pupil, normalization: inter-pupil, rows: [B]}""")
    layouts = _load(tmp_path, text)
    refs = _csv(*GOOD, ("B", "NME", "inter-pupil", None, 4.0))
    layouts.validate_against(refs)
    cells = layouts.get("p", "T").match(refs)
    assert [float(f.value.iloc[0]) for c, f in cells.items() if c.method == "B" and not f.empty] == [3.0, 4.0]


def test_table_without_layout(tmp_path: Path) -> None:
    refs = pd.concat([_csv(*GOOD), _csv(("A", "NME", "bbox", None, 1.0)).assign(table="T9")], ignore_index=True)
    assert "p T9: the CSV has this table but no layout describes it" in _problems(_load(tmp_path, SMALL), refs)


@pytest.mark.parametrize("change, message", [
    (("[A, B]", "[A, B, A]"), "method 'A' is listed twice"),
    (("{label: NME, metric: NME}", "{label: NME, metric: NME, subset: all}"), "key 'subset' is set at two levels"),
    (("{label: NME, metric: NME}", "{label: NME, metric: NME, colour: red}"), "unknown field(s) ['colour']"),
    (("{label: NME, metric: NME}", "{label: NME, metric: FLOPs}"), "needs a unit with flops_convention"),
    (("rows: [A, B]", "columns: [XX]\n        rows: [A, B]"), "prints unknown column 'XX'"),
    (("{label: FR, metric: FR, threshold: 10}", "{label: NME, metric: FR, threshold: 10}"), "'NME' is used twice"),
])
def test_structure_errors_at_load(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(LayoutError, match=re.escape(message)):
        _load(tmp_path, SMALL.replace(*change))


def test_yaml_read_with_safe_loader(tmp_path: Path) -> None:
    with pytest.raises(yaml.YAMLError):
        _load(tmp_path, "p: !!python/object/apply:os.system ['true']\n")
