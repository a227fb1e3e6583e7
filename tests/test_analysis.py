"""The numbers the book states: model cards (read live from torchvision) and the seed's arithmetic."""
from __future__ import annotations

import pytest
from torchvision.models import get_model_weights

import resnet_edu as rn
from resnet_edu.analysis import paper_gmacs


@pytest.mark.parametrize("name", list(rn.VARIANTS))
def test_params_and_macs_equal_model_card(name):
    meta = get_model_weights(name).DEFAULT.meta
    model = rn.VARIANTS[name]()
    assert rn.count_parameters(model) == meta["num_params"]
    macs = rn.count_macs(model, (1, 3, 224, 224))
    # the card rounds GMACs to 3 decimals (some to 2: resnext50 4.23, resnext101_64x4d 15.46)
    assert round(macs / 1e9, 3) == pytest.approx(meta["_ops"], abs=5e-3)
    assert abs(macs / 1e9 - meta["_ops"]) < 5e-3


def test_resnet50_macs_exact_value():
    assert rn.count_macs(rn.resnet50(), (1, 3, 224, 224)) == 4_089_184_256


def test_macs_scale_with_batch():
    m = rn.resnet18()
    assert rn.count_macs(m, (2, 3, 64, 64)) == 2 * rn.count_macs(m, (1, 3, 64, 64))


def test_bottleneck_arithmetic_from_the_templates():
    bottleneck = [rn.conv1x1(256, 64), rn.conv3x3(64, 64), rn.conv1x1(64, 256)]
    plain = [rn.conv3x3(256, 256), rn.conv3x3(256, 256)]
    b = sum(rn.count_parameters(c) for c in bottleneck)
    p = sum(rn.count_parameters(c) for c in plain)
    assert b == 69_632 == 1 * 1 * 256 * 64 + 3 * 3 * 64 * 64 + 1 * 1 * 64 * 256
    assert p == 1_179_648 == 2 * 3 * 3 * 256 * 256
    assert round(p / b, 2) == 16.94


def test_trace_shapes_resnet50():
    rows = rn.trace_shapes(rn.resnet50(), (1, 3, 224, 224), depth=0)
    shapes = {r["name"]: r["shape"] for r in rows}
    assert [r["name"] for r in rows] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"
    ]
    assert shapes["conv1"] == (1, 64, 112, 112)
    assert shapes["maxpool"] == (1, 64, 56, 56)  # 1/4 of the input side
    assert shapes["layer1"] == (1, 256, 56, 56)
    assert shapes["layer2"] == (1, 512, 28, 28)
    assert shapes["layer3"] == (1, 1024, 14, 14)
    assert shapes["layer4"] == (1, 2048, 7, 7)
    assert shapes["fc"] == (1, 1000)
    assert sum(r["params"] for r in rows if r["name"] != "relu") == 25_557_032


def test_trace_shapes_depth_and_order():
    rows = rn.trace_shapes(rn.resnet18(), (1, 3, 64, 64), depth=1)
    names = [r["name"] for r in rows]
    assert "layer1.0" in names and "layer1.0.conv1" not in names
    assert names.index("layer1.0") < names.index("layer1") < names.index("layer2.0")
    full = rn.trace_shapes(rn.resnet18(), (1, 3, 64, 64))
    assert any(r["name"] == "layer2.0.downsample.0" and r["shape"] == (1, 128, 8, 8) for r in full)


def test_variant_table_rows():
    rows = rn.variant_table((1, 3, 64, 64), names=["resnet18", "resnext50_32x4d", "wide_resnet50_2"])
    by = {r["name"]: r for r in rows}
    assert by["resnet18"]["block"] == "BasicBlock" and by["resnet18"]["layers"] == [2, 2, 2, 2]
    assert (by["resnext50_32x4d"]["groups"], by["resnext50_32x4d"]["width_per_group"]) == (32, 4)
    assert by["wide_resnet50_2"]["width_per_group"] == 128
    assert by["resnet18"]["params"] == 11_689_512
    # MACs grow with the square of the side: 224/64 = 3.5, and only the fc layer does not scale
    assert by["resnet18"]["macs"] == rn.count_macs(rn.resnet18(), (1, 3, 64, 64))


def test_paper_table_is_below_torchvision_for_bottleneck_models():
    # ResNet v1.5 (stride on the 3x3) costs more than the paper's v1 for 50/101/152, not for 18/34
    for name, paper in paper_gmacs.items():
        ours = rn.count_macs(rn.VARIANTS[name](), (1, 3, 224, 224)) / 1e9
        if name in ("resnet18", "resnet34"):
            assert abs(ours - paper) < 0.1
        else:
            assert ours > paper + 0.2
