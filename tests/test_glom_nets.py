"""GlomFace's networks (lightning_modules/components/glom.py): parameter and MAC counts from closed-form sums over
the layer list of IMPLEMENTATION_NOTES §1.2-1.3, the non-local block against numpy, the whole-level residual and z
order against the notes' slot lists, shapes, gradients and the local-shape heads' landmark order.

The 68-point hierarchy below is written from the notes (§1.2 regions and groups, §1.3 parts and pairs), not taken
from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from landmarks import layouts
from lightning_modules.components.glom import PHM, WHM, GlomNet, NonLocal, PatchCNN


def span(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


# Notes §1.2: R0 jaw-L, R1 jaw-R, R2 brows, R3 nose, R4 eyes, R5 mouth; G1 = R0+R1, G2 = R2+R4, G3 = R3+R5; z is
# [G2, G3, G1]. §1.3: parts brow, eye, nose, mouth, cheek_L, cheek_R; pairs (brow, eye), (nose, mouth), (cheeks).
REGIONS = (span(0, 8), span(9, 16), span(17, 26), span(27, 35), span(36, 47), span(48, 67))
GROUPS = ((0, 1), (2, 4), (3, 5))
Z_ORDER = (1, 2, 0)
PARTS = (span(17, 26), span(36, 47), span(27, 35), span(48, 67), span(0, 8), span(9, 16))
PAIRS = ((0, 1), (2, 3), (4, 5))
HIERARCHY_68 = dict(regions=REGIONS, groups=GROUPS, z_order=Z_ORDER, parts=PARTS, pairs=PAIRS)
# A 12-point toy hierarchy with scattered indices, for the layout-independent checks.
TOY = dict(regions=((0, 5), (1, 2), (3,), (4, 6, 7), (8, 11), (9, 10)), groups=((0, 3), (1,), (2, 4, 5)),
           z_order=(2, 0, 1), parts=((11, 0), (1, 2, 3), (4,), (5, 6), (7, 8), (9, 10)), pairs=((0, 3), (1, 2), (4, 5)))


def glomnet_parameters(num_points: int, part_sizes: tuple[int, ...], regions: int, groups: int,
                       coordconv: bool = False) -> int:
    """Trainable parameters of the notes' layer list (2x2x128 patch features): convs without bias + BN (γ, β);
    non-local blocks 4 x (128² + 128); FCs with BN have no bias, the others have one."""
    cnn = 7 * 7 * (5 if coordconv else 3) * 32 + 5 * 5 * 32 * 64 + 3 * 3 * 64 * 128 + 2 * (32 + 64 + 128)
    non_local = (regions + groups + 1) * 4 * (128 * 128 + 128)
    whole_in = num_points * 512 + 1024  # [features or z, h]
    rnn_and_groups = (1 + groups) * (whole_in * 1024 + 2 * 1024)  # one WHM group feature per PHM group
    per_part = ((groups * 1024 * 512 + 512) + ((512 + 1024) * 256 + 256)  # region triple, part
                + (2 * 256 * 256 + 256) + ((256 + 1024) * 128 + 128)  # pair level
                + (2 * 128 * 64 + 2 * 64))  # local-shape FC with BN
    heads = sum((64 + 256) * 2 * n + 2 * n for n in part_sizes)
    return cnn + non_local + rnn_and_groups + len(part_sizes) * per_part + heads


def glomnet_macs(patch: int, region_sizes: tuple[int, ...], group_sizes: tuple[int, ...],
                 part_sizes: tuple[int, ...]) -> int:
    """Multiply-accumulates of one iteration on one face: convs + linears + the two attention matmuls."""
    k = sum(region_sizes)
    c1 = patch - 6
    c2 = c1 // 2 - 4
    c3 = c2 // 2 - 2
    side = c3 // 2
    cnn = k * (c1 * c1 * 32 * 3 * 49 + c2 * c2 * 64 * 32 * 25 + c3 * c3 * 128 * 64 * 9)

    def non_local(patches: int) -> int:
        n = patches * side * side  # tokens
        return 4 * n * 128 * 128 + 2 * n * n * 128  # θ, φ, g, out; θ·φᵀ and A·g

    attention = sum(map(non_local, region_sizes)) + sum(map(non_local, group_sizes)) + non_local(k)
    whole_in = k * side * side * 128 + 1024
    groups = len(group_sizes)
    fcs = (1 + groups) * whole_in * 1024 + len(part_sizes) * (
        groups * 1024 * 512 + (512 + 1024) * 256 + 512 * 256 + (256 + 1024) * 128 + 256 * 64)
    fcs += sum((64 + 256) * 2 * n for n in part_sizes)
    return cnn + attention + fcs


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_is_the_notes_161m() -> None:
    sizes = tuple(len(p) for p in PARTS)
    with torch.device("meta"):
        net, star = GlomNet(**HIERARCHY_68), GlomNet(**HIERARCHY_68, coordconv=True)
        toy = GlomNet(**TOY)
    expected = glomnet_parameters(68, sizes, len(REGIONS), len(GROUPS))
    assert expected == 161_314_984
    assert count(net) == expected
    assert abs(expected - 161e6) / 161e6 < 0.03  # notes §1.3: "about 161 M parameters"
    assert count(star) == glomnet_parameters(68, sizes, len(REGIONS), len(GROUPS), coordconv=True)
    assert count(toy) == glomnet_parameters(12, tuple(len(p) for p in TOY["parts"]), 6, 3)
    # the code's L2 decay: the 3 conv kernels and every FC weight but the 6 final heads'
    decayed = list(net.decayed_weights())
    assert len(decayed) == 3 + 4 + 6 * 5
    fc_weights = 4 * (68 * 512 + 1024) * 1024 + 6 * (3 * 1024 * 512 + 1536 * 256 + 512 * 256 + 1280 * 128 + 256 * 64)
    assert sum(p.numel() for p in decayed) == 7 * 7 * 3 * 32 + 5 * 5 * 32 * 64 + 3 * 3 * 64 * 128 + fc_weights


@pytest.mark.parametrize(("patch", "notes_gflops"), [(40, 2.56), (42, 2.93)])
def test_macs_per_iteration_match_the_notes(patch: int, notes_gflops: float) -> None:
    """Convention: FlopCounterMode's FLOPs (convs, linears, matmuls; 2 per MAC) / 2, as leaderboard.cost."""
    with torch.device("meta"):
        net = GlomNet(**HIERARCHY_68, patch_size=patch).eval()
        patches = torch.zeros(1, 68, 3, patch, patch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(patches)
    macs = counter.get_total_flops() // 2
    region_sizes = tuple(len(r) for r in REGIONS)
    group_sizes = tuple(sum(region_sizes[r] for r in g) for g in GROUPS)
    assert macs == glomnet_macs(patch, region_sizes, group_sizes, tuple(len(p) for p in PARTS))
    assert abs(macs - notes_gflops / 2 * 1e9) / (notes_gflops / 2 * 1e9) < 0.05  # notes §1.6, 2 FLOPs per MAC


def test_initialisation_is_the_codes() -> None:
    """slim: normal(0, 0.01) truncated at ±2 std (std of the truncated law 0.01·√(1 - 4φ(2) / erf(√2))), zero
    biases; the non-local convs: Glorot-uniform, bound √(6 / (128 + 128)), zero biases."""
    torch.manual_seed(0)
    whm = WHM(TOY["parts"], TOY["pairs"], patch_features=4)
    weight = whm.triple[0].linear.weight  # 3072 x 512
    phi2 = np.exp(-2) / np.sqrt(2 * np.pi)
    expected_std = 0.01 * np.sqrt(1 - 4 * phi2 / math.erf(np.sqrt(2)))
    assert abs(weight.std().item() - expected_std) < 0.005 * expected_std
    assert weight.abs().max() <= 0.02 and weight.abs().max() > 0.0199
    assert torch.equal(whm.triple[0].linear.bias, torch.zeros(512))
    block = NonLocal()
    bound = np.sqrt(6 / 256)
    assert block.theta.weight.abs().max() <= bound and block.theta.weight.abs().max() > 0.99 * bound
    assert torch.equal(block.theta.bias, torch.zeros(128))


def nonlocal_numpy(x: np.ndarray, block: NonLocal, key_layout: str) -> np.ndarray:
    """The notes' formula with explicit loops over the batch: out(softmax_keys(θ φᵀ) g), no residual."""
    w = {n: (getattr(block, n).weight.detach().numpy(), getattr(block, n).bias.detach().numpy())
         for n in ("theta", "phi", "g", "out")}
    result = np.empty_like(x)
    for b in range(x.shape[0]):
        tokens = x[b].reshape(-1, x.shape[-1])  # (N, C) in (patch, row, column) order
        theta, phi, g = (tokens @ w[n][0].T + w[n][1] for n in ("theta", "phi", "g"))
        keys = phi.T if key_layout == "transpose" else phi.reshape(phi.shape[1], phi.shape[0])  # TF's reshape
        logits = theta @ keys
        attention = np.exp(logits - logits.max(1, keepdims=True))
        attention /= attention.sum(1, keepdims=True)
        result[b] = ((attention @ g) @ w["out"][0].T + w["out"][1]).reshape(x.shape[1:])
    return result


@pytest.mark.parametrize("key_layout", ["transpose", "code"])
def test_nonlocal_matches_numpy(key_layout: str) -> None:
    torch.manual_seed(0)
    block = NonLocal(16, key_layout).double()
    x = torch.randn(2, 3, 2, 2, 16, dtype=torch.float64)  # 3 patches → 12 tokens
    np.testing.assert_allclose(block(x).detach().numpy(), nonlocal_numpy(x.numpy(), block, key_layout), rtol=1e-10,
                               atol=1e-12)
    if key_layout == "code":  # the code's reshape is not a transpose: the two layouts differ
        other = NonLocal(16).double()
        other.load_state_dict(block.state_dict())
        assert not torch.allclose(other(x), block(x))


def test_nonlocal_has_no_residual() -> None:
    block = NonLocal()
    nn.init.zeros_(block.out.weight)
    nn.init.zeros_(block.out.bias)
    x = torch.randn(2, 5, 2, 2, 128)
    assert torch.equal(block(x), torch.zeros_like(x))


def test_whole_level_residual_options_differ_on_slots_27_to_47() -> None:
    torch.manual_seed(0)
    intended = PHM(REGIONS, GROUPS, Z_ORDER, residual="intended")
    code = PHM(REGIONS, GROUPS, Z_ORDER, residual="code")
    code.load_state_dict(intended.state_dict())
    features = torch.randn(2, 68, 2, 2, 128)
    # notes §1.2: the whole-level sequence is [0-16, 17-26, 36-47, 27-35, 48-67]
    sequence = list(span(0, 16) + span(17, 26) + span(36, 47) + span(27, 35) + span(48, 67))
    with torch.no_grad():
        difference = code.whole(features) - intended.whole(features)
    np.testing.assert_allclose(difference.numpy(), (features - features[:, sequence]).numpy(), atol=1e-5)
    mismatched = [s for s in range(68) if difference[:, s].abs().max() > 0]
    assert mismatched == list(span(27, 47))


@pytest.mark.parametrize("residual", ["intended", "code"])
def test_z_is_the_residual_in_the_codes_group_order(residual: str) -> None:
    """With the whole-level block's output zeroed, z is the residual alone, in the notes' order [G2, G3, G1]."""
    phm = PHM(REGIONS, GROUPS, Z_ORDER, residual=residual)
    nn.init.zeros_(phm.whole_nl.out.weight)
    nn.init.zeros_(phm.whole_nl.out.bias)
    features = torch.randn(2, 68, 2, 2, 128)
    if residual == "intended":  # each slot carries its own patch: G2 = brows + eyes, G3 = nose + mouth, G1 = contour
        order = span(17, 26) + span(36, 47) + span(27, 35) + span(48, 67) + span(0, 16)
    else:  # slot s carries patch s; z takes slots 17-38, 39-67, 0-16
        order = span(17, 67) + span(0, 16)
    with torch.no_grad():
        z = phm(features)
    assert z.shape == (2, 68 * 512)
    assert torch.equal(z, features[:, list(order)].reshape(2, -1))


def test_patch_cnn_sizes_follow_the_notes() -> None:
    cnn = PatchCNN().eval()
    for patch, notes in ((40, [34, 17, 13, 6, 4, 2]), (42, [36, 18, 14, 7, 5, 2])):
        sides: list[int] = []

        def record(_m: nn.Module, _i: tuple, out: torch.Tensor, sides: list[int] = sides) -> None:
            sides.append(out.shape[-1])

        hooks = [m.register_forward_hook(record)
                 for m in cnn.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d)]
        with torch.no_grad():
            out = cnn(torch.rand(3, 3, patch, patch))
        for hook in hooks:
            hook.remove()
        assert sides == notes and out.shape == (3, 128, 2, 2)
        assert PatchCNN.output_side(patch) == 2


