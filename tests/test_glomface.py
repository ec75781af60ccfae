"""GlomFace (paper 000): size, the cascade's fixed point, the initial shape, the three losses."""

import math

import numpy as np
import pytest
import torch

from landmarks.losses import wing_loss
from lightning_modules.glomface import GlomFaceModule


def small(**kwargs) -> GlomFaceModule:
    model = GlomFaceModule(**({"layout": "300w_68", "input_size": 64, "patch_size": 30, "iterations": 3} | kwargs))
    gen = torch.Generator().manual_seed(0)
    model.mean_shape.copy_(16 + 32 * torch.rand(68, 2, generator=gen))
    return model


def test_parameter_count_is_the_notes_161_m():
    with torch.device("meta"):
        model = GlomFaceModule(layout="300w_68", input_size=224)
    count = sum(p.numel() for p in model.parameters())
    assert count == 161_314_984  # tests/test_glom_nets.py derives it layer by layer
    assert count == pytest.approx(161e6, rel=0.03)


def test_zero_offsets_leave_the_initial_shape_unchanged():
    model = small().eval()
    with torch.no_grad():
        for head in (m for m in model.net.modules() if isinstance(m, torch.nn.Linear)):
            head.weight.zero_()
            head.bias.zero_() if head.bias is not None else None
        shapes = model(torch.rand(2, 3, 64, 64))
    assert len(shapes) == 3
    for shape in shapes:
        torch.testing.assert_close(shape, model.mean_shape.expand(2, -1, -1))


def test_initial_shape_is_jittered_only_in_training():
    model = small(init_jitter=(0.1, 0.1))
    model.eval()
    torch.testing.assert_close(model.initial_shape(3), model.mean_shape.expand(3, -1, -1))
    model.train()
    moved = model.initial_shape(3)
    mean = model.mean_shape
    for shape in moved:  # a similarity of the mean shape about its centre: distances scale by one factor
        d_new = torch.cdist(shape, shape)
        d_old = torch.cdist(mean, mean)
        ratio = d_new[d_old > 1] / d_old[d_old > 1]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(moved[0], mean)


def test_missing_mean_shape_is_an_error():
    model = GlomFaceModule(layout="300w_68", input_size=64, patch_size=30)
    with pytest.raises(RuntimeError, match="mean shape"):
        model(torch.rand(1, 3, 64, 64))


def batch(n: int = 2) -> dict:
    gen = torch.Generator().manual_seed(5)
    points = 16 + 32 * torch.rand(n, 68, 2, generator=gen)
    ocular = (points[:, 36] - points[:, 45]).norm(dim=-1)
    return {"image": torch.rand(n, 3, 64, 64, generator=gen), "landmarks": points, "norm": {"inter_ocular": ocular}}


@pytest.mark.parametrize("loss", ["eq3", "code", "wing"])
def test_losses_against_numpy(loss):
    model = small(loss=loss)
    b = batch()
    shapes = [b["landmarks"] + torch.randn(2, 68, 2, generator=torch.Generator().manual_seed(t)) * 3
              for t in range(3)]
    terms = model.training_loss(shapes, b)
    truth = b["landmarks"].numpy().astype(np.float64)
    expected = 0.0
    for shape in shapes:
        err = shape.numpy().astype(np.float64) - truth
        if loss == "eq3":
            expected += np.mean([np.sum(e ** 2) for e in err])
        elif loss == "code":
            expected += np.mean([np.mean(np.linalg.norm(e, axis=1)) / np.linalg.norm(t[36] - t[45])
                                 for e, t in zip(err, truth, strict=True)])
        else:
            c = 10 - 10 * math.log(1 + 10 / 2)
            x = np.abs(err)
            expected += np.mean(np.where(x < 10, 10 * np.log1p(x / 2), x - c).reshape(2, -1).sum(1))
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-5)
    assert set(terms) == {"loss", "iteration_1", "iteration_2", "iteration_3"}


def test_wing_loss_is_continuous_with_a_continuous_gradient_at_the_width():
    w, eps = 10.0, 2.0
    x = torch.tensor([[[w - 1e-4, 0.0]], [[w + 1e-4, 0.0]]], dtype=torch.float64, requires_grad=True)
    values = torch.stack([wing_loss(x[i:i + 1], w, eps) for i in range(2)])
    assert abs(float(values[1] - values[0])) < 1e-3
    grads = [torch.autograd.grad(wing_loss(x[i:i + 1], w, eps), x)[0][i, 0, 0] for i in range(2)]
    assert float(grads[1]) == pytest.approx(1.0)  # linear part: slope 1
    assert float(grads[0]) == pytest.approx(w / (eps + w), abs=1e-4)  # log part at w: w / (eps + w)


def test_a_cascade_step_trains_every_iteration():
    model = small(iterations=2)
    b = batch()
    model.train()
    terms = model.training_loss(model(b["image"]), b)
    terms["loss"].backward()
    grads = [p.grad for p in model.net.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


def test_refusals():
    with pytest.raises(ValueError, match="loss"):
        GlomFaceModule(layout="300w_68", input_size=64, patch_size=30, loss="l1")
    with pytest.raises(ValueError, match="iterations"):
        GlomFaceModule(layout="300w_68", input_size=64, patch_size=30, iterations=0)


def test_fit_with_the_configs_ema_keeps_the_mean_shape(tmp_path):
    """Lightning's EMAWeightAveraging copies the model when the fit starts, before the datamodule fills the
    mean-shape buffer, and swaps that copy in for validation: the configs turn the sanity check off, and after the
    first step the averaged copy holds the filled buffer (``use_buffers``: BatchNorm statistics averaged too)."""
    import pytorch_lightning as pl
    import yaml
    from pytorch_lightning.callbacks import EMAWeightAveraging

    from datamodules.synthetic import SyntheticFaceDataModule

    trainer_config = yaml.safe_load(open("experiments/glomface/model.yaml"))["trainer"]
    ema = next(c for c in trainer_config["callbacks"] if c["class_path"].endswith("EMAWeightAveraging"))["init_args"]
    model = GlomFaceModule(layout="300w_68", input_size=64, patch_size=30, iterations=2)
    data = SyntheticFaceDataModule(layout="300w_68", train_size=8, val_size=4, test_size=4, image_size=96,
                                   input_size=64, batch_size=4, num_workers=0)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=trainer_config["num_sanity_val_steps"],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[EMAWeightAveraging(**ema)], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert torch.isfinite(model.mean_shape).all()
    assert torch.isfinite(trainer.callback_metrics["val/nme"])
