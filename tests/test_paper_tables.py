"""Paper tables as printed: header and row order of every table against its layout, every reported number present,
units, ambiguity footnotes, normalisation sections re-scored separately, golden Markdown for one table of each
paper, and the ``python -m leaderboard paper-tables`` command.

Regenerate the golden files with ``UPDATE_GOLDEN=1 python -m pytest tests/test_paper_tables.py``, then read them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import fixture_predictions, fixture_record
from runner_fixtures import tiny_manifest

from leaderboard.document import to_html, to_latex, to_markdown
from leaderboard.layouts import load_layouts
from leaderboard.manifest import load_manifest
from leaderboard.paper_tables import (
    KINDS,
    PAPERS,
    Reproduced,
    build_tables,
    find_value,
    load_references,
    main,
    paper_document,
    table_values,
)
from leaderboard.store import write_record

GOLDEN = Path(__file__).parent / "data" / "golden" / "paper_tables"
GOLDEN_TABLES = {"glomface": "Table 4", "mhhn": "Table II", "pwc": "Table 2", "propnet": "Table 8", "tab": "Table 3"}
LAYOUTS = load_layouts()
REFERENCES = load_references()


def every_table():
    return [pytest.param(t, id=f"{t.paper}-{t.table}") for t in LAYOUTS]


@pytest.mark.parametrize("layout", every_table())
def test_header_and_row_order_follow_the_layout(layout):
    """Leaf headers and row stubs of the rendered table(s), read back, equal the layout's printed order."""
    tables = build_tables(layout, table_values(layout, REFERENCES), with_reproduced=False)
    blocks, start = [], 0
    for table in tables:  # consecutive sections printing the same columns share one printed table
        n = len(table.rows) if not layout.transposed else len(table.columns) - 1
        rows = []
        while len(rows) < n:
            rows += [row.method for row in layout.sections[start].rows]
            start += 1
        blocks.append(rows)
        columns = layout.columns_of(layout.sections[start - 1])
        labels = [c.label for c in columns]
        if layout.transposed:
            assert table.columns[1:] == rows and [r[0].split(" [")[0] for r in table.rows] == labels
        else:
            assert [r[0] for r in table.rows] == rows
            assert [c.split(" [")[0] for c in table.columns[1:]] == labels  # FLOPs headers add the convention
            assert [label for _, label in table.sections] == [
                s.label for s in layout.sections if s.label and [r.method for r in s.rows][0] in rows]
    assert sum(len(b) for b in blocks) == sum(len(s.rows) for s in layout.sections)


@pytest.mark.parametrize("layout", every_table())
def test_every_reported_number_is_printed(layout):
    """Each CSV number of the table appears, converted to the printed unit, in its row of the rendered table."""
    values = table_values(layout, REFERENCES)
    csv = REFERENCES[(REFERENCES.paper == layout.paper) & (REFERENCES.table == layout.table)]
    reported = [v for v in values.values() if v.reported is not None]
    assert len(reported) == csv.value.notna().sum()
    text = "\n".join(" ".join(row) for table in build_tables(layout, values, False) for row in table.rows)
    matched = layout.match(REFERENCES)
    for cell, value in values.items():
        if value.reported is not None:
            scale = cell.unit.scale if cell.unit is not None else 1.0
            original = float(matched[cell].iloc[0]["value"]) * scale  # straight from the CSV row
            assert value.reported == pytest.approx(original)
            digits = cell.unit.decimals if cell.unit else {"AUC": 4, "params": 3, "count": 0}.get(
                dict(cell.keys)["metric"], 2)
            assert f"{original:.{digits}f}" in text


def test_two_normalisation_sections_keep_every_row():
    """TAB Table 2 prints LAB, AWing and TAB under both normalisations: neither section overwrites the other."""
    layout = LAYOUTS.get("tab", "Table 2")
    values = table_values(layout, REFERENCES)
    pupil, ocular = "Inter-pupil Normalization", "Inter-ocular Normalization"
    assert [find_value(values, layout, "TAB", c, pupil).reported for c in
            ("Common Subset", "Challenging Subset", "Fullset")] == [3.81, 6.76, 4.39]
    assert [find_value(values, layout, "LAB", c, pupil).reported for c in
            ("Common Subset", "Challenging Subset", "Fullset")] == [3.42, 6.98, 4.12]
    assert find_value(values, layout, "TAB", "Fullset", ocular).reported == 3.13
    rows = [r[0] for r in build_tables(layout, values, False)[0].rows]
    assert rows.count("LAB") == rows.count("AWing") == rows.count("TAB") == 2