def test_coordconv_patch_cnn_reads_x_and_y_in_minus_one_to_one() -> None:
    star = PatchCNN(coordconv=True).eval()
    conv = star.layers[0].conv
    assert conv.weight.shape == (32, 5, 7, 7)
    x = torch.rand(2, 3, 40, 40)
    grid = np.linspace(-1, 1, 40, dtype=np.float32)
    coords = torch.from_numpy(np.stack([np.tile(grid, (40, 1)), np.tile(grid[:, None], (1, 40))]))  # x, y
    reference = F.conv2d(torch.cat([x, coords.expand(2, -1, -1, -1)], 1), conv.weight)
    with torch.no_grad():
        torch.testing.assert_close(star.layers[0](x), reference)


@pytest.fixture(scope="module")
def glomnet() -> GlomNet:
    torch.manual_seed(0)
    return GlomNet(**HIERARCHY_68).eval()


def test_output_shapes_and_state(glomnet: GlomNet) -> None:
    patches = torch.rand(2, 68, 3, 40, 40)
    with torch.no_grad():
        offsets, h = glomnet(patches)
        again, h_zero = glomnet(patches, torch.zeros(2, 1024))
        carried, _ = glomnet(patches, h)
    assert offsets.shape == (2, 68, 2) and h.shape == (2, 1024)
    assert torch.isfinite(offsets).all() and h.abs().max() < 1  # tanh state
    assert torch.equal(offsets, again) and torch.equal(h, h_zero)  # h_0 = 0
    assert not torch.equal(offsets, carried)  # the state reaches the offsets
    with torch.device("meta"):
        offsets42, h42 = GlomNet(**HIERARCHY_68, patch_size=42).eval()(torch.zeros(2, 68, 3, 42, 42))
    assert offsets42.shape == (2, 68, 2) and h42.shape == (2, 1024)
    with pytest.raises(ValueError):
        glomnet(torch.rand(2, 67, 3, 40, 40))


