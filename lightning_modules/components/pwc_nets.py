"""The networks of PWC ("A Detailed Look at CNN-based Approaches in Facial Landmark Detection", paper 002, Sec. 2-4).

Rebuilt in PyTorch from the official TensorFlow 1.8 code, ``chihfanhsu/fl_detection`` (commit f6ac943), folder
``codes/``: ``model_pwc.py`` (whose layers ``model_hybrid.py``, ``model_heatmapreg.py`` and the ``*ADis.py`` files
repeat), ``model_dist.py``, ``model_reg.py`` and ``model_hybridADis.py`` (the discriminator).
IMPLEMENTATION_NOTES §3.2 has the layer table.

* :class:`PWCBackbone`: the VGG19-like encoder all these models share (paper Sec. 4, Fig. 7), its five stages
  of 3x3 conv-BN-ReLU blocks and max-pools, then "fc6/fc7" as convolutions (7x7 and 1x1, 2048 channels).
* :class:`PWCDetector`: the FCN-8s-style detection network (Fig. 6/7): score layer, three transposed convs and
  the two shortcuts (+ pool4, + pool3). 69 outputs (background + 68) for the PWC, hybrid and heatmap-regression
  models, 68 for the distribution model (Sec. 4: 82,947,658 and 82,871,880 parameters).
* :class:`DirectRegression`: the backbone plus the fully connected head of Fig. 1 (Sec. 4: 178,682,440).
* :class:`ShapeDiscriminator`: the 3-layer fully connected discrimination network of Fig. 6 (Sec. 4: 34,689).

The counts are the TF trainable variables: conv / dense weights and biases and BN γ, β. In PyTorch the BN running
statistics are buffers, so ``sum(p.numel() for p in net.parameters())`` gives the paper's numbers exactly.

What the code does, and we do too:

* the RGB input (pixels / 255, in [0, 1]) is averaged to ONE grey channel inside the network
  (``tf.reduce_mean(image, axis=3)``, ``model_pwc.py`` l. 28), so the first conv has one input channel;
* every conv has a bias although a BN follows it (``tf.layers.conv2d`` default); BN momentum 0.9 in TF's sense
  (PyTorch momentum 0.1), ε = 1e-5;
* the 1x1 score layer ends in a ReLU (``tf.contrib.layers.conv2d``'s default ``activation_fn``); the three
  transposed convs have a bias and no activation; ``score_relu=False`` drops that ReLU (not the code);
* TF "SAME" transposed convs: k = 4, s = 2 and k = 16, s = 8 pad (k - s) / 2 on each side in TF, which is
  PyTorch's ``padding=(k - s) // 2`` (1 and 4): the sizes (7 → 14 → 28 → 224) and the pixel alignment match;
* initialisation as TF's defaults: Glorot-uniform weights, zero biases, BN γ = 1, β = 0 (:func:`glorot_init_`).

Where we differ, and why:

* tensors are NCHW, so :class:`DirectRegression` flattens the (2048, 7, 7) features channel-first where TF's
  ``tf.layers.flatten`` reads them NHWC: a fixed permutation of the first dense layer's inputs, which changes
  nothing a network trained here can learn (it matters only to someone porting TF weights);
* ``width`` (64 = the paper) scales every channel count, for small CPU stand-ins in tests and smoke runs;
  ``input_size`` of :class:`DirectRegression` may be any multiple of 32 (224 = the paper).

Shapes in comments are for the paper's (B, 3, 224, 224) input and width 64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

VGG19_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (channels at width 64, 3x3 convs) per stage
FC_CHANNELS = 2048  # "fc6" / "fc7" as convolutions at width 64 (``c6_1``, ``c6_2`` in the code)
REGRESSION_HIDDEN = (1024, 256)  # model_reg.py l. 65 and 69: tf.layers.dense(..., 1024) and (..., 256)
DISCRIMINATOR_HIDDEN = (128, 128)  # model_hybridADis.py l. 47 and 51: tf.layers.dense(..., 128) twice
TF_BN_MOMENTUM = 0.1  # TF's momentum 0.9 (weight of the old running value) is PyTorch's 0.1 (of the new one)
TF_BN_EPS = 1e-5  # the code's batch_norm sets epsilon=1e-5 (TF's own default is 1e-3)


def glorot_init_(module: nn.Module) -> None:
    """TF 1.x's default initialisers, so a network starts as the code's does: Glorot (Xavier) uniform weights for
    convs, transposed convs and dense layers (``tf.layers`` and ``tf.contrib.layers`` both default to it) and
    zero biases; BN γ = 1, β = 0. The Glorot bound depends on fan-in + fan-out only, so PyTorch's transposed
    weight layout (in, out, k, k) gives TF's bound too."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def tf_conv_block(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """The code's ``conv_blk``: a stride-1 "same" conv WITH bias (TF's default; ``hourglass.conv_bn_relu`` has
    none), BN (TF momentum 0.9, ε 1e-5) and ReLU. Odd kernels only, where TF's "same" pads (k - 1) / 2 per side.
    (B, cin, H, W) → (B, cout, H, W)."""
    if kernel % 2 != 1:
        raise ValueError(f"tf_conv_block needs an odd kernel (TF 'same' is then symmetric), got {kernel}")
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=True),
                         nn.BatchNorm2d(cout, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM), nn.ReLU(inplace=True))


def tf_same_up(cin: int, cout: int, kernel: int, stride: int) -> nn.ConvTranspose2d:
    """``tf.contrib.layers.conv2d_transpose(..., padding='SAME', activation_fn=None)``: H → stride·H, with bias.
    TF pads the adjoint conv by k - s in total, floor((k - s) / 2) before; for even k - s that is symmetric,
    i.e. PyTorch's ``padding=(k - s) // 2``."""
    if (kernel - stride) % 2 or kernel < stride:
        raise ValueError(f"TF 'SAME' padding is symmetric only for even kernel - stride >= 0, got k={kernel}, "
                         f"s={stride}")
    return nn.ConvTranspose2d(cin, cout, kernel, stride, padding=(kernel - stride) // 2, bias=True)


class PWCFeatures(NamedTuple):
    """What the backbone hands on: the two shortcut sources of the detector and the top features."""

    pool3: torch.Tensor  # (B, 4w, H/8, W/8): 256 x 28 x 28
    pool4: torch.Tensor  # (B, 8w, H/16, W/16): 512 x 14 x 14
    top: torch.Tensor  # (B, 32w, H/32, W/32): 2048 x 7 x 7, ``c6_2``: what the direct-regression head flattens


class PWCBackbone(nn.Module):
    """The VGG19-like encoder (paper Sec. 4, Fig. 7; ``inference`` up to ``c6_2`` in every ``model_*.py``):
    grey averaging, five stages of 3x3 conv blocks each ending in a 2x2 max-pool, then a 7x7 and a 1x1 conv block
    with 2048 channels. (B, 3, H, W) in [0, 1] → :class:`PWCFeatures`; H, W multiples of 32.

    Args:
        grey: average RGB to one channel first, as the code does (the paper's counts assume it); False keeps
            three input channels (+1,152 parameters).
        width: channels of the first stage (64 = the paper); every other width scales with it.
    """

    def __init__(self, grey: bool = True, width: int = 64) -> None:
        super().__init__()
        self.grey, self.width = grey, width
        cin = 1 if grey else 3
        stages, widths = [], []
        for channels, repeats in VGG19_STAGES:
            cout = channels * width // 64
            blocks = [tf_conv_block(cin if i == 0 else cout, cout) for i in range(repeats)]
            stages.append(nn.Sequential(*blocks, nn.MaxPool2d(2, 2)))  # TF max_pool_2x2, "SAME" on even sizes
            widths.append(cout)
            cin = cout
        self.stages = nn.ModuleList(stages)  # pools 1-5: 112, 56, 28 (pool3), 14 (pool4), 7
        fc = FC_CHANNELS * width // 64
        self.fc6 = tf_conv_block(cin, fc, 7)  # c6_1: (B, 512, 7, 7) → (B, 2048, 7, 7); "same" pads 3
        self.fc7 = tf_conv_block(fc, fc, 1)  # c6_2: (B, 2048, 7, 7)
        self.channels = (widths[2], widths[3], fc)  # of pool3, pool4 and top

    def forward(self, x: torch.Tensor) -> PWCFeatures:
        if self.grey:
            x = x.mean(dim=1, keepdim=True)  # (B, 3, 224, 224) → (B, 1, 224, 224): tf.reduce_mean(image, axis=3)
        pools = []
        for stage in self.stages:
            x = stage(x)
            pools.append(x)
        top = self.fc7(self.fc6(x))  # (B, 2048, 7, 7)
        return PWCFeatures(pool3=pools[2], pool4=pools[3], top=top)


class PWCDetector(nn.Module):
    """The detection network (paper Fig. 6/7; ``model_pwc.py`` ``inference``), FCN-8s style: logits
    (B, num_classes, H, W) at the input's resolution; for PWC a per-pixel softmax over them, channel 0 being the
    background (IMPLEMENTATION_NOTES §3.2-3.3).

    Args:
        num_classes: 69 (68 landmarks + background) for the PWC, hybrid (+disc) and heatmap-regression models,
            68 for the distribution model.
        grey: see :class:`PWCBackbone`.
        width: see :class:`PWCBackbone`.
        score_relu: the ReLU after the 1x1 score layer (True = the code, a library default it never overrode).
    """

    def __init__(self, num_classes: int = 69, grey: bool = True, width: int = 64, score_relu: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = PWCBackbone(grey, width)
        c3, c4, fc = self.backbone.channels
        self.score = nn.Conv2d(fc, num_classes, 1)  # conv8: (B, 2048, 7, 7) → (B, 69, 7, 7)
        self.score_act = nn.ReLU() if score_relu else nn.Identity()
        self.up1 = tf_same_up(num_classes, c4, 4, 2)  # conv_t1: → (B, 512, 14, 14), then + pool4 (shortcut 1)
        self.up2 = tf_same_up(c4, c3, 4, 2)  # conv_t2: → (B, 256, 28, 28), then + pool3 (shortcut 2)
        self.up3 = tf_same_up(c3, num_classes, 16, 8)  # fuse_3: → (B, 69, 224, 224), the logits
        glorot_init_(self)

    def features(self, x: torch.Tensor) -> PWCFeatures:
        """The backbone's pool3, pool4 and top features of (B, 3, H, W) images in [0, 1]."""
        return self.backbone(x)

    def decode(self, f: PWCFeatures) -> torch.Tensor:
        """The FCN-8s decoder: score, then three TF-"SAME" transposed convs with the two shortcut additions."""
        score = self.score_act(self.score(f.top))  # (B, 69, 7, 7)
        fuse1 = self.up1(score) + f.pool4  # (B, 512, 14, 14)
        fuse2 = self.up2(fuse1) + f.pool3  # (B, 256, 28, 28)
        return self.up3(fuse2)  # (B, 69, 224, 224)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))


def fc_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """The paper's "fully connected block" (Sec. 4): dense (with bias) → BN (TF momentum 0.9, ε 1e-5) → ReLU."""
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM),
                         nn.ReLU(inplace=True))