def test_units_are_the_papers():
    layout = LAYOUTS.get("propnet", "Table 8")
    table = build_tables(layout, table_values(layout, REFERENCES), False)[0]
    assert table.rows[0] == ["#params (M)", "12.29", "24.15", "36.30"]
    assert table.rows[1][0] == "FLOPS (G) [MACs]"
    glom = LAYOUTS.get("glomface", "Table 6")
    conventions = {c.method: c.unit.flops_convention for c in table_values(glom, REFERENCES)
                   if dict(c.keys)["metric"] == "FLOPs"}
    assert conventions["PropNet"] == "mac" and conventions["GlomFace (t=4, i=5)"] == "2mac"
    # The header names both conventions, and which rows count 2 per MAC.
    header = build_tables(glom, table_values(glom, REFERENCES), False)[0].columns[1]
    assert header == "FLOPS [MACs; 2 x MACs: GlomFace (t=4, i=5), GlomFace (t=1, i=5)]"


def test_ambiguous_numbers_carry_a_mark_and_the_note():
    layout = LAYOUTS.get("tab", "Table 5")
    tables = build_tables(layout, table_values(layout, REFERENCES), False)
    marked = [cell for row in tables[0].rows for cell in row if "†1" in cell]
    assert marked and all(not cell.startswith("†") for cell in marked)
    assert tables[-1].notes and tables[-1].notes[0].startswith("†1: AMBIGUOUS threshold")


def test_each_section_is_rescored_with_its_own_normaliser(tmp_path):
    """A manifest row mapped to TAB (printed under both normalisations) is re-scored under each: inter-pupil in
    one section, inter-ocular in the other, each equal to a numpy NME of the stored predictions."""
    manifest = load_manifest(tiny_manifest(tmp_path))
    preds = fixture_predictions(3)
    record = fixture_record(preds) | {"experiment": {"paper": "tiny", "name": "hg-300w", "test": "300w",
                                                    "data": "synthetic"}}
    preds["normalizers"] = np.array(["inter_ocular", "inter_pupil"])  # the fixture's second column, renamed
    record["metrics"]["inter_pupil"] = record["metrics"].pop("bbox")
    write_record(record, preds, tmp_path / "res")
    layout = LAYOUTS.get("tab", "Table 2")
    values = table_values(layout, REFERENCES, Reproduced(manifest, tmp_path / "res"), {"TAB": "hg-300w"})
    error = np.linalg.norm(preds["pred"] - preds["target"], axis=-1).mean(1)
    for section, normaliser in (("Inter-pupil Normalization", "inter_pupil"),
                                ("Inter-ocular Normalization", "inter_ocular")):
        nme = error / preds["norm"][:, list(preds["normalizers"]).index(normaliser)] * 100
        assert find_value(values, layout, "TAB", "Fullset", section).reproduced == pytest.approx(nme.mean())
    table = build_tables(layout, values, True)[0]
    assert table.columns[1:4] == list(KINDS) and table.groups[-1][1] == ("Common Subset", 3)


@pytest.mark.parametrize("paper", PAPERS)
def test_golden_markdown_of_one_table_per_paper(paper):
    text = to_markdown(paper_document(paper, tables=[GOLDEN_TABLES[paper]]))
    path = GOLDEN / f"{paper}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_latex_and_html_escape_and_span(tmp_path):
    doc = paper_document("tab", tables=["Table 2", "Table 3"])
    latex = to_latex(doc)
    assert r"\multicolumn{4}{l}{\textit{Inter-pupil Normalization}}" in latex and "RCN+ (L+ELT)" in latex
    assert "TAB*" in latex and "†" not in latex and r"\textsuperscript{\dag}1" in latex
    page = to_html(doc, tmp_path)
    assert page.count("<table>") == 3 and 'class="section"' in page and "<script" not in page
    doc.sections[0].tables[0].rows[0][0] = "<script>alert(1)</script>"
    assert "<script>" not in to_html(doc, tmp_path) and "&lt;script&gt;" in to_html(doc, tmp_path)


def test_command_renders_every_paper_reported_only(tmp_path, capsys):
    for paper in PAPERS:
        assert main([paper, "--out", str(tmp_path / paper), "--results", str(tmp_path / "none")]) == 0
        md = (tmp_path / paper / "tables.md").read_text()
        assert md.count("\n## ") == len(LAYOUTS.of(paper)) and "reproduced" not in md
        assert (tmp_path / paper / "tables.html").read_text().startswith("<!DOCTYPE html>")
    assert "reported numbers only" in capsys.readouterr().out
