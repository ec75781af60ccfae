"""The benchmark datasets in one table: CLI name, DATA_ROOT sub-folder, datamodule, checker sources and the
published test sets with their sizes.

The dataset checker (``python -m datamodules.check``), the leaderboard's submission check
(``leaderboard.submit.KNOWN_TEST_SET_SIZES``) and the runner (``roots:`` of a manifest, and the check before a
run) read this table; the sizes themselves stay with each dataset's parser (``w300.FOLDERS``, ...), which
enforces them. Configs still name datamodules by import path (DESIGN.md, "Configs are the registry"); this
table is what the tools need beyond a config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from datamodules import aflw, aflw2000, cofw, w300, wflw
from datamodules.base import FaceLandmarkDataModule, FaceSource

CheckSources = Callable[..., dict[str, Callable[[], FaceSource]]]  # (root, **options) -> {split: builder}


@dataclass(frozen=True)
class BenchmarkDataset:
    """One benchmark dataset as the tools see it.

    Attributes:
        name: the CLI name (``python -m datamodules.check <name>``, a manifest's ``roots``).
        folder: its sub-folder of DATA_ROOT.
        datamodule: the datamodule that trains and tests on it.
        check_sources: ``(root, **options) -> {split: source builder}`` for the checker; None for a dataset
            whose files the dataset owning the same folder checks (COFW-68 lives in ``COFW/``).
        test_sets: published test sets, as the datamodule names its test source -> number of faces.
    """

    name: str
    folder: str
    datamodule: type[FaceLandmarkDataModule]
    check_sources: CheckSources | None
    test_sets: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def root(self, data_root: str | Path) -> Path:
        """The dataset's folder under ``data_root``."""
        return Path(data_root) / self.folder


def _entries(*datasets: BenchmarkDataset) -> dict[str, BenchmarkDataset]:
    return {d.name: d for d in datasets}


DATASETS: dict[str, BenchmarkDataset] = _entries(
    BenchmarkDataset("300w", "300W", w300.W300DataModule, w300.check_sources,
                     {f"300w-{name}": sum(w300.FOLDERS[f][1] for f in folders)
                      for name, folders in w300.TEST_SETS.items()}),
    BenchmarkDataset("masked300w", "Masked_300W", w300.Masked300WDataModule, w300.check_masked_sources,
                     {"masked-300w-test": sum(size for _, size, _ in w300.MASKED_FOLDERS.values())}),
    BenchmarkDataset("wflw", "WFLW", wflw.WFLWDataModule, wflw.check_sources, {"wflw-test": wflw.EXPECTED["test"]}),
    BenchmarkDataset("cofw", "COFW", cofw.COFWDataModule, cofw.check_sources, {"cofw-test": cofw.SPLITS["test"][1]}),
    BenchmarkDataset("cofw68", "COFW", cofw.COFW68DataModule, None, {"cofw68-test": cofw.COFW68_SIZE}),
    BenchmarkDataset("aflw", "AFLW", aflw.AFLWDataModule, aflw.check_sources, {"aflw-test": aflw.TEST_SIZE}),
    BenchmarkDataset("aflw2000", "AFLW2000-3D", aflw2000.AFLW2000DataModule, aflw2000.check_sources,
                     {"aflw2000-3d": aflw2000.AFLW2000_SIZE}),
    BenchmarkDataset("300w_lp", "300W_LP", aflw2000.AFLW2000DataModule, aflw2000.check_w300lp_sources),
)
# The datasets the checker takes by name, in table order (each folder checked once).
CHECKED: dict[str, BenchmarkDataset] = {name: d for name, d in DATASETS.items() if d.check_sources is not None}


def dataset(name: str) -> BenchmarkDataset:
    """The dataset called ``name``; a KeyError listing the known names otherwise."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def checked_as(name: str) -> str:
    """The checker's name for the files of dataset ``name``: itself, or the dataset that owns its folder."""
    folder = dataset(name).folder
    return name if name in CHECKED else next(n for n, d in CHECKED.items() if d.folder == folder)


def published_test_set_sizes() -> dict[str, int]:
    """Every published test set (as the datamodules name their test sources) -> its number of faces."""
    return {test_set: size for d in DATASETS.values() for test_set, size in d.test_sets.items()}
