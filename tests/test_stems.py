"""TAB's Table 8 stems: torchvision's VGG16-bn and ResNet-50 stems rebuilt by name, and ImageNet weight loading.

References are independent of the code under test: parameter counts are closed-form sums over torchvision's
layer lists, the key names are written out by hand from torchvision's modules, and the forward passes of a
loaded stem are compared with a functional (``torch.nn.functional``) rebuild of torchvision's layers that reads
the weight file's tensors directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.components.hourglass import StackedHourglass
from lightning_modules.components.hpm import FANStem
from lightning_modules.components.stems import (
    STEMS,
    ResNetStem,
    VGGStem,
    load_stem_weights,
    stem_factory,
)
from lightning_modules.training import CheckpointError, MissingCheckpoint

VGG_CONVS = [0, 3, 7, 10, 14, 17, 20]  # conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, conv3_2, conv3_3
VGG_BNS = [1, 4, 8, 11, 15, 18, 21]
VGG_WIDTHS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vgg_params() -> int:
    """Seven 3x3 convs with bias, each followed by a BN (γ, β)."""
    return sum(cin * cout * 9 + cout + 2 * cout for cin, cout in VGG_WIDTHS)


def resnet_params() -> int:
    """conv1 7x7 (no bias) + bn1, then layer1: three bottlenecks 1x1 / 3x3 / 1x1 (x4), the first with a 1x1
    downsample; every conv without bias and followed by a BN."""
    def bottleneck(cin: int, width: int) -> int:
        convs = cin * width + width * width * 9 + width * 4 * width + 2 * (width + width + 4 * width)
        return convs + (cin * 4 * width + 2 * 4 * width if cin != 4 * width else 0)
    return 3 * 64 * 49 + 2 * 64 + bottleneck(64, 64) + 2 * bottleneck(256, 64)


def resnet_keys() -> list[str]:
    """torchvision's resnet50 state_dict keys of conv1, bn1 and layer1, written from its module names."""
    keys = ["conv1.weight", *(f"bn1.{b}" for b in BN_BUFFERS)]
    for block in range(3):
        for i in (1, 2, 3):
            keys += [f"layer1.{block}.conv{i}.weight", *(f"layer1.{block}.bn{i}.{b}" for b in BN_BUFFERS)]
        if block == 0:
            keys += ["layer1.0.downsample.0.weight", *(f"layer1.0.downsample.1.{b}" for b in BN_BUFFERS)]
    return keys


def bn(x: torch.Tensor, state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
                        state[f"{name}.bias"], training=False)


def vgg_reference(x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision vgg16_bn features[0:23] in eval mode, from a state_dict: conv-BN-ReLU, pools after 3 and 10."""
    for conv, norm in zip(VGG_CONVS, VGG_BNS, strict=True):
        x = F.conv2d(x, state[f"features.{conv}.weight"], state[f"features.{conv}.bias"], padding=1)
        x = F.relu(bn(x, state, f"features.{norm}"))
        if conv in (3, 10):
            x = F.max_pool2d(x, 2, 2)
    return x


def resnet_reference(x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision resnet50 conv1 → bn1 → relu → maxpool → layer1 in eval mode, from a state_dict."""
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), state, "bn1")), 3, 2, 1)
    for block in range(3):
        p = f"layer1.{block}"
        out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
        out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), state, f"{p}.bn2"))
        out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
        shortcut = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"]), state, f"{p}.downsample.1") if block == 0 else x
        x = F.relu(out + shortcut)
    return x


