"""resnet_edu.models is torchvision.models.resnet: names, signatures, module tree, keys, outputs."""
from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from torchvision.models import resnet as tv

import resnet_edu as rn

NAMES = list(rn.VARIANTS)
SMALL = (2, 3, 64, 64)  # big variants at a small input keep the suite fast


def pair(name: str, **kwargs):
    """Our model and torchvision's, with torchvision's weights copied into ours (strict=True)."""
    ours = getattr(rn, name)(**kwargs)
    ref = getattr(torchvision.models, name)(**kwargs)
    # random but non-trivial BN statistics, so eval mode really exercises them
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def assert_same_outputs(ours, ref, size=SMALL):
    x = torch.randn(size)
    for mode in ("eval", "train"):
        getattr(ours, mode)()
        getattr(ref, mode)()
        with torch.no_grad():
            a, b = ours(x.clone()), ref(x.clone())
        assert torch.equal(a, b), f"{mode} outputs differ: max |diff| {(a - b).abs().max()}"
    # train mode updated the BN running statistics identically
    for (ka, va), (kb, vb) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_public_names_match_torchvision():
    for name in ["conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet", *NAMES]:
        assert hasattr(tv, name), name
        assert hasattr(rn, name), name
    assert set(NAMES) == {n for n in tv.__all__ if n[0].islower()}


@pytest.mark.parametrize("name", ["conv3x3", "conv1x1", *NAMES])
def test_function_signatures_match(name):
    ours, ref = inspect.signature(getattr(rn, name)), inspect.signature(getattr(tv, name))
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in ref.parameters.values()
    ]


@pytest.mark.parametrize("cls", ["BasicBlock", "Bottleneck", "ResNet"])
def test_class_signatures_match(cls):
    ours, ref = inspect.signature(getattr(rn, cls).__init__), inspect.signature(getattr(tv, cls).__init__)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in ref.parameters.values()
    ]
    assert getattr(rn, cls).__dict__.get("expansion") == getattr(tv, cls).__dict__.get("expansion")


@pytest.mark.parametrize("name", NAMES)
def test_variant_is_torchvision_exact(name):
    torch.manual_seed(0)
    ours = getattr(rn, name)()
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)()
    # same module tree, in the same order, with the same types
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == [
        (n, type(m).__name__) for n, m in ref.named_modules()
    ]
    # same keys in the same order, and even the same seeded initialisation
    sa, sb = ours.state_dict(), ref.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "seeded init differs"
    del ours, ref
    ours, ref = pair(name)
    assert_same_outputs(ours, ref)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet18", {"num_classes": 10}),
        ("resnet34", {"zero_init_residual": True}),
        ("resnet50", {"zero_init_residual": True, "num_classes": 7}),
        ("resnet50", {"replace_stride_with_dilation": [False, True, True]}),
        ("resnet101", {"replace_stride_with_dilation": [False, False, True]}),
        ("resnext50_32x4d", {"replace_stride_with_dilation": [True, True, True]}),
        ("wide_resnet50_2", {"num_classes": 3, "zero_init_residual": True}),
        ("resnet50", {"groups": 2, "width_per_group": 32}),
        ("resnet18", {"norm_layer": lambda c: torch.nn.GroupNorm(8, c)}),
    ],
)
def test_kwargs_are_torchvision_exact(name, kwargs):
    torch.manual_seed(1)
    ours = getattr(rn, name)(**kwargs)
    torch.manual_seed(1)
    ref = getattr(torchvision.models, name)(**kwargs)
    sa, sb = ours.state_dict(), ref.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert_same_outputs(ours, ref)


def test_zero_init_residual_zeroes_last_bn():
    m = rn.resnet50(zero_init_residual=True)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in m.modules() if isinstance(b, rn.Bottleneck))
    m = rn.resnet18(zero_init_residual=True)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in m.modules() if isinstance(b, rn.BasicBlock))


def test_dilation_keeps_output_stride():
    x = torch.randn(1, 3, 128, 128)
    for rswd, stride in [([False, False, False], 32), ([False, False, True], 16), ([False, True, True], 8)]:
        m = rn.resnet50(replace_stride_with_dilation=rswd).eval()
        feats = torch.nn.Sequential(*list(m.children())[:-2])
        with torch.no_grad():
            assert feats(x).shape[-1] == 128 // stride


def test_blocks_alone_match_torchvision():
    # without a downsample a block must keep its width: inplanes == planes * expansion (ResNeXt: 32 groups x 4 wide)
    cases = [("BasicBlock", (64, 64)), ("Bottleneck", (256, 64)), ("Bottleneck", (256, 64, 1, None, 32, 4))]
    compared = 0
    for cls, args in cases:
        torch.manual_seed(3)
        a = getattr(rn, cls)(*args)
        torch.manual_seed(3)
        b = getattr(tv, cls)(*args)
        assert a.conv1.in_channels == (a.conv3.out_channels if cls == "Bottleneck" else a.conv2.out_channels), (cls, args)
        x = torch.randn(2, args[0], 8, 8)
        a.eval(); b.eval()
        with torch.no_grad():
            assert torch.equal(a(x.clone()), b(x.clone())), (cls, args)
        compared += 1
    assert compared == len(cases) and rn.Bottleneck(*cases[2][1]).conv2.groups == 32
