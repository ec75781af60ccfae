"""Paper manifests: a paper's experiments and the reference tables they fill (``experiments/<paper>/manifest.yaml``).

A manifest is YAML (read with ``yaml.safe_load``); paths in it are relative to its folder::

    paper: mhhn                       # `make reproduce-mhhn`
    title: ...
    references: mhhn                  # paper key of the rows in leaderboard/references/paper_results.csv
    config: [model.yaml]              # LightningCLI configs shared by every experiment (model, trainer)
    batch: {total: 16, lr_scaling: none}   # the paper's total batch over all processes (see below)
    synthetic: {config: [small.yaml]} # DATA=synthetic: replaces each experiment's data config(s); `seeds: N`
                                      #   caps the trainings per experiment there, `batch: B` the total batch
    seeds: 1                          # trainings per experiment (default 1; an experiment may say otherwise)
    datasets:                         # the benchmarks the experiments train and test on (or a file holding
      300w:                           #   this mapping, e.g. `datasets: ../mhhn/datasets.yaml`)
        data: [../data/300w.yaml, augment.yaml]   # real-data configs: the shared protocol, then overrides
        roots: {root: 300w}           # datamodule argument -> dataset name of datamodules.check, under DATA_ROOT
        synthetic_args: [...]         # args / synthetic_args / test_args: as in an experiment (below)
        tests:                        # after training: one test pass (and one record) per entry
          - name: 300w-full
            dataset: 300W             # the reference CSV's dataset name this record fills
            args: [--data.init_args.test_set=full]   # real-data overrides of this test pass
            synthetic: 300w           # the synthetic subset scheme standing in for this test set
            subsets: {all: full}      # reference subset -> record subset (default: same name; all -> full)
            datasets: {Helen: helen}  # reference dataset -> record subset, for tables with one row per set
            derived: {mean: [yaw_0_30, yaw_30_60, yaw_60_90]}  # cells that are a mean over record subsets
            normalizer: inter_ocular  # for reference rows whose normalisation is "unknown"
    variants:                         # the paper's methods, as overrides of the shared configs
      hgs: {method: HGs, args: [--model.init_args.mcg=none]}
      mhhn: {method: HGs+MCG+HSR (MHHN)}
    experiments:
      - {variants: [hgs, mhhn], datasets: [300w, cofw]}   # a grid: hgs-300w, mhhn-300w, hgs-cofw, mhhn-cofw
      - name: mhhn-window15-300w      # one dataset (and optionally one variant), with its own overrides
        method: MHHN (15x15 window)
        dataset: 300w
        variant: mhhn
        args: [--model.init_args.codec.window=15]
      - name: hgs-300w-plain          # or spelled out in full, without `datasets` / `variants`
        method: HGs
        data: [../data/300w.yaml]
        roots: {root: 300w}
        tests: [{name: 300w-full, dataset: 300W, synthetic: 300w}]
    tables:
      - {table: Table I, rows: {HGs: hgs-300w}}   # reference method (as printed) -> experiment
    figures:                          # ECDF figures after the tables (FigureSpec, leaderboard.figures)
      - {figure: Figure 9, caption: ..., test: pwc-sets, rows: {Direct: direct-300w}, landmarks: [all, eyes]}

Experiment fields: ``name`` (unique; names the run folder and the records), ``method`` (the row label in
tables), ``data`` / ``roots`` / ``tests`` (or ``dataset``, which gives all three), ``variant``, ``args`` (extra
CLI overrides, both modes), ``synthetic_args`` (synthetic mode only), ``test_args`` (added to every test pass,
never to the fit, so experiments differing only there share one training), ``fit`` (false: an evaluation-only
baseline such as the mean shape, tested as built), ``test`` (false: trained only, a stage 1 whose checkpoint
later experiments start from), ``config`` (extra LightningCLI configs after the data or synthetic configs, in both
modes: TAB's stage 1 changes the model and what its checkpoints select on), ``seeds`` and ``init_from`` (below).
A grid entry takes ``variants`` and ``datasets`` (lists) and optionally ``args``, ``synthetic_args``,
``test_args``, ``fit``, ``test``, ``config``, ``seeds``, ``init_from``; it expands dataset by dataset into
experiments named ``<variant>-<dataset>``.
Arguments are concatenated dataset first, then variant, then the entry's own, so the most specific wins.
A variant takes ``method``, ``args``, ``synthetic_args``, ``test_args``, ``init_from`` and ``config``.

``batch.total`` is the batch over all processes, as papers state it: the runner sets the per-process batch to
``total / (devices x nodes)`` (it must divide) so the learning rate stays the paper's. ``--total-batch`` picks
another total; ``lr_scaling: linear`` then scales the learning rate by new / paper total (Goyal et al.),
``none`` keeps it (and the record says so either way).

``seeds: N`` trains an experiment N times with ``--seed_everything`` = the configs' seed + i (run folders
``<experiment>/seed-<i>``; unchanged folders when N is 1) and tests each; paper tables show the mean and the
standard deviation over the seeds (``leaderboard.references``).

``init_from: stage1`` (or ``{experiment: stage1, modules: [scbe]}``) starts the training from the *selected*
checkpoint of experiment ``stage1`` (TAB trains its boundary estimator, then the transform on top): the runner
runs stage 1 first (also when only stage 2 is asked for) and passes ``--model.init_args.init_from=<checkpoint>``
(and ``--model.init_args.init_modules=[...]``). Stage 1 has one seed, or as many as the experiment (seed i then
starts from stage 1's seed i). Unknown names, evaluation-only stages and cycles are manifest errors.

Every field is checked when the manifest loads; an error names the file, the experiment and the field, e.g.
``experiments/mhhn/manifest.yaml: experiment 'x': field 'seeds': expected a positive integer, got 'two'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from landmarks.layouts import POINT_SETS
from leaderboard.manifest_fields import Fields, ManifestError, is_scalar, items, shown
from leaderboard.manifest_specs import (  # noqa: F401  (the manifest's types, re-exported)
    DatasetSpec,
    Experiment,
    FigureSpec,
    InitFrom,
    Manifest,
    TableSpec,
    TestSpec,
    VariantSpec,
    stages_first,
)

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
ARG_FIELDS = ("args", "synthetic_args", "test_args")


def manifest_path(paper: str) -> Path:
    """``experiments/<paper>/manifest.yaml`` (or a path to a manifest file)."""
    path = Path(paper)
    if path.suffix in (".yaml", ".yml"):
        return path
    return EXPERIMENTS_DIR / paper / "manifest.yaml"


def available_papers() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/manifest.yaml"))


# --- the parts of a manifest ---------------------------------------------------------------------------------


TEST_FIELDS = tuple(TestSpec.__dataclass_fields__)
DATASET_FIELDS = ("data", "roots", "tests", *ARG_FIELDS)
VARIANT_FIELDS = ("method", *ARG_FIELDS, "init_from", "config")
RUN_FIELDS = (*ARG_FIELDS, "fit", "test", "seeds", "init_from", "config")
EXPERIMENT_FIELDS = ("name", "method", "data", "roots", "tests", "dataset", "variant", *RUN_FIELDS)
GRID_FIELDS = ("variants", "datasets", *RUN_FIELDS)
TOP_FIELDS = ("paper", "title", "references", "config", "batch", "synthetic", "seeds", "datasets", "variants",
              "experiments", "tables", "figures")


def _init_from(f: Fields) -> InitFrom | None:
    """``init_from: name`` or ``init_from: {experiment: name, modules: [...]}``."""
    value = f.raw.get("init_from")
    if value is None:
        return None
    if is_scalar(value):
        return InitFrom(str(value))
    link = Fields(value, f"{f.where}: field 'init_from'", ("experiment", "modules"), ("experiment",))
    return InitFrom(link.text("experiment"), link.strings("modules") if link.has("modules") else None)


def _tests(fields: Fields, base: Path) -> tuple[TestSpec, ...]:
    tests = []
    for j, entry in enumerate(items(fields.raw.get("tests"), f"{fields.where}: field 'tests'")):
        test = Fields(entry, f"{fields.where}: tests[{j}]", TEST_FIELDS, ("name", "dataset"))
        cells = test.raw.get("derived") or {}
        derived = Fields(cells, f"{test.where}: field 'derived'", tuple(map(str, cells)) if isinstance(cells, dict)
                          else ())
        tests.append(TestSpec(
            name=test.text("name"), dataset=test.text("dataset"), args=test.strings("args"),
            synthetic=test.text("synthetic", "attributes"), subsets=test.names("subsets"),
            datasets=test.names("datasets"), derived={str(k): derived.strings(k) for k in derived.raw},
            normalizer=test.text("normalizer"), data=test.files("data", base), roots=test.names("roots")))
    if not tests:
        raise ManifestError(f"{fields.where}: no tests")
    if len({t.name for t in tests}) != len(tests):
        raise ManifestError(f"{fields.where}: test names are not unique: {[t.name for t in tests]}")
    return tuple(tests)


def _datasets(top: Fields, base: Path) -> dict[str, DatasetSpec]:
    """The ``datasets`` block, inline or in a file of its own (paths relative to that file)."""
    raw, where = top.raw.get("datasets"), top.where
    if is_scalar(raw):
        (path,) = top.files("datasets", base)
        where, base = shown(path), path.parent
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ManifestError(f"{where}: not valid YAML ({err})") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: datasets: expected a mapping of dataset names, got {raw!r}")
    specs = {}
    for name, entry in raw.items():
        f = Fields(entry, f"{where}: dataset '{name}'", DATASET_FIELDS, ("tests",))
        specs[str(name)] = DatasetSpec(name=str(name), data=f.files("data", base), roots=f.names("roots"),
                                       tests=_tests(f, base), **{k: f.strings(k) for k in ARG_FIELDS})
    return specs


def _variants(top: Fields, base: Path) -> dict[str, VariantSpec]:
    raw = top.raw.get("variants") or {}
    if not isinstance(raw, dict):
        raise top.error("variants", "a mapping of variant names")
    specs = {}
    for name, entry in raw.items():
        f = Fields(entry or {}, f"{top.where}: variant '{name}'", VARIANT_FIELDS)
        specs[str(name)] = VariantSpec(name=str(name), method=f.text("method"), init_from=_init_from(f),
                                       config=f.files("config", base), **{k: f.strings(k) for k in ARG_FIELDS})
    return specs


def _pick(f: Fields, key: str, known: dict) -> Any:
    """The ``datasets`` / ``variants`` entry that field ``key`` names."""
    name = f.text(key)
    if name is None:
        return None
    if name not in known:
        raise ManifestError(f"{f.where}: field '{key}': unknown {key} {name!r}; the manifest has {sorted(known)}")
    return known[name]


def _experiment(f: Fields, name: str, dataset: DatasetSpec | None, variant: VariantSpec | None, base: Path,
                seeds: int) -> Experiment:
    """One experiment: its dataset's and variant's settings, then the entry's own."""
    if dataset is not None:
        given = [k for k in ("data", "roots", "tests") if f.has(k)]
        if given:
            raise ManifestError(f"{f.where}: field '{given[0]}': not with 'dataset', which gives data, roots and "
                                "tests")
    method = f.text("method") or (variant.method if variant else None)
    if method is None:
        raise ManifestError(f"{f.where}: missing ['method'] (neither the entry nor its variant names one)")
    layers = [layer for layer in (dataset, variant) if layer is not None]
    return Experiment(
        name=name, method=method, data=dataset.data if dataset else f.files("data", base),
        tests=dataset.tests if dataset else _tests(f, base), roots=dataset.roots if dataset else f.names("roots"),
        fit=f.flag("fit", True), test=f.flag("test", True), seeds=f.count("seeds", seeds),
        init_from=_init_from(f) or (variant.init_from if variant else None),
        dataset=dataset.name if dataset else None, variant=variant.name if variant else None,
        config=(variant.config if variant else ()) + f.files("config", base),
        **{k: tuple(a for layer in layers for a in getattr(layer, k)) + f.strings(k) for k in ARG_FIELDS})


