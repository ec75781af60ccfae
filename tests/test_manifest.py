"""Manifests: datasets x variants expansion, typed validation with located errors, stage ordering, and the
composed configurations of the paper manifests (shared data configs + each paper's visible overrides)."""

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from datamodules.augment import AugmentConfig
from experiments import cli
from leaderboard import runner
from leaderboard.manifest import ManifestError, load_manifest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
TEST = {"name": "t", "dataset": "300W", "synthetic": "300w"}


def write(tmp_path: Path, **fields) -> Path:
    """A manifest with two datasets and two variants (any field replaced by ``fields``)."""
    (tmp_path / "extra.yaml").write_text("data: {init_args: {val_size: 0.1}}\n")
    manifest = {
        "paper": "toy", "references": "mhhn", "config": [str(ROOT / "experiments" / "hourglass" / "model.yaml")],
        "datasets": {
            "a": {"data": [str(DATA / "300w.yaml"), "extra.yaml"], "roots": {"root": "300w"}, "tests": [TEST],
                  "args": ["--d=a"], "synthetic_args": ["--ds=a"]},
            "b": {"data": str(DATA / "cofw.yaml"), "roots": {"root": "cofw"},
                  "tests": [{"name": "c", "dataset": "COFW29", "synthetic": "none"}]},
        },
        "variants": {"v1": {"method": "V one", "args": ["--v=1"], "test_args": ["--vt=1"]},
                     "v2": {"method": "V two", "synthetic_args": ["--vs=2"]}},
        "experiments": [{"variants": ["v1", "v2"], "datasets": ["a", "b"], "args": ["--e=grid"]}],
    } | fields
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def test_grid_expands_dataset_by_dataset_with_dataset_then_variant_then_own_args(tmp_path):
    manifest = load_manifest(write(tmp_path))
    assert [e.name for e in manifest.experiments] == ["v1-a", "v2-a", "v1-b", "v2-b"]
    v1a, v2a, v1b, v2b = manifest.experiments
    assert (v1a.method, v2a.method, v1b.method, v2b.method) == ("V one", "V two", "V one", "V two")
    assert v1a.data == (DATA / "300w.yaml", tmp_path / "extra.yaml")  # relative paths: from the manifest's folder
    assert v1b.data == (DATA / "cofw.yaml",) and v1b.roots == {"root": "cofw"}
    assert [t.name for t in v1a.tests] == ["t"] and [t.dataset for t in v2b.tests] == ["COFW29"]
    assert v1a.args == ("--d=a", "--v=1", "--e=grid") and v2b.args == ("--e=grid",)
    assert v2a.synthetic_args == ("--ds=a", "--vs=2") and v1a.test_args == ("--vt=1",)
    assert (v1a.dataset, v1a.variant, v1a.seeds, v1a.init_from) == ("a", "v1", 1, None)


def test_single_dataset_entries_inherit_from_their_variant(tmp_path):
    experiments = [
        {"dataset": "a", "variant": "v1", "args": ["--own=1"], "test_args": ["--own-test=1"]},  # name v1-a
        {"name": "custom", "method": "Mine", "dataset": "b", "variant": "v2", "synthetic_args": ["--own=2"]},
        {"name": "bare", "method": "Bare", "dataset": "a"},
        {"name": "full", "method": "Full", "data": [str(DATA / "wflw.yaml")], "roots": {"root": "wflw"},
         "tests": [TEST], "args": ["--x=1"]},
    ]
    manifest = load_manifest(write(tmp_path, experiments=experiments))
    inherited, custom, bare, full = manifest.experiments
    assert (inherited.name, inherited.method) == ("v1-a", "V one")
    assert inherited.args == ("--d=a", "--v=1", "--own=1")
    assert inherited.test_args == ("--vt=1", "--own-test=1")
    assert (custom.name, custom.method, custom.synthetic_args) == ("custom", "Mine", ("--vs=2", "--own=2"))
    assert (bare.method, bare.args, bare.variant) == ("Bare", ("--d=a",), None)
    assert full.data == (DATA / "wflw.yaml",) and full.args == ("--x=1",) and full.dataset is None


