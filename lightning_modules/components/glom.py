"""GlomFace's networks (Zhu et al., CVPR 2022, paper 000 Sec. 3): patch CNN, PHM, WHM, one iteration.

Rebuilt from the official TensorFlow 1.x code, ``zhuccly/GlomFace-Face-Alignment`` ``Glom_model.py`` (functions
``conv_model``, ``Non_local`` and the ``PHM`` / ``WHM`` scopes of ``GlomFace``), with its ``slim/ops.py`` for the
layer conventions; IMPLEMENTATION_NOTES §1.1-1.3 and §1.6 list the sizes. One iteration of eq. 2 is

    patches ρ(F | L^{t-1}) (B, K, 3, P, P) → :class:`PatchCNN` → (B, K, 2, 2, 128)
        → :class:`PHM` (part-whole: non-local blocks over regions, groups, the whole) → z (B, K·512)
        → :class:`WHM` (whole-part: RNN state h, group FCs, part branches, pairs, local shapes) → Δl^t (B, K, 2)

and :class:`GlomNet` wires the three. The cascade (T = 4, weights shared, L^t = L^{t-1} + Δl^t, eq. 1), the patch
extraction and the Lightning module live elsewhere. With K = 68: 161,314,984 parameters (the notes' "about
161 M": four 35,840 x 1,024 FCs hold 146.8 M), and per iteration and image 1,281,478,656 MACs with 40-px patches
and 1,465,385,472 with 42-px ones (convs, linears and matmuls; = the notes' 2.56 G and 2.93 G FLOPs at 2 per MAC).

The hierarchy is data, passed in as plain index tuples (no point count is written here): ``regions`` (point indices
per level-3 region), ``groups`` (region indices per level-4 group), ``z_order`` (the order of the groups in z),
``parts`` (point indices per WHM local shape, in the order of the WHM branches), ``pairs`` (part indices) and
``pair_groups`` (the WHM group feature each pair reads). The regions and the parts must each cover every point
exactly once. :meth:`GlomNet.from_hierarchy` takes them from a layout's ``landmarks.layouts.Hierarchy``.
For 68 points the code has regions 0-8, 9-16, 17-26, 27-35, 36-47, 48-67; groups (0, 1), (2, 4), (3, 5);
z_order (1, 2, 0); parts brow 17-26, eye 36-47, nose 27-35, mouth 48-67, cheek_L 0-8, cheek_R 9-16; pairs
(0, 1), (2, 3), (4, 5) reading group features 0, 1, 2 (notes §1.2-1.3).

What the code does, and we do too:

* every slim conv / FC that has a BN has no bias; BN has β and γ, TF decay 0.997 (PyTorch momentum 0.003) and
  ε 1e-5; the FCs without BN have a bias; every FC is ReLU except the RNN (tanh) and the final heads (linear);
* initialisation as the code's: slim weights truncated-normal with std 0.01 (cut at ±2 std), zero biases; the
  non-local 1x1x1 convs (``tf.layers.conv3d``) Glorot-uniform with zero biases; BN γ = 1, β = 0;
* features are flattened per patch as TF's NHWC tensors, (row, column, channel), and the non-local tokens of a
  patch set come in (patch, row, column) order, so the code's weights map onto ours by transposes only;
* L2 weight decay 1e-4 is on every slim weight but the final heads (``pre_*2`` have none) and not on the
  non-local convs, BN or biases: :meth:`GlomNet.decayed_weights` lists those weights for the training module.

Where the code departs from what the notes and the paper describe, both are here, the paper's by default:

* ``residual``: the whole-level tensor is in the re-ordered slot sequence (groups, then their regions, in order)
  and the code adds the raw CNN features position by position (``ims_reshape + NL_feature``), so slot s gets
  patch s's features even where slot s holds another patch (slots 27-47 for 68 points, notes §1.2). "intended"
  adds each patch's own features; "code" replicates the quirk;
* ``key_layout``: the code's keys are ``tf.reshape(φ, (B, C, -1))``, a reshape of the (tokens, channels) matrix,
  not its transpose, so its attention is not θ·φᵀ. "transpose" is the notes' and the paper's (Fig. 5, Wang et al.)
  θ·φᵀ; "code" replicates the reshape.

Two sets of biases the code has cannot learn, and are kept for parity: φ's bias (θ_i·b_φ is the same for every
key of query i, and the softmax ignores it; not so with ``key_layout="code"``), and, in training mode, the whole-level
block's g and output biases (they shift z by a constant, which the BN after every FC reading z removes).

Where we differ from the code, and why: BN running variances follow PyTorch (the unbiased batch variance; TF
tracks the biased one), which changes evaluation statistics by a factor n / (n - 1) only; the patch size is an
argument (the code trains on 40 px and evaluates on 42; both give 2x2 features).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from lightning_modules.components.coordconv import CoordConv2d
from lightning_modules.components.pwc_nets import TF_BN_EPS, glorot_init_

if TYPE_CHECKING:
    from landmarks.layouts import Hierarchy

__all__ = ["PHM", "WHM", "Dense", "GlomNet", "NonLocal", "PatchCNN"]

TF_BN_MOMENTUM = 0.003  # slim batch_norm decay 0.997 (weight of the old running value) = PyTorch momentum 0.003
SLIM_STD = 0.01  # slim conv2d / fc: truncated_normal_initializer(stddev=0.01), cut at 2 std
CNN_STAGES = ((7, 32), (5, 64), (3, 128))  # conv_model: (kernel, channels) of conv_1..3, each + BN, ReLU, pool 2x2
HIDDEN = 1024  # the RNN state h (``hidden``) and the group FCs (``dis_group1..3``)
TRIPLE, PART = 512, 256  # ``region_triple1..6`` and the part FCs (``brow``, ``eye``, ...)
PAIR, PAIR_OUT, LOCAL = 256, 128, 64  # ``region_<part>``, ``region_<part>2`` and ``pre_<part>``

Residual = Literal["intended", "code"]
KeyLayout = Literal["transpose", "code"]


def _slim_init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """slim's weights: normal(0, 0.01) truncated at ±2 std, drawn by the inverse CDF in one pass (the same law as
    TF's re-drawing; ``nn.init.trunc_normal_`` re-draws whole tensors and takes ~10x longer on the 36.7 M-weight
    FCs); zero biases."""
    edge = math.erf(2 / math.sqrt(2))  # 2·Φ(2) - 1: the uniform range whose erfinv lies within ±2 std / √2
    with torch.no_grad():
        weight.uniform_(-edge, edge).erfinv_().mul_(SLIM_STD * math.sqrt(2)).clamp_(-2 * SLIM_STD, 2 * SLIM_STD)
    if bias is not None:
        nn.init.zeros_(bias)


def _check_partition(name: str, blocks: Sequence[Sequence[int]], size: int) -> None:
    """Refuse ``blocks`` unless they are non-empty and together hold 0..size-1 exactly once."""
    flat = sorted(i for block in blocks for i in block)
    if any(len(block) == 0 for block in blocks) or flat != list(range(size)):
        raise ValueError(f"{name} must cover 0..{size - 1} exactly once with non-empty blocks, got {blocks}")


class Dense(nn.Module):
    """slim ``ops.fc``: a linear layer, then BN (and then no bias) if ``bn``, then the activation (ReLU by default,
    slim's; ``nn.Identity()`` for a linear layer). (B, cin) → (B, cout). ``decayed``: the code puts its 1e-4 L2
    on the weight."""

    def __init__(self, cin: int, cout: int, bn: bool = False, activation: nn.Module | None = None,
                 decayed: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=not bn)
        self.bn = nn.BatchNorm1d(cout, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM) if bn else nn.Identity()
        self.activation = nn.ReLU() if activation is None else activation
        self.decayed = decayed
        _slim_init_(self.linear.weight, self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn(self.linear(x)))


class PatchCNN(nn.Module):
    """The patch CNN shared by all K patches (``conv_model``; paper Sec. 3.2 "7*7, 5*5 and 3*3"): three VALID convs
    7x7 (3→32), 5x5 (32→64), 3x3 (64→128), each + BN + ReLU + 2x2 max-pool stride 2 (floor).
    (N, 3, P, P) → (N, 128, s, s), s = :meth:`output_side` (P): 40 → 34 → 17 → 13 → 6 → 4 → 2; 42 also gives 2.

    ``coordconv=True`` is GlomFace* (paper Sec. 4, "the CoordConv layer [29]", following AWing): the first conv
    also reads the x and y channels in [-1, 1] (:class:`CoordConv2d` without r; no more details are published).
    """

    def __init__(self, coordconv: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, (kernel, cout) in enumerate(CNN_STAGES):
            conv = (CoordConv2d(cin, cout, kernel, bias=False, with_r=False) if coordconv and i == 0
                    else nn.Conv2d(cin, cout, kernel, bias=False))
            layers += [conv, nn.BatchNorm2d(cout, eps=TF_BN_EPS, momentum=TF_BN_MOMENTUM), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.channels = cin
        for w in self.conv_weights():
            _slim_init_(w, None)

    @staticmethod
    def output_side(patch_size: int) -> int:
        """The side of the feature map of a ``patch_size`` patch (VALID convs, floor pooling)."""
        side = patch_size
        for kernel, _ in CNN_STAGES:
            side = (side - kernel + 1) // 2
        if side < 1:
            raise ValueError(f"a {patch_size}-px patch is too small for the patch CNN")
        return side

    def conv_weights(self) -> Iterator[nn.Parameter]:
        """The three conv kernels (the code's L2-decayed ``weights``)."""
        for m in self.layers.modules():
            if isinstance(m, nn.Conv2d):
                yield m.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class NonLocal(nn.Module):
    """The non-local block of GlomFace (paper Fig. 5; ``Non_local``; notes §1.2) over a set of Y patch features.

    x (B, Y, h, w, C) is read as N = Y·h·w tokens of C channels (patch, row, column order), then
    θ, φ, g = three linear maps C→C with bias (the 1x1x1 conv3d layers), A = softmax over keys of θ·φᵀ (no 1/√C),
    output = linear C→C of A·g, reshaped back to x's shape. There is no residual: zero output weights give zero.
    ``key_layout="code"`` uses the code's ``reshape(φ, (B, C, N))`` in place of φᵀ (see the module docstring).
    """

    def __init__(self, channels: int = 128, key_layout: KeyLayout = "transpose") -> None:
        super().__init__()
        if key_layout not in ("transpose", "code"):
            raise ValueError(f"key_layout must be 'transpose' or 'code', got {key_layout!r}")
        self.channels, self.key_layout = channels, key_layout
        self.theta, self.phi, self.g, self.out = (nn.Linear(channels, channels) for _ in range(4))
        glorot_init_(self)  # tf.layers.conv3d's defaults: Glorot-uniform weights, zero biases

    def extra_repr(self) -> str:
        return f"channels={self.channels}, key_layout={self.key_layout}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.channels:
            raise ValueError(f"NonLocal({self.channels}) got features of shape {tuple(x.shape)}")
        b, c = x.shape[0], self.channels
        tokens = x.reshape(b, -1, c)  # (B, N, C)
        theta, phi, g = self.theta(tokens), self.phi(tokens), self.g(tokens)  # (B, N, C) each
        keys = phi.transpose(1, 2) if self.key_layout == "transpose" else phi.reshape(b, c, -1)  # (B, C, N)
        attention = torch.softmax(theta @ keys, dim=-1)  # (B, N, N): row = query, softmax over the keys
        return self.out(attention @ g).reshape(x.shape)  # (B, Y, h, w, C)


class PHM(nn.Module):
    """Part-whole hierarchical module (paper Sec. 3.2, Fig. 4; the ``PHM`` scope; notes §1.2).

    features (B, K, h, w, C) of the patches in landmark order →
    level 3: one :class:`NonLocal` per region over its patches;
    level 4: one per group over the concatenation of its regions' outputs (in the group's region order);
    level 5: one over the concatenation of the groups' outputs, then + the raw CNN features (``residual``);
    → z (B, K·h·w·C): the whole-level slots of the groups in ``z_order``, each slot flattened as (row, column,
    channel). For 68 points the slot sequence is [0-16, 17-26, 36-47, 27-35, 48-67] and z is [G2 part (slots
    17-38), G3 part (slots 39-67), G1 part (slots 0-16)], 68 x 512 = 34,816 values, as the code's ``whole``.
    """

    def __init__(self, regions: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], z_order: Sequence[int],
                 residual: Residual = "intended", key_layout: KeyLayout = "transpose", channels: int = 128) -> None:
        super().__init__()
        if residual not in ("intended", "code"):
            raise ValueError(f"residual must be 'intended' or 'code', got {residual!r}")
        self.regions = tuple(tuple(int(i) for i in r) for r in regions)
        self.groups = tuple(tuple(int(r) for r in g) for g in groups)
        self.z_order = tuple(int(g) for g in z_order)
        self.num_points = sum(len(r) for r in self.regions)
        _check_partition("regions", self.regions, self.num_points)
        _check_partition("groups", self.groups, len(self.regions))
        _check_partition("z_order", (self.z_order,), len(self.groups))
        self.residual = residual
        # slot s of the whole-level tensor holds patch sequence[s]; group j holds slots starts[j]:starts[j + 1]
        group_points = [[i for r in g for i in self.regions[r]] for g in self.groups]
        self.sequence = tuple(i for points in group_points for i in points)
        starts = [0]
        for points in group_points:
            starts.append(starts[-1] + len(points))
        self.flatten_slots = tuple(s for j in self.z_order for s in range(starts[j], starts[j + 1]))  # z's slots
        self.register_buffer("region_points", torch.tensor([i for r in self.regions for i in r]), persistent=False)
        self.register_buffer("slot_points", torch.tensor(self.sequence), persistent=False)
        self.register_buffer("z_slots", torch.tensor(self.flatten_slots), persistent=False)
        self.region_nl = nn.ModuleList(NonLocal(channels, key_layout) for _ in self.regions)
        self.group_nl = nn.ModuleList(NonLocal(channels, key_layout) for _ in self.groups)
        self.whole_nl = NonLocal(channels, key_layout)

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, residual={self.residual}"

    def whole(self, features: torch.Tensor) -> torch.Tensor:
        """The level-5 tensor after the residual, (B, K, h, w, C), in slot order (slot s holds patch sequence[s])."""
        if features.shape[1] != self.num_points:
            raise ValueError(f"PHM for {self.num_points} patches got features of shape {tuple(features.shape)}")
        regions = features[:, self.region_points].split([len(r) for r in self.regions], dim=1)  # (B, |R|, h, w, C)
        region_out = [nl(r) for nl, r in zip(self.region_nl, regions, strict=True)]  # level 3
        group_out = [nl(torch.cat([region_out[r] for r in g], dim=1))  # level 4: (B, |G|, h, w, C)
                     for nl, g in zip(self.group_nl, self.groups, strict=True)]
        whole = self.whole_nl(torch.cat(group_out, dim=1))  # level 5: (B, K, h, w, C) in slot order
        if self.residual == "intended":
            return whole + features[:, self.slot_points]  # each slot gets its own patch's features
        return whole + features  # the code: slot s gets patch s's features, whichever patch it holds

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.whole(features)[:, self.z_slots].flatten(1)  # z: (B, K·h·w·C)


class WHM(nn.Module):
    """Whole-part hierarchical module (paper Sec. 3.3, eq. 4, Fig. 6; the ``WHM`` scope; notes §1.3).

    ``forward(features, z, hidden)``: features (B, K·F) the raw CNN features in landmark order, z (B, K·F) from
    :class:`PHM`, hidden (B, 1024) the previous state (None = zeros, t = 1) → (offsets (B, K, 2), h_t (B, 1024)).

    1. whole (RNN): h_t = tanh(BN(FC([features, h_{t-1}] → 1024)));
    2. groups: ``num_groups`` FCs (default one per pair), g_j = ReLU(BN(FC([z, h_t] → 1024)));
    3. parts: per part, ReLU(FC([ReLU(FC([g_1..g_G] → 512)), h_t] → 256));
    4. pairs: for part a in pair k = (a, b), ReLU(FC([ReLU(FC([part_a, part_b] → 256)), g_j] → 128)), j =
       ``pair_groups[k]`` (default k; the code: g1 for (brow, eye), g2 (nose, mouth), g3 (cheeks), so the WHM's
       g_j are positions, not the PHM's groups); both members read the pair in its own order, as ``region_brow``
       and ``region_eye`` both read [brow, eye];
    5. local shapes: per part, FC([ReLU(BN(FC([pair_own, pair_partner] → 64))), part_own] → 2n), linear; the n
       points of part i go to landmarks ``parts[i]`` (x then y), so the offsets come in landmark order.
    """

    def __init__(self, parts: Sequence[Sequence[int]], pairs: Sequence[Sequence[int]],
                 pair_groups: Sequence[int] | None = None, num_groups: int | None = None, patch_features: int = 512,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.parts = tuple(tuple(int(i) for i in p) for p in parts)
        self.pairs = tuple(tuple(int(i) for i in p) for p in pairs)
        self.num_points = sum(len(p) for p in self.parts)
        _check_partition("parts", self.parts, self.num_points)
        _check_partition("pairs", self.pairs, len(self.parts))
        if any(len(p) != 2 for p in self.pairs):
            raise ValueError(f"every pair must hold two parts, got {self.pairs}")
        self.num_groups = len(self.pairs) if num_groups is None else int(num_groups)
        self.pair_groups = tuple(range(len(self.pairs)) if pair_groups is None else (int(j) for j in pair_groups))
        if len(self.pair_groups) != len(self.pairs) or not all(0 <= j < self.num_groups for j in self.pair_groups):
            raise ValueError(f"pair_groups must name one of {self.num_groups} group features per pair, "
                             f"got {self.pair_groups}")
        self.hidden = hidden
        self.partner = {a: pair[1 - j] for pair in self.pairs for j, a in enumerate(pair)}
        whole = self.num_points * patch_features
        self.rnn = Dense(whole + hidden, hidden, bn=True, activation=nn.Tanh())  # ``rnn``
        self.group = nn.ModuleList(Dense(whole + hidden, HIDDEN, bn=True)  # ``dis_group1..3``
                                   for _ in range(self.num_groups))
        self.triple = nn.ModuleList(Dense(self.num_groups * HIDDEN, TRIPLE) for _ in self.parts)  # ``region_triple*``
        self.part = nn.ModuleList(Dense(TRIPLE + hidden, PART) for _ in self.parts)  # ``brow``, ``eye``, ...
        self.pair = nn.ModuleList(Dense(2 * PART, PAIR) for _ in self.parts)  # ``region_<part>``
        self.pair_out = nn.ModuleList(Dense(PAIR + HIDDEN, PAIR_OUT) for _ in self.parts)  # ``region_<part>2``
        self.local = nn.ModuleList(Dense(2 * PAIR_OUT, LOCAL, bn=True) for _ in self.parts)  # ``pre_<part>``
        self.heads = nn.ModuleList(Dense(LOCAL + PART, 2 * len(p), activation=nn.Identity(), decayed=False)
                                   for p in self.parts)  # ``pre_<part>2``: linear, bias, no L2
        # landmark k is row landmark_rows[k] of the heads' outputs concatenated in part order
        order = [i for p in self.parts for i in p]
        rows = [0] * self.num_points
        for row, k in enumerate(order):
            rows[k] = row
        self.register_buffer("landmark_rows", torch.tensor(rows), persistent=False)

    def extra_repr(self) -> str:
        return (f"num_points={self.num_points}, parts={[len(p) for p in self.parts]}, pairs={self.pairs}, "
                f"pair_groups={self.pair_groups}")

    def forward(self, features: torch.Tensor, z: torch.Tensor,
                hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden is None:
            hidden = features.new_zeros(features.shape[0], self.hidden)  # h = 0 at t = 1
        h = self.rnn(torch.cat([features, hidden], dim=1))  # 1. (B, 1024)
        zh = torch.cat([z, h], dim=1)  # (B, K·F + 1024)
        groups = [fc(zh) for fc in self.group]  # 2. num_groups x (B, 1024)
        all_groups = torch.cat(groups, dim=1)  # (B, G·1024)
        parts = [part(torch.cat([triple(all_groups), h], dim=1))  # 3. (B, 256) each
                 for triple, part in zip(self.triple, self.part, strict=True)]
        paired = [None] * len(parts)  # 4. (B, 128) each
        for pair, j in zip(self.pairs, self.pair_groups, strict=True):
            both = torch.cat([parts[a] for a in pair], dim=1)  # (B, 512), in the pair's order
            for a in pair:
                paired[a] = self.pair_out[a](torch.cat([self.pair[a](both), groups[j]], dim=1))
        shapes = []  # 5. (B, n_i, 2) each
        for i, points in enumerate(self.parts):
            local = self.local[i](torch.cat([paired[i], paired[self.partner[i]]], dim=1))  # (B, 64)
            shapes.append(self.heads[i](torch.cat([local, parts[i]], dim=1)).view(-1, len(points), 2))
        return torch.cat(shapes, dim=1)[:, self.landmark_rows], h  # (B, K, 2), (B, 1024)


class GlomNet(nn.Module):
    """One GlomFace iteration (eq. 2): ``forward(patches, hidden=None)`` → (offsets Δl^t (B, K, 2), h_t (B, 1024)).

    patches (B, K, 3, P, P), one per landmark in landmark order, P = ``patch_size``; ``hidden`` the previous
    iteration's h_t (None at t = 1). The hierarchy arguments are those of :class:`PHM` and :class:`WHM` (the WHM
    has one group feature per PHM group, as the code); :meth:`from_hierarchy` takes them from a layout's
    ``Hierarchy``. ``residual`` and ``key_layout`` choose the paper's reading or the code's (module docstring);
    ``coordconv`` is GlomFace*.
    """

    def __init__(self, regions: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], z_order: Sequence[int],
                 parts: Sequence[Sequence[int]], pairs: Sequence[Sequence[int]],
                 pair_groups: Sequence[int] | None = None, patch_size: int = 40, residual: Residual = "intended",
                 key_layout: KeyLayout = "transpose", coordconv: bool = False, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.cnn = PatchCNN(coordconv)
        side = PatchCNN.output_side(patch_size)
        self.phm = PHM(regions, groups, z_order, residual, key_layout, self.cnn.channels)
        self.whm = WHM(parts, pairs, pair_groups, len(self.phm.groups), side * side * self.cnn.channels, hidden)
        if self.phm.num_points != self.whm.num_points:
            raise ValueError(f"the regions cover {self.phm.num_points} points, the parts {self.whm.num_points}")
        self.num_points, self.hidden = self.phm.num_points, hidden

    @classmethod
    def from_hierarchy(cls, hierarchy: Hierarchy, **options: Any) -> GlomNet:
        """The network for a layout's part hierarchy (``landmarks.layouts.Hierarchy``: named regions, groups,
        parts, pairs, flatten order), names turned into the positions this module takes. Its ``output_order``
        needs no argument: each part's head writes its own landmarks, whatever the concatenation order."""
        region_names = [r.name for r in hierarchy.regions]
        group_names = [g.name for g in hierarchy.groups]
        part_names = [p.name for p in hierarchy.parts]
        return cls(regions=[r.indices for r in hierarchy.regions],
                   groups=[[region_names.index(name) for name in g.regions] for g in hierarchy.groups],
                   z_order=[group_names.index(name) for name in hierarchy.flatten_order],
                   parts=[p.indices for p in hierarchy.parts],
                   pairs=[[part_names.index(name) for name in pair.parts] for pair in hierarchy.pairs],
                   pair_groups=[group_names.index(pair.group) for pair in hierarchy.pairs], **options)

    def decayed_weights(self) -> Iterator[nn.Parameter]:
        """The weights the code puts its L2 weight decay (1e-4) on: the conv kernels and every FC weight but the
        final heads'. Not the non-local convs, BN parameters or biases."""
        yield from self.cnn.conv_weights()
        for m in self.whm.modules():
            if isinstance(m, Dense) and m.decayed:
                yield m.linear.weight

    def forward(self, patches: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = patches.shape[:2]
        if k != self.num_points or patches.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(f"GlomNet expects (B, {self.num_points}, 3, {self.patch_size}, {self.patch_size}) "
                             f"patches, got {tuple(patches.shape)}")
        maps = self.cnn(patches.flatten(0, 1))  # (B·K, 128, 2, 2)
        features = maps.permute(0, 2, 3, 1).reshape(b, k, *maps.shape[2:], maps.shape[1])  # (B, K, 2, 2, 128)
        z = self.phm(features)  # (B, K·512), the PHM's whole representation
        return self.whm(features.flatten(1), z, hidden)  # (B, K, 2), (B, 1024)