def _experiments(top: Fields, datasets: dict[str, DatasetSpec], variants: dict[str, VariantSpec], base: Path,
                 seeds: int) -> list[Experiment]:
    experiments = []
    for i, entry in enumerate(items(top.raw.get("experiments"), f"{top.where}: experiments")):
        where = f"{top.where}: experiments[{i}]"
        if isinstance(entry, dict) and ("variants" in entry or "datasets" in entry):
            f = Fields(entry, where, GRID_FIELDS, ("variants", "datasets"))
            grid = {key: f.strings(key) for key in ("datasets", "variants")}
            for key, known in (("datasets", datasets), ("variants", variants)):
                unknown = [n for n in grid[key] if n not in known]
                if unknown:
                    raise ManifestError(f"{where}: field '{key}': unknown {unknown}; the manifest has {sorted(known)}")
            for d in grid["datasets"]:
                for v in grid["variants"]:
                    f.where = f"{top.where}: experiment '{v}-{d}' (experiments[{i}])"
                    experiments.append(_experiment(f, f"{v}-{d}", datasets[d], variants[v], base, seeds))
            continue
        if isinstance(entry, dict) and is_scalar(entry.get("name")):
            where = f"{top.where}: experiment '{entry['name']}'"
        f = Fields(entry, where, EXPERIMENT_FIELDS)
        dataset, variant = _pick(f, "dataset", datasets), _pick(f, "variant", variants)
        name = f.text("name") or (f"{variant.name}-{dataset.name}" if dataset and variant else None)
        if name is None:
            raise ManifestError(f"{where}: missing ['name'] (only an entry with a dataset and a variant has one "
                                "by default)")
        experiments.append(_experiment(f, name, dataset, variant, base, seeds))
    return experiments


