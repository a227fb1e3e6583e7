"""Part 2, the models (chapter 8): torchvision's quantizable ResNets, rebuilt name for name.

:class:`QuantizableBasicBlock`, :class:`QuantizableBottleneck`, :class:`QuantizableResNet` and ten
builders mirror ``torchvision/models/quantization/resnet.py`` (and its ``utils.py``: ``_replace_relu``,
``quantize_model``): same module tree, same ``state_dict`` keys before and after conversion, the same
int8 outputs after the same post-training quantization. torchvision offers four quantizable variants
(:data:`QUANTIZED_WEIGHTS`); the other six builders here are new. The quantized engines and qconfigs
the builders and the recipes (:mod:`resnet_edu.quantization.eager`) share are here too.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Dict, List, Optional, Type, Union

import torch
import torch.nn as nn
from torch import Tensor

from .. import models as _models
from ..models import BasicBlock, Bottleneck, ResNet, get_weights, load_pretrained_state_dict
from .kernels import activation_bits_for

try:  # torchvision's int8 weights: the same enums torchvision.models.quantization uses
    from torchvision.models.quantization import (
        ResNet18_QuantizedWeights,
        ResNet50_QuantizedWeights,
        ResNeXt101_32X8D_QuantizedWeights,
        ResNeXt101_64X4D_QuantizedWeights,
    )
except ImportError:  # pragma: no cover - torchvision always ships them (>= 0.13)
    raise

__all__ = [
    "QuantizableBasicBlock",
    "QuantizableBottleneck",
    "QuantizableResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "QUANTIZABLE_VARIANTS",
    "QUANTIZED_WEIGHTS",
    "ResNet18_QuantizedWeights",
    "ResNet50_QuantizedWeights",
    "ResNeXt101_32X8D_QuantizedWeights",
    "ResNeXt101_64X4D_QuantizedWeights",
    "get_quantized_weights",
    "quantize_model",
    "BACKENDS",
    "check_backend",
    "get_qconfig",
    "make_qconfig",
]


def _replace_relu(module: nn.Module) -> None:
    """Replace every ``nn.ReLU``/``nn.ReLU6`` (exact type) by ``nn.ReLU(inplace=False)``, recursively.

    In-place ReLUs cannot be observed or fused cleanly, so torchvision swaps them before quantizing.
    """
    reassign = {}
    for name, mod in module.named_children():
        _replace_relu(mod)
        # exact type check: only plain ReLU/ReLU6 modules, not subclasses
        if type(mod) is nn.ReLU or type(mod) is nn.ReLU6:
            reassign[name] = nn.ReLU(inplace=False)

    for key, value in reassign.items():
        module._modules[key] = value


def _fuse_modules(
    model: nn.Module, modules_to_fuse: Union[List[str], List[List[str]]], is_qat: Optional[bool], **kwargs: Any
):
    """``fuse_modules`` (inference) or ``fuse_modules_qat`` (training), chosen by ``is_qat`` or the mode."""
    if is_qat is None:
        is_qat = model.training
    method = torch.ao.quantization.fuse_modules_qat if is_qat else torch.ao.quantization.fuse_modules
    return method(model, modules_to_fuse, **kwargs)


class QuantizableBasicBlock(BasicBlock):
    """BasicBlock whose residual add is a ``FloatFunctional``: ``add_relu`` works on quantized tensors.

    ``out += identity`` calls ``aten::add``, which has no kernel for quantized tensors (the two inputs
    have different scales, so the sum needs a requantization). ``FloatFunctional.add_relu`` is an
    observable add (+ ReLU) that ``convert`` swaps for ``QFunctional``, which knows the output scale.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_relu = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = self.add_relu.add_relu(out, identity)

        return out

    def fuse_model(self, is_qat: Optional[bool] = None) -> None:
        """Fuse conv1+bn1+relu and conv2+bn2 (and the downsample conv+bn) in place."""
        _fuse_modules(self, [["conv1", "bn1", "relu"], ["conv2", "bn2"]], is_qat, inplace=True)
        if self.downsample:
            _fuse_modules(self.downsample, ["0", "1"], is_qat, inplace=True)


