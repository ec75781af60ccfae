"""MHHNModule: the ablation switches, its losses on every stack, SDT decoding in crop pixels, the fallback count.

Every manifest experiment (each ablation row) is also built from its real config and run as a synthetic
fast_dev_run in test_runner.py::test_real_configs_compose_and_synthetic_ones_run.
"""

import pytest
import torch

from landmarks.heatmaps import HeatmapCodec, crop_to_heatmap, decode_argmax, encode_gaussian, heatmap_to_crop
from landmarks.losses import js_divergence, kl_divergence, subpixel_detection_loss, weighted_heatmap_mse
from lightning_modules.mhhn import MHHNModule

SMALL = dict(layout="300w_68", input_size=64, num_stacks=2, depth=2, channels=16)
SMALL_CODEC = dict(stride=4, sigma=1.0, decoder="sdt", window=5, sdt_reading="isotropic", sdt_frame="window")


def model(**kw) -> MHHNModule:
    """A small MHHN; the codec's fields (and the old name ``heatmap_stride`` of its stride) may be given flat."""
    torch.manual_seed(0)
    if "heatmap_stride" in kw:
        kw["stride"] = kw.pop("heatmap_stride")
    codec = SMALL_CODEC | {k: kw.pop(k) for k in list(kw) if k in SMALL_CODEC}
    return MHHNModule(codec=HeatmapCodec(**codec), **(SMALL | kw))


def batch_points(n: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"landmarks": torch.rand(n, 68, 2, generator=g) * 48 + 8}


@pytest.mark.parametrize("loss", ["mse", "kld", "jsd", "sdl"])
def test_training_loss_sums_the_chosen_loss_over_every_stack(loss):
    m = model(loss=loss, fdl_weight=0.25)
    batch = batch_points()
    outputs = [torch.rand(2, 68, 16, 16) for _ in range(2)]
    terms = m.training_loss(outputs, batch)
    points = crop_to_heatmap(batch["landmarks"], 4.0)
    target = encode_gaussian(points, (16, 16), 1.0)
    expected = {
        "mse": lambda o: weighted_heatmap_mse(o, target),
        "kld": lambda o: kl_divergence(o, target).sum(-1).mean(),
        "jsd": lambda o: js_divergence(o, target).sum(-1).mean(),
        "sdl": lambda o: subpixel_detection_loss(o, target, points, 1.0, 0.25, 5)["loss"],
    }[loss]
    assert terms["loss"].item() == pytest.approx(sum(expected(o).item() for o in outputs), rel=1e-5)
    if loss == "sdl":
        assert terms["loss"].item() == pytest.approx(terms["js"].item() + 0.25 * terms["fdl"].item(), rel=1e-5)


def test_sdt_decoder_returns_sub_pixel_landmarks_in_crop_pixels():
    m = model(decoder="sdt").eval()
    points = batch_points()["landmarks"]
    maps = encode_gaussian(crop_to_heatmap(points, 4.0), (16, 16), 1.0)  # the targets themselves
    decoded = m.decode([maps])
    assert (decoded - points).abs().max() < 1e-3
    argmax = heatmap_to_crop(decode_argmax(maps), 4.0)
    assert (argmax - points).abs().max() > 0.5  # the stride-4 grid: argmax + 1/4 is off by up to 1 crop px


def test_evaluation_diagnostics_count_fallbacks_fdl_active_share_and_peak_heights():
    """Exact Gaussians of height 0.9 at the truth (fitted G = 0.9, inside the gate), ten flat maps (fallbacks,
    no peak) and one peak 3 heatmap px off (outside the 2 px gate of a 5x5 window): shares by counting."""
    m = model()
    points = batch_points()["landmarks"]
    heat = crop_to_heatmap(points, 4.0)
    shifted = heat.clone()
    shifted[1, 0] += torch.tensor([3.0, 0.0])
    maps = 0.9 * encode_gaussian(shifted, (16, 16), 1.0)
    maps[0, :10] = 0.2
    m.update_diagnostics([maps], {"landmarks": points}, "test")
    d = m.compute_diagnostics("test")
    n = 2 * 68
    assert d["sdt_fallback"] == pytest.approx(10 / n) and d["fdl_active"] == pytest.approx((n - 11) / n)
    assert d["peak_height_p10"] == pytest.approx(0.9, abs=1e-3) and d["peak_height_p90"] == pytest.approx(0.9, abs=1e-3)
    assert m.compute_diagnostics("test") == {}  # reset after computing
    m.update_diagnostics([maps], {"landmarks": points}, "val")
    m.gated = False  # without the gate the FDL acts on every fitted landmark
    m.update_diagnostics([maps], {"landmarks": points}, "test")
    assert m.compute_diagnostics("test")["fdl_active"] == pytest.approx((n - 10) / n)


