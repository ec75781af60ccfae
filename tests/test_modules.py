"""LandmarkModule behaviour, the hourglass baseline, checkpoints, and fast_dev_run of every config."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from datamodules.base import collate_faces
from datamodules.synthetic import SyntheticFaceDataModule
from experiments.cli import main as cli_main
from landmarks.heatmaps import HeatmapCodec
from landmarks.layouts import W300_68
from lightning_modules.components.hourglass import Bottleneck, StackedHourglass
from lightning_modules.hourglass import StackedHourglassModule
from lightning_modules.mean_shape import MeanShapeModule


def _standalone(path: Path) -> bool:
    """A config that names both a model and a datamodule; the parts manifests compose are tested in test_runner."""
    config = yaml.safe_load(path.read_text()) or {}
    return all("class_path" in (config.get(key) or {}) for key in ("model", "data"))


CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "experiments").glob("**/*.yaml") if _standalone(p))


def tiny_data(**kw):
    args = dict(train_size=24, test_size=9, image_size=128, input_size=64, batch_size=4, num_workers=0, val_size=8)
    return SyntheticFaceDataModule(**(args | kw))


def tiny_hourglass(sigma: float = 1.5, **kw):
    return StackedHourglassModule(layout="300w_68", input_size=64, num_stacks=2, depth=2, channels=16,
                                  codec=HeatmapCodec(sigma=sigma), **kw)


def test_bottleneck_parameter_count_closed_form():
    cin, cout = 64, 128
    mid = cout // 2
    bn = lambda c: 2 * c  # noqa: E731
    expected = (bn(cin) + cin * mid + bn(mid) + mid * mid * 9 + bn(mid) + mid * cout + cout) + (cin * cout + cout)
    assert sum(p.numel() for p in Bottleneck(cin, cout).parameters()) == expected


def test_stacked_hourglass_shapes_and_input_check():
    net = StackedHourglass(out_channels=68, num_stacks=3, depth=3, channels=32)
    outs = net(torch.zeros(2, 3, 64, 64))
    assert len(outs) == 3 and all(o.shape == (2, 68, 16, 16) for o in outs)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="built for 64px"):
        tiny_hourglass()(torch.zeros(1, 3, 96, 96))


def test_flip_test_prediction_is_mirror_equivariant():
    """With flip testing, predicting on a mirrored image gives exactly the mirrored prediction, for any network."""
    torch.manual_seed(0)
    model = tiny_hourglass(flip_test=True).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        direct = model.predict_landmarks(images)
        mirrored = model.predict_landmarks(images.flip(-1))
    torch.testing.assert_close(mirrored, W300_68.flip_points(direct, 64), atol=1e-4, rtol=0)
    model.flip_test = False
    with torch.no_grad():  # without flip testing a random network is not equivariant
        assert not torch.allclose(model.predict_landmarks(images.flip(-1)), W300_68.flip_points(
            model.predict_landmarks(images), 64), atol=1e-2)


def test_decoders_map_heatmaps_back_to_crop_pixels():
    model = tiny_hourglass(sigma=1.5)
    # crop pixels of a 64 px crop, stride 4, at least 3 sigma inside the 16x16 maps (soft-argmax is biased at borders)
    points = torch.tensor([[[22.0, 26.0], [33.3, 41.7]]])
    from landmarks.heatmaps import crop_to_heatmap, encode_gaussian
    maps = encode_gaussian(crop_to_heatmap(points, 4.0), (16, 16), 1.5)
    assert (model.decode([maps]) - points).abs().max() <= 4 * 0.25 + 1e-5
    model.codec = replace(model.codec, decoder="soft_argmax")
    assert (model.decode([maps]) - points).abs().max() < 0.3


def test_checkpoint_loads_with_weights_only(tmp_path):
    dm = tiny_data()
    model = tiny_hourglass(optimizer=torch.optim.SGD)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # raises if anything but plain data was pickled
    assert ckpt["hyper_parameters"]["layout"] == "300w_68"
    loaded = StackedHourglassModule.load_from_checkpoint(path, weights_only=True).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_landmarks(images), model.eval().predict_landmarks(images))


class OracleModule(StackedHourglassModule):
    """Predicts the crop ground truth: what it returns in original coordinates must be the raw annotation."""

    def predict_landmarks(self, images):
        return self._batch["landmarks"]

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self._batch = batch
        return super().predict_step(batch, batch_idx, dataloader_idx)

    def test_step(self, batch, batch_idx):
        self._batch = batch
        return super().test_step(batch, batch_idx)


def test_predictions_and_test_records_are_in_original_image_pixels(tmp_path):
    dm = tiny_data(layout="wflw_98")
    model = OracleModule(layout="wflw_98", input_size=64, num_stacks=1, depth=2, channels=16)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    out = trainer.predict(model, datamodule=dm)
    source = dm.test_source
    pred = torch.cat([o["landmarks"] for o in out]).numpy()
    raw = np.stack([source.load(i).landmarks for i in range(len(source))])
    np.testing.assert_allclose(pred, raw, atol=1e-3)
    assert [i for o in out for i in o["image_id"]] == [source.image_id(i) for i in range(len(source))]
    trainer.test(model, datamodule=dm)
    stored = model.test_results["predictions"]
    np.testing.assert_allclose(stored["pred"], raw, atol=1e-3)
    np.testing.assert_allclose(stored["target"], raw, atol=1e-3)
    assert model.test_results["metrics"]["inter_ocular"]["full"]["nme"] < 1e-3


def test_mean_shape_is_the_mean_of_unaugmented_training_crops(tmp_path):
    from datamodules.augment import AugmentConfig
    dm = tiny_data(augment=AugmentConfig())
    model = MeanShapeModule(layout="300w_68", input_size=64)
    pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).test(model, datamodule=dm)
    crops = dm.training_crops()
    expected = torch.stack([crops[i]["landmarks"] for i in range(len(crops))]).double().mean(0)
    torch.testing.assert_close(model.mean_shape.double(), expected, atol=1e-4, rtol=0)
    assert len(crops) == 24 - 8
    batch = collate_faces([dm.datasets["test"][i] for i in range(2)])
    torch.testing.assert_close(model.predict_landmarks(batch["image"]), model.mean_shape.expand(2, -1, -1))


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(c.parents[1])) for c in CONFIGS])
def test_fast_dev_run_of_every_config(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--data.init_args.train_size=16", "--data.init_args.val_size=4", "--data.init_args.test_size=4",
             "--data.init_args.num_workers=0", "--trainer.fast_dev_run=1"]
    for command in ("fit", "test"):
        cli_main([command, "--config", str(config), *small])
    assert not (tmp_path / "results" / "records").exists()  # fast_dev_run writes no evaluation record


def test_channels_last_changes_memory_order_not_predictions(tmp_path):
    torch.manual_seed(0)
    base = tiny_hourglass().eval()
    nhwc = tiny_hourglass(channels_last=True).eval()
    nhwc.load_state_dict(base.state_dict())
    nhwc.configure_model()
    assert nhwc.net.stem.layers[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nhwc.predict_landmarks(images), base.predict_landmarks(images), atol=1e-4, rtol=0)
    # And it trains through Lightning, which calls configure_model.
    pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
               default_root_dir=tmp_path).fit(tiny_hourglass(channels_last=True), datamodule=tiny_data())


def test_cli_predict_writes_landmarks_in_original_pixels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).parents[1] / "experiments" / "hourglass" / "synthetic.yaml"
    cli = cli_main(["--config", str(config), "--data.init_args.test_size=5", "--data.init_args.num_workers=0",
                    "--model=lightning_modules.mean_shape.MeanShapeModule", "--data.init_args.train_size=12",
                    "--data.init_args.val_size=2"], run=False)
    cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    writer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "LandmarkWriter")
    with np.load(writer.last_file) as data:
        assert data["landmarks"].shape == (5, 68, 2) and list(data["index"]) == list(range(5))
        assert data["image_id"][0] == cli.datamodule.test_source.image_id(0)
        # The mean shape mapped back into each (160 px) original image lands near that face.
        raw = cli.datamodule.test_source.load(3).landmarks
        assert np.abs(data["landmarks"][3].mean(0) - raw.mean(0)).max() < 20