class QuantizableBottleneck(Bottleneck):
    """Bottleneck with ``skip_add_relu`` and two separate ReLUs (``relu1``, ``relu2``).

    The float Bottleneck reuses one ``self.relu`` three times; fusion needs one ReLU module per
    conv+bn pair, so ``relu1`` and ``relu2`` follow conv1/bn1 and conv2/bn2, and the third ReLU is
    folded into the quantized add. ``self.relu`` stays (unused) so the module tree matches torchvision.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_add_relu = torch.ao.nn.quantized.FloatFunctional()
        self.relu1 = nn.ReLU(inplace=False)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu1(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu2(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            identity = self.downsample(x)
        out = self.skip_add_relu.add_relu(out, identity)

        return out

    def fuse_model(self, is_qat: Optional[bool] = None) -> None:
        """Fuse conv1+bn1+relu1, conv2+bn2+relu2, conv3+bn3 (and the downsample conv+bn) in place."""
        _fuse_modules(
            self, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["conv3", "bn3"]], is_qat, inplace=True
        )
        if self.downsample:
            _fuse_modules(self.downsample, ["0", "1"], is_qat, inplace=True)


class QuantizableResNet(ResNet):
    """ResNet with a ``QuantStub`` before the stem and a ``DeQuantStub`` after ``fc``.

    The stubs mark where float tensors become quantized and back: after ``convert`` the first
    quantizes the input with the scale its observer measured, the second dequantizes the logits.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant(x)
        # Ensure scriptability
        # super(QuantizableResNet,self).forward(x)
        # is not scriptable
        x = self._forward_impl(x)
        x = self.dequant(x)
        return x

    def fuse_model(self, is_qat: Optional[bool] = None) -> None:
        r"""Fuse conv/bn/relu modules in resnet models

        Fuse conv+bn+relu/ Conv+relu/conv+Bn modules to prepare for quantization.
        Model is modified in place.  Note that this operation does not change numerics
        and the model after modification is in floating point
        """
        _fuse_modules(self, ["conv1", "bn1", "relu"], is_qat, inplace=True)
        for m in self.modules():
            if type(m) is QuantizableBottleneck or type(m) is QuantizableBasicBlock:
                m.fuse_model(is_qat)


# --------------------------------------------------------------------------------------------------
# Backends and qconfigs
# --------------------------------------------------------------------------------------------------
BACKENDS = ("x86", "fbgemm", "onednn", "qnnpack")
"""Quantized engines the eager recipes accept (those of them this PyTorch build supports)."""


