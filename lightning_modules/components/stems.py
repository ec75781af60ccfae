"""The stems of TAB's Table 8 (paper 004, Sec. 3.1 "stem layers", Sec. 4.3; IMPLEMENTATION_NOTES §5.1, §0.3).

A stem maps (B, 3, 256, 256) images to (B, 256, 64, 64) features (stride 4) for a
:class:`~lightning_modules.components.hourglass.StackedHourglass`::

    StackedHourglass(16, 2, 4, 256, block=HPMBlock, down=avg_pool, stem=stem_factory("vgg"), head=fan_head)

========== =========================================================== =================================
Table 8    layers                                                      ImageNet checkpoint (torchvision)
========== =========================================================== =================================
vgg        ``vgg16_bn().features[0:23]``: conv1_1 .. conv3_3, 3x3 + BN  ``vgg16_bn-6c64b313.pth``
resnet     ResNet-50 conv1 + bn1 + relu + maxpool + layer1              ``resnet50-0676ba61.pth``
hourglass  FAN's stem (``hpm.FANStem``, the paper's "baseline")        none
========== =========================================================== =================================

The VGG and ResNet stems rebuild torchvision's layers with torchvision's module names (torchvision is not a
dependency), so :func:`load_stem_weights` copies an ImageNet classification state_dict into them by key name.
Pretrained weights expect ImageNet-normalised inputs (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225).

Choices that are ours, not the paper's:

* ``channels`` other than 256 appends a 1x1 conv-BN-ReLU (``project``); it is not part of the pretrained keys.
  At 256 it is an identity, so the stem is exactly torchvision's.
* Without a weights file the convolutions are initialised as torchvision initialises them (Kaiming normal,
  fan-out, ReLU gain; zero bias; BN γ = 1, β = 0), so a stem trained from scratch starts as torchvision's does.
* ``num_batches_tracked`` is loaded when the file has it; torchvision's 2017 checkpoints predate that buffer
  (PyTorch 0.4.1), so its absence is not an error (it only drives BN momentum=None, unused here).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from lightning_modules.components.hourglass import PartFactory, conv_bn_relu
from lightning_modules.components.hpm import FANStem
from lightning_modules.training import CheckpointError, MissingCheckpoint, read_checkpoint

VGG16_CONV1_TO_CONV3 = (64, 64, "M", 128, 128, "M", 256, 256, 256)  # torchvision's cfg "D" up to conv3_3


@dataclass(frozen=True)
class TorchvisionWeights:
    """Where a stem's ImageNet weights come from: torchvision's ``architecture``, its checkpoint ``file`` (as
    torchvision names it in download.pytorch.org/models/), and the key prefixes the stem shares with it."""

    architecture: str
    file: str
    prefixes: tuple[str, ...]


def torchvision_init(module: nn.Module) -> None:
    """torchvision's VGG / ResNet initialisation: Kaiming normal (fan-out, ReLU) convs, zero bias, BN 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def projection(cin: int, channels: int) -> nn.Module:
    """Identity when the torchvision layers already give ``channels``, else a 1x1 conv-BN-ReLU (ours)."""
    return nn.Identity() if channels == cin else conv_bn_relu(cin, channels)


