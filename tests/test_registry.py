"""The registry of benchmark datasets and the datamodules' class-level protocol: each dataset states its layout,
default crop and primary normaliser once, as class attributes; the checker, the submission check and the runner
read one table. The expected values below are the published protocols, written out by hand."""

import ast
import dataclasses
import inspect
import io
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from datamodules import check, registry
from datamodules.base import CropProtocol, FaceLandmarkDataModule
from datamodules.synthetic import SyntheticFaceDataModule
from landmarks.layouts import WFLW_98
from leaderboard import runner, submit
from leaderboard.manifest import Experiment

TESTS = Path(__file__).parent
ARGS = {"root": "x", "train_root": "y"}  # constructing a datamodule reads no file
# name -> (layout, default crop, primary normaliser): the papers' protocols (DATASETS.md).
PROTOCOLS = {
    "300w": ("300w_68", CropProtocol("landmarks", 1.25, "box", "landmarks"), "inter_ocular"),
    "masked300w": ("300w_68", CropProtocol("landmarks", 1.25, "box", "landmarks"), "inter_ocular"),
    "wflw": ("wflw_98", CropProtocol("given", 1.25, "box", "landmarks"), "inter_ocular"),
    "cofw": ("cofw_29", CropProtocol("given", 1.25, "box", "landmarks"), "inter_pupil"),
    "cofw68": ("300w_68", CropProtocol("given", 1.25, "box", "given"), "inter_pupil"),
    "aflw": ("aflw_19", CropProtocol("given", 1.25, "box", "given"), "bbox"),
    "aflw2000": ("300w_68", CropProtocol("landmarks", 1.25, "box", "landmarks"), "bbox"),
    "300w_lp": ("300w_68", CropProtocol("landmarks", 1.25, "box", "landmarks"), "bbox"),
}
# Published test-set sizes (the papers' and the releases' numbers).
PUBLISHED = {"300w-full": 689, "300w-common": 554, "300w-challenging": 135, "300w-private": 600,
             "300w-pwc": 330 + 224 + 300 + 300 + 135, "masked-300w-test": 689, "wflw-test": 2500, "cofw-test": 507,
             "cofw68-test": 507, "aflw-test": 4386, "aflw2000-3d": 2000}


def make(dataset: registry.BenchmarkDataset, **kwargs) -> FaceLandmarkDataModule:
    cls = dataset.datamodule
    return cls(**{n: ARGS[n] for n in inspect.signature(cls).parameters if n in ARGS}, **kwargs)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_datamodule_states_its_protocol_once_as_class_attributes(name):
    dataset = registry.DATASETS[name]
    layout, crop, normalizer = PROTOCOLS[name]
    dm = make(dataset)
    assert (dm.layout_name, dm.layout.name, dm.crop, dm.primary_normalizer) == (layout, layout, crop, normalizer)
    cls = type(dm)
    assert cls.layout.name == layout and cls.default_crop == crop and cls.default_normalizer == normalizer
    assert make(dataset, crop={"scale": 1.4}, primary_normalizer=None).crop == dataclasses.replace(crop, scale=1.4)
    assert make(dataset, primary_normalizer=None).primary_normalizer == normalizer  # None: the class default
    assert make(dataset, primary_normalizer="inter_ocular").primary_normalizer == "inter_ocular"
    # hparams: plain data holding what ran (layout and normaliser resolved), loadable with weights_only=True.
    hparams = dict(dm.hparams)
    assert hparams["layout"] == layout and hparams["primary_normalizer"] == normalizer
    assert hparams["in_memory"] is False and hparams["crop"] is None
    buffer = io.BytesIO()
    torch.save(hparams, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == hparams


def test_no_datamodule_resolves_its_crop_itself():
    for path in (TESTS.parent / "datamodules").rglob("*.py"):
        if path.name not in ("base.py", "crop.py"):
            assert "resolve_crop(" not in path.read_text(), path


def test_cli_shows_and_links_the_class_defaults():
    parser = ArgumentParser()
    parser.add_class_arguments(registry.DATASETS["aflw"].datamodule, "data")
    assert parser.get_defaults().data.primary_normalizer == "bbox"
    parser = ArgumentParser()
    parser.add_subclass_arguments(FaceLandmarkDataModule, "data")
    config = {"data": {"class_path": "datamodules.synthetic.SyntheticFaceDataModule",
                       "init_args": {"layout": "wflw_98", "primary_normalizer": None, "crop": {"scale": 1.5}}}}
    dm = parser.instantiate(parser.parse_string(yaml.safe_dump(config))).data
    assert dm.layout is WFLW_98 and dm.layout_name == "wflw_98" and dm.primary_normalizer == "inter_ocular"
    assert dm.crop == CropProtocol("jittered", 1.5, "box", "landmarks") and dm.in_memory is True
    assert "layout" not in vars(SyntheticFaceDataModule)  # an argument there: the generator serves two layouts
    assert dict(dm.hparams)["layout"] == "wflw_98" and dict(dm.hparams)["in_memory"] is True


def test_registry_is_a_table_of_frozen_entries():
    assert list(registry.DATASETS) == ["300w", "masked300w", "wflw", "cofw", "cofw68", "aflw", "aflw2000", "300w_lp"]
    entry = registry.DATASETS["wflw"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.folder = "elsewhere"
    assert entry.root("/data") == Path("/data/WFLW") and registry.dataset("wflw") is entry
    with pytest.raises(KeyError, match="unknown dataset 'lfpw'"):
        registry.dataset("lfpw")
    assert list(registry.CHECKED) == [n for n in registry.DATASETS if n != "cofw68"]  # COFW/ is checked once
    assert registry.checked_as("cofw68") == "cofw" and registry.checked_as("aflw") == "aflw"


def test_published_test_sets_come_from_the_registry():
    assert registry.published_test_set_sizes() == PUBLISHED
    assert submit.published_test_set_sizes() == PUBLISHED == submit.KNOWN_TEST_SET_SIZES


def test_checker_reads_the_registry(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        check.main(["--help"])
    assert "{300w,masked300w,wflw,cofw,aflw,aflw2000,300w_lp,all}" in capsys.readouterr().out
    called = {}

    def sources(root, **options):
        called.update(root=root, **options)
        return {}

    monkeypatch.setitem(registry.CHECKED, "wflw", dataclasses.replace(registry.CHECKED["wflw"], check_sources=sources))
    assert check.sources_for("wflw", tmp_path) == {}
    assert called == {"root": tmp_path, "on_error": "skip", "check_counts": False}


def test_runner_finds_dataset_folders_in_the_registry(tmp_path):
    experiment = Experiment("cofw68", "HGs", (), (), roots={"root": "cofw68", "train_root": "300w"})
    opts = runner.RunOptions(data_root=tmp_path)
    roots = runner.dataset_roots(experiment, opts)
    assert roots == {"root": str(tmp_path / "COFW"), "train_root": str(tmp_path / "300W")}
    problems = runner.check_datasets([experiment, experiment], opts)
    assert problems == [f"cofw: no folder {tmp_path / 'COFW'}", f"300w: no folder {tmp_path / '300W'}"]
    with pytest.raises(runner.ManifestError, match="unknown dataset 'lfpw' in roots"):
        runner.dataset_roots(Experiment("x", "m", (), (), roots={"root": "lfpw"}), opts)


def test_no_test_file_imports_another_test_file():
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0].startswith("test_")], path
