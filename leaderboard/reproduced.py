"""Reproduced numbers for the paper tables: what a printed cell measures (:class:`Quantity`) and its value from a
manifest's evaluation records (:class:`Reproduced`), re-scored from the stored predictions under the cell's own
normaliser, subset and threshold; ``leaderboard.paper_tables`` prints them beside the reported ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmarks.metrics import FULL
from leaderboard.layouts import Cell, Unit
from leaderboard.manifest import Experiment, Manifest, TestSpec
from leaderboard.scoring import rescore
from leaderboard.store import load_predictions, load_records

NORMALIZERS = {"inter-ocular": "inter_ocular", "inter-pupil": "inter_pupil", "bbox": "bbox", "face-size": "bbox"}

# Reference metrics a model computes in its test pass (``LandmarkModule.compute_diagnostics``), not from the
# predicted landmarks: CSV metric -> the record's diagnostics key (``<key>`` for all faces, ``<key>/<subset>``).
DIAGNOSTIC_METRICS = {"MSE_boundary_heatmap": "boundary_mse"}  # TAB Table 8 (``lightning_modules.tab``)


@dataclass(frozen=True)
class Quantity:
    """What a table cell measures: (dataset, subset, metric, threshold in %) in the CSV's words."""

    dataset: str
    subset: str
    metric: str
    threshold: float | None

    @classmethod
    def of(cls, cell: Cell) -> Quantity:
        keys = dict(cell.keys)
        return cls(keys.get("dataset") or "", keys.get("subset") or "", keys["metric"], keys.get("threshold"))

    @property
    def record_metric(self) -> str | None:
        """The record's metric name: NME / NMSE in %, FR@t in %, AUC@t as a fraction (the CSV's units)."""
        t = (self.threshold if self.threshold is not None else 10.0) / 100
        return {"NME": "nme", "NMSE": "nme", "FR": f"fr@{t:g}", "AUC": f"auc@{t:g}"}.get(self.metric)


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

    def source(self, experiment: Experiment, q: Quantity) -> tuple[TestSpec, list[dict], str | tuple[str, ...]] | None:
        """The test, records (one per seed) and record subset(s) behind ``q`` for ``experiment``."""
        for spec in experiment.tests:
            records = self.runs(experiment, spec)
            if not records:
                continue
            if q.dataset == spec.dataset and q.subset in spec.derived:
                return spec, records, spec.derived[q.subset]
            subset = spec.record_subset(q.dataset, q.subset)
            if subset is not None:
                return spec, records, subset
            if q.metric in ("params", "FLOPs") and "cost" in records[0]:
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

    def value(self, experiment: Experiment, q: Quantity, normalization: str,
              unit: Unit | None = None) -> tuple[float, float | None] | None:
        """(value, std or None) of ``q`` for ``experiment`` in the CSV's unit, under the reference
        ``normalization`` (the CSV's words); None when not reproduced. With several seeds: the mean over the
        seeds and their standard deviation (None with one seed done); otherwise the std over images where the
        quantity has one. FLOPs follow ``unit.flops_convention``."""
        found = self.source(experiment, q)
        if found is None:
            return None
        spec, records, subset = found
        values = [v for v in (self._one(record, spec, q, subset, normalization, unit) for record in records)
                  if v is not None]
        if not values or experiment.seeds == 1:
            return values[0] if values else None
        means = np.array([v[0] for v in values])
        return float(means.mean()), float(means.std(ddof=1)) if len(means) > 1 else None

    def _one(self, record: dict, spec: TestSpec, q: Quantity, subset: str | tuple[str, ...], normalization: str,
             unit: Unit | None) -> tuple[float, float | None] | None:
        """(value, std over images or None) of ``q`` from one record."""
        if q.metric in DIAGNOSTIC_METRICS:  # computed by the model in its test pass, per subset (record diagnostics)
            diagnostics = record.get("diagnostics") or {}
            if not isinstance(subset, str):
                return None
            name = DIAGNOSTIC_METRICS[q.metric]
            value = diagnostics.get(name if subset == FULL else f"{name}/{subset}")
            return None if value is None else (float(value), None)
        if q.metric in ("params", "FLOPs"):
            cost = record.get("cost") or {}
            if not cost or cost.get("params") is None:  # not measured, or a model torch cannot count
                return None
            if q.metric == "params":
                return float(cost["params"]), None
            per_mac = 2 if unit is not None and unit.flops_convention == "2mac" else 1
            return per_mac * cost["macs"] / 1e9, None
        metric = q.record_metric
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
