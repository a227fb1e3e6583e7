"""resnet_edu.quantization: torchvision-exact quantizable models, the recipes, and the integer arithmetic.

Tests marked ``kernel_family`` depend on the kernel that runs (ATen's quantize, the quantized
convolution of the book's engine): ``tests/test_families.py`` runs them again under every kernel family
this machine can execute, where ``rq.default_engine()`` is the family's engine.
"""
from __future__ import annotations

import inspect
import math
import warnings
from collections import Counter

import pytest
import torch
import torchvision
import torchvision.models.quantization as tvq
from torch.ao.nn.intrinsic.quantized import ConvReLU2d as QConvReLU2d
from torch.ao.nn.quantized import Conv2d as QConv2d

import resnet_edu as rn
from resnet_edu import quantization as rq

TV_NAMES = ["resnet18", "resnet50", "resnext101_32x8d", "resnext101_64x4d"]


@pytest.fixture(autouse=True)
def _quiet_and_engine():
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = rq.default_engine()
    with warnings.catch_warnings():
        rq.silence_known_warnings()
        yield
    torch.backends.quantized.engine = old


def same_value(a, b) -> bool:
    """Deep equality for state-dict values: tensors (quantized or not), tuples of them, dtypes, numbers."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.is_quantized != b.is_quantized:
            return False
        if a.is_quantized:
            if a.qscheme() != b.qscheme() or not torch.equal(a.int_repr(), b.int_repr()):
                return False
            if a.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                return torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales()) and torch.equal(
                    a.q_per_channel_zero_points(), b.q_per_channel_zero_points()
                )
            return a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_state(sd_a, sd_b):
    assert list(sd_a) == list(sd_b)
    for k in sd_a:
        assert same_value(sd_a[k], sd_b[k]), k


def randomize_bn(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


# --------------------------------------------------------------------------------------------------
# names and signatures
# --------------------------------------------------------------------------------------------------
def test_public_names_cover_torchvision():
    import torchvision.models.quantization.resnet as tvr

    for name in tvr.__all__:
        assert hasattr(rq, name), name
    for name in rn.VARIANTS:
        assert name in rq.QUANTIZABLE_VARIANTS and callable(getattr(rq, name))
    assert rq.ResNet18_QuantizedWeights is tvq.ResNet18_QuantizedWeights


def test_package_reexports_each_part_once():
    """rq.__all__ is the union of the parts' __all__ (each name defined in one part, the same object)."""
    import importlib

    parts = ["arithmetic", "reference", "kernels", "models", "eager", "fuse_add", "pt2e", "flows"]
    owner = {}
    for part in parts:
        mod = importlib.import_module(f"resnet_edu.quantization.{part}")
        for name in mod.__all__:
            assert name not in owner, f"{name} is exported by both {owner.get(name)} and {part}"
            owner[name] = part
            assert getattr(rq, name) is getattr(mod, name), name
    assert sorted(owner) == sorted(rq.__all__) and len(rq.__all__) == len(set(rq.__all__))
    for name in rq.__all__:  # functions and classes live in the part that exports them
        module = getattr(getattr(rq, name), "__module__", None)
        if callable(getattr(rq, name)) and module.startswith("resnet_edu."):
            assert module == f"resnet_edu.quantization.{owner[name]}", (name, module)


def test_package_import_leaves_torchao_unloaded():
    import subprocess
    import sys

    code = "import sys, resnet_edu.quantization as rq; rq.pt2e_available(); print('torchao' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", TV_NAMES)