def test_later_arguments_win_when_composed(tmp_path, monkeypatch):
    """Dataset, then variant, then the experiment's own: LightningCLI keeps the last value of a repeated key."""
    monkeypatch.setattr(cli.FaceAlignmentCLI, "instantiate_classes", lambda self: None)
    datasets = {"a": {"data": [str(DATA / "300w.yaml")], "roots": {"root": "300w"}, "tests": [TEST],
                      "args": ["--data.init_args.val_size=0.2", "--data.init_args.num_workers=3"]}}
    variants = {"v": {"method": "V", "args": ["--data.init_args.val_size=0.3", "--data.init_args.input_size=128"]}}
    experiments = [{"dataset": "a", "variant": "v", "args": ["--data.init_args.input_size=96"]}]
    manifest = load_manifest(write(tmp_path, datasets=datasets, variants=variants, experiments=experiments))
    opts = runner.RunOptions(data="real", workdir=tmp_path / "runs", wandb=False)
    args = runner.compose_args(manifest, manifest.experiments[0], None, opts, "fit")
    data = cli.main(args, run=False).config.data.init_args
    assert (data.num_workers, data.val_size, data.input_size) == (3, 0.3, 96)


def test_datasets_block_can_live_in_its_own_file(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "over.yaml").write_text("data: {init_args: {val_size: 0.1}}\n")
    block = {"a": {"data": [str(DATA / "300w.yaml"), "over.yaml"], "roots": {"root": "300w"}, "tests": [TEST]}}
    (tmp_path / "shared" / "datasets.yaml").write_text(yaml.safe_dump(block))
    manifest = load_manifest(write(tmp_path, datasets="shared/datasets.yaml",
                                   experiments=[{"variants": ["v1"], "datasets": ["a"]}]))
    assert manifest.experiments[0].data == (DATA / "300w.yaml", tmp_path / "shared" / "over.yaml")


@pytest.mark.parametrize(("change", "message"), [
    ({"seeds": "two"}, "experiment 'x': field 'seeds': expected a positive integer, got 'two'"),
    ({"seeds": 0}, "experiment 'x': field 'seeds': expected a positive integer, got 0"),
    ({"fit": "yes"}, "experiment 'x': field 'fit': expected true or false, got 'yes'"),
    ({"args": {"a": 1}}, "experiment 'x': field 'args': expected a list of strings, got {'a': 1}"),
    ({"tset_args": []}, "experiment 'x': unknown keys ['tset_args']"),
    ({"variant": "v9"}, "experiment 'x': field 'variant': unknown variant 'v9'"),
    ({"dataset": "zz"}, "experiment 'x': field 'dataset': unknown dataset 'zz'"),
    ({"data": "x.yaml"}, "experiment 'x': field 'data': not with 'dataset'"),
    ({"method": None, "variant": None}, "experiment 'x': missing ['method']"),
    ({"init_from": "nope"}, "experiment 'x': field 'init_from': unknown experiment 'nope'"),
    ({"init_from": {"experiment": "v1-a", "module": ["net"]}}, "experiment 'x': field 'init_from': unknown keys"),
    ({"init_from": "x"}, "experiment 'x': field 'init_from': a cycle (x -> x)"),
    ({"init_from": "v1-a", "fit": False}, "experiment 'x': field 'init_from': both stages must train"),
])
def test_experiment_errors_name_the_file_the_experiment_and_the_field(tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    entry = {"name": "x", "method": "X", "dataset": "a", "variant": "v1"} | change
    entry = {k: v for k, v in entry.items() if v is not None}
    path = write(tmp_path, experiments=[{"dataset": "a", "variant": "v1"}, entry])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(err.value).startswith(f"manifest.yaml: {message}"), str(err.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"experiments": [{"variants": ["v1"], "datasets": ["a", "q"]}]},
     "manifest.yaml: experiments[0]: field 'datasets': unknown ['q']"),
    ({"experiments": [{"variants": ["v1"], "datasets": ["a"], "name": "g"}]},
     "manifest.yaml: experiments[0]: unknown keys ['name']"),
    ({"experiments": [{"method": "M", "dataset": "a"}]}, "manifest.yaml: experiments[0]: missing ['name']"),
    ({"variants": {"v1": {"methods": "M"}}}, "manifest.yaml: variant 'v1': unknown keys ['methods']"),
    ({"datasets": {"a": {"data": "nowhere.yaml", "tests": [TEST]}}},
     "manifest.yaml: dataset 'a': field 'data': config"),
    ({"datasets": {"a": {"tests": [{"name": "t"}]}}}, "manifest.yaml: dataset 'a': tests[0]: missing ['dataset']"),
    ({"datasets": {"a": {"tests": []}}}, "manifest.yaml: dataset 'a': no tests"),
    ({"datasets": "missing.yaml"}, "manifest.yaml: field 'datasets': config"),
    ({"seeds": -1}, "manifest.yaml: field 'seeds': expected a positive integer, got -1"),
    ({"batch": {"total": 16, "lr_scaling": "sqrt"}}, "manifest.yaml: batch: field 'lr_scaling': expected 'none' or"),
    ({"tabels": []}, "manifest.yaml: unknown keys ['tabels']"),
    ({"experiments": [{"variants": ["v1", "v1"], "datasets": ["a"]}]}, "manifest.yaml: experiment names are not"),
])
def test_manifest_errors_name_the_file_and_the_field(tmp_path, monkeypatch, fields, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path, **fields))
    assert str(err.value).startswith(message), str(err.value)