@pytest.mark.parametrize(("key_layout", "residual"), [("transpose", "intended"), ("code", "code")])
def test_gradients_reach_every_parameter(key_layout: str, residual: str) -> None:
    """Two iterations in training mode, h carried. Every parameter gets a gradient but those that provably cannot:
    φ's bias under a transposed key (softmax ignores a per-query constant) and the whole-level block's g and output
    biases (a constant shift of z, removed by the batch statistics of the BN after every FC that reads z)."""
    torch.manual_seed(0)
    net = GlomNet(**TOY, key_layout=key_layout, residual=residual).double().train()
    inputs = [torch.rand(2, 12, 3, 40, 40, dtype=torch.float64) for _ in range(2)]
    weights = [torch.randn(2, 12, 2, dtype=torch.float64) for _ in range(2)]
    offsets1, h = net(inputs[0])
    offsets2, h = net(inputs[1], h)
    ((offsets1 * weights[0]).sum() + (offsets2 * weights[1]).sum() + h.sum()).backward()
    grads = {n: 0.0 if p.grad is None else p.grad.abs().max().item() for n, p in net.named_parameters()}
    silent = {n for n, g in grads.items() if g <= 1e-12 * max(grads.values())}  # float64: zero up to rounding
    phi_biases = {n for n in grads if n.endswith("phi.bias")} if key_layout == "transpose" else set()
    assert silent == phi_biases | {"phm.whole_nl.g.bias", "phm.whole_nl.out.bias"}


