"""Paper manifests: a paper's experiments and the reference tables they fill (``experiments/<paper>/manifest.yaml``).

A manifest is YAML (read with ``yaml.safe_load``); paths in it are relative to its folder::

    paper: hourglass                  # `make reproduce-hourglass`
    title: ...
    references: mhhn                  # paper key of the rows in leaderboard/references/paper_results.csv
    config: [model.yaml]              # LightningCLI configs shared by every experiment (model, trainer)
    batch: {total: 16, lr_scaling: none}   # the paper's total batch over all processes (see below)
    synthetic: {config: [small.yaml]} # DATA=synthetic: replaces each experiment's data config
    experiments:
      - name: hgs-300w                # unique; names the run folder and the records
        method: HGs                   # the row label in tables
        data: data/300w.yaml          # the real data config (train set + test set defaults)
        roots: {root: 300w}           # datamodule argument -> dataset name of datamodules.check, under DATA_ROOT
        args: [...]                   # extra CLI overrides (both modes); synthetic_args: synthetic mode only
        fit: true                     # false: an evaluation-only baseline (mean shape), tested as built
        tests:                        # after training: one test pass (and one record) per entry
          - name: 300w-full
            dataset: 300W             # the reference CSV's dataset name this record fills
            args: [--data.init_args.test_set=full]   # real-data overrides of this test pass
            synthetic: 300w           # the synthetic subset scheme standing in for this test set
            subsets: {all: full}      # reference subset -> record subset (default: same name; all -> full)
            datasets: {Helen: helen}  # reference dataset -> record subset, for tables with one row per set
            derived: {mean: [yaw_0_30, yaw_30_60, yaw_60_90]}  # cells that are a mean over record subsets
            normalizer: inter_ocular  # for reference rows whose normalisation is "unknown"
    tables:
      - {table: Table I, rows: {HGs: hgs-300w}}   # reference method (as printed) -> experiment

``batch.total`` is the batch over all processes, as papers state it: the runner sets the per-process batch to
``total / (devices x nodes)`` (it must divide) so the learning rate stays the paper's. ``--total-batch`` picks
another total; ``lr_scaling: linear`` then scales the learning rate by new / paper total (Goyal et al.),
``none`` keeps it (and the record says so either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


class ManifestError(ValueError):
    """A manifest that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class TestSpec:
    name: str
    dataset: str
    args: tuple[str, ...] = ()
    synthetic: str = "attributes"
    subsets: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)
    derived: dict[str, tuple[str, ...]] = field(default_factory=dict)
    normalizer: str | None = None

    def record_subset(self, dataset: str, subset: str) -> str | None:
        """The record subset behind a reference cell (dataset, subset), or None if this test does not fill it."""
        if dataset in self.datasets:
            return self.datasets[dataset]
        if dataset != self.dataset:
            return None
        return self.subsets.get(subset, "full" if subset in ("all", "full") else subset)


@dataclass(frozen=True)
class Experiment:
    name: str
    method: str
    data: Path | None
    tests: tuple[TestSpec, ...]
    roots: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    synthetic_args: tuple[str, ...] = ()
    # Evaluation-only overrides (e.g. the decoder): added to every test pass, real or synthetic, never to the fit,
    # so experiments that differ only here share one training (the runner keys trainings by their fit arguments).
    test_args: tuple[str, ...] = ()
    fit: bool = True  # False: an evaluation-only baseline (e.g. the mean shape), tested as built


@dataclass(frozen=True)
class TableSpec:
    table: str
    rows: dict[str, str]


@dataclass(frozen=True)
class Manifest:
    paper: str
    title: str
    references: str
    path: Path
    config: tuple[Path, ...]
    synthetic_config: tuple[Path, ...]
    experiments: tuple[Experiment, ...]
    tables: tuple[TableSpec, ...]
    total_batch: int | None = None
    lr_scaling: str = "none"

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(f"{self.path}: no experiment {name!r}; it has {[e.name for e in self.experiments]}")


def manifest_path(paper: str) -> Path:
    """``experiments/<paper>/manifest.yaml`` (or a path to a manifest file)."""
    path = Path(paper)
    if path.suffix in (".yaml", ".yml"):
        return path
    return EXPERIMENTS_DIR / paper / "manifest.yaml"