def stages(tmp_path: Path, **seeds: int) -> Path:
    """stage2 (listed first) starts from stage1; `other` is independent."""
    experiments = [{"name": "stage2", "dataset": "a", "variant": "v2",
                    "init_from": {"experiment": "stage1", "modules": ["net"]}},
                   {"name": "other", "dataset": "b", "variant": "v1"},
                   {"name": "stage1", "dataset": "a", "variant": "v1"}]
    for e in experiments:
        if e["name"] in seeds:
            e["seeds"] = seeds[e["name"]]
    return write(tmp_path, experiments=experiments)


def test_stage_one_runs_first_and_only_pulls_it_in(tmp_path):
    manifest = load_manifest(stages(tmp_path))
    assert [e.name for e in manifest.experiments] == ["stage2", "other", "stage1"]  # as listed (tables use this)
    assert [e.name for e in manifest.run_order()] == ["stage1", "stage2", "other"]
    assert [e.name for e in manifest.run_order(["stage2"])] == ["stage1", "stage2"]
    assert [e.name for e in manifest.run_order(["other"])] == ["other"]
    link = manifest.experiment("stage2").init_from
    assert (link.experiment, link.modules) == ("stage1", ("net",))


def test_stage_cycles_and_seed_mismatches_are_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_manifest(stages(tmp_path, stage2=3))  # one stage-1 seed serves every stage-2 seed
    load_manifest(stages(tmp_path, stage1=3, stage2=3))  # seed i from seed i
    with pytest.raises(ManifestError, match="stage 1 'stage1' has 2 seeds and this experiment 3"):
        load_manifest(stages(tmp_path, stage1=2, stage2=3))
    raw = yaml.safe_load(stages(tmp_path).read_text())
    raw["experiments"][2]["init_from"] = "stage2"
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match=r"field 'init_from': a cycle \(stage2 -> stage1 -> stage2\)"):
        load_manifest(tmp_path / "manifest.yaml")


def test_manifest_level_seeds_are_the_default(tmp_path):
    manifest = load_manifest(write(tmp_path, seeds=5, experiments=[
        {"variants": ["v1"], "datasets": ["a"]}, {"name": "one", "dataset": "b", "variant": "v2", "seeds": 1}]))
    assert [e.seeds for e in manifest.experiments] == [5, 1]


# --- the paper manifests ----------------------------------------------------------------------------------


def composed(paper: str, monkeypatch, data: str = "real") -> dict[str, object]:
    """Experiment name -> the LightningCLI config of its fit, parsed from the manifest (nothing instantiated)."""
    monkeypatch.setattr(cli.FaceAlignmentCLI, "instantiate_classes", lambda self: None)
    manifest = load_manifest(paper)
    opts = runner.RunOptions(data=data, workdir=Path("runs"), wandb=False)
    return {e.name: cli.main(runner.compose_args(manifest, e, None, opts, "fit"), run=False).config
            for e in manifest.experiments}


