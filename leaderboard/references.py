"""Paper tables: the reported numbers (``references/paper_results.csv``) beside the reproduced ones.

Each table keeps the paper's layout: rows are the methods in the paper's order, columns the paper's
(dataset, subset, metric) cells in its order, and every cell has three columns: the number the paper reports,
the number reproduced here, and the difference (reproduced - reported, in the same units). A manifest names
the tables and which experiment reproduces which row (``leaderboard.manifest``); everything else comes from the
reference CSV, so a paper issue only names its tables.

Reproduced numbers are re-scored from the stored per-image predictions (``leaderboard.scoring.rescore``) with
the cell's own normaliser and threshold: the CSV's ``normalization`` ("inter-ocular", "inter-pupil", "bbox" /
"face-size"; "unknown" falls back to the test's ``normalizer`` or the record's primary one), ``FR`` and ``AUC``
at the CSV's ``threshold`` (percent; 10 when absent), ``NME`` / ``NMSE`` as the mean NME with its standard
deviation over images where the paper gives one. ``params`` (M) and ``FLOPs`` (G, = 2 x MACs) come from the
record's measured cost. Cells of other kinds (counts, boundary-heatmap MSE) are shown as reported only.
A row whose experiment trains several seeds (``seeds: N``, e.g. PWC's average of 5 runs) shows the mean of the
per-seed values with the sample standard deviation over the seeds, ``4.27 ± 0.03``; the table notes say how
many seeds (and which records) it averages, and Δ is the mean minus the reported number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmarks.metrics import FULL
from leaderboard.manifest import Experiment, Manifest, TestSpec
from leaderboard.render import CSS
from leaderboard.scoring import rescore
from leaderboard.store import atomic_write_bytes, load_predictions, load_records

REFERENCES = Path(__file__).parent / "references" / "paper_results.csv"
NORMALIZERS = {"inter-ocular": "inter_ocular", "inter-pupil": "inter_pupil", "bbox": "bbox", "face-size": "bbox"}
KINDS = ("reported", "reproduced", "Δ")
SYNTHETIC_WARNING = ("SYNTHETIC DATA: the reproduced columns come from the synthetic stand-in of each test set "
                     "(same subset names, not the same faces); they show that the pipeline runs end to end and "
                     "are not comparable with the reported numbers.")


def load_references(path: Path = REFERENCES) -> pd.DataFrame:
    """Every reported number, one row each (paper, table, dataset, subset, method, metric, normalization,
    threshold, value, std, is_paper_own_method, note)."""
    return pd.read_csv(path, keep_default_na=True)


def tables_of(references: pd.DataFrame, paper: str) -> list[str]:
    """The paper's result tables (named "Table ..."), in the order they appear."""
    tables = references.loc[references.paper == paper, "table"].drop_duplicates()
    return [t for t in tables if str(t).startswith("Table")]


@dataclass(frozen=True)
class Cell:
    """One column of a paper table: a (dataset, subset, metric, threshold) of the reference CSV. The
    normalisation belongs to each row (some tables mix inter-ocular and inter-pupil rows)."""

    dataset: str
    subset: str
    metric: str
    threshold: float | None

    def label(self, several_datasets: bool) -> str:
        parts = [self.dataset] if several_datasets and self.dataset else []
        if self.subset not in ("all", "full") or not parts:
            parts.append(self.subset)
        metric = self.metric if self.threshold is None else f"{self.metric}@{self.threshold:g}%"
        return " ".join([*parts, metric])

    @property
    def record_metric(self) -> str | None:
        t = (self.threshold if self.threshold is not None else 10.0) / 100
        return {"NME": "nme", "NMSE": "nme", "FR": f"fr@{t:g}", "AUC": f"auc@{t:g}"}.get(self.metric)


def _cell(row: Any) -> Cell:
    return Cell(_text(row.dataset), _text(row.subset), row.metric, _threshold(row.threshold))


