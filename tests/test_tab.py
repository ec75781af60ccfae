"""TAB (paper 004): sizes against the paper and the notes, the two training stages, the boundary MSE of Table 8."""

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from landmarks.layouts import get_layout
from leaderboard.paper_tables import DIAGNOSTIC_METRICS
from lightning_modules.components.hourglass import Hourglass, avg_pool
from lightning_modules.components.hpm import HPMBlock
from lightning_modules.tab import SCBE, BoundaryMSE, TABModule

MIB = 2**20


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def state_bytes(module: nn.Module) -> int:
    """Bytes of the state dict (parameters and BatchNorm buffers; num_batches_tracked is an int64 per BN)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@pytest.fixture(scope="module")
def wflw_tab() -> TABModule:
    return TABModule(layout="wflw_98")


def test_sizes_match_the_paper_and_the_notes(wflw_tab):
    """Notes §5.2: 22.72 M parameters (SCBE 13.33 M, BALT 9.39 M); state dict 86.8 MiB ("86.9 MB" in the paper);
    the 1-stack model 16.9 M / 64.5 MiB."""
    assert count(wflw_tab) == pytest.approx(22.72e6, rel=0.01)
    assert count(wflw_tab.scbe) == pytest.approx(13.33e6, rel=0.01)
    assert count(wflw_tab.balt) == pytest.approx(9.39e6, rel=0.01)
    assert state_bytes(wflw_tab) / MIB == pytest.approx(86.8, rel=0.01)
    one = TABModule(layout="wflw_98", num_stacks=1)
    assert count(one) == pytest.approx(16.9e6, rel=0.01)
    assert state_bytes(one) / MIB == pytest.approx(64.5, rel=0.01)


def test_wflw_scbe_predicts_fifteen_lines_and_their_union(wflw_tab):
    scbe = wflw_tab.scbe.net
    assert [m.out_channels for m in scbe.to_maps] == [16, 16]
    assert len(get_layout("wflw_98").boundaries) == 15


def test_hourglass_levels_are_the_level_sums_coarse_to_fine():
    """``Hourglass.levels`` against a hand-unrolled depth-2 hourglass: level 1 = upper + up(inner block), level 2 =
    the output."""
    torch.manual_seed(0)
    hg = Hourglass(2, 8, HPMBlock, avg_pool).eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        levels = hg.levels(x)
        inner = hg.inner
        p = hg.down(hg.pool(x))
        level1 = inner.upper(p) + inner.upsample(inner.up(inner.inner(inner.down(inner.pool(p)))))
        level2 = hg.upper(x) + hg.upsample(hg.up(level1))
        assert [t.shape[-1] for t in levels] == [8, 16]
        torch.testing.assert_close(levels[0], level1)
        torch.testing.assert_close(levels[1], level2)
        torch.testing.assert_close(hg(x), level2)


def test_scbe_exposes_the_last_hourglass_features_fine_to_coarse():
    scbe = SCBE(num_maps=14, num_stacks=2, depth=4, channels=32, stem="hourglass").eval()
    with torch.no_grad():
        out = scbe(torch.randn(1, 3, 64, 64))
    assert [tuple(b.shape) for b in out.boundaries] == [(1, 14, 16, 16)] * 2
    assert [t.shape[-1] for t in out.levels] == [16, 8, 4, 2]
    assert out.features.shape == (1, 32, 16, 16)


def test_hourglass_initialisation_is_the_papers_and_the_stem_keeps_its_own():
    scbe = SCBE(num_maps=16)
    weights = torch.cat([m.weight.flatten() for n, m in scbe.net.named_modules()
                         if isinstance(m, nn.Conv2d) and not n.startswith("stem")])
    assert weights.std().item() == pytest.approx(0.001, rel=0.02)
    stem = torch.cat([m.weight.flatten() for m in scbe.net.stem.modules() if isinstance(m, nn.Conv2d)])
    assert stem.std().item() > 0.005  # PyTorch's default (Kaiming-uniform) scale, not 0.001


def small(**kwargs) -> TABModule:
    """A TAB small enough for CPU steps: 64 px crops, a 32-channel hourglass stem, BALT width 8."""
    args = {"layout": "300w_68", "input_size": 64, "stem": "hourglass", "channels": 32, "width": 8} | kwargs
    return TABModule(**args)


def batch(n: int = 2, size: int = 64, layout: str = "300w_68") -> dict:
    gen = torch.Generator().manual_seed(1)
    points = 16 + 32 * torch.rand(n, get_layout(layout).num_points, 2, generator=gen)
    return {"image": torch.randn(n, 3, size, size, generator=gen), "landmarks": points,
            "subsets": [("common",), ("challenging",)][:n]}


def test_stage_one_trains_the_boundary_estimator_only():
    model = small(stage="scbe")
    assert model.balt is None
    terms = model.training_loss(model(batch()["image"]), batch())
    assert set(terms) == {"loss", "boundary"}
    with pytest.raises(RuntimeError, match="stage-2"):
        model.decode(model(batch()["image"]))


def test_end_to_end_trains_both_modules_on_both_losses():
    model = small(stage="end_to_end")
    terms = model.training_loss(model(batch()["image"]), batch())
    assert set(terms) == {"loss", "boundary", "landmark"}
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_stage_two_freezes_the_scbe_weights_and_batchnorm_statistics(tmp_path):
    """A real stage-2 fit (Lightning loop): the SCBE loaded from the stage-1 file stays bit-identical (weights and
    BatchNorm running statistics) while the BALT moves."""
    from datamodules.synthetic import SyntheticFaceDataModule

    stage1 = small(stage="scbe")
    with torch.no_grad():  # non-trivial statistics, so that a moving average would show
        for m in stage1.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "stage1.pt"
    torch.save(stage1.state_dict(), path)
    model = small(stage="balt", init_from=str(path), init_modules=["scbe"])
    balt_before = {k: v.clone() for k, v in model.balt.state_dict().items()}
    data = SyntheticFaceDataModule(layout="300w_68", train_size=8, val_size=2, test_size=2, image_size=96,
                                   input_size=64, batch_size=4, num_workers=0)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    for key, value in stage1.scbe.state_dict().items():
        torch.testing.assert_close(model.scbe.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert all(p.grad is None and not p.requires_grad for p in model.scbe.parameters())
    after = model.balt.state_dict()
    assert any(v.is_floating_point() and not torch.equal(after[k], v) for k, v in balt_before.items())


def test_stage_two_refuses_to_start_without_a_stage_one_checkpoint():
    model = small(stage="balt")
    with pytest.raises(ValueError, match="init_from"):
        model.setup("fit")


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="no boundaries"):
        TABModule(layout="cofw_29", input_size=64)
    with pytest.raises(ValueError, match="boundary_layout"):
        TABModule(layout="cofw_29", input_size=64, stage="scbe", boundary_layout="wflw_98")
    with pytest.raises(ValueError, match="stem_weights"):
        TABModule(layout="300w_68", stem_weights="vgg16_bn.pth")
    with pytest.raises(ValueError, match="stage"):
        TABModule(layout="300w_68", stage="both")


def test_a_reused_wflw_scbe_feeds_sixteen_maps_to_a_19_point_balt():
    model = small(layout="aflw_19", boundary_layout="wflw_98").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.scbe.boundaries[-1].shape[1] == 16 and out.landmarks.shape[1] == 19


def test_a_missing_stem_weight_file_fails_at_the_start_of_stage_one(tmp_path):
    model = small(stage="scbe", stem="vgg", stem_weights=str(tmp_path / "vgg16_bn-6c64b313.pth"))
    with pytest.raises(FileNotFoundError, match="vgg16_bn-6c64b313.pth"):
        model.setup("fit")


def test_boundary_mse_per_subset_against_a_numpy_loop():
    rng = np.random.default_rng(0)
    per_face = rng.random(7)
    mask = rng.random((7, 2)) < 0.5
    metric = BoundaryMSE(2)
    metric.update(torch.tensor(per_face[:3]), torch.tensor(mask[:3]))
    metric.update(torch.tensor(per_face[3:]), torch.tensor(mask[3:]))
    got = metric.compute().numpy()
    expected = [per_face.mean()] + [np.mean([per_face[i] for i in range(7) if mask[i, s]]) for s in range(2)]
    np.testing.assert_allclose(got, expected)


def test_boundary_mse_diagnostics_are_the_mean_squared_error_of_the_last_stack(monkeypatch):
    model = small().eval()
    model.subsets = ("common", "challenging")
    b = batch()
    with torch.no_grad():
        out = model(b["image"])
        model.update_diagnostics(out, b, "test")
        maps = out.scbe.boundaries[-1]
        target = model.boundary_targets(b, maps)
    diagnostics = model.compute_diagnostics("test")
    errors = ((maps - target) ** 2).mean((1, 2, 3)).numpy()
    assert diagnostics["boundary_mse"] == pytest.approx(errors.mean())
    assert diagnostics["boundary_mse/common"] == pytest.approx(errors[0])
    assert diagnostics["boundary_mse/challenging"] == pytest.approx(errors[1])
    assert diagnostics["scbe_stem_imagenet"] == 0.0
    assert DIAGNOSTIC_METRICS["MSE_boundary_heatmap"] == "boundary_mse"


def test_configs_build_the_paper_model():
    import yaml

    config = yaml.safe_load(Path("experiments/tab/model.yaml").read_text())["model"]["init_args"]
    model = TABModule(layout="wflw_98", **{k: v for k, v in config.items() if k not in ("optimizer", "lr_scheduler")})
    assert count(model) == pytest.approx(22.72e6, rel=0.01)