def fake_torchvision_state(stem: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format classification state_dict for ``stem``'s keys: random tensors of the right shapes
    (positive running variances), batch counters of 7, plus classifier tensors that must be ignored."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in stem.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.1
    state["classifier.0.weight"] = torch.randn(4, 3, generator=g)
    state["fc.weight"] = torch.randn(4, 3, generator=g)
    return state


def test_output_shapes_and_stride():
    x = torch.zeros(2, 3, 256, 256)
    for name, factory in STEMS.items():
        stem = factory(256)
        assert stem(x).shape == (2, 256, 64, 64), name
        assert stem.stride == 4, name
    assert VGGStem(128)(x).shape == ResNetStem(128)(x).shape == (2, 128, 64, 64)


def test_parameter_counts_match_closed_forms():
    assert count(VGGStem()) == vgg_params() == 1_737_792
    assert count(ResNetStem()) == resnet_params() == 225_344
    # channels != 256: one 1x1 conv (no bias) + BN appended
    assert count(VGGStem(128)) == vgg_params() + 256 * 128 + 2 * 128


def test_vgg_keys_and_indices_are_torchvision_s():
    stem = VGGStem()
    expected = []
    for conv, norm in zip(VGG_CONVS, VGG_BNS, strict=True):
        expected += [f"features.{conv}.weight", f"features.{conv}.bias", *(f"features.{norm}.{b}" for b in BN_BUFFERS)]
    assert list(stem.state_dict()) == expected
    assert len(stem.features) == 23 and isinstance(stem.features[22], nn.ReLU)
    assert all(isinstance(stem.features[i], nn.MaxPool2d) for i in (6, 13))
    assert all(isinstance(stem.features[i + 2], nn.ReLU) for i in VGG_CONVS)
    assert [tuple(stem.features[i].weight.shape[:2]) for i in VGG_CONVS] == [(o, i) for i, o in VGG_WIDTHS]


def test_resnet_keys_are_torchvision_s():
    assert list(ResNetStem().state_dict()) == resnet_keys()


@pytest.mark.parametrize("stem_class, reference", [(VGGStem, vgg_reference), (ResNetStem, resnet_reference)])
@pytest.mark.parametrize("wrapped, legacy", [(False, True), (True, False)])
def test_round_trip_through_a_torchvision_file(tmp_path: Path, stem_class, reference, wrapped, legacy):
    """A torchvision file (legacy pre-1.6 format as the 2017 downloads, or wrapped in ``state_dict``) loads by
    key name; the stem's output equals torchvision's layers computed functionally on the file's tensors."""
    state = fake_torchvision_state(stem_class())
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": state} if wrapped else state, path, _use_new_zipfile_serialization=not legacy)
    stem = stem_class()
    loaded = load_stem_weights(stem, path)
    assert sorted(loaded) == sorted(k for k in state if not k.startswith(("classifier.", "fc.")))
    assert all(int(v) == 7 for k, v in stem.state_dict().items() if k.endswith("num_batches_tracked"))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(stem.eval()(x), reference(x, state), atol=1e-5, rtol=1e-4)


def test_file_without_batch_counters_loads(tmp_path: Path):
    """torchvision's 2017 checkpoints have no num_batches_tracked: the rest loads, the counters stay."""
    state = {k: v for k, v in fake_torchvision_state(VGGStem()).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    stem = VGGStem()
    loaded = load_stem_weights(stem, tmp_path / "old.pth")
    assert sorted(loaded) == sorted(k for k in state if k.startswith("features."))
    assert torch.equal(stem.features[21].running_var, state["features.21.running_var"])
    assert int(stem.features[21].num_batches_tracked) == 0


def test_projection_is_left_alone(tmp_path: Path):
    torch.save(fake_torchvision_state(VGGStem()), tmp_path / "vgg.pth")
    stem = VGGStem(128)
    before = stem.project[0].weight.clone()
    assert not any(k.startswith("project") for k in load_stem_weights(stem, tmp_path / "vgg.pth"))
    assert torch.equal(stem.project[0].weight, before)


def test_wrong_shape_names_the_tensor_and_both_shapes(tmp_path: Path):
    state = fake_torchvision_state(ResNetStem())
    state["layer1.1.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"layer1\.1\.conv2\.weight .*\(64, 64, 1, 1\).*\(64, 64, 3, 3\)"):
        load_stem_weights(ResNetStem(), tmp_path / "bad.pth")


def test_missing_key_is_named(tmp_path: Path):
    state = fake_torchvision_state(VGGStem())
    del state["features.17.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"features\.17\.weight"):
        load_stem_weights(VGGStem(), tmp_path / "partial.pth")


def test_missing_file_names_the_path_and_the_torchvision_checkpoint(tmp_path: Path):
    path = tmp_path / "nowhere" / "vgg.pth"
    with pytest.raises(MissingCheckpoint) as error:
        load_stem_weights(VGGStem(), path)
    assert str(path) in str(error.value) and "vgg16_bn-6c64b313.pth" in str(error.value)
    assert "null" in str(error.value)


def test_a_stem_without_imagenet_weights_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="FANStem"):
        load_stem_weights(FANStem(256), tmp_path / "x.pth")


def test_fresh_stems_start_as_torchvision_s():
    """Kaiming normal (fan-out, ReLU gain): std sqrt(2 / (cout * k * k)); zero bias; BN γ = 1, β = 0."""
    torch.manual_seed(0)
    conv = VGGStem().features[20]
    assert abs(conv.weight.std().item() / (2 / (256 * 9)) ** 0.5 - 1) < 0.02
    assert not conv.bias.any() and torch.equal(ResNetStem().layer1[0].bn3.weight, torch.ones(256))


def test_stem_factory_builds_a_stacked_hourglass():
    net = StackedHourglass(16, num_stacks=2, depth=2, channels=64, stem=stem_factory("vgg"))
    assert isinstance(net.stem, VGGStem) and net.stride == 4
    assert [tuple(o.shape) for o in net(torch.zeros(1, 3, 64, 64))] == [(1, 16, 16, 16)] * 2
    assert stem_factory("hourglass") is FANStem and stem_factory("resnet") is ResNetStem
    with pytest.raises(ValueError, match="hourglass, resnet, vgg"):
        stem_factory("vgg19")