class DirectRegression(nn.Module):
    """The direct regression model (paper Sec. 2.1, Fig. 1; ``model_reg.py``): the backbone's (B, 2048, 7, 7)
    features flattened, dense 1024 → BN → ReLU, dense 256 → BN → ReLU, dense 2K, reshaped to (B, K, 2).

    It regresses raw PIXEL coordinates (x, y) in the 224 crop: ``training_reg.py`` feeds the landmarks as they
    are (``y_``, no scaling; the loss l. 90 is their mean Euclidean distance), so do we; the last dense layer
    starts with a zero bias, i.e. every prediction starts near (0, 0). (``s_mean`` is an unused argument of
    ``model_reg.inference``.)

    Dropout: the code calls ``tf.layers.dropout(flat, rate=keep_prob)`` with keep_prob 0.5 while training, but
    without ``training=True``, and TF's default ``training=False`` makes it the identity: the code trains without
    dropout. ``dropout=0.0`` (default) reproduces that; 0.5 would be what it seems to intend.

    Args:
        num_points: K landmarks (68 in the paper).
        grey, width: see :class:`PWCBackbone`.
        input_size: the square input side (224 = the paper), a multiple of 32; it sets the first dense layer.
        dropout: dropout rate on the flattened features.
    """

    def __init__(self, num_points: int = 68, grey: bool = True, width: int = 64, input_size: int = 224,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 (five 2x2 pools), got {input_size}")
        self.num_points, self.input_size = num_points, input_size
        self.backbone = PWCBackbone(grey, width)
        flat = self.backbone.channels[2] * (input_size // 32) ** 2  # 2048 * 7 * 7 = 100,352
        h1, h2 = REGRESSION_HIDDEN
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, 2048, 7, 7) → (B, 100352), channel-first (TF: NHWC order)
            nn.Dropout(dropout),
            fc_bn_relu(flat, h1),  # f1: (B, 1024)
            fc_bn_relu(h1, h2),  # f2: (B, 256)
            nn.Linear(h2, 2 * num_points),  # f3: (B, 136), pixels
        )
        glorot_init_(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's top features (B, 2048, 7, 7), what the head reads."""
        return self.backbone(x).top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1, self.num_points, 2)  # (B, 68, 2): x, y in crop pixels


