"""PropagationNet: parameter and MAC budgets against the paper's Table 8 (and the notes' AWing rebuild), the
propagation module, the ablation switches, the Focal Wing training loss against its parts, focal weights from a
batch's attribute tags, and decoding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from landmarks.heatmaps import HeatmapCodec, decode_argmax, heatmap_to_crop
from landmarks.layouts import W300_68, WFLW_98
from landmarks.losses import adaptive_wing_loss, focal_factor, focal_wing_loss
from lightning_modules.components.blurpool import BlurPool
from lightning_modules.components.coordconv import CoordConv2d
from lightning_modules.components.hourglass import Bottleneck
from lightning_modules.components.hpm import HPMBlock
from lightning_modules.propnet import PropagationModule, PropNetModule

ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SMALL = dict(layout="wflw_98", input_size=64, num_stacks=2, depth=2, channels=16, pm_width=4)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs(module: torch.nn.Module, size: int = 256) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("overrides, paper_params", [
    ({}, 36.30e6),  # PropNet, WFLW (Table 8)
    (dict(propagation=False, boundary_head=True, antialias=None, loss="awing"), 24.15e6),  # AWing, 4 stacks
])
def test_parameter_counts_within_3_percent_of_table_8(overrides, paper_params):
    model = PropNetModule(layout="wflw_98", **overrides).eval()
    assert abs(count(model) / paper_params - 1) < 0.03, count(model)


def test_awing_model_matches_the_notes_rebuild_exactly_and_propnet_macs_are_near_the_paper():
    """§4.2: the AWing rebuild (98 + 1 outputs) has 24.153 M parameters and 26.71 GMAC at 256 px."""
    awing = PropNetModule(layout="wflw_98", propagation=False, boundary_head=True, antialias=None).eval()
    assert round(count(awing) / 1e6, 3) == 24.153
    assert round(macs(awing) / 1e9, 2) == 26.71
    propnet = PropNetModule(layout="wflw_98").eval()
    assert abs(macs(propnet) / 42.83e9 - 1) < 0.06  # the paper counts thop-style MACs (notes §4.2)


def test_propagation_module_counts_and_boundary_groups():
    """Per boundary: three 7x7 convolutions n_m -> w -> w -> 1 on the maps of that boundary's landmarks; then the
    1x1 fuse of [features, boundaries], a depth-2 hourglass and the 1x1 attention convolution."""
    width, channels = 12, 256
    pm = PropagationModule(WFLW_98.boundaries, channels, width, 2, HPMBlock)
    sevens = sum(len(set(b.indices)) * width * 49 + width + width * width * 49 + width + width * 49 + 1
                 for b in WFLW_98.boundaries)
    hourglass = 7 * count(HPMBlock(channels, channels))  # depth 2: 3 * 2 + 1 blocks
    fuse = (channels + 15) * channels + channels
    attention = channels * channels + channels
    assert count(pm) == sevens + hourglass + fuse + attention
    maps = torch.zeros(1, 98, 8, 8)
    maps[0, 60] = 1.0  # a landmark of the left eye's upper and lower lines only
    boundaries = pm.boundaries(maps)
    assert boundaries.shape == (1, 15, 8, 8)
    zero = pm.boundaries(torch.zeros(1, 98, 8, 8))
    moved = [m for m in range(15) if not torch.equal(boundaries[0, m], zero[0, m])]
    names = [WFLW_98.boundaries[m].name for m in moved]
    assert names == ["eye_left_upper", "eye_left_lower"]  # only the stacks that read landmark 60 respond


def test_switches_build_the_ablation_models():
    base = PropNetModule(block="bottleneck", antialias=None, propagation=False, coordconv=False, **SMALL)
    assert any(isinstance(m, Bottleneck) for m in base.modules())
    assert not any(isinstance(m, (HPMBlock, BlurPool, CoordConv2d, PropagationModule)) for m in base.modules())
    full = PropNetModule(**SMALL)
    kinds = {type(m) for m in full.modules()}
    assert {HPMBlock, BlurPool, CoordConv2d, PropagationModule} <= kinds and Bottleneck not in kinds
    assert {m.kernel for m in PropNetModule(antialias=5, **SMALL).modules() if isinstance(m, BlurPool)} == {5}
    assert full.net.entrances[0].extra == 3 and full.net.entrances[1].extra == 5  # gated after the first stack
    with pytest.raises(ValueError, match="not both"):
        PropNetModule(boundary_head=True, **SMALL)
    with pytest.raises(ValueError, match="CoordConv"):
        PropNetModule(block="bottleneck", **SMALL)
    with pytest.raises(ValueError, match="antialias"):
        PropNetModule(antialias=9, **SMALL)


@pytest.mark.parametrize("overrides", [{}, dict(propagation=False, boundary_head=True),
                                       dict(block="bottleneck", antialias=None, propagation=False, coordconv=False)])
def test_outputs_per_stack(overrides):
    model = PropNetModule(**(SMALL | overrides))
    outputs = model(torch.randn(2, 3, 64, 64))
    assert len(outputs) == 2 and all(o.landmarks.shape == (2, 98, 16, 16) for o in outputs)
    boundaries = outputs[-1].boundaries
    expected = {True: (2, 15, 16, 16), False: (2, 1, 16, 16)}
    if overrides.get("propagation", True) or overrides.get("boundary_head"):
        assert boundaries.shape == expected[overrides.get("propagation", True)]
    else:
        assert boundaries is None


def batch_of(n: int = 2, tags=(("pose",), ())) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"landmarks": torch.rand(n, 98, 2, generator=g) * 48 + 8, "subsets": list(tags)}


def test_training_loss_is_focal_wing_of_every_stack_with_the_batch_focal_weights():
    torch.manual_seed(0)
    model = PropNetModule(**SMALL)
    model.subsets = ATTRIBUTES  # as a WFLW datamodule sets it at set-up
    batch = batch_of()
    outputs = model(torch.randn(2, 3, 64, 64))
    terms = model.training_loss(outputs, batch)
    codec = HeatmapCodec(stride=4, sigma=1.0)
    landmarks = codec.encode(batch["landmarks"], (16, 16))
    boundaries = codec.boundary_maps(batch["landmarks"], WFLW_98.boundaries, (16, 16), 1.0)
    weights = focal_factor(torch.tensor([[True] + [False] * 5, [False] * 6]))
    assert weights.tolist() == [2.0 + 5, 6.0]  # pose: N / N_pose = 2 for the first sample, 1 elsewhere
    expected = sum(focal_wing_loss(o.landmarks, landmarks, o.boundaries, boundaries, weights, 0.5)["loss"]
                   for o in outputs)
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_awing_loss_and_datasets_without_attributes_weigh_every_sample_one():
    torch.manual_seed(0)
    batch = batch_of()
    plain = PropNetModule(**(SMALL | dict(loss="awing")))
    plain.subsets = ATTRIBUTES
    assert plain.focal_weights(batch) is None
    focal = PropNetModule(**SMALL)
    focal.subsets = ("common", "challenging")  # 300W: no attribute among its subsets
    assert focal.focal_weights(batch) is None
    head = PropNetModule(**(SMALL | dict(propagation=False, boundary_head=True, loss="awing")))
    outputs = head(torch.randn(2, 3, 64, 64))
    codec = HeatmapCodec(stride=4, sigma=1.0)
    union = codec.boundary_maps(batch["landmarks"], WFLW_98.boundaries, (16, 16), 1.0, union=True)[:, -1:]
    landmarks = codec.encode(batch["landmarks"], (16, 16))
    expected = sum(adaptive_wing_loss(o.landmarks, landmarks) + 0.5 * adaptive_wing_loss(o.boundaries, union)
                   for o in outputs)
    assert head.training_loss(outputs, batch)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_decoding_is_argmax_quarter_of_the_last_stack_and_68_points_use_13_boundaries():
    model = PropNetModule(**SMALL).eval()
    outputs = model(torch.randn(1, 3, 64, 64))
    expected = heatmap_to_crop(decode_argmax(outputs[-1].landmarks), 4)
    torch.testing.assert_close(model.decode(outputs), expected)
    small68 = PropNetModule(**(SMALL | dict(layout="300w_68")))
    assert small68(torch.randn(1, 3, 64, 64))[-1].boundaries.shape[1] == len(W300_68.boundaries) == 13