def _threshold(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def cells_of(rows: pd.DataFrame) -> list[Cell]:
    return list(dict.fromkeys(_cell(r) for r in rows.itertuples()))


class Reproduced:
    """Reproduced values of one manifest from the records of one results folder: the newest record per test, or
    for an experiment trained with several seeds (``seeds: N``) the newest record of each seed, whose values are
    averaged; the spread shown is then the sample standard deviation (n - 1) over the seeds."""

    def __init__(self, manifest: Manifest, folder: Path) -> None:
        self.manifest, self.folder = manifest, Path(folder)
        self.records: dict[tuple[str, str], dict] = {}
        self.seeded: dict[tuple[str, str], dict[int, dict]] = {}
        if (self.folder / "records").is_dir():
            for record in load_records(self.folder):  # oldest first: the newest wins
                tag = record.get("experiment") or {}
                if tag.get("paper") == manifest.paper:
                    self.records[(tag.get("name"), tag.get("test"))] = record
                    self.seeded.setdefault((tag.get("name"), tag.get("test")), {})[tag.get("seed_index", 0)] = record
        self._predictions: dict[str, dict] = {}
        self._scores: dict[tuple, dict] = {}

    def runs(self, experiment: Experiment, spec: TestSpec) -> list[dict]:
        """The records behind ``experiment``'s test ``spec``: the newest one, or one per seed (in seed order) when
        the experiment has several."""
        if experiment.seeds == 1:
            record = self.records.get((experiment.name, spec.name))
            return [] if record is None else [record]
        per_seed = self.seeded.get((experiment.name, spec.name), {})
        return [per_seed[i] for i in range(experiment.seeds) if i in per_seed]

    def source(self, experiment: Experiment, cell: Cell) -> tuple[TestSpec, list[dict], str | tuple[str, ...]] | None:
        """The test, records (one per seed) and record subset(s) behind ``cell`` for ``experiment``."""
        for spec in experiment.tests:
            records = self.runs(experiment, spec)
            if not records:
                continue
            if cell.dataset == spec.dataset and cell.subset in spec.derived:
                return spec, records, spec.derived[cell.subset]
            subset = spec.record_subset(cell.dataset, cell.subset)
            if subset is not None:
                return spec, records, subset
            if cell.metric in ("params", "FLOPs") and "cost" in records[0]:
                return spec, records, FULL
        return None

    def _summary(self, record: dict, normalizer: str, subset: str, metric: str) -> dict:
        key = (record["record_id"], normalizer, subset, metric)
        if key not in self._scores:
            rid = record["record_id"]
            if rid not in self._predictions:
                self._predictions[rid] = load_predictions(record, self.folder)
            thresholds = (float(metric.split("@")[1]),) if "@" in metric else (0.1,)
            self._scores[key] = rescore(self._predictions[rid], normalizer, subset, thresholds)
        return self._scores[key]

    def value(self, experiment: Experiment, cell: Cell, normalization: str) -> tuple[float, float | None] | None:
        """(value, std or None) of ``cell`` for ``experiment`` under the reference ``normalization`` (the CSV's
        words); None when not reproduced. With several seeds: the mean over the seeds and the standard deviation
        over the seeds (None with one seed done); otherwise the std over images where the cell has one."""
        found = self.source(experiment, cell)
        if found is None:
            return None
        spec, records, subset = found
        values = [v for v in (self._one(record, spec, cell, subset, normalization) for record in records)
                  if v is not None]
        if not values or experiment.seeds == 1:
            return values[0] if values else None
        means = np.array([v[0] for v in values])
        return float(means.mean()), float(means.std(ddof=1)) if len(means) > 1 else None

    def _one(self, record: dict, spec: TestSpec, cell: Cell, subset: str | tuple[str, ...],
             normalization: str) -> tuple[float, float | None] | None:
        """(value, std over images or None) of ``cell`` from one record."""
        if cell.metric in ("params", "FLOPs"):
            cost = record.get("cost") or {}
            if not cost:
                return None
            return (cost["params"] / 1e6, None) if cell.metric == "params" else (2 * cost["macs"] / 1e9, None)
        metric = cell.record_metric
        if metric is None:
            return None
        normalizer = NORMALIZERS.get(normalization) or spec.normalizer or record["protocol"]["primary_normalizer"]
        subsets = (subset,) if isinstance(subset, str) else subset
        try:
            summaries = [self._summary(record, normalizer, s, metric) for s in subsets]
        except KeyError:  # the record lacks that subset or normaliser
            return None
        value = float(np.mean([s[metric] for s in summaries]))
        std = summaries[0].get("nme_std") if metric == "nme" and len(summaries) == 1 else None
        return value, std


def _decimals(metric: str) -> int:
    return 4 if metric == "AUC" else 3 if metric in ("params",) else 2


def _fmt(value: float | None, std: float | None, digits: int, over_seeds: bool = False) -> str:
    """``4.27 (0.61)`` with a std over images, ``4.27 ± 0.03`` with a std over seeds (``over_seeds``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    if std is None or math.isnan(std):
        return text
    return f"{text} ± {std:.{digits}f}" if over_seeds else f"{text} ({std:.{digits}f})"


def paper_table(references: pd.DataFrame, manifest: Manifest, table: str, reproduced: Reproduced,
                rows_map: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, numbers) of one paper table: methods x (cell, kind) with kind in ``KINDS``."""
    rows = references[(references.paper == manifest.references) & (references.table == table)]
    if rows.empty:
        raise KeyError(f"no reference rows for {manifest.references} {table!r}; the paper has "
                       f"{tables_of(references, manifest.references)}")
    cells = cells_of(rows)
    several = len({c.dataset for c in cells}) > 1
    methods = list(dict.fromkeys(rows.method))
    columns = pd.MultiIndex.from_tuples([(c.label(several), k) for c in cells for k in KINDS])
    text = pd.DataFrame("—", index=methods, columns=columns)
    numbers = pd.DataFrame(np.nan, index=methods, columns=columns)
    normalization: dict[tuple[str, Cell], str] = {}
    for r in rows.itertuples():
        cell = _cell(r)
        normalization[(r.method, cell)] = _text(r.normalization)
        std = None if pd.isna(r.std) else float(r.std)
        numbers.loc[r.method, (cell.label(several), "reported")] = r.value
        text.loc[r.method, (cell.label(several), "reported")] = _fmt(float(r.value), std, _decimals(r.metric))
    for method, experiment_name in rows_map.items():
        if method not in methods:
            raise KeyError(f"{manifest.path}: {table} has no method {method!r}; its rows are {methods}")
        experiment = manifest.experiment(experiment_name)
        for cell in cells:
            label = cell.label(several)
            # the row's own normalisation; a cell the paper left empty for this row takes the column's usual one
            norm = normalization.get((method, cell)) or _usual(rows, cell)
            got = reproduced.value(experiment, cell, norm)
            if got is None:
                continue
            digits = _decimals(cell.metric)
            numbers.loc[method, (label, "reproduced")] = got[0]
            text.loc[method, (label, "reproduced")] = _fmt(got[0], got[1], digits, experiment.seeds > 1)
            reported = numbers.loc[method, (label, "reported")]
            if not pd.isna(reported):
                numbers.loc[method, (label, "Δ")] = got[0] - reported
                text.loc[method, (label, "Δ")] = f"{got[0] - reported:+.{digits}f}"
    norms = {m: "/".join(dict.fromkeys(n for (mm, _), n in normalization.items() if mm == m)) for m in methods}
    if len(set(norms.values())) > 1:  # the paper mixes normalisations: say which each row uses
        text.insert(0, ("normalisation", ""), pd.Series(norms))
    return text, numbers


def _usual(rows: pd.DataFrame, cell: Cell) -> str:
    same = [_text(r.normalization) for r in rows.itertuples() if _cell(r) == cell]
    return max(set(same), key=same.count) if same else ""


def table_header(references: pd.DataFrame, manifest: Manifest, table: str, reproduced: Reproduced,
                 rows_map: dict[str, str]) -> list[str]:
    """Lines stating how the reported and the reproduced numbers were obtained."""
    rows = references[(references.paper == manifest.references) & (references.table == table)]
    norms = ", ".join(sorted({_text(n) or "n/a" for n in rows.normalization}))
    lines = [f"Reported: {manifest.references} {table}, normalisation {norms}; NME and FR in %, AUC as a fraction, "
             "std over images in parentheses where the paper gives it."]
    for method, name in rows_map.items():
        experiment = manifest.experiment(name)
        for spec in experiment.tests:
            records = reproduced.runs(experiment, spec)
            if not records:
                lines.append(f"Reproduced {method}: experiment `{name}`, test `{spec.name}`: not run yet.")
                continue
            record = records[0]
            p, tag = record["protocol"], record.get("experiment", {})
            crop = p.get("crop", {})
            sizes = ", ".join(f"{s} {int(v['n'])}" for s, v in record["metrics"][p["primary_normalizer"]].items())
            fit = tag.get("fit", {})
            lines.append(
                f"Reproduced {method}: experiment `{name}`, test set `{record['test_set']}` ({sizes}); "
                f"layout {p.get('layout')}, {p.get('input_size')} px crop from box `{crop.get('box_source')}` x "
                f"{crop.get('scale')}; checkpoint selected on the validation split by "
                f"{fit.get('monitor', '?')} ({fit.get('mode', '?')}) after {fit.get('epochs', '?')} epochs; "
                f"{tag.get('world_size', 1)} process(es), total batch {tag.get('total_batch')}; "
                f"AUC rule: {p.get('auc_rule', '?')}; " + (f"record `{record['record_id']}`." if experiment.seeds == 1
                                                              else _seeds_note(records, experiment.seeds)))
    return lines


def _seeds_note(records: list[dict], seeds: int) -> str:
    """How a row trained with several seeds is summarised, for the table notes."""
    used = ", ".join(str((r.get("experiment") or {}).get("seed")) for r in records)
    ids = ", ".join(f"`{r['record_id']}`" for r in records)
    return (f"mean ± standard deviation (n - 1) over {len(records)} seeds (of {seeds}; seeds {used}), each "
            f"re-scored from its own predictions; records {ids}.")


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    flat = frame.copy()
    flat.columns = [f"{cell} · {kind}" if kind else cell for cell, kind in frame.columns]
    flat.index.name = "method"
    return flat


def _latex(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs table with the paper's two-level header (cell, then reported / reproduced / Delta)."""
    styler = frame.style.format(escape="latex").format_index(escape="latex", axis=0)
    styler = styler.format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, multicol_align="c", caption=caption.replace("%", r"\%")).replace(
        "Δ", r"$\Delta$")


def render(manifest: Manifest, folder: Path, synthetic: bool,
           references: pd.DataFrame | None = None) -> dict[str, str]:
    """Markdown, LaTeX and an HTML fragment of every table the manifest names."""
    references = load_references() if references is None else references
    reproduced = Reproduced(manifest, folder)
    title = f"{manifest.title}: paper tables" + (" (SYNTHETIC DATA)" if synthetic else "")
    md, tex, html = [f"# {title}", ""], [f"% {title}"], [f"<h2>{title}</h2>"]
    if synthetic:
        md += [f"> **{SYNTHETIC_WARNING}**", ""]
        tex += [f"% {SYNTHETIC_WARNING}"]
        html += [f'<p class="warning"><b>{SYNTHETIC_WARNING}</b></p>']
    for spec in manifest.tables:
        text, _ = paper_table(references, manifest, spec.table, reproduced, spec.rows)
        header = table_header(references, manifest, spec.table, reproduced, spec.rows)
        name = f"{manifest.references.upper()} {spec.table}" + (" (synthetic)" if synthetic else "")
        md += [f"## {name}", "", *[f"- {line}" for line in header], "",
               _flat(text).to_markdown(stralign="right", disable_numparse=True), ""]
        tex += [f"% {name}", *[f"% {line}" for line in header],
                _latex(text, name), ""]
        html += [f"<h3>{name}</h3>", "<ul>" + "".join(f"<li>{line}</li>" for line in header) + "</ul>",
                 text.to_html(classes="paper", border=0, escape=True)]
    return {"markdown": "\n".join(md), "latex": "\n".join(tex), "html": "\n".join(html)}


def write_paper_tables(manifest: Manifest, folder: Path, out_dir: Path, synthetic: bool) -> dict[str, Path]:
    """Render the manifest's tables from the records in ``folder`` into ``out_dir`` (tables.md / .tex / .html)."""
    rendered = render(manifest, folder, synthetic)
    out = {}
    for kind, suffix in (("markdown", "md"), ("latex", "tex")):
        out[f"tables {suffix}"] = atomic_write_bytes(Path(out_dir) / f"tables.{suffix}", rendered[kind].encode(),
                                                     overwrite=True)
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{manifest.title}</title>" \
           f"<style>{CSS}</style></head><body>{rendered['html']}</body></html>"
    out["tables html"] = atomic_write_bytes(Path(out_dir) / "tables.html", page.encode(), overwrite=True)
    return out