def _check_stages(experiments: list[Experiment], where: str) -> None:
    by_name = {e.name: e for e in experiments}
    for e in experiments:
        if not e.fit and not e.test:
            raise ManifestError(f"{where}: experiment '{e.name}': fit: false and test: false leave nothing to run")
        if e.init_from is None:
            continue
        at = f"{where}: experiment '{e.name}': field 'init_from'"
        stage1 = by_name.get(e.init_from.experiment)
        if stage1 is None:
            raise ManifestError(f"{at}: unknown experiment {e.init_from.experiment!r}; the manifest has "
                                f"{sorted(by_name)}")
        if not e.fit or not stage1.fit:
            raise ManifestError(f"{at}: both stages must train (fit: true); an evaluation-only experiment has no "
                                "selected checkpoint and takes none")
        if stage1.seeds not in (1, e.seeds):
            raise ManifestError(f"{at}: stage 1 {stage1.name!r} has {stage1.seeds} seeds and this experiment "
                                f"{e.seeds}; give stage 1 one seed or the same number")
    stages_first(experiments, where)


def _rows(f: Fields, label: str, names: set[str], untested_names: tuple[str, ...]) -> dict[str, str]:
    """The ``rows`` of a table or figure entry, each naming an experiment that has records."""
    rows = f.names("rows")
    untested = sorted(set(rows.values()) & set(untested_names))
    if untested:
        raise ManifestError(f"{f.where} ({f.text(label)}) names experiments that are trained only (test: "
                            f"false) and have no records: {untested}")
    unknown = sorted(set(rows.values()) - names)
    if unknown:
        raise ManifestError(f"{f.where} ({f.text(label)}) names unknown experiments {unknown}")
    return rows


