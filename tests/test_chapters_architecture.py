"""The numbers the architecture chapters (notebooks/01_..05_) state, recomputed with the same package calls,
and the helpers those chapters use (resnet_edu.analysis, resnet_edu.visualization), including their errors."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import resnet_edu as rn  # noqa: E402
from resnet_edu import analysis, visualization  # noqa: E402
from resnet_edu.analysis import paper_gmacs  # noqa: E402


def meta(name: str, **kwargs):
    with torch.device("meta"):
        return rn.VARIANTS[name](**kwargs)


# --------------------------------------------------------------------------------------------------
# Chapter 1: conv templates
# --------------------------------------------------------------------------------------------------
def test_resnet50_conv_census():
    kernels = [m.kernel_size[0] for m in meta("resnet50").modules() if isinstance(m, nn.Conv2d)]
    assert (len(kernels), kernels.count(3), kernels.count(1), kernels.count(7)) == (53, 16, 36, 1)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("p", [0, 1, 3])
@pytest.mark.parametrize("d", [1, 2])
def test_output_size_formula_matches_real_modules(k, s, p, d):
    conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
    pool = nn.MaxPool2d(k, stride=s, padding=p, dilation=d) if p <= k // 2 else None
    for size in range(1, 25):
        if size + 2 * p < d * (k - 1) + 1:
            with pytest.raises(ValueError, match="does not fit|spans"):
                analysis.conv_output_size(size, k, s, p, d)
            continue
        want = analysis.conv_output_size(size, k, s, p, d)
        x = torch.zeros(1, 1, size, size)
        assert conv(x).shape[-1] == want
        if pool is not None:
            assert pool(x).shape[-1] == want


def test_stem_and_template_sizes():
    assert analysis.conv_output_size(224, 7, 2, 3) == 112
    assert analysis.conv_output_size(112, 3, 2, 1) == 56
    assert rn.conv3x3(128, 128, stride=2)(torch.zeros(1, 128, 56, 56)).shape[-1] == 28
    assert rn.conv1x1(256, 512, stride=2)(torch.zeros(1, 256, 56, 56)).shape[-1] == 28


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_padding_equal_dilation_keeps_the_size(d):
    assert rn.conv3x3(8, 8, dilation=d)(torch.zeros(1, 8, 56, 56)).shape[-1] == 56
    pad1 = nn.Conv2d(8, 8, 3, padding=1, dilation=d, bias=False)(torch.zeros(1, 8, 56, 56)).shape[-1]
    assert pad1 == 56 - 2 * (d - 1)  # 54 at dilation 2, as the chapter says


def test_receptive_field_maps():
    def span(m):
        cols = (m.sum(0) > 0).nonzero().flatten()
        return int(cols.max() - cols.min() + 1)

    d1 = analysis.receptive_field_map(1, 1, 9)
    d2 = analysis.receptive_field_map(2, 1, 9)
    two = analysis.receptive_field_map(1, 2, 9)
    assert (span(d1), span(d2), span(two)) == (3, 5, 5)
    assert int((d2 > 0).sum()) == 9 and int((two > 0).sum()) == 25
    assert two[4, 4] == 9  # nine paths lead to the centre through two 3x3 layers
    assert d2[4, 5] == 0 and d2[4, 6] == 1  # holes between the dilated taps


def test_batchnorm_cancels_a_conv_bias():
    torch.manual_seed(0)
    x = torch.randn(8, 16, 14, 14)
    with_bias = nn.Conv2d(16, 32, 3, padding=1, bias=True)
    without = rn.conv3x3(16, 32)
    with torch.no_grad():
        without.weight.copy_(with_bias.weight)
        with_bias.bias.normal_(0, 5.0)
    bn = nn.BatchNorm2d(32).train()
    a, b = bn(with_bias(x)), bn(without(x))
    assert (with_bias(x) - without(x)).abs().max() > 5  # the bias is big before BN...
    assert (a - b).abs().max() < 1e-4  # ...and gone after it
    (a * torch.randn_like(a)).sum().backward()
    assert with_bias.bias.grad.abs().max() < 1e-4 * with_bias.weight.grad.abs().max()
    saved = sum(m.out_channels for m in meta("resnet50").modules() if isinstance(m, nn.Conv2d))
    assert saved == 26_560


def test_conv_parameter_formula():
    cases = [(rn.conv3x3(64, 64), (64, 64, 3, 1), 36_864), (rn.conv1x1(64, 256), (64, 256, 1, 1), 16_384),
             (rn.conv3x3(256, 256), (256, 256, 3, 1), 589_824),
             (rn.conv3x3(128, 128, groups=32), (128, 128, 3, 32), 4_608),
             (nn.Conv2d(3, 64, 7, 2, 3, bias=False), (3, 64, 7, 1), 9_408)]
    for module, (cin, cout, k, g), expected in cases:
        assert analysis.conv_params(cin, cout, k, groups=g) == rn.count_parameters(module) == expected
    assert analysis.conv_params(128, 128, 3) == 147_456
    assert analysis.conv_params(3, 8, 3, bias=True) == rn.count_parameters(nn.Conv2d(3, 8, 3)) == 224


# --------------------------------------------------------------------------------------------------
# Chapter 2: BasicBlock, the residual add, the degradation experiment
# --------------------------------------------------------------------------------------------------
def test_basicblock_line_by_line():
    torch.manual_seed(0)
    net = rn.resnet18().eval()
    block = net.layer2[0]
    x = torch.relu(torch.randn(1, 64, 56, 56))
    x0 = x.clone()
    with torch.no_grad():
        out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        assert out.shape == (1, 128, 28, 28)
        with pytest.raises(RuntimeError, match="must match"):
            out + x
        identity = block.downsample(x)
        out += identity
        out = block.relu(out)
        assert torch.equal(out, block(x))
    assert torch.equal(x, x0)  # the block never writes into its input
    conv = block.downsample[0]
    with torch.no_grad():
        assert (conv(x) - F.conv2d(x[:, :, ::2, ::2], conv.weight)).abs().max() < 1e-5
    assert [getattr(net, f"layer{i}")[0].downsample is not None for i in range(1, 5)] == [False, True, True, True]


def test_inplace_relu_saving_resnet18():
    net = rn.resnet18().eval()
    saved = []
    hooks = [m.register_forward_hook(lambda m, i, o: saved.append(o.numel() * o.element_size()))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    floats = 64 * 112 * 112 + 4 * (64 * 56 * 56 + 128 * 28 * 28 + 256 * 14 * 14 + 512 * 7 * 7)
    assert len(saved) == 17
    assert sum(saved) == 4 * floats
    assert round(sum(saved) / 2**20, 1) == 8.8


def test_deep_stack_sizes():
    plain, res, shallow = (analysis.deep_stack(16, False), analysis.deep_stack(16, True), analysis.deep_stack(3, False))
    convs = [sum(isinstance(m, nn.Conv2d) for m in n.modules()) for n in (plain, res, shallow)]
    assert convs == [33, 33, 7]
    assert rn.count_parameters(plain) == rn.count_parameters(res) == 19_266
    assert rn.count_parameters(shallow) == 3_874
    assert list(plain.state_dict()) == list(res.state_dict())
    assert isinstance(plain.blocks[0], analysis.PlainBlock) and type(res.blocks[0]) is rn.BasicBlock
    assert res(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


def test_plain_block_is_basic_block_without_the_add():
    torch.manual_seed(0)
    basic = rn.BasicBlock(8, 8).eval()
    plain = analysis.PlainBlock(8, 8).eval()
    plain.load_state_dict(basic.state_dict(), strict=True)
    x = torch.relu(torch.randn(1, 8, 6, 6))
    with torch.no_grad():
        branch = basic.bn2(basic.conv2(basic.relu(basic.bn1(basic.conv1(x)))))
        assert torch.equal(plain(x), torch.relu(branch))
        assert torch.equal(basic(x), torch.relu(branch + x))


CONFIGS = {"plain, 3 blocks": (3, False), "plain, 16 blocks": (16, False), "residual, 16 blocks": (16, True)}


def _build(label):
    n, shortcuts = CONFIGS[label]
    torch.manual_seed(0)
    return analysis.deep_stack(n, shortcuts=shortcuts, width=8)


def test_degradation_gradients_at_init():
    from resnet_edu.data import load_digits_tensors

    data = load_digits_tensors(size=8)
    assert (len(data["y_train"]), len(data["y_test"])) == (1347, 450)
    xb, yb = data["x_train"][:256], data["y_train"][:256]
    norms = {label: [v for _, v in analysis.gradient_norms(_build(label), xb, yb)] for label in CONFIGS}
    plain, res = norms["plain, 16 blocks"], norms["residual, 16 blocks"]
    assert len(plain) == len(res) == 33

    def spread(v):
        return max(v) / min(v)

    # with BatchNorm, the plain stack's gradient grows towards the input (it does not vanish)
    assert plain[0] > 10 * plain[-1]
    assert plain[0] > 2 * res[0]
    assert spread(plain) > 5 * spread(res)
    assert spread(norms["plain, 3 blocks"]) < spread(res)


def test_degradation_training_curves():
    from resnet_edu.data import digits_loaders
    from resnet_edu.training import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the chapter
    try:
        final = {}
        for label in CONFIGS:
            train_loader, test_loader = digits_loaders(size=8, batch_size=64, seed=0)
            final[label] = fit(_build(label), train_loader, test_loader, epochs=6, lr=0.05, seed=0, progress=False)[-1]
    finally:
        torch.set_num_threads(threads)
    shallow, plain, res = (final[k] for k in CONFIGS)
    # the degradation problem: deeper plain trains worse than shallower plain; the shortcut fixes it
    assert plain["train_loss"] > shallow["train_loss"] + 0.3
    assert plain["train_loss"] > res["train_loss"] + 0.5
    assert res["test_accuracy"] > plain["test_accuracy"] + 0.2
    assert res["test_accuracy"] > 0.8


# --------------------------------------------------------------------------------------------------
# Chapter 3: Bottleneck
# --------------------------------------------------------------------------------------------------
def test_seed_bottleneck_arithmetic_params_and_macs():
    bottleneck = [rn.conv1x1(256, 64), rn.conv3x3(64, 64), rn.conv1x1(64, 256)]
    plain = [rn.conv3x3(256, 256), rn.conv3x3(256, 256)]
    p_b = sum(rn.count_parameters(c) for c in bottleneck)
    p_p = sum(rn.count_parameters(c) for c in plain)
    assert (p_b, p_p, round(p_p / p_b, 2)) == (69_632, 1_179_648, 16.94)
    m_b = sum(rn.count_macs(c, (1, c.in_channels, 56, 56)) for c in bottleneck)
    m_p = sum(rn.count_macs(c, (1, c.in_channels, 56, 56)) for c in plain)
    assert (m_b, m_p) == (69_632 * 56 * 56, 1_179_648 * 56 * 56) == (218_365_952, 3_699_376_128)
    assert analysis.bottleneck_params(256, 64) == rn.count_parameters(rn.Bottleneck(256, 64)) == 70_400
    assert analysis.basic_block_params(256, 256) == rn.count_parameters(rn.BasicBlock(256, 256)) == 1_180_672


WIDTHS = {
    "resnet50": [64, 128, 256, 512],
    "resnext50_32x4d": [128, 256, 512, 1024],
    "resnext101_32x8d": [256, 512, 1024, 2048],
    "resnext101_64x4d": [256, 512, 1024, 2048],
    "wide_resnet50_2": [128, 256, 512, 1024],
}


@pytest.mark.parametrize("name", list(WIDTHS))
def test_bottleneck_widths(name):
    model = meta(name)
    formula = [analysis.bottleneck_width(p, model.base_width, model.groups) for p in (64, 128, 256, 512)]
    real = [getattr(model, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)]
    assert formula == real == WIDTHS[name]


def test_layer1_block_by_family():
    expected = {"resnet50": (36_864, 70_400), "resnext50_32x4d": (4_608, 71_168), "wide_resnet50_2": (147_456, 214_016)}
    for name, (p3x3, block) in expected.items():
        m = meta(name)
        assert rn.count_parameters(m.layer1[1].conv2) == p3x3
        assert rn.count_parameters(m.layer1[1]) == block
        assert analysis.bottleneck_params(256, 64, m.groups, m.base_width) == block


@pytest.mark.parametrize("inplanes,planes,groups,base_width,stride", [
    (64, 64, 1, 64, 1), (256, 128, 1, 64, 2), (256, 64, 32, 4, 1), (1024, 512, 32, 8, 2), (512, 128, 1, 128, 2),
    (2048, 512, 64, 4, 1)])
def test_bottleneck_params_formula_matches_modules(inplanes, planes, groups, base_width, stride):
    stage = analysis.make_stage(rn.Bottleneck, inplanes, planes, blocks=2, stride=stride, groups=groups,
                                width_per_group=base_width)
    has_ds = stride != 1 or inplanes != planes * 4
    assert (stage[0].downsample is not None) == has_ds
    assert rn.count_parameters(stage[0]) == analysis.bottleneck_params(inplanes, planes, groups, base_width, has_ds)
    assert rn.count_parameters(stage[1]) == analysis.bottleneck_params(planes * 4, planes, groups, base_width)


@pytest.mark.parametrize("inplanes,planes,stride", [(64, 64, 1), (64, 128, 2), (128, 128, 1), (64, 128, 1), (256, 512, 2)])
def test_basic_block_params_formula_matches_modules(inplanes, planes, stride):
    block = analysis.make_stage(rn.BasicBlock, inplanes, planes, 1, stride)[0]
    has_ds = stride != 1 or inplanes != planes
    assert (block.downsample is not None) == has_ds
    assert rn.count_parameters(block) == analysis.basic_block_params(inplanes, planes, has_ds)


# --------------------------------------------------------------------------------------------------
# Chapter 4: the body
# --------------------------------------------------------------------------------------------------
def test_stage_bookkeeping():
    r18, r50 = meta("resnet18"), meta("resnet50")
    firsts18 = [getattr(r18, f"layer{i}")[0] for i in range(1, 5)]
    firsts50 = [getattr(r50, f"layer{i}")[0] for i in range(1, 5)]
    assert [b.conv1.in_channels for b in firsts18] == [64, 64, 128, 256]
    assert [b.conv1.in_channels for b in firsts50] == [64, 256, 512, 1024]
    assert [b.bn3.num_features for b in firsts50] == [256, 512, 1024, 2048]
    assert [b.downsample is not None for b in firsts50] == [True] * 4
    assert [b.stride for b in firsts50] == [1, 2, 2, 2]
    assert sum(len(getattr(r50, f"layer{i}")) for i in range(1, 5)) == 16


def test_make_stage_is_resnet_make_layer():
    stage = analysis.make_stage(rn.Bottleneck, 256, 128, blocks=4, stride=2)
    real = rn.resnet50().layer2
    assert [(k, v.shape) for k, v in stage.state_dict().items()] == [(k, v.shape) for k, v in real.state_dict().items()]


def test_shape_traces_224_and_200():
    model = rn.resnet50()
    s224 = {r["name"]: r["shape"] for r in rn.trace_shapes(model, (1, 3, 224, 224), depth=0)}
    s200 = {r["name"]: r["shape"] for r in rn.trace_shapes(model, (1, 3, 200, 200), depth=0)}
    assert [s224[f"layer{i}"][2] for i in range(1, 5)] == [56, 28, 14, 7]
    assert [s200[f"layer{i}"][2] for i in range(1, 5)] == [50, 25, 13, 7]
    assert (s200["conv1"], s200["maxpool"]) == ((1, 64, 100, 100), (1, 64, 50, 50))
    assert s224["layer4"][1] == model.fc.in_features == 2048
    assert s200["fc"] == (1, 1000)


def test_output_strides_and_dilation_cost():
    nets = {flags: meta("resnet50", replace_stride_with_dilation=list(flags))
            for flags in [(False, False, False), (False, False, True), (False, True, True)]}
    strides = {f: analysis.output_stride(n) for f, n in nets.items()}
    assert list(strides.values()) == [32, 16, 8]
    assert {rn.count_parameters(n) for n in nets.values()} == {25_557_032}
    gmacs = [round(rn.count_macs(n) / 1e9, 2) for n in nets.values()]
    assert gmacs == [4.09, 6.21, 19.08]
    dil = rn.resnet50(replace_stride_with_dilation=[False, True, True])
    assert [b.conv2.dilation[0] for b in dil.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in dil.layer4] == [2, 4, 4]
    assert [getattr(dil, f"layer{i}")[0].conv2.stride[0] for i in range(1, 5)] == [1, 2, 1, 1]


def test_zero_init_residual_makes_blocks_identities():
    torch.manual_seed(0)
    zi = rn.resnet50(zero_init_residual=True).eval()
    blocks = [m for m in zi.modules() if isinstance(m, rn.Bottleneck)]
    assert sum(int((b.bn3.weight == 0).all()) for b in blocks) == len(blocks) == 16
    x = torch.relu(torch.randn(1, 256, 56, 56))
    with torch.no_grad():
        assert torch.equal(zi.layer1[1](x), x)
        assert not torch.equal(rn.resnet50().eval().layer1[1](x), x)


def test_init_loop_statistics():
    torch.manual_seed(0)
    model = rn.resnet50()
    for name in ("conv1", "layer1.0.conv2", "layer3.0.conv1", "layer4.2.conv3"):
        conv = model.get_submodule(name)
        expected = (2 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1])) ** 0.5
        assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert round((2 / (64 * 7 * 7)) ** 0.5, 4) == 0.0253
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 53 and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)


@pytest.mark.parametrize("kwargs,size", [({}, (2, 3, 224, 224)), ({"replace_stride_with_dilation": [False, True, True]}, (1, 3, 128, 128))])
def test_live_proof_equals_torchvision(kwargs, size):
    torch.manual_seed(1)
    x = torch.randn(*size)
    theirs = torchvision.models.resnet50(**kwargs).eval()
    ours = rn.resnet50(**kwargs).eval()
    report = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not report.missing_keys and not report.unexpected_keys
    assert list(ours.state_dict()) == list(theirs.state_dict()) and len(ours.state_dict()) == 320
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


# --------------------------------------------------------------------------------------------------
# Chapter 5: the variant table
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table():
    return {r["name"]: r for r in analysis.variant_table((1, 3, 224, 224))}


def test_variant_table_against_live_model_cards(table):
    assert list(table) == list(rn.VARIANTS)
    for name, row in table.items():
        card = analysis.model_card(name)
        meta_ = torchvision.models.get_model_weights(name).DEFAULT.meta
        assert card["num_params"] == meta_["num_params"] == row["params"]
        assert card["gmacs"] == meta_["_ops"]
        assert abs(row["macs"] / 1e9 - card["gmacs"]) < 0.005


def test_variant_names_are_depths(table):
    for name, row in table.items():
        per_block = 2 if row["block"] == "BasicBlock" else 3
        assert str(1 + per_block * sum(row["layers"]) + 1) in name


def test_variant_table_meta_equals_cpu():
    cpu = analysis.variant_table((1, 3, 64, 64), names=["resnet18", "resnext50_32x4d"], device="cpu")
    on_meta = analysis.variant_table((1, 3, 64, 64), names=["resnet18", "resnext50_32x4d"])
    assert cpu == on_meta


def test_paper_and_v1_stride(table):
    assert paper_gmacs == {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
    assert round(table["resnet18"]["macs"] / 1e9 - 1.8, 3) == 0.014
    assert round(table["resnet34"]["macs"] / 1e9 - 3.6, 3) == 0.064
    v1 = {}
    for name in ("resnet50", "resnet101", "resnet152"):
        m = meta(name)
        m1 = analysis.as_v1(m)
        assert rn.count_parameters(m1) == rn.count_parameters(m)
        v1[name] = rn.count_macs(m1)
        assert table[name]["macs"] - v1[name] == 231_211_008
    assert {k: round(v / 1e9, 3) for k, v in v1.items()} == {"resnet50": 3.858, "resnet101": 7.570, "resnet152": 11.282}
    assert round(v1["resnet101"] / 1e9, 1) == 7.6 and round(v1["resnet152"] / 1e9, 1) == 11.3
    assert round(100 * 231_211_008 / v1["resnet50"], 1) == 6.0


def test_v15_extra_per_block():
    r50 = meta("resnet50")
    v1 = analysis.as_v1(r50)
    for i, (cin, side) in zip((2, 3, 4), ((256, 56), (512, 28), (1024, 14))):
        c15, c1 = getattr(r50, f"layer{i}")[0].conv1, getattr(v1, f"layer{i}")[0].conv1
        assert (c15.stride, c1.stride) == ((1, 1), (2, 2))
        assert rn.count_macs(c15, (1, cin, side, side)) - rn.count_macs(c1, (1, cin, side, side)) == 77_070_336
    assert 3 * 77_070_336 == 231_211_008


def test_as_v1_keeps_shapes_and_leaves_the_original():
    torch.manual_seed(0)
    m = rn.resnet50().eval()
    v1 = analysis.as_v1(m)
    assert m.layer2[0].conv2.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    s1 = {r["name"]: r["shape"] for r in rn.trace_shapes(v1, x.shape)}
    s15 = {r["name"]: r["shape"] for r in rn.trace_shapes(m, x.shape)}
    assert s1["layer2.0"] == s15["layer2.0"] and s1["fc"] == s15["fc"]


def test_family_ratios_and_stage_shares(table):
    p = {k: r["params"] for k, r in table.items()}
    g = {k: r["macs"] for k, r in table.items()}
    assert round(p["resnext50_32x4d"] / p["resnet50"], 2) == 0.98
    assert round(g["resnext50_32x4d"] / g["resnet50"], 2) == 1.03
    assert round(p["wide_resnet50_2"] / p["resnet50"], 2) == 2.70
    assert round(g["wide_resnet50_2"] / g["resnet50"], 2) == 2.79
    shares = {}
    largest = {}
    for name in rn.VARIANTS:
        b = analysis.stage_parameters(meta(name))
        assert sum(b.values()) == p[name]
        shares[name] = {k: 100 * v / p[name] for k, v in b.items()}
        largest[name] = max(("layer1", "layer2", "layer3", "layer4"), key=lambda s: b[s])
    assert largest == {"resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4", "resnet101": "layer3",
                       "resnet152": "layer3", "resnext50_32x4d": "layer4", "resnext101_32x8d": "layer3",
                       "resnext101_64x4d": "layer3", "wide_resnet50_2": "layer4", "wide_resnet101_2": "layer3"}
    assert round(shares["resnet50"]["layer4"], 1) == 58.6
    assert round(shares["resnet18"]["layer4"], 1) == 71.8 and round(shares["resnet18"]["fc"], 1) == 4.4
    assert shares["resnet101"]["layer3"] > 50 and shares["resnet152"]["layer3"] > 60


def test_torchinfo_agrees_up_to_batchnorm_and_bias(table):
    from torchinfo import summary

    rx = meta("resnext50_32x4d")
    info = summary(rx, input_size=(1, 3, 224, 224), depth=2, verbose=0, device="meta")
    assert info.total_params == table["resnext50_32x4d"]["params"] == 25_028_904
    bn = sum(p.numel() for m in rx.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert info.total_mult_adds - table["resnext50_32x4d"]["macs"] == bn + rx.fc.out_features == 69_224


def test_model_card_fields():
    card = analysis.model_card("resnet50")
    assert card["weights"] == "ResNet50_Weights.IMAGENET1K_V2"
    assert (card["num_params"], card["gmacs"], card["acc1"]) == (25_557_032, 4.089, 80.858)


def test_stage_parameters_resnet50():
    assert analysis.stage_parameters(meta("resnet50")) == {
        "stem": 9_536, "layer1": 215_808, "layer2": 1_219_584, "layer3": 7_098_368, "layer4": 14_964_736, "fc": 2_049_000}


# --------------------------------------------------------------------------------------------------
# Bad input to the new helpers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,match", [
    ((0, 3), r"size must be an integer >= 1, got 0"),
    ((8.5, 3), r"size must be an integer >= 1, got 8.5"),
    ((8, 3, 0), r"stride must be an integer >= 1, got 0"),
    ((8, 3, 1, -1), r"padding must be an integer >= 0"),
    ((8, 3, 1, 0, 0), r"dilation must be an integer >= 1"),
    ((True, 3), r"size must be an integer"),
    ((2, 5), r"dilated kernel spans 5 pixels but the padded input has only 2"),
])
def test_conv_output_size_errors(args, match):
    with pytest.raises(ValueError, match=match):
        analysis.conv_output_size(*args)


def test_formula_errors():
    with pytest.raises(ValueError, match=r"groups=3 must divide both in_channels=64 and out_channels=64"):
        analysis.conv_params(64, 64, 3, groups=3)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        analysis.conv_params(0, 64, 3)
    with pytest.raises(ValueError, match=r"inner width of 0"):
        analysis.bottleneck_width(1, base_width=4)
    with pytest.raises(ValueError, match="planes must be"):
        analysis.bottleneck_params(256, -64)
    with pytest.raises(ValueError, match="inplanes must be"):
        analysis.basic_block_params(None, 64)


def test_receptive_field_map_errors():
    with pytest.raises(ValueError, match="size must be odd"):
        analysis.receptive_field_map(1, 1, 8)
    with pytest.raises(ValueError, match=r"receptive field \(9 pixels\) does not fit in size=7"):
        analysis.receptive_field_map(2, 2, 7)
    with pytest.raises(ValueError, match="dilation must be"):
        analysis.receptive_field_map(0)


def test_stage_helpers_errors():
    with pytest.raises(ValueError, match="block must be BasicBlock or Bottleneck"):
        analysis.make_stage(nn.Conv2d, 64, 64)
    with pytest.raises(ValueError, match="blocks must be an integer >= 1"):
        analysis.make_stage(rn.BasicBlock, 64, 64, blocks=0)
    with pytest.raises(ValueError, match=r"output_stride expects a ResNet .* got Sequential"):
        analysis.output_stride(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="not a multiple of layer4's side 7"):
        analysis.output_stride(meta("resnet18"), (1, 3, 200, 200))
    with pytest.raises(ValueError, match="stage_parameters expects a ResNet"):
        analysis.stage_parameters(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="as_v1 needs a Bottleneck model"):
        analysis.as_v1(meta("resnet18"))
    with pytest.raises(ValueError, match=r"unknown variant 'resnet19'"):
        analysis.model_card("resnet19")
    with pytest.raises(ValueError, match="device must be 'meta'"):
        analysis.variant_table(names=["resnet18"], device="cuda:7")


def test_deep_stack_and_gradient_norms_errors():
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 1, got 0"):
        analysis.deep_stack(0)
    with pytest.raises(ValueError, match="shortcuts must be True or False"):
        analysis.deep_stack(2, shortcuts="yes")
    net = analysis.deep_stack(2)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"x must be a 4-D tensor"):
        analysis.gradient_norms(net, x[0], y)
    with pytest.raises(ValueError, match=r"y must be a 1-D int64 tensor of 4 class indices"):
        analysis.gradient_norms(net, x, y.float())
    with pytest.raises(ValueError, match=r"y must be a 1-D int64 tensor of 4"):
        analysis.gradient_norms(net, x, y[:3])
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        analysis.gradient_norms(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), x, y)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        analysis.gradient_norms("resnet18", x, y)


def test_gradient_norms_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    net = analysis.deep_stack(3).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    norms = analysis.gradient_norms(net, torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert [n for n, _ in norms] == ["stem.0"] + [f"blocks.{i}.conv{j}" for i in range(3) for j in (1, 2)]
    assert all(v > 0 for _, v in norms)
    assert not net.training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


# --------------------------------------------------------------------------------------------------
# Plots: they draw what they are given and refuse what they cannot draw
# --------------------------------------------------------------------------------------------------
def test_plots_draw():
    maps = {"d1": analysis.receptive_field_map(1, 1, 7), "d2": analysis.receptive_field_map(2, 1, 7)}
    axes = visualization.plot_receptive_field(maps)
    assert [a.get_title().splitlines()[1] for a in axes] == ["(spans 3x3 pixels)", "(spans 5x5 pixels)"]
    net = analysis.deep_stack(2)
    norms = analysis.gradient_norms(net, torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    ax = visualization.plot_gradient_norms({"a": norms})
    assert ax.get_yscale() == "log" and len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 5
    hist = [{"epoch": 1, "train_loss": 2.0, "test_loss": 2.0, "test_accuracy": 0.1},
            {"epoch": 2, "train_loss": 1.0, "test_loss": 1.5, "test_accuracy": 0.5}]
    axes = visualization.plot_training_curves({"x": hist})
    assert list(axes[1].lines[0].get_ydata()) == [10.0, 50.0]
    rows = rn.trace_shapes(meta("resnet50"), (1, 3, 224, 224), depth=0)
    ax = visualization.plot_data_flow(rows, (1, 3, 224, 224))
    labels = [t.get_text() for t in ax.texts]
    assert "2048x7x7" in labels and "3x224x224" in labels and "1000" in labels
    table = analysis.variant_table((1, 3, 64, 64), names=["resnet18", "resnet50"])
    ax = visualization.plot_params_vs_macs(table)
    assert [t.get_text() for t in ax.texts] == ["resnet18", "resnet50"]
    ax = visualization.plot_stage_breakdown({"resnet18": analysis.stage_parameters(meta("resnet18"))})
    assert len(ax.patches) == 6
    plt.close("all")


def test_plot_errors():
    with pytest.raises(ValueError, match="maps must be a non-empty dict"):
        visualization.plot_receptive_field({})
    with pytest.raises(ValueError, match="must be a square 2-D array"):
        visualization.plot_receptive_field({"x": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="norms must be a non-empty dict"):
        visualization.plot_gradient_norms([1, 2])
    with pytest.raises(ValueError, match=r"norms\['a'\] is empty"):
        visualization.plot_gradient_norms({"a": []})
    with pytest.raises(ValueError, match="list of dicts with epoch, train_loss, test_accuracy"):
        visualization.plot_training_curves({"a": [{"epoch": 1}]})
    with pytest.raises(ValueError, match=r"missing \['conv1'"):
        visualization.plot_data_flow([], (1, 3, 224, 224))
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, H, W\)"):
        visualization.plot_data_flow([], (3, 224, 224))
    with pytest.raises(ValueError, match="rows is empty"):
        visualization.plot_params_vs_macs([])
    with pytest.raises(ValueError, match="each row needs name, params and macs"):
        visualization.plot_params_vs_macs([{"name": "x"}])
    with pytest.raises(ValueError, match="must have exactly the keys"):
        visualization.plot_stage_breakdown({"x": {"stem": 1}})
    plt.close("all")
