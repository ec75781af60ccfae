"""The typed objects a paper manifest is read into (``leaderboard.manifest`` reads and checks the YAML): tests,
datasets, variants, experiments, tables, figures and the manifest itself, with the stage order of its experiments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from leaderboard.manifest_fields import ManifestError


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
    # Another benchmark's data configs and folders for this test pass (real data; the model trained on the
    # experiment's): e.g. PWC's COFW-68 test of the 300W-trained model. Its crop and normalisation must be those
    # of the training (the checkpoint identity refuses otherwise).
    data: tuple[Path, ...] = ()
    roots: dict[str, str] = field(default_factory=dict)

    def record_subset(self, dataset: str, subset: str) -> str | None:
        """The record subset behind a reference cell (dataset, subset), or None if this test does not fill it."""
        if dataset in self.datasets:
            return self.datasets[dataset]
        if dataset != self.dataset:
            return None
        return self.subsets.get(subset, "full" if subset in ("all", "full") else subset)


@dataclass(frozen=True)
class InitFrom:
    """Stage 2 starts from stage 1's selected checkpoint (all of it, or the named modules)."""

    experiment: str
    modules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark as a manifest trains and tests on it: its data configs, folders, tests and overrides."""

    name: str
    data: tuple[Path, ...]
    roots: dict[str, str]
    tests: tuple[TestSpec, ...]
    args: tuple[str, ...] = ()
    synthetic_args: tuple[str, ...] = ()
    test_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class VariantSpec:
    """A method of the paper: its row label and its overrides of the shared configs."""

    name: str
    method: str | None = None
    args: tuple[str, ...] = ()
    synthetic_args: tuple[str, ...] = ()
    test_args: tuple[str, ...] = ()
    init_from: InitFrom | None = None
    config: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str
    method: str
    data: tuple[Path, ...]
    tests: tuple[TestSpec, ...]
    roots: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    synthetic_args: tuple[str, ...] = ()
    # Evaluation-only overrides (e.g. the decoder): added to every test pass, real or synthetic, never to the fit,
    # so experiments that differ only here share one training (the runner keys trainings by their fit arguments).
    test_args: tuple[str, ...] = ()
    fit: bool = True  # False: an evaluation-only baseline (e.g. the mean shape), tested as built
    test: bool = True  # False: trained only (a stage 1 whose checkpoint later experiments start from)
    seeds: int = 1
    init_from: InitFrom | None = None
    dataset: str | None = None  # the `datasets` entry it came from
    variant: str | None = None  # the `variants` entry it came from
    config: tuple[Path, ...] = ()  # extra LightningCLI configs, after the data (or synthetic) configs, both modes


@dataclass(frozen=True)
class TableSpec:
    table: str
    rows: dict[str, str]


@dataclass(frozen=True)
class FigureSpec:
    """ECDF curves, one per ``rows`` entry (label -> experiment) on its test ``test``; a panel per point set of
    ``landmarks`` (``POINT_SETS``) and, with ``split: occlusion``, per image group; x axis 0 - ``x_max``."""

    figure: str
    caption: str
    test: str
    rows: dict[str, str]
    landmarks: tuple[str, ...] = ("all",)
    split: str = "none"
    x_max: float = 0.10


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
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    variants: dict[str, VariantSpec] = field(default_factory=dict)
    synthetic_seeds: int | None = None  # at most this many trainings per experiment on synthetic data
    synthetic_batch: int | None = None  # the total batch on synthetic data (None: the paper's)
    figures: tuple[FigureSpec, ...] = ()

    def for_data(self, data: str) -> Manifest:
        """The manifest as run on ``data`` ("real" or "synthetic"): on synthetic faces every experiment trains at
        most ``synthetic.seeds`` times (the seeds of a real run are its first ones), with ``synthetic.batch`` as the
        total batch if given (a paper's batch of 64 leaves a CPU stand-in too few steps)."""
        if data != "synthetic" or (self.synthetic_seeds is None and self.synthetic_batch is None):
            return self
        seeds = self.synthetic_seeds
        capped = tuple(replace(e, seeds=min(e.seeds, seeds)) if seeds else e for e in self.experiments)
        return replace(self, experiments=capped, total_batch=self.synthetic_batch or self.total_batch)

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(f"{self.path}: no experiment {name!r}; it has {[e.name for e in self.experiments]}")

    def run_order(self, only: tuple[str, ...] | list[str] = ()) -> list[Experiment]:
        """The experiments to run (all, or ``only`` and the stage-1 experiments they start from), each stage 1
        before its stage 2 and otherwise in the manifest's order."""
        wanted = set(only) or {e.name for e in self.experiments}
        pending = list(wanted)
        while pending:
            stage1 = self.experiment(pending.pop()).init_from
            if stage1 is not None and stage1.experiment not in wanted:
                wanted.add(stage1.experiment)
                pending.append(stage1.experiment)
        return [e for e in stages_first(self.experiments, str(self.path)) if e.name in wanted]



def stages_first(experiments: tuple[Experiment, ...] | list[Experiment], where: str) -> list[Experiment]:
    """The experiments in the manifest's order, except that each stage 1 comes before the stages starting from it;
    a cycle of ``init_from`` links is an error."""
    by_name = {e.name: e for e in experiments}
    order: list[Experiment] = []
    placed: set[str] = set()
    for experiment in experiments:
        chain: list[str] = []
        current: Experiment | None = experiment
        while current is not None and current.name not in placed:  # walk to the first stage not yet placed
            if current.name in chain:
                cycle = " -> ".join([*chain[chain.index(current.name):], current.name])
                raise ManifestError(f"{where}: experiment '{current.name}': field 'init_from': a cycle ({cycle})")
            chain.append(current.name)
            current = by_name[current.init_from.experiment] if current.init_from else None
        for name in reversed(chain):
            order.append(by_name[name])
            placed.add(name)
    return order
