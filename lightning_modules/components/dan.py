"""Deep Alignment Network (DAN, Kowalski et al., CVPR-W 2017): the cascaded regression baseline of PWC (paper 002).

PWC Sec. 4 "adopt[s] the original three-stage DAN suggested by Kowalski et al." on a 112x112 input, with
35,053,144 parameters, one sub-network holding 11,146,312. A stage is a VGG-like CNN that regresses a shape
update; stages 2..n first bring the face into the mean shape's frame:

* stage 1: S1 = S0 + CNN1(I), S0 the mean shape;
* transform estimation: T_t = the least-squares similarity taking S_t onto S0 (closed form,
  ``similarity_transform``);
* image transform: T_t(I), the image resampled in the mean shape's frame (bilinear, ``warp_image``);
* landmark heatmap: H(x, y) = 1 / (1 + min_i ||(x, y) - T_t(s_i)||) (``landmark_heatmap``);
* feature image: FC(256 → (S/2)²) + ReLU of the previous stage's fc1, reshaped to S/2 x S/2, upscaled x2
  (nearest);
* S_{t+1} = T_t⁻¹(T_t(S_t) + CNN_{t+1}([T_t(I), H, F])).

Layer sizes (Kowalski's ``DeepAlignmentNetwork/FaceAlignmentTraining.py``, lines 79-107 and 118-137; PWC's
``codes/model_dan.py``, lines 17-49 and 113-165, the same sizes): 2x [3x3 conv + BN + ReLU] then 2x2 max-pool,
at 64, 128, 256, 512 channels; flatten (7x7x512), dropout, FC 256 + BN + ReLU (``fc1``), FC 2K (the update).
The input is grey: Kowalski's ``ImageServer.py`` line 103 averages the colour channels, PWC's
``model_dan.py`` line 153 does ``reduce_mean`` over RGB; ``DAN`` averages whatever channels it is given.

Parameters with K = 68 (trainable, as TF and the paper count them): stage 1 = 11,146,312, stages 2 and 3 =
11,147,464 each (three input channels), the two feature-image layers 805,952 each; total 35,053,144 = the
paper's count exactly. This is PWC's TF version of the layers: every conv and fc1 keeps its bias before its BN
and the stage input is not normalised. Kowalski's Lasagne ``batch_norm`` drops those biases (2,176 fewer per
stage) and puts a BN on the 3-channel stage input (line 84, 6 more per stage 2..n): 35,046,628 there.

Other choices, each with its source:

* transforms are (B, 2, 3) matrices acting on column vectors, p' = M[:, :2] p + M[:, 2], in input pixels with
  pixel centres at integers (``landmarks.geometry``'s convention, also Kowalski's: his pixel grid is the
  integer (x, y)). Kowalski's row-vector [[a, b], [-b, a]] is our [[a, -b], [b, a]];
* the whole cascade is differentiable, as in Kowalski's Theano graph (the transform, the warp and the heatmap
  all carry gradients to earlier stages); PWC trains it end to end on the last stage's error;
* the heatmap is the formula over the whole image (Kowalski's paper, and PWC's ``__gen_heatmap``, line 101);
  Kowalski's code only draws a 17x17 window around each landmark (``landmarkPatchSize`` 16, clamped inside
  the image): ``heatmap_window=8`` reproduces it. sqrt(d² + 1e-6), as his ``LandmarkImageLayer`` line 28;
* warp borders replicate the edge pixels (Kowalski clamps the sampling coordinates; TF's transform fills 0);
* dropout 0.5 before fc1 (Kowalski line 103; PWC's ``tf.layers.dropout`` is called without ``training`` and
  so never drops);
* initialisation is Kowalski's: Glorot-uniform with gain √2 (``GlorotUniform('relu')``) for convs, fc1 and
  the feature images, gain 1 for the update layer, zero biases; BN as PyTorch's defaults (PWC's TF
  momentum 0.9 and ε 1e-5 are the same).
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from landmarks.geometry import apply_affine, invert_affine

__all__ = ["DAN", "DANStage", "FeatureImage", "apply_transform", "landmark_heatmap", "similarity_transform",
           "warp_image"]

CHANNELS = (64, 128, 256, 512)  # the four conv blocks of every stage
FC_UNITS = 256  # fc1, the feature every stage hands to the next
Layer = TypeVar("Layer", nn.Conv2d, nn.Linear)

# p' = M[:, :2] p + M[:, 2] for (..., K, 2) points and (..., 2, 3) matrices: the project's one definition.
apply_transform = apply_affine


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The (..., 2, 3) similarity M minimising sum_k ||M(src_k) - dst_k||² (rotation, one scale, shift).

    Closed form (Kowalski's ``TransformParamsLayer``): with centred points s and d,
    a = Σ s·d / Σ|s|², b = Σ (s_x d_y - s_y d_x) / Σ|s|², linear part [[a, -b], [b, a]] and the shift that
    maps src's centroid onto dst's. ``src`` and ``dst`` are (..., K, 2) and broadcast against each other.
    Differentiable; no reflection.
    """
    src, dst = torch.broadcast_tensors(src, dst)
    src_mean, dst_mean = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)  # (..., 1, 2)
    s, d = src - src_mean, dst - dst_mean  # (..., K, 2)
    norm = (s * s).sum((-2, -1))  # (...,)
    a = (s * d).sum((-2, -1)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(-1) / norm
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (..., 2, 2)
    shift = dst_mean.squeeze(-2) - (linear @ src_mean.transpose(-1, -2)).squeeze(-1)  # (..., 2)
    return torch.cat([linear, shift[..., None]], -1)


def pixel_grid(size: int, like: torch.Tensor) -> torch.Tensor:
    """(size * size, 2) pixel centres (x, y), row-major, with ``like``'s dtype and device."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2)


def warp_image(images: torch.Tensor, transform: torch.Tensor, size: int,
               padding_mode: str = "border") -> torch.Tensor:
    """Resample (B, C, H, W) images into a (B, C, size, size) frame; ``transform`` (B, 2, 3) maps input pixels
    to output pixels (a point p of the image lands at ``apply_transform(p, transform)``).

    Each output pixel q reads the input at T⁻¹(q), bilinear (``grid_sample`` with ``align_corners=True``, so
    -1 and 1 are the centres of the first and last pixels: the integer-centre convention). Outside the image
    the edge pixels repeat (``padding_mode``, Kowalski clamps the coordinates). Differentiable in both
    arguments.
    """
    b, _, h, w = images.shape
    source = apply_affine(pixel_grid(size, images)[None], invert_affine(transform))  # (B, size², 2) input px
    scale = torch.tensor([2 / (w - 1), 2 / (h - 1)], dtype=images.dtype, device=images.device)
    grid = (source * scale - 1).reshape(b, size, size, 2)  # normalised (x, y) in [-1, 1]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def landmark_heatmap(shapes: torch.Tensor, size: int, window: int | None = None,
                     eps: float = 1e-6) -> torch.Tensor:
    """(B, K, 2) landmarks → (B, 1, size, size) map H(x, y) = 1 / (1 + min_k sqrt(||(x, y) - s_k||² + eps)).

    DAN's landmark heatmap (Kowalski eq. 3): 1 on a landmark, decaying with the distance to the nearest one.
    ``window=h`` draws it as Kowalski's ``LandmarkImageLayer`` does: landmarks are clamped to [h, size-1-h] and
    landmark k only reaches the (2h+1)² pixels within h of its integer part (floor); elsewhere the map is 0.
    """
    if window is not None:
        shapes = shapes.clamp(window, size - 1 - window)
    coords = torch.arange(size, dtype=shapes.dtype, device=shapes.device)
    dx = coords.view(1, 1, 1, size) - shapes[..., 0, None, None]  # (B, K, 1, size)
    dy = coords.view(1, 1, size, 1) - shapes[..., 1, None, None]  # (B, K, size, 1)
    dist = torch.sqrt(dx * dx + dy * dy + eps)  # (B, K, size, size)
    if window is not None:
        anchor = shapes.detach().floor()
        near_x = (coords.view(1, 1, 1, size) - anchor[..., 0, None, None]).abs() <= window
        near_y = (coords.view(1, 1, size, 1) - anchor[..., 1, None, None]).abs() <= window
        dist = dist.masked_fill(~(near_x & near_y), math.inf)
    return 1 / (1 + dist.amin(1, keepdim=True))  # 1 / (1 + inf) = 0 outside every window


def glorot_relu(layer: Layer, gain: float = math.sqrt(2)) -> Layer:
    """Lasagne's ``GlorotUniform('relu')`` weights (gain √2) and zero bias, as Kowalski initialises."""
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class DANStage(nn.Module):
    """One DAN sub-network: (B, C, S, S) → shape update (B, K, 2) and its fc1 feature (B, 256).

    Four blocks of 2x [3x3 conv (bias) + BN + ReLU] and a 2x2 max-pool (64, 128, 256, 512 channels: S → S/16),
    flatten, dropout, fc1 = FC 256 + BN + ReLU, then FC 2K with no activation.
    """

    def __init__(self, in_channels: int, num_points: int, input_size: int = 112, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in CHANNELS:
            for _ in range(2):
                layers += [glorot_relu(nn.Conv2d(cin, cout, 3, padding=1)), nn.BatchNorm2d(cout), nn.ReLU(True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)  # (B, C, S, S) → (B, 512, S/16, S/16)
        flat = cin * (input_size // 2 ** len(CHANNELS)) ** 2  # 512 * 7 * 7 = 25,088 at S = 112
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), glorot_relu(nn.Linear(flat, FC_UNITS)),
                                 nn.BatchNorm1d(FC_UNITS), nn.ReLU(True))
        self.output = glorot_relu(nn.Linear(FC_UNITS, 2 * num_points), gain=1.0)  # Lasagne's default Glorot

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fc1 = self.fc1(self.features(x))  # (B, 256)
        return self.output(fc1).unflatten(-1, (-1, 2)), fc1  # (B, K, 2), (B, 256)


class FeatureImage(nn.Module):
    """DAN's feature image: fc1 (B, 256) → FC (S/2)² + ReLU → (B, 1, S/2, S/2) → nearest x2 → (B, 1, S, S)."""

    def __init__(self, input_size: int = 112) -> None:
        super().__init__()
        self.half = input_size // 2
        self.fc = glorot_relu(nn.Linear(FC_UNITS, self.half ** 2))

    def forward(self, fc1: torch.Tensor) -> torch.Tensor:
        small = F.relu(self.fc(fc1)).view(-1, 1, self.half, self.half)  # (B, 1, S/2, S/2)
        return F.interpolate(small, scale_factor=2, mode="nearest")  # (B, 1, S, S)


class DAN(nn.Module):
    """Kowalski's Deep Alignment Network: ``forward(images, mean_shape)`` → every stage's (B, K, 2) shape.

    Args:
        num_points: K, the landmarks regressed (the layout's point count).
        stages: how many sub-networks (the paper's 3).
        input_size: S, the square input in pixels (112; a multiple of 16).
        dropout: dropout before every fc1 (Kowalski's 0.5).
        heatmap_window: None for the heatmap formula over the whole image (paper, PWC code); 8 for Kowalski's
            code, which draws it in a 17x17 window around each landmark.
    """

    def __init__(self, num_points: int = 68, stages: int = 3, input_size: int = 112, dropout: float = 0.5,
                 heatmap_window: int | None = None) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"DAN needs at least one stage, got {stages}")
        if input_size % 2 ** len(CHANNELS):
            raise ValueError(f"input_size must be a multiple of {2 ** len(CHANNELS)}, got {input_size}")
        self.num_points, self.input_size, self.heatmap_window = num_points, input_size, heatmap_window
        # Stage 1 sees the grey image; later stages its warp, the heatmap and the feature image.
        self.stages = nn.ModuleList(DANStage(1 if i == 0 else 3, num_points, input_size, dropout)
                                    for i in range(stages))
        self.feature_images = nn.ModuleList(FeatureImage(input_size) for _ in range(stages - 1))

    def forward(self, images: torch.Tensor, mean_shape: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, S, S) images (any C: averaged to grey) and the (K, 2) mean shape S0 in input pixels → the
        shapes S1..Sn, each (B, K, 2) in input pixels; the last is the prediction."""
        size = self.input_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"DAN expects {size}x{size} images, got {tuple(images.shape[-2:])}")
        if mean_shape.shape != (self.num_points, 2):
            raise ValueError(f"mean_shape must be ({self.num_points}, 2), got {tuple(mean_shape.shape)}")
        grey = images.mean(1, keepdim=True)  # (B, 1, S, S): the original's single grey channel
        mean_shape = mean_shape.to(grey)
        update, fc1 = self.stages[0](grey)
        shape = mean_shape + update  # S1 = S0 + ΔS1, (B, K, 2)
        shapes = [shape]
        for stage, feature_image in zip(self.stages[1:], self.feature_images, strict=True):
            transform = similarity_transform(shape, mean_shape)  # T_t: S_t → S0, (B, 2, 3)
            aligned = apply_transform(shape, transform)  # T_t(S_t), (B, K, 2)
            x = torch.cat([warp_image(grey, transform, size),  # T_t(I), (B, 1, S, S)
                           landmark_heatmap(aligned, size, self.heatmap_window),  # H, (B, 1, S, S)
                           feature_image(fc1)], 1)  # F, (B, 1, S, S) → x (B, 3, S, S)
            update, fc1 = stage(x)
            shape = apply_transform(aligned + update, invert_affine(transform))  # S_{t+1} in input pixels
            shapes.append(shape)
        return shapes