def test_mhhn_protocol_overrides_stay_visible_and_in_force(monkeypatch):
    """MHHN (and the HGs baseline trained as MHHN trains it) select 300W and COFW on the inter-pupil NME (Table
    I; Table II's "inter-ocular" is COFW's pupil distance), AFLW on face size, WFLW inter-ocular, and train with
    MHHN's augmentation:
    uniform +-30 deg, 0.8-1.2, 5% shifts, flip, the rest at AugmentConfig's defaults (IMPLEMENTATION_NOTES 2.4)."""
    expected_norm = {"300w": "inter_pupil", "cofw": "inter_pupil", "aflw": "bbox", "wflw": "inter_ocular"}
    augment = asdict(AugmentConfig()) | {"rotate": 30.0, "scale": (0.8, 1.2), "translate": 0.05, "flip_p": 0.5}
    for paper in ("mhhn", "hourglass"):
        manifest = load_manifest(paper)
        configs = composed(paper, monkeypatch)
        for experiment in manifest.experiments:
            data = configs[experiment.name].data.init_args
            assert data.primary_normalizer == expected_norm[experiment.dataset], (paper, experiment.name)
            assert {k: getattr(data.augment, k) for k in augment} == augment, (paper, experiment.name)
            assert data.val_size == 0.05 and data.input_size == 256 and data.batch_size == manifest.total_batch
    assert {e.dataset for e in load_manifest("mhhn").experiments if e.name.endswith("-300w")} == {"300w"}


def test_mhhn_grid_is_the_four_variants_on_the_four_benchmarks(monkeypatch):
    manifest = load_manifest("mhhn")
    variants = {"hgs": "HGs", "hgs-hsr": "HGs+HSR", "hgs-mcg": "HGs+MCG", "mhhn": "HGs+MCG+HSR (MHHN)"}
    tests = {"300w": ("300w-full", "300W", "300w"), "cofw": ("cofw", "COFW29", "none"),
             "aflw": ("aflw", "AFLW", "aflw"), "wflw": ("wflw", "WFLW", "attributes")}
    grid = [f"{v}-{d}" for d in tests for v in variants]
    assert [e.name for e in manifest.experiments[:16]] == grid
    for experiment in manifest.experiments[:16]:
        assert experiment.method == variants[experiment.variant]
        assert [(t.name, t.dataset, t.synthetic) for t in experiment.tests] == [tests[experiment.dataset]]
    configs = composed("mhhn", monkeypatch, "synthetic")
    peers = {name for name, c in configs.items() if "codec" not in c.model.init_args}
    assert peers == {"dlib-peer-300w"}  # the pretrained peer: no MHHN arguments, no training
    assert configs["dlib-peer-300w"].model.class_path == "lightning_modules.peers.dlib_ert.DlibERTModule"
    codec = {name: (c.model.init_args.mcg, c.model.init_args.loss, c.model.init_args.codec.decoder)
             for name, c in configs.items() if name not in peers}
    assert codec["hgs-300w"] == ("none", "mse", "argmax_integer")  # MHHN's HGs rows traverse the heatmap
    assert codec["hgs-hsr-cofw"] == ("none", "sdl", "sdt") and codec["mhhn-wflw"] == ("all", "sdl", "sdt")
    assert configs["hgs-wflw"].data.init_args.layout == "wflw_98"  # the WFLW stand-in has 98 points
    assert configs["hgs-hsr-sigma4-300w"].model.init_args.codec.sigma == 1.333  # synthetic_args win


@pytest.mark.parametrize(("name", "datamodule", "normalizer"), [
    ("300w", "datamodules.w300.W300DataModule", "inter_ocular"),
    ("wflw", "datamodules.wflw.WFLWDataModule", "inter_ocular"),
    ("cofw", "datamodules.cofw.COFWDataModule", "inter_pupil"),
    ("cofw68", "datamodules.cofw.COFW68DataModule", "inter_pupil"),
    ("aflw", "datamodules.aflw.AFLWDataModule", "bbox"),
    ("aflw2000", "datamodules.aflw2000.AFLW2000DataModule", "bbox"),
    ("masked300w", "datamodules.w300.Masked300WDataModule", "inter_ocular"),
])
def test_shared_data_configs_parse_with_their_datamodule(monkeypatch, name, datamodule, normalizer):
    """Each benchmark's one protocol file names its datamodule and the normaliser the benchmark is reported
    with (DATASETS.md), and every argument it sets is one the datamodule accepts."""
    monkeypatch.setattr(cli.FaceAlignmentCLI, "instantiate_classes", lambda self: None)
    model = ROOT / "experiments" / "hourglass" / "model.yaml"
    config = cli.main(["--config", str(model), "--config", str(DATA / f"{name}.yaml")], run=False).config
    assert config.data.class_path == datamodule
    assert config.data.init_args.primary_normalizer == normalizer
    assert config.data.init_args.val_size == 0.05 and config.data.init_args.input_size == 256