def test_zero_heads_give_zero_offsets() -> None:
    torch.manual_seed(0)
    whm = WHM(PARTS, PAIRS, patch_features=4).eval()
    for head in whm.heads:
        nn.init.zeros_(head.linear.weight)
        nn.init.zeros_(head.linear.bias)
    with torch.no_grad():
        offsets, h = whm(torch.randn(2, 68 * 4), torch.randn(2, 68 * 4))
    assert torch.equal(offsets, torch.zeros(2, 68, 2)) and h.abs().sum() > 0


@pytest.mark.parametrize("hierarchy", [HIERARCHY_68, TOY])
def test_local_shapes_land_on_their_landmarks(hierarchy: dict) -> None:
    """Heads with zero weights output their biases: part i's j-th (x, y) must land on landmark parts[i][j]."""
    parts = hierarchy["parts"]
    k = sum(map(len, parts))
    whm = WHM(parts, hierarchy["pairs"], patch_features=4).eval()
    expected = np.full((k, 2), np.nan, dtype=np.float32)
    for i, (head, points) in enumerate(zip(whm.heads, parts, strict=True)):
        bias = 1000 * (i + 1) + np.arange(2 * len(points), dtype=np.float32)
        nn.init.zeros_(head.linear.weight)
        head.linear.bias.data = torch.from_numpy(bias)
        for j, point in enumerate(points):
            expected[point] = bias[2 * j:2 * j + 2]
    with torch.no_grad():
        offsets, _ = whm(torch.randn(2, k * 4), torch.randn(2, k * 4))
    np.testing.assert_array_equal(offsets.numpy(), np.broadcast_to(expected, (2, k, 2)))
    if hierarchy is HIERARCHY_68:  # the code concatenates cheek_L, cheek_R, brows, nose, eyes, mouth, in that order
        code_order = [bias for i in (4, 5, 0, 2, 1, 3) for bias in whm.heads[i].linear.bias.tolist()]
        np.testing.assert_array_equal(expected.reshape(-1), code_order)


