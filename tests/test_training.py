"""LandmarkModule training beyond one optimiser: several optimiser parts under manual optimisation, scheduler
stepping, ``init_from`` / ``init_modules``, frozen sub-modules, and models without heatmaps (regressors)."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from datamodules.base import collate_faces
from lightning_modules.base import LandmarkModule
from lightning_modules.training import OptimizerPart

SIZE, K = 16, 68


class ContractFaces(Dataset):
    """Random faces in the sample contract (DESIGN.md): enough for training and evaluation loops."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.points = torch.rand(n, K, 2, generator=g) * (SIZE - 4) + 2

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "landmarks": self.points[i], "visible": torch.ones(K, dtype=torch.bool),
                "norm": {"inter_ocular": torch.tensor(8.0), "inter_pupil": torch.tensor(7.0),
                         "bbox": torch.tensor(12.0)}, "subsets": (),
                "meta": {"index": i, "image_id": f"face-{i}", "original_size": (SIZE, SIZE),
                         "transform": torch.eye(2, 3, dtype=torch.float64)}}


def loader(n: int = 12, batch: int = 2, seed: int = 0) -> DataLoader:
    return DataLoader(ContractFaces(n, seed), batch_size=batch, collate_fn=collate_faces)


def trainer(tmp_path, **kw) -> pl.Trainer:
    args = dict(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return pl.Trainer(**(args | kw))


class Regressor(LandmarkModule):
    """A direct coordinate regressor (no heatmaps): conv encoder (with BatchNorm) → pooled features → (K, 2)."""

    def __init__(self, width: int = 8, **kwargs) -> None:
        super().__init__(layout="300w_68", input_size=SIZE, **kwargs)
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.decoder = nn.Linear(width, K * 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images).mean((-2, -1))).view(-1, K, 2) + SIZE / 2

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    def training_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.l1_loss(outputs, batch["landmarks"])


class Adversarial(Regressor):
    """The regressor as a generator with a shape critic, stepped critic 1 : generator 2 (PWC's schedule)."""

    def __init__(self, critic_scheduler=None, critic_interval: str = "epoch", **kwargs) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.critic = nn.Linear(K * 2, 1)
        self.critic_scheduler, self.critic_interval = critic_scheduler, critic_interval
        self.turns: list[str] = []

    def training_terms(self, batch: dict, part: str) -> dict[str, torch.Tensor]:
        self.turns.append(part)
        pred = self(batch["image"])
        real, fake = self.critic(batch["landmarks"].flatten(1)), self.critic(pred.flatten(1))
        if part == "critic":
            return {"loss": F.softplus(-real).mean() + F.softplus(fake).mean()}
        return {"loss": self.training_loss(pred, batch) + 0.1 * F.softplus(-fake).mean()}

    def optimizer_parts(self) -> list[OptimizerPart]:
        return [
            OptimizerPart("critic", self.trainable_parameters(self.critic), partial(torch.optim.SGD, lr=0.1),
                          self.critic_scheduler, self.critic_interval, steps=1),
            OptimizerPart("generator", self.trainable_parameters(self.encoder) + self.trainable_parameters(
                self.decoder), partial(torch.optim.SGD, lr=0.01), partial(torch.optim.lr_scheduler.ExponentialLR,
                                                                         gamma=0.9), "step", steps=2),
        ]