class VGGStem(nn.Module):
    """torchvision ``vgg16_bn().features[0:23]`` (+ ``project``): (B, 3, S, S) → (B, C, S/4, S/4).

    ``features`` indices are torchvision's: a conv is followed by its BN and ReLU (0, 1, 2 = conv1_1), each
    max-pool takes one index (6, 13); 22 is conv3_3's ReLU.
    """

    stride = 4
    torchvision = TorchvisionWeights("vgg16_bn", "vgg16_bn-6c64b313.pth", ("features.",))

    def __init__(self, channels: int = 256, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for size in VGG16_CONV1_TO_CONV3:
            if size == "M":
                layers.append(nn.MaxPool2d(2, 2))  # (B, c, H, W) → (B, c, H/2, W/2)
            else:
                cout = size * width // 64  # ``width`` < 64: a narrower VGG for CPU stand-ins (no ImageNet weights)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)  # (B, 3, S, S) → (B, 256, S/4, S/4)
        self.project = projection(cin, channels)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


class ResNetBottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (v1.5, stride on the 3x3 conv): 1x1 → 3x3 → 1x1 (x4), post-activation,
    with a 1x1 conv + BN ``downsample`` shortcut when the shape changes. (B, cin, H, W) → (B, 4w, H/s, W/s)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetStem(nn.Module):
    """ResNet-50 up to ``layer1`` (+ ``project``), torchvision's names: (B, 3, S, S) → (B, C, S/4, S/4)."""

    stride = 4
    torchvision = TorchvisionWeights("resnet50", "resnet50-0676ba61.pth", ("conv1.", "bn1.", "layer1."))

    def __init__(self, channels: int = 256, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)  # (B, 64, S/2, S/2); ``width`` as VGGStem's
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # (B, 64, S/4, S/4)
        out = width * ResNetBottleneck.expansion
        self.layer1 = nn.Sequential(ResNetBottleneck(width, width), ResNetBottleneck(out, width),
                                    ResNetBottleneck(out, width))  # (B, 256, S/4, S/4)
        self.project = projection(out, channels)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.project(self.layer1(x))


def load_stem_weights(stem: nn.Module, path: str | Path) -> list[str]:
    """Copy torchvision's ImageNet weights from the local file ``path`` into ``stem``; return the keys loaded.

    The file is a torchvision classification state_dict (or a dict with a ``state_dict`` entry), read with
    ``weights_only=True``. Only the stem's torchvision keys are taken (parameters and BN buffers; the classifier
    and later layers are ignored). A missing file, a stem key absent from the file or a tensor of another shape
    is a :class:`CheckpointError` naming the file, so a wrong file never silently leaves a stem half-initialised.
    """
    source: TorchvisionWeights | None = getattr(stem, "torchvision", None)
    if source is None:
        have = [name for name, factory in STEMS.items() if hasattr(factory, "torchvision")]
        raise ValueError(f"{type(stem).__name__} has no torchvision ImageNet checkpoint; the stems with one: "
                         f"{', '.join(have)}")
    what = f"{type(stem).__name__} ImageNet weights"
    try:
        content = read_checkpoint(path, what)
    except MissingCheckpoint as error:
        raise MissingCheckpoint(path, f"{error}. It should be torchvision's ImageNet checkpoint of "
                                      f"{source.architecture} ({source.file}); without it the stem is trained from "
                                      "scratch: leave the weights option null (TAB: stem_weights: null).") from error
    state = content.get("state_dict", content)
    own = {key: value for key, value in stem.state_dict().items() if key.startswith(source.prefixes)}
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(path, f"{what}: {path} lacks {len(missing)} of the stem's {len(own)} tensors "
                                    f"(e.g. {', '.join(missing[:4])}): not torchvision's {source.architecture} "
                                    f"checkpoint ({source.file})")
    loaded = {key: state[key] for key in own if key in state}
    for key, value in loaded.items():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != tuple(own[key].shape):
            raise CheckpointError(path, f"{what}: {key} in {path} has shape {shape}, the stem's has "
                                        f"{tuple(own[key].shape)}: not torchvision's {source.architecture} "
                                        f"checkpoint ({source.file})")
    stem.load_state_dict(loaded, strict=False)  # strict=False: the keys outside the torchvision prefixes stay
    return list(loaded)


STEMS: dict[str, PartFactory] = {"vgg": VGGStem, "resnet": ResNetStem, "hourglass": FANStem}  # Table 8's rows


def stem_factory(name: str, width: int = 64) -> PartFactory:
    """The ``channels -> stem`` factory of a Table 8 row, for ``StackedHourglass(..., stem=stem_factory("vgg"))``
    (a name in a config, the one place the stems are listed). ``width``: the first convolutions' channels of the
    VGG and ResNet stems (64, torchvision's; less only for CPU stand-ins); FAN's hourglass stem has none."""
    if name not in STEMS:
        raise ValueError(f"unknown stem {name!r}; the stems are {', '.join(sorted(STEMS))}")
    if width == 64:
        return STEMS[name]
    if name == "hourglass":
        raise ValueError("the hourglass (FAN) stem has a fixed width: stem_width applies to 'vgg' and 'resnet'")
    return partial(STEMS[name], width=width)