def _tables(top: Fields, names: set[str], untested_names: tuple[str, ...] = ()) -> tuple[TableSpec, ...]:
    tables = []
    for i, entry in enumerate(items(top.raw.get("tables"), f"{top.where}: tables")):
        f = Fields(entry, f"{top.where}: tables[{i}]", ("table", "rows"), ("table", "rows"))
        tables.append(TableSpec(table=f.text("table"), rows=_rows(f, "table", names, untested_names)))
    return tuple(tables)


def _figures(top: Fields, experiments: list[Experiment], untested: tuple[str, ...]) -> tuple[FigureSpec, ...]:
    """The ``figures`` block: every row an experiment with records whose tests include the figure's ``test``."""
    by_name, figures = {e.name: e for e in experiments}, []
    for i, entry in enumerate(items(top.raw.get("figures"), f"{top.where}: figures")):
        f = Fields(entry, f"{top.where}: figures[{i}]", tuple(FigureSpec.__dataclass_fields__),
                   ("figure", "test", "rows"))
        rows, test = _rows(f, "figure", set(by_name), untested), f.text("test")
        lacking = sorted(name for name in rows.values() if test not in [t.name for t in by_name[name].tests])
        if lacking:
            raise ManifestError(f"{f.where} ({f.text('figure')}): field 'test': {lacking} have no test {test!r}")
        landmarks = f.strings("landmarks") or ("all",)
        if not set(landmarks) <= set(POINT_SETS):
            raise f.error("landmarks", f"a list of {list(POINT_SETS)}")
        x_max = f.raw.get("x_max", 0.10)
        if not isinstance(x_max, (int, float)) or isinstance(x_max, bool) or not 0 < x_max <= 1:
            raise f.error("x_max", "a number in (0, 1] (an NME as a fraction)")
        figures.append(FigureSpec(figure=f.text("figure"), caption=f.text("caption", ""), test=test, rows=rows,
                                  landmarks=landmarks, split=f.choice("split", ("none", "occlusion")),
                                  x_max=float(x_max)))
    return tuple(figures)


def load_manifest(paper: str | Path) -> Manifest:
    """Read and check a manifest: every field has its type, every config exists, names are unique, every
    ``init_from`` and table row names an experiment, and stages form no cycle."""
    path = manifest_path(str(paper))
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}; papers with one: {available_papers()}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({err})") from err
    top = Fields(raw, shown(path), TOP_FIELDS, ("paper", "references", "experiments"))
    base = path.parent
    datasets, variants = _datasets(top, base), _variants(top, base)
    experiments = _experiments(top, datasets, variants, base, top.count("seeds", 1))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ManifestError(f"{top.where}: experiment names are not unique: {names}")
    _check_stages(experiments, top.where)
    batch = top.mapping("batch", "batch", ("total", "lr_scaling"))
    synthetic = top.mapping("synthetic", "synthetic", ("config", "seeds", "batch"))
    trained_only = tuple(e.name for e in experiments if not e.test)
    return Manifest(
        paper=top.text("paper"), title=top.text("title", top.text("paper")), references=top.text("references"),
        path=path, config=top.files("config", base), synthetic_config=synthetic.files("config", base),
        experiments=tuple(experiments), tables=_tables(top, set(names), trained_only),
        total_batch=batch.count("total", None),
        lr_scaling=batch.choice("lr_scaling", ("none", "linear")), datasets=datasets, variants=variants,
        synthetic_seeds=synthetic.count("seeds", None), synthetic_batch=synthetic.count("batch", None),
        figures=_figures(top, experiments, trained_only))