def test_bad_hierarchies_are_refused() -> None:
    with pytest.raises(ValueError):
        PHM(REGIONS[:-1], GROUPS, Z_ORDER)  # region 5 missing from the regions but named by a group
    with pytest.raises(ValueError):
        PHM(REGIONS, ((0, 1), (2, 4), (3, 5), (5,)), (1, 2, 0, 3))  # region 5 in two groups
    with pytest.raises(ValueError):
        WHM((span(0, 3), span(3, 5)), ((0, 1),), patch_features=4)  # point 3 in two parts
    with pytest.raises(ValueError):
        WHM((span(0, 2), span(3, 5), span(6, 7)), ((0, 1, 2),), patch_features=4)  # a "pair" of three
    with pytest.raises(ValueError):
        GlomNet(REGIONS, GROUPS, Z_ORDER, PARTS[:-1], ((0, 1), (2, 3), (4,)))  # parts cover 60 points, regions 68


def test_pair_groups_choose_the_group_feature_a_pair_reads() -> None:
    """Pair k's members read g_j, j = pair_groups[k] (here two pairs share group feature 0 of four)."""
    torch.manual_seed(0)
    pair_groups = (0, 0, 3)
    whm = WHM(TOY["parts"], TOY["pairs"], pair_groups=pair_groups, num_groups=4, patch_features=4).eval()
    assert len(whm.group) == 4 and whm.triple[0].linear.in_features == 4 * 1024
    groups: dict[int, torch.Tensor] = {}
    read: dict[int, torch.Tensor] = {}
    for j, fc in enumerate(whm.group):
        fc.register_forward_hook(lambda _m, _i, out, j=j: groups.__setitem__(j, out))
    for a, fc in enumerate(whm.pair_out):  # its input is [pair FC output (256), g_j (1024)]
        fc.register_forward_pre_hook(lambda _m, args, a=a: read.__setitem__(a, args[0][:, -1024:]))
    with torch.no_grad():
        whm(torch.randn(2, 12 * 4), torch.randn(2, 12 * 4))
    for k, pair in enumerate(TOY["pairs"]):
        for a in pair:
            assert torch.equal(read[a], groups[pair_groups[k]])
    with pytest.raises(ValueError):
        WHM(TOY["parts"], TOY["pairs"], pair_groups=(0, 1, 3), num_groups=3, patch_features=4)


HIERARCHIES = [layout for layout in layouts.LAYOUTS.values() if getattr(layout, "hierarchy", None) is not None]


@pytest.mark.skipif(not HIERARCHIES, reason="landmarks.layouts defines no GlomFace Hierarchy yet")
def test_from_hierarchy_builds_every_layouts_network() -> None:
    """The 68-point layout's Hierarchy gives the notes' arguments; every layout's network has the closed-form size
    and offsets for its K points; the PHM's slots and z order agree with the Hierarchy's own properties."""
    for layout in HIERARCHIES:
        hierarchy = layout.hierarchy
        with torch.device("meta"):
            net = GlomNet.from_hierarchy(hierarchy)
            offsets, h = net.eval()(torch.zeros(2, layout.num_points, 3, 40, 40))
        assert offsets.shape == (2, layout.num_points, 2) and h.shape == (2, 1024)
        sizes = tuple(len(p.indices) for p in hierarchy.parts)
        assert count(net) == glomnet_parameters(layout.num_points, sizes, len(hierarchy.regions), len(hierarchy.groups))
        assert net.phm.sequence == tuple(hierarchy.whole_sequence)
        assert net.phm.flatten_slots == tuple(hierarchy.flatten_slots)
        if layout is layouts.W300_68:
            assert (net.phm.regions, net.phm.groups, net.phm.z_order) == (REGIONS, GROUPS, Z_ORDER)
            assert (net.whm.parts, net.whm.pairs, net.whm.pair_groups) == (PARTS, PAIRS, (0, 1, 2))
