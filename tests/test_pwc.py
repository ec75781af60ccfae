"""The PWC suite (paper 002): every model's exact parameter count, the official-code switch, the discriminator."""

import math

import numpy as np
import pytest
import torch

from landmarks.pixelwise import discriminator_loss, pixel_labels, pwc_loss
from lightning_modules.pwc import PWCModule


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("approach", "discriminator", "expected"), [
    ("pwc", False, 82_947_658), ("hybrid", False, 82_947_658), ("heatmap", False, 82_947_658),
    ("distribution", False, 82_871_880), ("direct", False, 178_682_440), ("cascaded", False, 35_053_144),
    ("hybrid", True, 82_982_347),  # the paper's hybrid+disc: detector 82,947,658 + discriminator 34,689
])
def test_parameter_counts_are_the_papers(approach, discriminator, expected):
    with torch.device("meta"):  # sizes only: no memory for 179 M parameters
        model = PWCModule(layout="300w_68", input_size=224, approach=approach, discriminator=discriminator)
    assert count(model) == expected
    if discriminator:
        assert count(model.discriminator) == 34_689


def small(**kwargs) -> PWCModule:
    model = PWCModule(**({"layout": "300w_68", "input_size": 64, "width": 4, "dan_input": 32} | kwargs))
    model.mean_shape.copy_(16 + 32 * torch.rand(68, 2, generator=torch.Generator().manual_seed(0)))
    return model


def batch(n: int = 2) -> dict:
    gen = torch.Generator().manual_seed(1)
    return {"image": torch.rand(n, 3, 64, 64, generator=gen),
            "landmarks": 8 + 48 * torch.rand(n, 68, 2, generator=gen)}


@pytest.mark.parametrize("approach", ["direct", "cascaded", "distribution", "heatmap", "pwc", "hybrid"])
def test_every_approach_trains_and_decodes_crop_pixels(approach):
    model = small(approach=approach)
    b = batch()
    outputs = model(b["image"])
    terms = model.training_loss(outputs, b)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.net.parameters())
    model.eval()
    with torch.no_grad():
        points = model.decode(model(b["image"]))
    assert points.shape == (2, 68, 2) and torch.isfinite(points).all()


def test_distribution_decoding_is_each_maps_own_argmax():
    model = small(approach="distribution")
    logits = torch.full((1, 68, 64, 64), -5.0)
    where = torch.randint(0, 64, (68, 2), generator=torch.Generator().manual_seed(3))
    for k, (x, y) in enumerate(where.tolist()):
        logits[0, k, y, x] = 5.0
    assert torch.equal(model.decode(logits)[0], where.float())