def check_backend(backend: Any) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS` and this PyTorch build supports it."""
    supported = [b for b in BACKENDS if b in torch.backends.quantized.supported_engines]
    if backend not in supported:
        raise ValueError(
            f"unknown or unsupported quantization backend {backend!r}; accepted here: {', '.join(supported)} "
            "(x86, fbgemm and onednn for x86 CPUs, qnnpack for ARM/mobile and x86)"
        )
    return backend


def get_qconfig(backend: str = "x86", qat: bool = False, recipe: str = "default") -> torch.ao.quantization.QConfig:
    """The qconfig (activation observer + weight observer) for ``backend``.

    ``recipe="default"``: PyTorch's ``get_default_qconfig(backend)`` (``get_default_qat_qconfig`` when
    ``qat``): for x86/fbgemm a ``HistogramObserver`` with ``reduce_range=True`` for activations (7-bit,
    see chapter 7) and symmetric per-channel int8 weights; for qnnpack 8-bit activations and per-tensor
    weights. One change, chapter 7's rule: PyTorch's onednn qconfig keeps 8-bit activations (made for
    VNNI), and where oneDNN's kernel on this CPU sums ``vpmaddubsw``'s int16 pairs (no VNNI) they
    saturate, so there the activations get ``reduce_range=True`` (measured on the digits model with oneDNN
    capped to AVX2: 8-bit lost 0.67 accuracy points, 7-bit 0.22). ``recipe="torchvision"``: the qconfig ``torchvision.models.quantization`` uses for its
    published int8 weights (``MinMaxObserver`` with range 0..127, per-channel weights on fbgemm/x86).
    """
    check_backend(backend)
    from torch.ao.quantization import QConfig, default_observer, default_per_channel_weight_observer, default_weight_observer

    if recipe == "default":
        maker = torch.ao.quantization.get_default_qat_qconfig if qat else torch.ao.quantization.get_default_qconfig
        if backend != "onednn" or activation_bits_for("onednn") != 7:
            return maker(backend)
        with warnings.catch_warnings():  # PyTorch warns of what the next line fixes: 8-bit activations without VNNI
            warnings.filterwarnings("ignore", message=r"Default qconfig of oneDNN backend with reduce_range of false", category=UserWarning)
            qconfig = maker(backend)
        return QConfig(activation=qconfig.activation.with_args(reduce_range=True), weight=qconfig.weight)
    if recipe == "torchvision":
        if qat:
            return torch.ao.quantization.get_default_qat_qconfig(backend)
        weight = default_weight_observer if backend == "qnnpack" else default_per_channel_weight_observer
        return QConfig(activation=default_observer, weight=weight)
    raise ValueError(f"unknown qconfig recipe {recipe!r}; accepted: 'default', 'torchvision'")


def make_qconfig(weight_bits: int = 8, activation_bits: int = 7, qat: bool = False) -> torch.ao.quantization.QConfig:
    """A qconfig with fewer bits, stored in the usual int8 containers (what low-bit experiments need).

    Weights: symmetric per channel with integers ``[-2**(b-1), 2**(b-1) - 1]``; activations: affine
    with ``[0, 2**b - 1]`` (``activation_bits=7`` is exactly fbgemm's ``reduce_range``). PTQ uses a
    histogram observer for activations and a min-max observer for weights; ``qat=True`` gives
    fake-quantize modules with moving-average observers instead. The converted model runs on the
    normal int8 kernels; only the integer range each tensor may use is narrower.
    """
    from torch.ao.quantization import FakeQuantize, HistogramObserver, MovingAverageMinMaxObserver
    from torch.ao.quantization.observer import MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver

    for name, b in (("weight_bits", weight_bits), ("activation_bits", activation_bits)):
        if not isinstance(b, int) or isinstance(b, bool) or not 2 <= b <= 8:
            raise ValueError(f"{name} must be an integer from 2 to 8, got {b!r}")
    w_range = dict(quant_min=-(2 ** (weight_bits - 1)), quant_max=2 ** (weight_bits - 1) - 1, dtype=torch.qint8)
    a_range = dict(quant_min=0, quant_max=2**activation_bits - 1, dtype=torch.quint8)
    if qat:
        return torch.ao.quantization.QConfig(
            activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **a_range),
            weight=FakeQuantize.with_args(
                observer=MovingAveragePerChannelMinMaxObserver, qscheme=torch.per_channel_symmetric, ch_axis=0, **w_range
            ),
        )
    return torch.ao.quantization.QConfig(
        activation=HistogramObserver.with_args(**a_range),
        weight=PerChannelMinMaxObserver.with_args(qscheme=torch.per_channel_symmetric, **w_range),
    )


def quantize_model(model: nn.Module, backend: str) -> None:
    """torchvision's ``quantize_model``: fuse, qconfig, prepare, one random 299x299 image, convert (in place).

    This is what ``quantize=True`` does before loading published int8 weights: it only creates the
    quantized modules (their scales are overwritten by the weights). For a model worth running, calibrate
    on real data with :func:`.quantize_ptq`.
    """
    check_backend(backend)
    _dummy_input_data = torch.rand(1, 3, 299, 299)
    torch.backends.quantized.engine = backend
    model.eval()
    # Make sure that weight qconfig matches that of the serialized models
    model.qconfig = get_qconfig(backend, recipe="torchvision")  # type: ignore[assignment]
    model.fuse_model()  # type: ignore[operator]
    torch.ao.quantization.prepare(model, inplace=True)
    model(_dummy_input_data)
    torch.ao.quantization.convert(model, inplace=True)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------
QUANTIZED_WEIGHTS = {
    "resnet18": ResNet18_QuantizedWeights,
    "resnet50": ResNet50_QuantizedWeights,
    "resnext101_32x8d": ResNeXt101_32X8D_QuantizedWeights,
    "resnext101_64x4d": ResNeXt101_64X4D_QuantizedWeights,
}
"""torchvision's published int8 weights, by architecture (only these four exist)."""


def get_quantized_weights(arch: str, weights: Any, quantize: bool) -> Optional[Any]:
    """Resolve ``weights=`` for a quantizable builder, as torchvision's ``verify`` does, with clear errors.

    With ``quantize=False`` this is :func:`resnet_edu.models.get_weights` (FP32 enums). With
    ``quantize=True`` the int8 enum of :data:`QUANTIZED_WEIGHTS`: a member, its name, ``"DEFAULT"`` or
    ``"ResNet18_QuantizedWeights.<name>"``.
    """
    if not quantize:
        return get_weights(arch, weights)
    if arch not in _models.WEIGHTS:
        raise ValueError(f"unknown architecture {arch!r}; accepted: {', '.join(_models.WEIGHTS)}")
    if weights is None:
        return None
    if arch not in QUANTIZED_WEIGHTS:
        raise ValueError(
            f"torchvision publishes int8 weights only for {', '.join(QUANTIZED_WEIGHTS)}, not {arch}. "
            f"Build {arch}(weights=<FP32 weights>, quantize=False) and quantize it with quantize_ptq(model, calibration_batches)"
        )
    enum = QUANTIZED_WEIGHTS[arch]
    valid = [m.name for m in enum] + ["DEFAULT"]
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, _models.WeightsEnum):
        raise ValueError(
            f"quantize=True needs int8 weights {enum.__name__}.<name> with <name> one of {valid}; got {weights}. "
            "Pass quantize=False for FP32 weights"
        )
    if isinstance(weights, str):
        name = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
        if name == "DEFAULT":
            return enum.DEFAULT  # type: ignore[attr-defined]
        if name in enum.__members__:
            return enum[name]
        raise ValueError(f"unknown int8 weights {weights!r} for {arch}; accepted: {valid} (or None)")
    raise ValueError(
        f"weights must be None, a {enum.__name__} member or one of the names {valid}; got {type(weights).__name__} {weights!r}"
    )


def _overwrite_named_param(kwargs: Dict[str, Any], param: str, new_value: Any, what: str) -> None:
    if param in kwargs and kwargs[param] != new_value:
        raise ValueError(f"{param}={kwargs[param]!r} does not fit {what}, which need {param}={new_value!r}")
    kwargs[param] = new_value


def _resnet(
    block: Type[Union[QuantizableBasicBlock, QuantizableBottleneck]],
    layers: List[int],
    weights: Optional[Any],
    progress: bool,
    quantize: bool,
    **kwargs: Any,
) -> QuantizableResNet:
    if weights is not None:
        _overwrite_named_param(kwargs, "num_classes", len(weights.meta["categories"]), f"the pretrained weights {weights}")
        if "backend" in weights.meta:
            _overwrite_named_param(kwargs, "backend", weights.meta["backend"], f"the int8 weights {weights}")
    backend = check_backend(kwargs.pop("backend", "fbgemm"))

    model = QuantizableResNet(block, layers, **kwargs)
    _replace_relu(model)
    if quantize:
        quantize_model(model, backend)

    if weights is not None:
        model.load_state_dict(load_pretrained_state_dict(weights, progress=progress))

    return model


def _qbuilder(arch: str) -> Callable[[Callable[..., QuantizableResNet]], Callable[..., QuantizableResNet]]:
    """Resolve ``weights=`` (and torchvision's legacy ``pretrained=``) for the quantizable builders."""

    def decorate(fn: Callable[..., QuantizableResNet]) -> Callable[..., QuantizableResNet]:
        @functools.wraps(fn)
        def wrapper(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
            if not isinstance(quantize, bool):
                raise ValueError(f"quantize must be True or False, got {quantize!r}")
            if "pretrained" in kwargs:
                pretrained = kwargs.pop("pretrained")
                if pretrained and weights is not None:
                    raise ValueError(f"{arch}: got both pretrained={pretrained!r} and weights={weights!r}; use only weights=")
                if pretrained:
                    warnings.warn(
                        "pretrained=True is deprecated (torchvision >= 0.13); use weights= instead.", UserWarning, stacklevel=2
                    )
                    weights = "IMAGENET1K_FBGEMM_V1" if quantize else "IMAGENET1K_V1"
            return fn(weights=get_quantized_weights(arch, weights, quantize), progress=progress, quantize=quantize, **kwargs)

        return wrapper

    return decorate


def _fixed(kwargs: Dict[str, Any], name: str, value: Any, arch: str) -> None:
    _models._fixed(kwargs, name, value, arch)


@_qbuilder("resnet18")
def resnet18(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNet-18; ``quantize=True`` returns the converted int8 model (as torchvision's)."""
    return _resnet(QuantizableBasicBlock, [2, 2, 2, 2], weights, progress, quantize, **kwargs)


@_qbuilder("resnet34")
def resnet34(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNet-34 (not in torchvision; FP32 weights only)."""
    return _resnet(QuantizableBasicBlock, [3, 4, 6, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnet50")
def resnet50(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNet-50; ``quantize=True`` returns the converted int8 model (as torchvision's)."""
    return _resnet(QuantizableBottleneck, [3, 4, 6, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnet101")
def resnet101(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNet-101 (not in torchvision; FP32 weights only)."""
    return _resnet(QuantizableBottleneck, [3, 4, 23, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnet152")
def resnet152(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNet-152 (not in torchvision; FP32 weights only)."""
    return _resnet(QuantizableBottleneck, [3, 8, 36, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnext50_32x4d")
def resnext50_32x4d(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNeXt-50 32x4d (not in torchvision; FP32 weights only)."""
    _fixed(kwargs, "groups", 32, "resnext50_32x4d")
    _fixed(kwargs, "width_per_group", 4, "resnext50_32x4d")
    return _resnet(QuantizableBottleneck, [3, 4, 6, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnext101_32x8d")
def resnext101_32x8d(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNeXt-101 32x8d; ``quantize=True`` returns the converted int8 model (as torchvision's)."""
    _fixed(kwargs, "groups", 32, "resnext101_32x8d")
    _fixed(kwargs, "width_per_group", 8, "resnext101_32x8d")
    return _resnet(QuantizableBottleneck, [3, 4, 23, 3], weights, progress, quantize, **kwargs)


@_qbuilder("resnext101_64x4d")
def resnext101_64x4d(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable ResNeXt-101 64x4d; ``quantize=True`` returns the converted int8 model (as torchvision's)."""
    _fixed(kwargs, "groups", 64, "resnext101_64x4d")
    _fixed(kwargs, "width_per_group", 4, "resnext101_64x4d")
    return _resnet(QuantizableBottleneck, [3, 4, 23, 3], weights, progress, quantize, **kwargs)


@_qbuilder("wide_resnet50_2")
def wide_resnet50_2(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable Wide ResNet-50-2 (not in torchvision; FP32 weights only)."""
    _fixed(kwargs, "width_per_group", 64 * 2, "wide_resnet50_2")
    return _resnet(QuantizableBottleneck, [3, 4, 6, 3], weights, progress, quantize, **kwargs)


@_qbuilder("wide_resnet101_2")
def wide_resnet101_2(*, weights: Any = None, progress: bool = True, quantize: bool = False, **kwargs: Any) -> QuantizableResNet:
    """Quantizable Wide ResNet-101-2 (not in torchvision; FP32 weights only)."""
    _fixed(kwargs, "width_per_group", 64 * 2, "wide_resnet101_2")
    return _resnet(QuantizableBottleneck, [3, 4, 23, 3], weights, progress, quantize, **kwargs)


QUANTIZABLE_VARIANTS: Dict[str, Callable[..., QuantizableResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnext50_32x4d": resnext50_32x4d,
    "resnext101_32x8d": resnext101_32x8d,
    "resnext101_64x4d": resnext101_64x4d,
    "wide_resnet50_2": wide_resnet50_2,
    "wide_resnet101_2": wide_resnet101_2,
}
"""Every quantizable builder by name (torchvision has the four of :data:`QUANTIZED_WEIGHTS`)."""