class ChangeLog(pl.Callback):
    """Which sub-modules' parameters each training batch changed."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.changed = names, []

    def _snapshot(self, module: LandmarkModule) -> dict[str, list[torch.Tensor]]:
        return {n: [p.detach().clone() for p in getattr(module, n).parameters()] for n in self.names}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before = self._snapshot(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        after = self._snapshot(module)
        self.changed.append(tuple(n for n in self.names if any(not torch.equal(a, b) for a, b in
                                                                zip(self.before[n], after[n], strict=True))))


def test_parts_take_turns_and_only_the_current_part_moves(tmp_path):
    torch.manual_seed(0)
    model = Adversarial(critic_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    log = ChangeLog(("critic", "encoder", "decoder"))
    trainer(tmp_path, callbacks=[log]).fit(model, loader(), loader(4))
    per_epoch = ["critic", "generator", "generator"] * 2  # 6 batches per epoch
    assert model.turns == per_epoch * 2
    expected = [("critic",) if turn == "critic" else ("encoder", "decoder") for turn in per_epoch * 2]
    assert log.changed == expected
    critic_opt, generator_opt = model.optimizers()
    # The critic's StepLR steps once per epoch (2 epochs), the generator's ExponentialLR after each of its 8 steps.
    assert critic_opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    assert generator_opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9**8)


def test_plateau_scheduler_steps_on_the_validation_metric(tmp_path):
    torch.manual_seed(0)
    plateau = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", patience=0, factor=0.5)
    model = Adversarial(critic_scheduler=plateau)
    trainer(tmp_path, max_epochs=3).fit(model, loader(), loader(4))
    scheduler = next(s for part, s in model._manual if part.name == "critic")
    assert scheduler.last_epoch == 3  # stepped once per epoch, after validation
    assert scheduler.best == pytest.approx(min(scheduler.best, float(model.trainer.callback_metrics["val/nme"])))


def test_several_parts_need_manual_optimisation(tmp_path):
    model = Adversarial()
    model.automatic_optimization = True
    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        trainer(tmp_path, max_epochs=1).fit(model, loader())


def test_frozen_submodule_is_bit_identical_after_an_epoch(tmp_path):
    torch.manual_seed(0)
    model = Regressor(freeze=["encoder"], optimizer=partial(torch.optim.SGD, lr=0.1))
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    modes = []

    class Modes(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            modes.append((module.training, module.encoder.training, module.encoder[1].training))

    fit = trainer(tmp_path, max_epochs=1, callbacks=[Modes()])
    fit.fit(model, loader(), loader(4))  # validation in between switches train/eval modes
    after = model.encoder.state_dict()
    assert all(torch.equal(encoder[k], after[k]) for k in encoder)  # weights, running stats, batch count
    assert not all(torch.equal(decoder[k], v) for k, v in model.decoder.state_dict().items())
    assert modes and all(m == (True, False, False) for m in modes)
    optimised = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.decoder.parameters()}


def test_unknown_frozen_module_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no sub-module 'backbone'.*'encoder', 'decoder'"):
        trainer(tmp_path, max_epochs=1).fit(Regressor(freeze=["backbone"]), loader())


def test_init_from_loads_the_whole_model_or_named_submodules(tmp_path):
    torch.manual_seed(0)
    source = Regressor()
    trainer(tmp_path, max_epochs=1).fit(source, loader())
    path = tmp_path / "stage1.ckpt"
    source.trainer.save_checkpoint(path)

    torch.manual_seed(1)
    partial_model = Regressor(init_from=str(path), init_modules=["encoder"])
    fresh_decoder = {k: v.clone() for k, v in partial_model.decoder.state_dict().items()}
    partial_model.setup("fit")
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(partial_model.encoder.state_dict()[name], value)
    assert all(torch.equal(fresh_decoder[k], v) for k, v in partial_model.decoder.state_dict().items())

    whole = Regressor(init_from=str(path))
    whole.setup("fit")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in whole.state_dict().items())
    whole.setup("test")  # only a fit starts from init_from; evaluation uses what is loaded

    plain = tmp_path / "weights.pt"
    torch.save(source.state_dict(), plain)  # a plain state_dict works too
    from_plain = Regressor(init_from=str(plain), init_modules=["decoder"])
    from_plain.setup("fit")
    assert torch.equal(from_plain.decoder.weight, source.decoder.weight)


def test_init_from_refuses_what_does_not_fit(tmp_path):
    source = Regressor(width=8)
    path = tmp_path / "w8.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit.*shape differences: encoder.0.weight"):
        Regressor(width=4, init_from=str(path)).setup("fit")
    with pytest.raises(ValueError, match="no sub-module 'scbe'"):
        Regressor(init_from=str(path), init_modules=["scbe"]).setup("fit")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        Regressor(init_from=str(tmp_path / "missing.ckpt")).setup("fit")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"cannot read {junk}"):
        Regressor(init_from=str(junk)).setup("fit")
    torch.save({"epoch": 3}, tmp_path / "nostate.ckpt")
    with pytest.raises(ValueError, match="holds no state_dict"):
        Regressor(init_from=str(tmp_path / "nostate.ckpt")).setup("fit")


def test_a_regressor_trains_and_evaluates_through_the_base(tmp_path):
    """Nothing in the base is heatmap-specific: a direct regressor fits, validates and tests."""
    torch.manual_seed(0)
    model = Regressor(optimizer=partial(torch.optim.Adam, lr=0.05))
    fit = trainer(tmp_path, max_epochs=3)
    fit.fit(model, loader(), loader(4))
    fit.test(model, loader(6, seed=1), verbose=False)
    results = model.test_results
    assert results["predictions"]["pred"].shape == (6, K, 2)
    assert results["metrics"]["inter_ocular"]["full"]["n"] == 6