class ShapeDiscriminator(nn.Module):
    """The discrimination network (paper Sec. 3, Fig. 6; ``model_hybridADis.py`` ``discriminator``): the K x 2
    coordinates flattened (x0, y0, x1, y1, ...), dense 128 → BN → ReLU, dense 128 → BN → ReLU, dense 1.

    Input: (B, K, 2) coordinates in crop PIXELS, not normalised: ``training_hybridADis.py`` feeds the ground truth
    ``y_`` as it is and the detector's argmax pixel coordinates (l. 123-124). Output: (B,) LOGITS. The code's
    ``D_prob = sigmoid(D_logit)`` is left to the loss (``binary_cross_entropy_with_logits``), which is stable
    where log(sigmoid) is not; the code's losses also use the logits (``sigmoid_cross_entropy_with_logits``).

    Args:
        num_points: K landmarks (68 in the paper: 136 inputs).
    """

    def __init__(self, num_points: int = 68) -> None:
        super().__init__()
        self.num_points = num_points
        h1, h2 = DISCRIMINATOR_HIDDEN
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, 68, 2) → (B, 136)
            fc_bn_relu(2 * num_points, h1),  # d1: (B, 128)
            fc_bn_relu(h1, h2),  # d2: (B, 128)
            nn.Linear(h2, 1),  # D_logit: (B, 1)
        )
        glorot_init_(self)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3 or points.shape[1:] != (self.num_points, 2):
            raise ValueError(f"points must be (B, {self.num_points}, 2), got {tuple(points.shape)}")
        return self.net(points).squeeze(1)  # (B,) logits
