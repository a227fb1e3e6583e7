"""Bad input gets a clear error that names what was given and what is accepted."""
from __future__ import annotations

import pytest

import resnet_edu as rn


def test_basicblock_groups_or_width():
    with pytest.raises(ValueError, match=r"groups=1 and base_width=64, got groups=2"):
        rn.BasicBlock(64, 64, groups=2)
    with pytest.raises(ValueError, match=r"base_width=128"):
        rn.BasicBlock(64, 64, base_width=128)
    with pytest.raises(ValueError, match="BasicBlock only supports"):
        rn.resnet18(groups=32, width_per_group=4)


def test_basicblock_dilation():
    with pytest.raises(NotImplementedError, match=r"Dilation > 1 not supported in BasicBlock \(got dilation=2\)"):
        rn.BasicBlock(64, 64, dilation=2)
    with pytest.raises(NotImplementedError, match="Bottleneck"):
        rn.resnet18(replace_stride_with_dilation=[False, False, True])


@pytest.mark.parametrize("bad", [[True], [False, False], (True, True, True, True)])
def test_replace_stride_with_dilation_length(bad):
    with pytest.raises(ValueError, match=r"3-element tuple, got"):
        rn.resnet50(replace_stride_with_dilation=bad)


def test_unknown_weights_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET1K_V9' for resnet50; accepted: \['IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT'\]"):
        rn.resnet50(weights="IMAGENET1K_V9")
    from torchvision.models import ResNet18_Weights

    with pytest.raises(ValueError, match="belong to another model"):
        rn.resnet50(weights=ResNet18_Weights.IMAGENET1K_V1)
    with pytest.raises(ValueError, match="weights must be None"):
        rn.resnet18(weights=3)


def test_weights_and_pretrained_together():
    with pytest.raises(ValueError, match=r"both pretrained=True and weights='DEFAULT'"):
        rn.resnet18(weights="DEFAULT", pretrained=True)


def test_weights_names_resolve():
    from torchvision.models import ResNet50_Weights

    assert rn.get_weights("resnet50", "DEFAULT") is ResNet50_Weights.IMAGENET1K_V2
    assert rn.get_weights("resnet50", "IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert rn.get_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2") is ResNet50_Weights.IMAGENET1K_V2
    assert rn.get_weights("resnet50", ResNet50_Weights.IMAGENET1K_V1) is ResNet50_Weights.IMAGENET1K_V1
    assert rn.get_weights("resnet50", None) is None


def test_fixed_hyperparameters_conflict():
    with pytest.raises(ValueError, match="resnext50_32x4d fixes groups=32; got groups=8"):
        rn.resnext50_32x4d(groups=8)


def test_num_classes_conflicts_with_weights():
    with pytest.raises(ValueError, match="num_classes=10 does not fit"):
        rn.resnet18(weights="DEFAULT", num_classes=10)


@pytest.mark.parametrize(
    "size,match",
    [
        ((3, 224, 224), r"4 entries \(N, C, H, W\).*missing the batch dimension"),
        ((1, 1, 224, 224), r"1 channels but the model's first convolution expects 3; use \(1, 3, 224, 224\)"),
        ((1, 3, 0, 224), "must be positive"),
        ((1, 3, -5, 224), "must be positive"),
        ((1, 3, 22.5, 224), "must be integers"),
        ("224", r"4 entries"),
        (None, r"must be \(N, C, H, W\)"),
    ],
)
def test_bad_input_sizes(size, match):
    m = rn.resnet18()
    with pytest.raises(ValueError, match=match):
        rn.count_macs(m, size)
    with pytest.raises(ValueError, match=match):
        rn.trace_shapes(m, size)


def test_input_the_model_cannot_take_is_a_value_error():
    # torchvision's ResNets accept any size down to 1x1 (their meta says min_size (1, 1)); a 7x7
    # convolution without padding does not, and its RuntimeError becomes a ValueError naming the size
    import torch.nn as nn

    assert rn.trace_shapes(rn.resnet18(), (1, 3, 1, 1))[-1]["shape"] == (1, 1000)
    with pytest.raises(ValueError, match=r"cannot run on an input of size \(1, 3, 3, 3\).*may need a larger input"):
        rn.trace_shapes(nn.Sequential(nn.Conv2d(3, 8, 7)), (1, 3, 3, 3))


def test_bad_depth_and_variant():
    with pytest.raises(ValueError, match="depth must be"):
        rn.trace_shapes(rn.resnet18(), (1, 3, 32, 32), depth=-1)
    with pytest.raises(ValueError, match=r"unknown variants \['resnet19'\]"):
        rn.variant_table(names=["resnet19"])