def available_papers() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/manifest.yaml"))


def _list(value: Any, where: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list, got {type(value).__name__}")
    return tuple(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _require(entry: dict, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ManifestError(f"{where}: missing {missing}")


def _file(base: Path, name: str, where: str) -> Path:
    path = (base / name).resolve()
    if not path.is_file():
        raise ManifestError(f"{where}: config {path} does not exist")
    return path


def _test(entry: dict, where: str) -> TestSpec:
    _require(entry, ("name", "dataset"), where)
    unknown = set(entry) - set(TestSpec.__dataclass_fields__)
    if unknown:
        raise ManifestError(f"{where}: unknown keys {sorted(unknown)}")
    derived = {k: tuple(_list(v, f"{where}.derived.{k}")) for k, v in _mapping(entry.get("derived"), where).items()}
    return TestSpec(name=str(entry["name"]), dataset=str(entry["dataset"]), args=_list(entry.get("args"), where),
                    synthetic=str(entry.get("synthetic", "attributes")), subsets=_mapping(entry.get("subsets"), where),
                    datasets=_mapping(entry.get("datasets"), where), derived=derived,
                    normalizer=entry.get("normalizer"))


def load_manifest(paper: str | Path) -> Manifest:
    """Read and check a manifest: every config exists, names are unique, every table row names an experiment."""
    path = manifest_path(str(paper))
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}; papers with one: {available_papers()}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({err})") from err
    _require(raw, ("paper", "references", "experiments"), str(path))
    base = path.parent
    experiments = []
    for i, entry in enumerate(_list(raw["experiments"], f"{path}: experiments")):
        where = f"{path}: experiments[{i}]"
        _require(entry, ("name", "method", "tests"), where)
        unknown = set(entry) - {"name", "method", "data", "tests", "roots", "args", "synthetic_args", "test_args",
                                "fit"}
        if unknown:
            raise ManifestError(f"{where}: unknown keys {sorted(unknown)}")
        tests = tuple(_test(t, f"{where}.tests[{j}]") for j, t in enumerate(_list(entry["tests"], where)))
        if not tests:
            raise ManifestError(f"{where}: no tests")
        if len({t.name for t in tests}) != len(tests):
            raise ManifestError(f"{where}: test names are not unique")
        experiments.append(Experiment(
            name=str(entry["name"]), method=str(entry["method"]), tests=tests,
            data=_file(base, entry["data"], where) if entry.get("data") else None,
            roots=_mapping(entry.get("roots"), where), args=_list(entry.get("args"), where),
            synthetic_args=_list(entry.get("synthetic_args"), where), test_args=_list(entry.get("test_args"), where),
            fit=bool(entry.get("fit", True))))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: experiment names are not unique: {names}")
    tables = []
    for i, entry in enumerate(_list(raw.get("tables"), f"{path}: tables")):
        _require(entry, ("table", "rows"), f"{path}: tables[{i}]")
        rows = _mapping(entry["rows"], f"{path}: tables[{i}].rows")
        unknown = sorted(set(rows.values()) - set(names))
        if unknown:
            raise ManifestError(f"{path}: tables[{i}] ({entry['table']}) names unknown experiments {unknown}")
        tables.append(TableSpec(table=str(entry["table"]), rows=rows))
    batch = _mapping(raw.get("batch"), f"{path}: batch")
    if batch.get("lr_scaling", "none") not in ("none", "linear"):
        raise ManifestError(f"{path}: batch.lr_scaling must be 'none' or 'linear'")
    synthetic = _mapping(raw.get("synthetic"), f"{path}: synthetic")
    return Manifest(
        paper=str(raw["paper"]), title=str(raw.get("title", raw["paper"])), references=str(raw["references"]),
        path=path, config=tuple(_file(base, c, f"{path}: config") for c in _list(raw.get("config"), str(path))),
        synthetic_config=tuple(_file(base, c, f"{path}: synthetic") for c in _list(synthetic.get("config"), str(path))),
        experiments=tuple(experiments), tables=tuple(tables),
        total_batch=int(batch["total"]) if "total" in batch else None, lr_scaling=batch.get("lr_scaling", "none"))