def test_builder_signatures_match_torchvision(name):
    ours = inspect.signature(getattr(rq, name)).parameters
    theirs = inspect.signature(getattr(tvq, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [(p.name, p.kind, p.default) for p in theirs.values()]


def test_module_tree_matches_torchvision():
    """All four torchvision builders give the same module tree (resnext101_64x4d: PTQ is checked on 32x8d)."""
    for name in TV_NAMES:
        with torch.device("meta"):  # structure only: no memory, no init cost
            ours, theirs = getattr(rq, name)(num_classes=10), getattr(tvq, name)(num_classes=10)
        a = [(n, type(m).__name__) for n, m in ours.named_modules()]
        b = [(n, type(m).__name__) for n, m in theirs.named_modules()]
        assert a == b
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
        # torchvision replaces every ReLU by a non-inplace one
        assert all(not m.inplace for m in ours.modules() if isinstance(m, torch.nn.ReLU))


# --------------------------------------------------------------------------------------------------
# torchvision-exactness through PTQ: keys before/after conversion, identical int8 outputs
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,recipe,backend",
    [
        ("resnet18", "default", "x86"),
        ("resnet18", "torchvision", "fbgemm"),
        ("resnet18", "default", "qnnpack"),
        ("resnet50", "torchvision", "x86"),
        ("resnext101_32x8d", "torchvision", "fbgemm"),
    ],
)
def test_ptq_matches_torchvision(name, recipe, backend):
    torch.manual_seed(1)
    ref = getattr(tvq, name)(num_classes=10)
    randomize_bn(ref)
    with torch.device("meta"):  # our builder's structure, without a second (slow) init of the weights
        ours = getattr(rq, name)(num_classes=10)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours = ours.to_empty(device="cpu")
    ours.load_state_dict(ref.state_dict(), strict=True)
    batches = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    q_ours = rq.quantize_ptq(ours, batches, backend=backend, qconfig=recipe, progress=False)
    q_ref = rq.quantize_ptq(ref, batches, backend=backend, qconfig=recipe, progress=False)
    assert_same_state(q_ours.state_dict(), q_ref.state_dict())
    assert any(k.endswith("add_relu.scale") for k in q_ours.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(q_ours(x), q_ref(x))


@pytest.mark.parametrize("name", ["resnet18"])
def test_quantize_true_matches_torchvision(name):
    torch.manual_seed(2)
    ours = getattr(rq, name)(quantize=True)
    torch.manual_seed(2)
    ref = getattr(tvq, name)(quantize=True)
    assert_same_state(ours.state_dict(), ref.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    # the state dict of a converted model loads into torchvision's converted model and back
    ref.load_state_dict(ours.state_dict())


OTHER_NAMES = ["resnet34", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2", "wide_resnet101_2"]


def test_other_builders_match_torchvision_class_structure():
    """torchvision has no builders for these six, but its QuantizableResNet class takes any configuration."""
    import torchvision.models.quantization.resnet as tvr

    for name in OTHER_NAMES:
        with torch.device("meta"):
            ours = getattr(rq, name)(num_classes=10)
            float_model = rn.VARIANTS[name](num_classes=10)
            block = tvr.QuantizableBottleneck if name != "resnet34" else tvr.QuantizableBasicBlock
            layers = [len(getattr(float_model, f"layer{i}")) for i in range(1, 5)]
            theirs = tvr.QuantizableResNet(block, layers, num_classes=10, groups=float_model.groups, width_per_group=float_model.base_width)
            tvr._replace_relu(theirs)
        assert [(n, type(m).__name__) for n, m in ours.named_modules()] == [(n, type(m).__name__) for n, m in theirs.named_modules()]
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
        assert list(ours.state_dict()) == list(float_model.state_dict()), "FP32 checkpoints load unchanged"


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_other_variants_convert_and_run(name):
    """Every variant converts and runs; the three smaller ones give int8 outputs identical to torchvision's
    class after the same PTQ (for the three big ones the structure test above stands in, to keep this fast)."""
    torch.manual_seed(3)
    float_model = rn.VARIANTS[name](num_classes=10).eval()
    randomize_bn(float_model)
    ours = rq.to_quantizable(float_model)
    assert type(ours) is rq.QuantizableResNet
    batches = [torch.randn(1, 3, 32, 32)]
    q_ours = rq.quantize_ptq(ours, batches, qconfig="torchvision", backend="fbgemm", progress=False, inplace=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = q_ours(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    if name in ("resnet34", "resnext50_32x4d", "wide_resnet50_2"):
        theirs = rq.to_torchvision_quantizable(float_model)
        assert type(theirs) is tvq.QuantizableResNet
        q_theirs = rq.quantize_ptq(theirs, batches, qconfig="torchvision", backend="fbgemm", progress=False, inplace=True)
        assert list(q_ours.state_dict()) == list(q_theirs.state_dict())
        with torch.no_grad():
            assert torch.equal(out, q_theirs(x))
    assert sum(isinstance(m, QConv2d) for m in q_ours.modules()) == sum(isinstance(m, torch.nn.Conv2d) for m in float_model.modules())


def test_to_quantizable_keeps_weights_outputs_and_rng():
    torch.manual_seed(4)
    m = rn.resnet50(num_classes=7, replace_stride_with_dilation=[False, True, True]).eval()
    randomize_bn(m)
    state = torch.random.get_rng_state()
    q = rq.to_quantizable(m)
    assert torch.equal(torch.random.get_rng_state(), state), "to_quantizable must not consume the caller's RNG"
    assert isinstance(q, rq.QuantizableResNet) and not q.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(q(x), m(x))  # stubs are identities before conversion
    tv = torchvision.models.resnet18(num_classes=3).eval()
    assert torch.equal(rq.to_quantizable(tv)(x), tv(x))


# --------------------------------------------------------------------------------------------------
# pretrained weights through torch.hub's cache (local files only)
# --------------------------------------------------------------------------------------------------
def test_quantized_weights_load_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = rq.ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1
    torch.manual_seed(5)
    source = rq.resnet18(quantize=True)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(source.state_dict(), folder / weights.url.rsplit("/", 1)[1])
    ours = rq.resnet18(weights="DEFAULT", quantize=True, progress=False)
    theirs = tvq.resnet18(weights=weights, quantize=True, progress=False)  # the same cached file
    assert_same_state(ours.state_dict(), source.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    # FP32 weights into the quantizable model (quantize=False)
    fp32 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    tv_float = torchvision.models.resnet18()
    torch.save(tv_float.state_dict(), folder / fp32.url.rsplit("/", 1)[1])
    qf = rq.resnet18(weights=fp32, progress=False)
    assert torch.equal(qf.conv1.weight, tv_float.conv1.weight)


def test_quantized_weights_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(rn.WeightsUnavailableError, match="resnet18_fbgemm_16fa66dd.pth"):
        rq.resnet18(weights="IMAGENET1K_FBGEMM_V1", quantize=True, progress=False)


# --------------------------------------------------------------------------------------------------
# error cases
# --------------------------------------------------------------------------------------------------
def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown or unsupported quantization backend 'tpu'; accepted here: x86, fbgemm, onednn, qnnpack"):
        rq.quantize_ptq(rn.resnet18(num_classes=2), [torch.randn(1, 3, 32, 32)], backend="tpu")
    with pytest.raises(ValueError, match="accepted here"):
        rq.resnet18(backend="mps")
    with pytest.raises(ValueError, match=r"int8 weights only for resnet18, resnet50, resnext101_32x8d, resnext101_64x4d, not resnet34"):
        rq.resnet34(weights="DEFAULT", quantize=True)
    with pytest.raises(ValueError, match=r"quantize=True needs int8 weights ResNet18_QuantizedWeights"):
        rq.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1, quantize=True)
    with pytest.raises(ValueError, match=r"unknown int8 weights 'IMAGENET1K_V1' for resnet18; accepted: \['IMAGENET1K_FBGEMM_V1', 'DEFAULT'\]"):
        rq.resnet18(weights="IMAGENET1K_V1", quantize=True)
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET1K_FBGEMM_V1' for resnet18"):
        rq.resnet18(weights="IMAGENET1K_FBGEMM_V1", quantize=False)
    with pytest.raises(ValueError, match=r"backend='qnnpack' does not fit the int8 weights"):
        rq.resnet18(weights="DEFAULT", quantize=True, backend="qnnpack")
    with pytest.raises(ValueError, match=r"num_classes=10 does not fit"):
        rq.resnet50(weights="DEFAULT", quantize=True, num_classes=10)
    with pytest.raises(ValueError, match="quantize must be True or False"):
        rq.resnet18(quantize="yes")
    with pytest.raises(ValueError, match="fixes groups=32"):
        rq.resnext50_32x4d(groups=8)
    with pytest.raises(ValueError, match="not a single tensor"):
        rq.quantize_ptq(rn.resnet18(), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="is empty"):
        rq.quantize_ptq(rn.resnet18(), [])
    with pytest.raises(ValueError, match=r"calibration_batches\[0\] must be a float tensor of shape \(N, 3, H, W\)"):
        rq.quantize_ptq(rn.resnet18(), [torch.zeros(3, 32, 32)])
    with pytest.raises(ValueError, match="unknown qconfig recipe 'fast'"):
        rq.quantize_ptq(rn.resnet18(), [torch.randn(1, 3, 32, 32)], qconfig="fast")
    with pytest.raises(ValueError, match="expected a ResNet"):
        rq.to_quantizable(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="only BatchNorm2d can be fused"):
        rq.to_quantizable(rn.resnet18(norm_layer=lambda c: torch.nn.GroupNorm(1, c)))
    with pytest.raises(ValueError, match="unknown scheme 'per_row'"):
        rq.fake_quantize(torch.randn(3), scheme="per_row")
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 16"):
        rq.fake_quantize(torch.randn(3), bits=1)
    with pytest.raises(ValueError, match="shapes differ"):
        rq.sqnr_db(torch.randn(3), torch.randn(4))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        rq.quantize_qat(rn.resnet18(), [], epochs=0)
    with pytest.raises(ValueError, match="nn.Module or a state dict"):
        rq.model_size_mb(42)
    with pytest.raises(ValueError, match="no submodule named"):
        rq.capture_io(rn.resnet18(), torch.randn(1, 3, 32, 32), ["layer9"])


# --------------------------------------------------------------------------------------------------
# first principles: qparams and fake quantization agree with PyTorch's observers and kernels
# --------------------------------------------------------------------------------------------------
@pytest.mark.kernel_family
def test_qparams_match_observers():
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    for x in [torch.randn(1000) * 3 + 1, torch.rand(50) * 7, -torch.rand(20), torch.zeros(5)]:
        obs = MinMaxObserver()
        obs(x)
        s, z = obs.calculate_qparams()
        s2, z2, _, _ = rq.qparams(x.min(), x.max())
        assert torch.equal(s, s2.reshape(1)) and torch.equal(z.long(), z2.reshape(1))
        q = rq.quantize_tensor(x, s2, z2, 0, 255)
        assert torch.equal(q.to(torch.uint8), torch.quantize_per_tensor(x, s2.item(), int(z2), torch.quint8).int_repr())
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16).view(-1, 1, 1, 1)
    obs = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    s, z = obs.calculate_qparams()
    lo, hi = w.flatten(1).min(1).values, w.flatten(1).max(1).values
    s2, z2, qmin, qmax = rq.qparams(lo, hi, symmetric=True, signed=True)
    assert torch.equal(s, s2) and torch.equal(z.long(), z2)
    expected = torch.fake_quantize_per_channel_affine(w, s, z.int(), 0, qmin, qmax)
    assert torch.equal(rq.fake_quantize(w, 8, "per_channel_symmetric"), expected)


def test_sqnr_six_db_per_bit():
    torch.manual_seed(0)
    x = torch.randn(100_000)
    gains = [rq.sqnr_db(x, rq.fake_quantize(x, b + 1)) - rq.sqnr_db(x, rq.fake_quantize(x, b)) for b in range(4, 8)]
    assert all(5.0 < g < 7.0 for g in gains), gains
    assert rq.sqnr_db(x, x) == math.inf
    per_tensor = rq.sqnr_db(x.view(10, -1) * torch.logspace(-2, 0, 10).view(-1, 1), rq.fake_quantize(x.view(10, -1) * torch.logspace(-2, 0, 10).view(-1, 1), 8, "per_tensor_symmetric"))
    per_channel = rq.sqnr_db(x.view(10, -1) * torch.logspace(-2, 0, 10).view(-1, 1), rq.fake_quantize(x.view(10, -1) * torch.logspace(-2, 0, 10).view(-1, 1), 8, "per_channel_symmetric"))
    assert per_channel > per_tensor + 3


# --------------------------------------------------------------------------------------------------
# reference_qconv2d: bit-exact against the kernel
# --------------------------------------------------------------------------------------------------
def make_qconv(cin, cout, k, stride=1, padding=0, dilation=1, groups=1, bias=True, relu=False, w_scale=None,
               per_channel=True, out_scale=0.05, out_zp=64, seed=0):
    """A quantized conv built directly on the book's engine (``rq.default_engine()``: a family's engine
    under tests/test_families.py), with chosen weights, scales and zero points."""
    g = torch.Generator().manual_seed(seed)
    torch.backends.quantized.engine = rq.default_engine()
    cls = QConvReLU2d if relu else QConv2d
    qconv = cls(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    if per_channel:
        scales = (w.abs().amax(dim=(1, 2, 3)) / 127.5) if w_scale is None else torch.full((cout,), w_scale, dtype=torch.double)
        qw = torch.quantize_per_channel(w, scales.double(), torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    else:
        qw = torch.quantize_per_tensor(w, (w.abs().max() / 127.5).item() if w_scale is None else w_scale, 0, torch.qint8)
    b = torch.randn(cout, generator=g) if bias else None
    qconv.set_weight_bias(qw, b)
    qconv.scale, qconv.zero_point = out_scale, out_zp
    return qconv


def make_qx(n, c, h, w, scale, zp, lo=0, hi=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    ints = torch.randint(lo, hi, (n, c, h, w), generator=g, dtype=torch.uint8)
    return torch._make_per_tensor_quantized_tensor(ints, scale, zp)


CONV_CASES = [
    dict(cin=8, cout=16, k=3, padding=1),
    dict(cin=3, cout=8, k=7, stride=2, padding=3),  # the stem: odd K = 147
    dict(cin=16, cout=16, k=3, stride=2, padding=2, dilation=2),
    dict(cin=16, cout=32, k=1, stride=2, bias=False),
    dict(cin=16, cout=16, k=3, padding=1, groups=16),  # depthwise
    dict(cin=32, cout=64, k=3, padding=1, groups=8),  # ResNeXt-style grouped
    dict(cin=8, cout=8, k=3, padding=1, relu=True),
    dict(cin=8, cout=12, k=3, padding=1, per_channel=False),
    dict(cin=8, cout=8, k=5, stride=3, padding=0),
]


@pytest.mark.kernel_family
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("x_scale,x_zp", [(0.02, 0), (0.1, 37), (0.005, 127), (3.0, 90)])
def test_reference_qconv2d_exact_7bit_inputs(case, x_scale, x_zp):
    """Inputs in 0..127 (what reduce_range=True guarantees): the exact integer sum equals the kernel."""
    qconv = make_qconv(**case, out_scale=0.05 * (1 + x_scale), out_zp=70)
    qx = make_qx(2, case["cin"], 11, 13, x_scale, x_zp)
    out = qconv(qx)
    mine = rq.reference_qconv2d(qconv, qx)
    assert mine.q_scale() == out.q_scale() and mine.q_zero_point() == out.q_zero_point()
    assert torch.equal(mine.int_repr(), out.int_repr())


NEON_CORNERS = ("QNNPACK's out-of-range int32 conversions are modelled as x86 does them (INT32_MIN); ARM's NEON "
                "kernels are not modelled there, nor checked on hardware")


@pytest.mark.kernel_family
@pytest.mark.parametrize(
    "case,extra",
    [
        (dict(cin=8, cout=8, k=3, padding=1), dict(out_scale=1e-4, out_zp=128)),  # outputs saturate at 0 and 255
        (dict(cin=8, cout=8, k=3, padding=1), dict(out_scale=50.0, out_zp=0)),  # almost everything rounds to 0
        (dict(cin=8, cout=8, k=3, padding=1), dict(w_scale=1e-7)),  # tiny weight scale
        (dict(cin=8, cout=8, k=3, padding=1), dict(w_scale=30.0, out_scale=1e3)),  # huge weight scale
        (dict(cin=8, cout=8, k=3, padding=1, relu=True), dict(out_zp=255)),  # zero point at the top
        (dict(cin=8, cout=8, k=3, padding=1, relu=True), dict(out_zp=0)),
    ],
)
def test_reference_qconv2d_exact_adversarial(case, extra):
    """Extreme scales and zero points, including the int32 corners (QNNPACK's bias clamped to int32, its
    accumulator wrapping, its float-to-int32 conversion overflowing to INT32_MIN: 98 of 1,296 outputs here
    before the reference modelled it; fbgemm's overflow to INT32_MIN too).

    One module per input, as a converted model has (one calibrated input scale and zero point per
    layer): QNNPACK keeps state between calls (test_qnnpack_keeps_padding_and_output_scale_...)."""
    kernel = rq.conv_kernel()["label"]
    if extra == dict(out_scale=1e-4, out_zp=128) and kernel.startswith("QNNPACK") and not rq.cpu_features()["x86"]:
        pytest.skip(NEON_CORNERS)
    for x_scale, x_zp, lo, hi in [(0.05, 0, 0, 128), (0.05, 127, 0, 128), (1e-6, 64, 0, 128), (100.0, 0, 127, 128)]:
        qconv = make_qconv(**case, **extra)
        qx = make_qx(2, case["cin"], 9, 9, x_scale, x_zp, lo, hi)
        ref, got = rq.reference_qconv2d(qconv, qx).int_repr().int(), qconv(qx).int_repr().int()
        assert torch.equal(ref, got), (kernel, x_scale, x_zp, int((ref != got).sum()), int((ref - got).abs().max()))


@pytest.mark.kernel_family
def test_reference_qconv2d_exact_at_the_int32_corners():
    """Where the integers leave int32, each kernel does its own thing and the reference follows it.

    QNNPACK quantizes the bias to int32 (clamped), packs it through float32 (the clamped 2^31 - 1 rounds
    to 2^31 and converts back to INT32_MIN), starts its accumulator at that bias and adds with
    wrap-around, and its float-to-int32 conversion gives INT32_MIN (output 0) out of range. Under
    QNNPACK each case must also differ from the exact arithmetic (int64, no clamp, no wrap): the
    corners are really reached, so the test can fail.
    """
    kernel = rq.conv_kernel()
    if kernel["library"] == "qnnpack" and not rq.cpu_features()["x86"]:
        pytest.skip(NEON_CORNERS)
    cases = [  # (weight scale, input scale, output scale, output zero point, input zero point, bias range, constant input)
        (1.7e-6, 1.0e-6, 1.6e-4, 255, 0, 5e-3, False),  # bias beyond int32 (both signs): accumulators wrap around it
        (1e-7, 1e-6, 0.05, 64, 64, 1.0, False),  # bias clamped to int32: 2^31 * 2e-12 rounds to 0
        (0.01, 100.0, 1e-4, 128, 0, 1.0, False),  # scaled sums beyond int32: INT32_MIN, output 0
        (1e-6, 1e-6, 1e-4, 128, 77, 2e-2, True),  # every input at its zero point: the packed bias alone (INT32_MIN where clamped high)
    ]
    for i, (ws, xs, so, zo, xzp, brange, constant) in enumerate(cases):
        qconv = _extreme_weights(make_qconv(8, 16, 3, padding=1, w_scale=ws, out_scale=so, out_zp=zo, seed=i))
        g = torch.Generator().manual_seed(i)
        qconv.set_weight_bias(qconv.weight(), (torch.rand(16, generator=g) * 2 - 1) * brange)
        qx = make_qx(2, 8, 9, 9, xs, xzp, lo=xzp if constant else 0, hi=xzp + 1 if constant else 256, seed=i)
        ref, got = rq.reference_qconv2d(qconv, qx).int_repr().int(), qconv(qx).int_repr().int()
        assert torch.equal(ref, got), (kernel["label"], i, int((ref != got).sum()), int((ref - got).abs().max()))
        if kernel["library"] == "qnnpack":
            bias_q = torch.round(qconv.bias().double() / (qconv.weight().q_per_channel_scales() * xs)).view(1, -1, 1, 1)
            exact = torch.clamp(torch.round((rq.integer_accumulate(qconv, qx) + bias_q) * (ws * xs / so)) + zo, 0, 255).int()
            assert int((exact != got).sum()) > 0, f"case {i} does not reach QNNPACK's int32 corner"
            if constant:  # a bias clamped at 2^31 - 1 is packed as INT32_MIN: those channels come out below zo
                high = bias_q.view(-1) >= 2**31
                assert high.any() and bool((got[:, high] < zo).all()), got[:, high].unique()


GROUPED_CASES = [  # (cin, cout, k, stride, padding, groups): which kernel each library runs, per the reference's notes
    (16, 16, 3, 1, 1, 16),  # depthwise: fbgemm's depthwise kernel (int16 pairs on every CPU), oneDNN's depthwise kernel
    (8, 16, 5, 2, 2, 8),  # depthwise, two outputs per channel, 5x5
    (12, 12, 3, 1, 1, 12),  # depthwise with 12 groups: fbgemm's im2col path (its depthwise kernel needs groups % 8 == 0)
    (32, 32, 3, 1, 1, 8),  # 4 channels per group: fbgemm's groupwise kernel (int32); oneDNN AVX2's jit kernel (pairs)
    (16, 16, 3, 1, 1, 8),  # 2 channels per group: fbgemm groupwise; oneDNN AVX2 hands it to its gemm convolution
    (8, 8, 3, 1, 1, 2),  # 4 per group, too few groups for fbgemm's groupwise kernel on AVX-512 hardware: im2col
    (30, 30, 3, 1, 1, 10),  # 3 per group: im2col / gemm
    (32, 64, 3, 2, 1, 8),  # 4 in, 8 out per group
    (32, 32, 1, 1, 0, 4),  # grouped 1x1
]


@pytest.mark.kernel_family
def test_reference_qconv2d_exact_grouped_8bit():
    """Grouped and depthwise convolutions with full 8-bit inputs, an input zero point of 200 (so the
    padding holds 200 too) and extreme weights: each library's grouped kernels pair (or do not pair)
    bytes differently, and the reference follows the one that runs. Where the kernel pairs, the exact
    int32 sum must differ, so the test can fail; over all cases some kernel here must pair on x86
    (fbgemm's depthwise kernel does on every CPU)."""
    kernel = rq.conv_kernel()
    paired = 0
    for i, (cin, cout, k, stride, padding, groups) in enumerate(GROUPED_CASES):
        qconv = _extreme_weights(make_qconv(cin, cout, k, stride=stride, padding=padding, groups=groups, out_scale=2.0, out_zp=128, seed=i))
        qx = make_qx(2, cin, 10, 10, 0.01, 200, lo=128, hi=256, seed=i)
        ref, got = rq.reference_qconv2d(qconv, qx).int_repr().int(), qconv(qx).int_repr().int()
        assert torch.equal(ref, got), (kernel["label"], GROUPED_CASES[i], int((ref != got).sum()), int((ref - got).abs().max()))
        exact = rq.reference_qconv2d(qconv, qx, accumulation="int32").int_repr().int()
        paired += not torch.equal(exact, got)
    if kernel["library"] == "fbgemm" or kernel["label"].startswith("oneDNN AVX2"):
        assert paired > 0, kernel["label"]
    elif kernel["accumulation"] == "int32" and kernel["library"] != "fbgemm":
        assert paired == 0, kernel["label"]


@pytest.mark.kernel_family
def test_reference_qconv2d_8bit_inputs_saturate_like_avx2():
    """Full 8-bit inputs (reduce_range=False): a kernel without VNNI saturates int16 pairs, one with it does not.

    The inputs are adversarial on both branches: the reference of the kernel that runs is exact, and the
    other accumulation (int32 where the kernel saturates, int16 pairs where it does not) differs.
    """
    kernel = rq.conv_kernel()
    saturates = kernel["accumulation"] != "int32"
    pairs = "pairs-per-tap" if kernel["library"] == "onednn" else "pairs"
    for case in [dict(cin=64, cout=32, k=3, padding=1), dict(cin=3, cout=16, k=7, stride=2, padding=3), dict(cin=64, cout=64, k=1)]:
        qconv = make_qconv(**case, out_scale=0.5, out_zp=40)
        w = qconv.weight()
        # adversarial weights: every weight at the extreme -128 or 127 makes neighbouring pairs overflow
        sign = torch.where(w.int_repr() >= 0, 127, -128).to(torch.int8)
        qw = torch._make_per_channel_quantized_tensor(sign, w.q_per_channel_scales(), w.q_per_channel_zero_points(), 0)
        qconv.set_weight_bias(qw, qconv.bias())
        qx = make_qx(2, case["cin"], 10, 10, 0.01, 20, lo=200, hi=256)
        out = qconv(qx).int_repr()
        assert torch.equal(rq.reference_qconv2d(qconv, qx).int_repr(), out), (kernel["label"], case)
        exact = rq.reference_qconv2d(qconv, qx, accumulation="int32").int_repr()
        saturated = rq.reference_qconv2d(qconv, qx, accumulation=pairs).int_repr()
        assert not torch.equal(exact, saturated), "these inputs must overflow int16 pairs"
        assert torch.equal(saturated if saturates else exact, out), (kernel["label"], case)


def _extreme_weights(qconv):
    """Every weight at -128 or 127 (the sign of the random one): the pairs that overflow int16 first."""
    w = qconv.weight()
    sign = torch.where(w.int_repr() >= 0, 127, -128).to(torch.int8)
    qconv.set_weight_bias(torch._make_per_channel_quantized_tensor(sign, w.q_per_channel_scales(), w.q_per_channel_zero_points(), 0), qconv.bias())
    return qconv


@pytest.mark.kernel_family
@pytest.mark.parametrize("cin", [1, 2, 3, 5])
def test_reference_qconv2d_exact_few_channels_high_zero_point(cin):
    """Few input channels, full 8-bit inputs, extreme weights and an input zero point up to 255: the
    padded taps (oneDNN adds ``zx * sum(w)`` for them in int32, no pair saturates there) and the odd
    channel counts decide the int16 pairs -- where the 3-channel stem once differed by up to 4."""
    kernel = rq.conv_kernel()
    for k, stride, padding, size in [(7, 2, 3, 16), (7, 2, 3, 6), (3, 1, 1, 12), (3, 2, 1, 7)]:
        for x_zp in (0, 128, 200, 255):
            # a new module per input zero point, as in a converted model (one calibrated zero point per
            # layer): QNNPACK keeps its padding until the input scale changes (test_qnnpack_keeps_...)
            qconv = _extreme_weights(make_qconv(cin, 16, k, stride=stride, padding=padding, out_scale=0.5, out_zp=128, seed=cin))
            qx = make_qx(2, cin, size, size, 0.02, x_zp, lo=0, hi=256, seed=x_zp)
            ref, got = rq.reference_qconv2d(qconv, qx).int_repr().int(), qconv(qx).int_repr().int()
            assert torch.equal(ref, got), (kernel["label"], cin, k, x_zp, int((ref != got).sum()), int((ref - got).abs().max()))


@pytest.mark.kernel_family
def test_qnnpack_keeps_padding_and_output_scale_until_the_input_scale_changes():
    """PyTorch's QNNPACK convolution (qconv.cpp) re-packs its weights and bias, recomputes its
    requantization scales and refills its padding buffer with the input's zero point only when the input
    *scale* differs from the previous call's. Between such calls it pads with the old zero point and
    requantizes with the old output scale (the output tensor still carries the new one). Converted
    models never meet this (each layer's input and output qparams are fixed by calibration), so the
    stateless reference models a fresh call; this test pins the state down, and fails if PyTorch changes it."""
    if rq.conv_kernel()["library"] != "qnnpack":
        pytest.skip(f"QNNPACK's cached state; the convolutions run on {rq.conv_kernel()['label']} here "
                    "(tests/test_families.py runs this test under the qnnpack family)")

    def fresh():
        return _extreme_weights(make_qconv(5, 16, 7, stride=2, padding=3, out_scale=0.5, out_zp=128, seed=5))

    def exact(qconv, qx):
        return torch.equal(rq.reference_qconv2d(qconv, qx).int_repr(), qconv(qx).int_repr())

    qconv = fresh()
    first = make_qx(2, 5, 16, 16, 0.02, 0, lo=0, hi=256, seed=0)
    assert exact(qconv, first)
    qx = make_qx(2, 5, 16, 16, 0.02, 128, lo=0, hi=256, seed=128)  # same scale, another zero point
    got = qconv(qx).int_repr()
    assert not torch.equal(rq.reference_qconv2d(qconv, qx).int_repr(), got)  # padded with 0, not with 128
    # the same convolution without padding, on the input padded by hand with the first call's zero point
    unpadded = _extreme_weights(make_qconv(5, 16, 7, stride=2, padding=0, out_scale=0.5, out_zp=128, seed=5))
    padded_by_hand = torch._make_per_tensor_quantized_tensor(torch.nn.functional.pad(qx.int_repr(), (3, 3, 3, 3), value=0), 0.02, 128)
    assert torch.equal(rq.reference_qconv2d(unpadded, padded_by_hand).int_repr(), got)
    # a new input scale re-packs: the padding holds the new zero point, and the same module is exact again
    assert exact(qconv, make_qx(2, 5, 16, 16, 0.03, 128, lo=0, hi=256, seed=128))
    assert exact(qconv, qx)
    assert exact(fresh(), qx)
    # a new output scale with the same input scale: requantized with the old one, labelled with the new
    qconv.scale = 0.7
    stale = qconv(qx)
    assert stale.q_scale() == 0.7
    assert torch.equal(stale.int_repr(), rq.reference_qconv2d(fresh(), qx).int_repr())  # fresh(): scale 0.5
    relabelled = fresh()
    relabelled.scale = 0.7
    assert not torch.equal(stale.int_repr(), rq.reference_qconv2d(relabelled, qx).int_repr())
    assert exact(relabelled, qx)


@pytest.mark.kernel_family
def test_reference_qconv2d_exact_through_ptq():
    """Every conv of a PTQ-converted ResNet-18 (the engine's default qconfig), on the book's engine and on
    fbgemm (where it exists), bit for bit against the reference of the kernel that ran.

    Test inputs 1.5x larger than the calibration data push some activations past the calibrated range,
    so some convs see integers above 127 despite reduce_range: where the kernel accumulates int16 pairs,
    the reference's saturating model must match there too, oneDNN's 3-channel stem without VNNI (8-bit
    activations, a zero point near 128, padded taps) included.
    """
    engines = list(dict.fromkeys([rq.default_engine()] + (["fbgemm"] if "fbgemm" in rq.quantized_engines() else [])))
    seen = Counter()
    torch.manual_seed(6)
    m = rn.resnet18(num_classes=10).eval()
    randomize_bn(m)
    for backend in engines:
        qm = rq.quantize_ptq(m, [torch.randn(4, 3, 32, 32) for _ in range(2)], backend=backend, progress=False)
        convs = [n for n, mod in qm.named_modules() if isinstance(mod, QConv2d)]
        for scale in (1.0, 1.5):
            io_ = rq.capture_io(qm, torch.randn(2, 3, 32, 32) * scale, convs)
            for n in convs:
                qconv, (qx, qy) = qm.get_submodule(n), io_[n]
                ref, got = rq.reference_qconv2d(qconv, qx).int_repr().int(), qy.int_repr().int()
                assert torch.equal(ref, got), (backend, n, int((ref != got).sum()), int((ref - got).abs().max()))
                seen["exact"] += 1
                if int(qx.int_repr().max()) > 127 and rq.conv_kernel(backend)["accumulation"] != "int32":
                    seen["above 127, int16 pairs"] += 1
    assert seen["exact"] == 40 * len(engines), seen
    if any(rq.conv_kernel(b)["accumulation"] != "int32" for b in engines):
        # inputs above 127 reached int16-pair kernels (whether a pair clipped depends on the weights; the
        # adversarial test above forces it)
        assert seen["above 127, int16 pairs"] > 0, seen


def test_reference_qconv2d_rejects_bad_input():
    qconv = make_qconv(8, 8, 3, padding=1)
    with pytest.raises(ValueError, match="converted torch.ao.nn.quantized.Conv2d"):
        rq.reference_qconv2d(torch.nn.Conv2d(8, 8, 3), make_qx(1, 8, 5, 5, 0.1, 0))
    with pytest.raises(ValueError, match="quint8 quantized tensor"):
        rq.reference_qconv2d(qconv, torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match=r"shape \(N, 8, H, W\)"):
        rq.reference_qconv2d(qconv, make_qx(1, 4, 5, 5, 0.1, 0))
    with pytest.raises(ValueError, match="accumulation must be one of 'int32', 'pairs', "):
        rq.reference_qconv2d(make_qconv(8, 8, 3, padding=1, groups=2), make_qx(1, 8, 5, 5, 0.1, 0), accumulation="triples")
    with pytest.raises(ValueError, match="mode must be one of 'int32', 'pairs', "):
        rq.integer_accumulate(qconv, make_qx(1, 8, 5, 5, 0.1, 0), mode="onednn-brgemm")


# --------------------------------------------------------------------------------------------------
# sizes, QAT, sensitivity, residual scales, runners, benchmark flows
# --------------------------------------------------------------------------------------------------
def test_int8_is_about_four_times_smaller_and_matches_model_card():
    torch.manual_seed(7)
    fp32 = rn.resnet18().eval()
    int8 = rq.quantize_ptq(fp32, [torch.randn(1, 3, 64, 64)], progress=False)
    ratio = rq.model_size_mb(fp32) / rq.model_size_mb(int8)
    assert 3.8 < ratio < 4.1, ratio
    card = rq.ResNet18_QuantizedWeights.DEFAULT.meta["_file_size"]
    assert abs(rq.model_size_mb(int8) - card) < 0.02 * card
    assert rq.model_size_mb(fp32.state_dict()) == rq.model_size_mb(fp32)
    assert abs(rq.model_size_mb(rq.QuantizedRunner(int8, "x86")) - rq.model_size_mb(int8)) < 0.01


def test_qat_trains_and_converts():
    torch.manual_seed(8)
    m = rn.resnet18(num_classes=3).eval()
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,))) for _ in range(2)]
    qm, history = rq.quantize_qat(m, data, epochs=2, lr=1e-3, progress=False)
    assert [h["epoch"] for h in history] == [1, 2] and all(math.isfinite(h["train_loss"]) for h in history)
    assert isinstance(qm.conv1, QConvReLU2d) and not qm.training
    with torch.no_grad():
        out = qm(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    # the float model is untouched
    assert isinstance(m.conv1, torch.nn.Conv2d) and type(m) is rn.ResNet


def test_residual_scales():
    torch.manual_seed(10)
    m = rn.resnet18(num_classes=10).eval()
    qm = rq.quantize_ptq(m, [torch.randn(4, 3, 32, 32)], progress=False)
    rows = rq.residual_scales(qm, torch.randn(2, 3, 32, 32))
    assert [r["block"] for r in rows] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    for r in rows:
        assert r["branch_scale"] > 0 and r["identity_scale"] > 0 and r["out_scale"] > 0
        if r["downsample"]:
            assert r["identity_scale"] == pytest.approx(float(qm.get_submodule(r["block"]).downsample[0].scale))
    with pytest.raises(ValueError, match="converted"):
        rq.residual_scales(rq.to_quantizable(m), torch.randn(1, 3, 32, 32))


def test_runner_pins_engine_and_compare_latency_structure():
    torch.manual_seed(11)
    m = rn.resnet18(num_classes=10).eval()
    cal = [torch.randn(2, 3, 32, 32)]
    x86 = rq.BENCH_FLOWS["int8-eager-x86"](m, cal)
    qnn = rq.BENCH_FLOWS["int8-eager-qnnpack"](m, cal)
    x = torch.randn(2, 3, 32, 32)
    a = x86(x)
    qnn(x)
    assert torch.backends.quantized.engine == "qnnpack"
    assert torch.equal(x86(x), a) and torch.backends.quantized.engine == "x86"
    rows = rq.compare_latency({"x86": x86, "qnnpack": qnn}, {"b2": x}, warmup=0, repeats=2, threads=1)
    assert [(r["input"], r["model"]) for r in rows] == [("b2", "x86"), ("b2", "qnnpack")]
    assert all(r["median_ms"] > 0 and r["repeats"] == 2 for r in rows)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        rq.compare_latency({"x86": x86}, {"b2": x}, repeats=0)


def test_bench_flows_contract():
    assert {"int8-eager-x86", "int8-eager-qnnpack", "int8-pt2e-inductor", "int8-eager-x86-torchvision"} <= set(rq.BENCH_FLOWS)
    torch.manual_seed(12)
    m = rn.resnet18(num_classes=5).eval()
    randomize_bn(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cal = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    ours = rq.BENCH_FLOWS["int8-eager-x86"](m, cal)
    tv = rq.BENCH_FLOWS["int8-eager-x86-torchvision"](m, cal)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(ours(x), tv(x))  # same weights, same PTQ: the same int8 model
    assert ours(x).shape == (3, 5)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items()), "flows must not modify the FP32 model"
    assert rq.model_size_mb(m) / rq.model_size_mb(ours) > 3.5


def test_silence_known_warnings_is_specific():
    m = rq.to_quantizable(rn.resnet18(num_classes=2)).eval()
    m.fuse_model()
    m.qconfig = rq.get_qconfig("x86")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.ao.quantization.prepare(m, inplace=True)
    assert any(rq.DEPRECATION_MESSAGE_START in str(w.message) for w in caught), "torch.ao still warns (shown in chapter 9)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rq.silence_known_warnings()
        torch.ao.quantization.convert(m, inplace=True)
        warnings.warn("an unrelated warning", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not any(rq.DEPRECATION_MESSAGE_START in msg for msg in messages)
    assert "an unrelated warning" in messages