def test_training_terms_carry_the_last_stack_diagnostics_not_sums():
    m = model()
    batch = batch_points()
    good = encode_gaussian(crop_to_heatmap(batch["landmarks"], 4.0), (16, 16), 1.0)
    terms = m.training_loss([torch.full_like(good, 0.2), good], batch)  # the first stack all fallbacks
    assert terms["sdt_fallback"].item() == 0 and terms["fdl_active"].item() == 1
    assert terms["peak_height"].item() == pytest.approx(1.0, abs=1e-4)


def test_unconstrained_decoder_and_32x32_variant():
    m = model(sdt_reading="eq18", heatmap_stride=8, sigma=0.7)
    outputs = m(torch.randn(1, 3, 64, 64))
    assert outputs[-1].shape == (1, 68, 8, 8)
    points = batch_points(1)["landmarks"]
    maps = encode_gaussian(crop_to_heatmap(points, 8.0), (8, 8), 0.7)
    assert (m.eval().decode([maps]) - points).abs().max() < 1e-2


def test_mcg_switch_adds_one_gamma_per_block():
    counts = {mcg: sum(p.numel() for p in model(mcg=mcg).parameters()) for mcg in ("none", "last", "all")}
    assert counts["last"] - counts["none"] == 1 and counts["all"] - counts["none"] == 2


def test_full_mhhn_trains_a_step_and_gradients_reach_every_stack():
    m = model()
    m.train()
    images = torch.randn(2, 3, 64, 64)
    terms = m.training_loss(m(images), batch_points())
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("bad", [{"loss": "l1"}, {"decoder": "median"}, {"window": 4}, {"mcg": "first"}])
def test_bad_switches_are_refused(bad):
    with pytest.raises(ValueError):
        model(**bad)


def test_hyper_parameters_are_plain_data_and_rebuild_the_model(tmp_path):
    """Checkpoints hold hparams loadable with weights_only=True: the codec as a mapping, no private network parts
    (the MCG hook); building from them gives the same model."""
    m = model(mcg="last", sdt_reading="eq18")
    path = tmp_path / "hparams.pt"
    torch.save({"hyper_parameters": dict(m.hparams)}, path)
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["codec"] == {"stride": 4, "sigma": 1.0, "truncate": None, "decoder": "sdt", "window": 5,
                                "sdt_reading": "eq18", "sdt_frame": "window", "max_offset": 1.0}
    assert not any(key.startswith("_") for key in hparams)
    rebuilt = MHHNModule(**hparams)
    assert rebuilt.codec == m.codec and rebuilt.state_dict().keys() == m.state_dict().keys()
    assert list(rebuilt.net.hooks) == ["1"]


def test_test_records_carry_the_sdt_diagnostics(tmp_path):
    """A test pass writes the fallback share, the FDL-active share and the peak-height quantiles into the record."""
    import pytorch_lightning as pl

    from datamodules.synthetic import SyntheticFaceDataModule
    from leaderboard.callback import EvaluationRecorder
    from leaderboard.store import load_record

    data = SyntheticFaceDataModule(train_size=12, test_size=6, image_size=96, input_size=64, batch_size=3,
                                   num_workers=0, val_size=4)
    recorder = EvaluationRecorder(results_dir=str(tmp_path / "results"), method="tiny MHHN")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path, callbacks=[recorder])
    trainer.test(model(), datamodule=data, verbose=False)
    diagnostics = load_record(recorder.last_record)["diagnostics"]
    assert set(diagnostics) >= {"sdt_fallback", "fdl_active", "peak_height_p50"}
    assert 0 <= diagnostics["fdl_active"] <= 1 - diagnostics["sdt_fallback"] + 1e-9
    assert trainer.callback_metrics["test/sdt_fallback"] == pytest.approx(diagnostics["sdt_fallback"])