def test_official_hybrid_term_carries_no_gradient():
    """``official``: the coordinate term goes through the argmax, so the gradient is eq. 2's alone; the paper's
    reading (soft-argmax) adds a gradient."""
    b = batch()
    grads = {}
    for official in (True, False):
        model = small(approach="hybrid", official=official)
        logits = torch.randn(2, 69, 64, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
        model.training_loss(logits, b)["loss"].backward()
        grads[official] = logits.grad
    reference = torch.randn(2, 69, 64, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    pwc_loss(reference, pixel_labels(b["landmarks"], (64, 64))).backward()
    torch.testing.assert_close(grads[True], reference.grad)
    assert not torch.allclose(grads[False], reference.grad)


def test_official_adversarial_term_does_not_reach_the_detector():
    b = batch()
    for official, reaches in ((True, False), (False, True)):
        model = small(approach="pwc", discriminator=True, official=official)
        terms = model.training_loss(model(b["image"]), b)
        terms["adversarial"].backward()
        got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())
        assert got == reaches


def test_official_discriminator_objective_is_sign_flipped():
    """The paper: D minimises -(E log D(real) + E log(1 - D(fake))); the code minimises its negative, fed with the
    argmax coordinates (the paper's reading: soft-argmax)."""
    b = batch()
    for official, sign in ((True, -1.0), (False, 1.0)):
        model = small(approach="pwc", discriminator=True, official=official).eval()
        with torch.no_grad():
            got = model.training_terms(b, "discriminator")["loss"]
            fake = model.coordinates(model(b["image"]))
            real, fake = model.judge(b["landmarks"], fake)  # logits
        logsig = torch.nn.functional.logsigmoid  # log D = logsigmoid(logit), log(1 - D) = logsigmoid(-logit)
        paper = -(logsig(real).mean() + logsig(-fake).mean())
        torch.testing.assert_close(got, sign * paper)


@pytest.mark.parametrize("one_batch", [True, False])
def test_discriminator_learns_real_from_random_shapes(one_batch):
    """A toy run: real = a mean shape with small noise, fake = uniform random points. Judged in one batch (the
    module's ``judge``), the paper's objective falls from about 2 ln 2 (chance); judged in two calls, as the
    code does, each call's BatchNorm statistics hide the difference and it stays near chance."""
    torch.manual_seed(0)
    model = small(approach="pwc", discriminator=True)
    disc = model.discriminator
    mean = 8 + 48 * torch.rand(68, 2)
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        real, fake = mean + 0.5 * torch.randn(16, 68, 2), 64 * torch.rand(16, 68, 2)
        logits = model.judge(real, fake) if one_batch else (disc(real), disc(fake))
        loss = discriminator_loss(*logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.5)
    assert (losses[-1] < 0.2 * losses[0]) == one_batch


def test_two_optimiser_parts_step_one_to_two():
    model = small(approach="hybrid", discriminator=True)
    parts = model.optimizer_parts()
    assert [(p.name, p.steps) for p in parts] == [("discriminator", 1), ("detector", 2)]
    assert not model.automatic_optimization
    ids = [{id(p) for p in part.parameters} for part in parts]
    assert not ids[0] & ids[1] and ids[0] == {id(p) for p in model.discriminator.parameters()}


def test_refusals():
    with pytest.raises(ValueError, match="approach"):
        PWCModule(layout="300w_68", input_size=64, approach="gan")
    with pytest.raises(ValueError, match="discriminator"):
        PWCModule(layout="300w_68", input_size=64, approach="direct", discriminator=True, width=4)


def test_validation_loss_is_the_training_loss_on_validation_faces():
    model = small(approach="pwc").eval()
    b = batch()
    with torch.no_grad():
        outputs = model(b["image"])
        expected = model.training_loss(outputs, b)["loss"]
        model.update_diagnostics(outputs, b, "val")
    assert model.compute_diagnostics("val")["loss"] == pytest.approx(float(expected))
    assert model.compute_diagnostics("test") == {}


def test_the_cofw68_pass_tests_the_300w_trained_model_under_its_own_identity(tmp_path):
    """PWC evaluates its 300W-trained models on COFW-68 through another datamodule (the manifest's test ``data``):
    the crop, normalisation and training set it states must equal the training run's, or the checkpoint would be
    refused (``LandmarkModule.checkpoint_differences``)."""
    from dataset_files import cofw68_folder
    from runner_fixtures import options

    from experiments.cli import main as cli_main
    from leaderboard import runner
    from leaderboard.manifest import load_manifest
    from lightning_modules.training import data_identity, identity_differences

    cofw68_folder(tmp_path / "COFW", tmp_path / "300W")
    manifest = load_manifest("pwc")
    experiment = manifest.experiment("pwc-300w")
    opts = options(tmp_path, data="real", data_root=tmp_path)
    small = ["--data.init_args.check_counts=false", "--data.init_args.val_size=0", "--data.init_args.num_workers=0"]
    fit = cli_main(runner.compose_args(manifest, experiment, None, opts, "fit") + small, run=False)
    spec = experiment.tests[1]
    test = cli_main(runner.compose_args(manifest, experiment, spec, opts, "test-cofw68") + small, run=False)
    assert type(test.datamodule).__name__ == "COFW68DataModule" and type(fit.datamodule).__name__ == "W300DataModule"
    trained, tested = ({"data": data_identity(cli.datamodule)} for cli in (fit, test))
    differences = identity_differences(trained, tested, free=("data.dataset", "data.train_set.annotation"))
    assert differences == {}


def test_heatmap_targets_of_either_height_against_numpy():
    """``height="peak"``: Gaussians of peak 1 (cut at 4 sigma), background max(0, 1 - their sum); "sum": each
    normalised to sum 1, background 1 - their sum."""
    from landmarks.pixelwise import heatmap_targets

    points = torch.tensor([[[5.0, 6.0], [7.0, 6.0], [20.0, 3.0]]])
    yy, xx = np.mgrid[:16, :24]
    gauss = np.stack([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0) * (np.abs(xx - x) <= 12) * (np.abs(yy - y) <= 12)
                      for x, y in points[0].tolist()])
    for height, maps in (("peak", gauss), ("sum", gauss / gauss.sum((1, 2), keepdims=True))):
        background = 1 - maps.sum(0)
        expected = np.concatenate([np.clip(background, 0, None)[None] if height == "peak" else background[None], maps])
        got = heatmap_targets(points, (16, 24), sigma=3.0, height=height)[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)
