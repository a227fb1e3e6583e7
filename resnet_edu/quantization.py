"""INT8 ResNet: torchvision's quantizable models rebuilt, three ways to quantize them, and the arithmetic.

Four parts, in the order the book teaches them:

1. **First principles** (chapter 7): affine quantization written out (:func:`qparams`,
   :func:`quantize_tensor`, :func:`fake_quantize`), the error measure (:func:`sqnr_db`), and
   :func:`reference_qconv2d`, a quantized convolution computed with integer accumulation and fbgemm's
   requantization, equal bit for bit to PyTorch's kernel.
2. **The models** (chapter 8): :class:`QuantizableBasicBlock`, :class:`QuantizableBottleneck`,
   :class:`QuantizableResNet` and ten builders. They mirror ``torchvision.models.quantization.resnet``
   name for name: same module tree, same ``state_dict`` keys before and after conversion, the same int8
   outputs after the same post-training quantization (``tests/test_quantization.py`` checks all three).
   torchvision offers four quantizable variants; the other six builders here are new.
3. **Eager-mode recipes** (chapter 8): :func:`quantize_ptq` (fuse, qconfig, observers, calibration,
   convert), :func:`quantize_qat` (fake quantization while training a few epochs), and
   :func:`layer_sensitivity` (quantize one layer at a time).
4. **PT2E with torchao** (chapter 9): :func:`quantize_pt2e` (``torch.export`` with ``strict=True``,
   ``prepare_pt2e`` with ``X86InductorQuantizer``, calibration, ``convert_pt2e``, dropping the
   leftover FP32 weights, ``torch.compile``).

Status, stated plainly: ``torch.ao.quantization`` (eager mode, used in parts 2-3) still ships in torch
2.14 but every ``prepare``/``convert`` warns that it "is deprecated and will be removed"; the maintained
path is torchao's PT2E flow (part 4), installed with the optional extra ``resnet-edu[pt2e]``.

The benchmark (:mod:`resnet_edu.bench`) uses :data:`BENCH_FLOWS` and :func:`model_size_mb`.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import math
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from torch import Tensor

from . import models as _models
from .models import BasicBlock, Bottleneck, ResNet, get_weights, load_pretrained_state_dict

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
    # first principles
    "qparams",
    "quantize_tensor",
    "dequantize_tensor",
    "fake_quantize",
    "sqnr_db",
    "reference_qconv2d",
    "SCHEMES",
    # models
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
    # recipes
    "BACKENDS",
    "check_backend",
    "get_qconfig",
    "make_qconfig",
    "to_quantizable",
    "to_torchvision_quantizable",
    "calibrate",
    "quantize_ptq",
    "quantize_qat",
    "layer_sensitivity",
    "QuantizedRunner",
    "capture_io",
    "residual_scales",
    "compare_latency",
    # PT2E
    "pt2e_available",
    "export_for_pt2e",
    "quantize_pt2e",
    "drop_unused_attributes",
    "FrozenInductorModule",
    "quantized_op_counts",
    # sizes, benchmark, warnings
    "model_size_mb",
    "BENCH_FLOWS",
    "silence_known_warnings",
    "DEPRECATION_MESSAGE_START",
]

DEPRECATION_MESSAGE_START = "torch.ao.quantization is deprecated"
"""How torch.ao.quantization's deprecation warning begins (torch 2.10 and later)."""


# ==================================================================================================
# 1. First principles: affine quantization, its error, and the integer-only convolution
# ==================================================================================================
SCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")
"""The four quantization schemes :func:`fake_quantize` understands."""


def _check_bits(bits: Any) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    return bits


def qparams(
    x_min: Union[float, Tensor], x_max: Union[float, Tensor], bits: int = 8, symmetric: bool = False, signed: bool = False
) -> Tuple[Tensor, Tensor, int, int]:
    """Scale and zero point that map ``[x_min, x_max]`` onto the integers ``[qmin, qmax]``.

    Returns ``(scale, zero_point, qmin, qmax)``. The formulas are those of PyTorch's ``MinMaxObserver``:
    the range is first widened to include 0 (so that real 0, e.g. padding and ReLU outputs, is exactly
    representable), then

    * affine: ``scale = (max - min) / (qmax - qmin)``, ``zero_point = qmin - round(min / scale)``;
    * symmetric: ``scale = max(|min|, |max|) / ((qmax - qmin) / 2)``, zero point in the middle of the
      range (0 for signed integers, ``2**(bits-1)`` for unsigned).

    ``x_min``/``x_max`` may be tensors (one entry per channel for per-channel quantization).
    ``signed=False`` gives ``[0, 2**bits - 1]`` (like quint8), ``signed=True`` ``[-2**(bits-1), 2**(bits-1) - 1]``.
    """
    bits = _check_bits(bits)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    lo = torch.clamp(torch.as_tensor(x_min, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(x_max, dtype=torch.float32), min=0.0)
    if bool((lo > hi).any()):
        raise ValueError(f"x_min must not exceed x_max, got x_min={x_min!r}, x_max={x_max!r}")
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = torch.clamp(amax / (float(qmax - qmin) / 2), min=eps)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2, dtype=torch.int64)
    else:
        scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(lo / scale).to(torch.int64), qmin, qmax)
    return scale, zero_point, qmin, qmax


def quantize_tensor(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` as an int64 tensor (round half to even).

    Like PyTorch's kernels, it multiplies by the float32 inverse ``1 / scale`` instead of dividing
    (cheaper, and the results then agree bit for bit; the two can differ on exact ties).
    """
    inv_scale = 1.0 / torch.as_tensor(scale, dtype=torch.float32)
    return torch.clamp(torch.round(x * inv_scale).to(torch.int64) + zero_point, qmin, qmax)


def dequantize_tensor(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """``x_hat = (q - zero_point) * scale``: the real number each integer stands for."""
    return (q - zero_point).to(torch.float32) * scale


def fake_quantize(x: Tensor, bits: int = 8, scheme: str = "per_tensor_affine", axis: int = 0) -> Tensor:
    """Quantize then dequantize ``x`` (min/max calibrated on ``x`` itself): what the network "sees".

    ``scheme`` is one of :data:`SCHEMES`. Per-channel schemes use one scale per index of ``axis``
    (the output channel of a conv weight is ``axis=0``). Affine schemes use unsigned integers,
    symmetric ones signed integers, as PyTorch does for activations (quint8) and weights (qint8).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; accepted: {', '.join(SCHEMES)}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
    symmetric = scheme.endswith("symmetric")
    if scheme.startswith("per_channel"):
        if x.dim() < 1 or not -x.dim() <= axis < x.dim():
            raise ValueError(f"axis={axis} is out of range for a tensor of shape {tuple(x.shape)}")
        axis = axis % x.dim()
        flat = x.transpose(0, axis).reshape(x.shape[axis], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zp, qmin, qmax = qparams(lo, hi, bits, symmetric=symmetric, signed=symmetric)
        scale, zp = scale.view(shape), zp.view(shape)
    else:
        scale, zp, qmin, qmax = qparams(x.min(), x.max(), bits, symmetric=symmetric, signed=symmetric)
    return dequantize_tensor(quantize_tensor(x, scale, zp, qmin, qmax), scale, zp)


def sqnr_db(reference: Tensor, approximation: Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - approx)^2))`` in dB.

    Each extra bit buys about 6 dB; ``inf`` means the approximation is exact. A quantized tensor is
    dequantized first.
    """
    ref = reference.dequantize() if reference.is_quantized else reference
    app = approximation.dequantize() if approximation.is_quantized else approximation
    if ref.shape != app.shape:
        raise ValueError(f"shapes differ: reference {tuple(ref.shape)} vs approximation {tuple(app.shape)}")
    ref, app = ref.detach().double(), app.detach().double()
    noise = (ref - app).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def reference_qconv2d(qconv: nn.Module, qx: Tensor, saturate_int16_pairs: bool = False) -> Tensor:
    """A converted quantized conv, recomputed with integer accumulation: ``int_repr()`` equals the module's.

    ``qconv`` is a ``torch.ao.nn.quantized.Conv2d`` (or the fused ``ConvReLU2d``) as produced by
    ``convert``; ``qx`` a per-tensor ``quint8`` tensor. The steps are those of fbgemm's kernel:

    1. **int32 accumulation**: ``acc = sum((qx - zx) * (qw - zw))`` over the input channels of the group
       and the kernel positions (im2col order: kernel row, kernel column, channel); padding holds ``zx``,
       i.e. real 0, so it adds nothing.
    2. **requantization**: with ``s = float32(sx) * float32(sw[oc])`` (per output channel) the kernel
       computes ``y = (float32(acc) + bias / s) * (s / float32(so))`` in float32, exactly as fbgemm's
       ``ReQuantizeOutput`` does (the bias stays in float; fbgemm never quantizes it to int32).
    3. **rounding** half to even into an int32 (``cvtps_epi32``; a value beyond the int32 range comes
       out as ``INT32_MIN``, so absurdly large outputs clamp to 0, not 255) and adding ``zo``;
    4. **clamping** to ``[0, 255]`` (``[zo, 255]`` when a ReLU is fused).

    Exact on the fbgemm engine and on the x86 engine where it dispatches to fbgemm (CPUs without
    AVX512-VNNI) as long as no int16 pair saturates: guaranteed while the input integers stay in
    0..127 (``2 * 127 * 128 = 32512 <= 32767``), which ``reduce_range=True`` gives every activation
    inside its calibrated range. (An activation beyond that range still quantizes up to 255.)

    ``saturate_int16_pairs=True`` emulates AVX2's ``vpmaddubsw`` instead: the raw ``uint8 * int8``
    products of neighbouring K positions (pairs ``k, k+1`` for even ``k``) are added into an int16 that
    saturates at -32768/32767, and the zero-point corrections are applied afterwards. That reproduces
    fbgemm on AVX2 CPUs even with 8-bit activations (``reduce_range=False``); only for ``groups=1``.
    """
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d as QConv2d

    if not isinstance(qconv, QConv2d):
        raise ValueError(
            f"qconv must be a converted torch.ao.nn.quantized.Conv2d (or intrinsic ConvReLU2d), got {type(qconv).__name__}; "
            "run prepare/calibrate/convert first"
        )
    if not isinstance(qx, Tensor) or not qx.is_quantized or qx.dtype != torch.quint8:
        raise ValueError(f"qx must be a quint8 quantized tensor, got {getattr(qx, 'dtype', type(qx).__name__)}")
    if qx.qscheme() != torch.per_tensor_affine:
        raise ValueError(f"qx must be quantized per tensor (torch.per_tensor_affine), got {qx.qscheme()}")
    if qx.dim() != 4 or qx.shape[1] != qconv.in_channels:
        raise ValueError(f"qx must have shape (N, {qconv.in_channels}, H, W), got {tuple(qx.shape)}")
    if qconv.padding_mode != "zeros":
        raise ValueError(f"only padding_mode='zeros' is supported, got {qconv.padding_mode!r}")
    if saturate_int16_pairs and qconv.groups != 1:
        raise ValueError(f"saturate_int16_pairs emulates fbgemm's im2col GEMM, used for groups=1 only; got groups={qconv.groups}")
    fused_relu = isinstance(qconv, ConvReLU2d)

    w = qconv.weight()  # qint8, (O, C/groups, kh, kw)
    bias = qconv.bias()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        w_scale = w.q_per_channel_scales().to(torch.float32)
        w_zp = w.q_per_channel_zero_points().to(torch.int64)
    else:
        w_scale = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float32)
        w_zp = torch.full((w.shape[0],), w.q_zero_point(), dtype=torch.int64)

    # im2col on the raw integers: A is (N*Ho*Wo, groups, K), B is (groups, O/groups, K), K = kh*kw*C/groups
    zx = int(qx.q_zero_point())
    x_raw = qx.int_repr().to(torch.int64)
    w_raw = w.int_repr().to(torch.int64)
    (sh, sw), (ph, pw), (dh, dw), g = qconv.stride, qconv.padding, qconv.dilation, qconv.groups
    n, c, h, wd = x_raw.shape
    o, cg, kh, kw = w_raw.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input {tuple(qx.shape)} is too small for this convolution")
    x_pad = torch.nn.functional.pad(x_raw, (pw, pw, ph, ph), value=zx)
    taps = [
        x_pad[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]  # kh*kw tensors of shape (N, C, Ho, Wo)
    a = torch.stack(taps, 1).view(n, kh * kw, g, cg, ho, wo).permute(0, 4, 5, 2, 1, 3).reshape(n * ho * wo, g, -1)
    b = w_raw.view(g, o // g, cg, kh, kw).permute(0, 1, 3, 4, 2).reshape(g, o // g, -1)
    zw = w_zp.view(g, o // g)

    # 1. integer accumulation (int64 here, checked to fit the kernel's int32 accumulator)
    if not saturate_int16_pairs:
        acc = torch.einsum("mgk,gok->mgo", a - zx, b - zw.unsqueeze(-1))
    else:
        a2, b2 = a[:, 0], b[0]  # groups == 1
        if a2.shape[1] % 2:  # K is padded to a multiple of the pair size with zeros
            a2 = torch.nn.functional.pad(a2, (0, 1))
            b2 = torch.nn.functional.pad(b2, (0, 1))
        acc2 = torch.zeros(a2.shape[0], b2.shape[0], dtype=torch.int64)
        for k in range(0, a2.shape[1], 2):
            pair = a2[:, k : k + 1] * b2[:, k] + a2[:, k + 1 : k + 2] * b2[:, k + 1]
            acc2 += pair.clamp(-(2**15), 2**15 - 1)
        k_real = a.shape[2]
        acc2 = acc2 - zx * b[0].sum(1) - a[:, 0].sum(1, keepdim=True) * zw[0] + k_real * zx * zw[0]
        acc = acc2.unsqueeze(1)
    acc = acc.reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    if acc.abs().max() >= 2**31:
        raise OverflowError("the int32 accumulator would overflow for this input")

    # 2. requantization in float32, as fbgemm's ReQuantizeOutput does it
    act_times_w_scale = torch.tensor(qx.q_scale(), dtype=torch.float32) * w_scale  # float32 product
    multiplier = act_times_w_scale / torch.tensor(qconv.scale, dtype=torch.float32)
    y = acc.to(torch.float32)
    if bias is not None:
        y = y + (bias.detach().to(torch.float32) / act_times_w_scale).view(1, -1, 1, 1)
    y = y * multiplier.view(1, -1, 1, 1)
    # 3. rounding half to even into an int32 (like cvtps_epi32: a value outside the int32 range becomes
    #    INT32_MIN), plus the output zero point; 4. clamping
    zo = int(qconv.zero_point)
    in_range = (y >= -(2.0**31)) & (y < 2.0**31)
    q = torch.where(in_range, torch.round(y), torch.tensor(-(2.0**31))).to(torch.int64) + zo
    q = torch.clamp(q, zo if fused_relu else 0, 255).to(torch.uint8)
    return torch._make_per_tensor_quantized_tensor(q, float(qconv.scale), zo)


# ==================================================================================================
# 2. The quantizable models (mirror torchvision/models/quantization/resnet.py and utils.py)
# ==================================================================================================
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
BACKENDS = ("x86", "fbgemm", "qnnpack")
"""Quantized engines the eager recipes accept (``onednn`` is left out: its eager numerics differ)."""


def check_backend(backend: Any) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS` and this PyTorch build supports it."""
    supported = [b for b in BACKENDS if b in torch.backends.quantized.supported_engines]
    if backend not in supported:
        raise ValueError(
            f"unknown or unsupported quantization backend {backend!r}; accepted here: {', '.join(supported)} "
            "(x86 and fbgemm for x86 CPUs, qnnpack for ARM/mobile)"
        )
    return backend


def get_qconfig(backend: str = "x86", qat: bool = False, recipe: str = "default") -> torch.ao.quantization.QConfig:
    """The qconfig (activation observer + weight observer) for ``backend``.

    ``recipe="default"``: PyTorch's ``get_default_qconfig(backend)`` (``get_default_qat_qconfig`` when
    ``qat``): for x86/fbgemm a ``HistogramObserver`` with ``reduce_range=True`` for activations (7-bit,
    see chapter 7) and symmetric per-channel int8 weights; for qnnpack 8-bit activations and per-tensor
    weights. ``recipe="torchvision"``: the qconfig ``torchvision.models.quantization`` uses for its
    published int8 weights (``MinMaxObserver`` with range 0..127, per-channel weights on fbgemm/x86).
    """
    check_backend(backend)
    from torch.ao.quantization import QConfig, default_observer, default_per_channel_weight_observer, default_weight_observer

    if recipe == "default":
        maker = torch.ao.quantization.get_default_qat_qconfig if qat else torch.ao.quantization.get_default_qconfig
        return maker(backend)
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
    on real data with :func:`quantize_ptq`.
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


# ==================================================================================================
# 3. Eager-mode recipes: FP32 model -> quantizable copy -> PTQ / QAT; one layer at a time
# ==================================================================================================
def _resnet_config(model: nn.Module) -> Dict[str, Any]:
    """The constructor arguments of a (resnet_edu or torchvision) ResNet, read off the module tree."""
    import torchvision.models.resnet as tvr

    if not isinstance(model, (ResNet, tvr.ResNet)):
        raise ValueError(
            f"expected a ResNet (resnet_edu.models.ResNet or torchvision's), got {type(model).__name__}"
        )
    norms = [model.bn1] + [
        m for blk in model.modules() if isinstance(blk, (BasicBlock, Bottleneck, tvr.BasicBlock, tvr.Bottleneck))
        for m in (getattr(blk, "bn1", None), getattr(blk, "bn2", None), getattr(blk, "bn3", None)) if m is not None
    ]
    for m in norms:
        if type(m) is not nn.BatchNorm2d:
            raise ValueError(f"only BatchNorm2d can be fused into convolutions, found {type(m).__name__}")
    first = model.layer1[0]
    bottleneck = hasattr(first, "conv3")
    strided = "conv2" if bottleneck else "conv1"
    return {
        "bottleneck": bottleneck,
        "layers": [len(getattr(model, f"layer{i}")) for i in range(1, 5)],
        "num_classes": model.fc.out_features,
        "groups": model.groups,
        "width_per_group": model.base_width,
        "replace_stride_with_dilation": [getattr(getattr(model, f"layer{i}")[0], strided).stride[0] == 1 for i in (2, 3, 4)],
    }


def _build_like(model: nn.Module, resnet_cls: type, basic: type, bottleneck: type) -> nn.Module:
    cfg = _resnet_config(model)
    # Build on the meta device (no memory, no init loop, no RNG use), then allocate and copy every
    # parameter and buffer from the float model: load_state_dict(strict=True) leaves nothing uninitialized.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        q = resnet_cls(
            bottleneck if cfg["bottleneck"] else basic,
            cfg["layers"],
            num_classes=cfg["num_classes"],
            groups=cfg["groups"],
            width_per_group=cfg["width_per_group"],
            replace_stride_with_dilation=cfg["replace_stride_with_dilation"],
        )
    device = next(iter(model.parameters())).device
    q = q.to_empty(device=device)
    _replace_relu(q)
    q.load_state_dict(model.state_dict(), strict=True)
    q.train(model.training)
    return q


def to_quantizable(model: nn.Module) -> QuantizableResNet:
    """A :class:`QuantizableResNet` copy of a float ResNet (same weights; the original is untouched)."""
    if isinstance(model, QuantizableResNet):
        return copy.deepcopy(model)
    return _build_like(model, QuantizableResNet, QuantizableBasicBlock, QuantizableBottleneck)


def to_torchvision_quantizable(model: nn.Module) -> nn.Module:
    """The same weights in torchvision's own ``QuantizableResNet`` (for side-by-side comparisons)."""
    import torchvision.models.quantization.resnet as tvq

    return _build_like(model, tvq.QuantizableResNet, tvq.QuantizableBasicBlock, tvq.QuantizableBottleneck)


def _check_batches(batches: Any, name: str = "calibration_batches") -> List[Tensor]:
    if isinstance(batches, Tensor):
        raise ValueError(f"{name} must be a list of input tensors (batches), not a single tensor; wrap it: [x]")
    batches = list(batches) if batches is not None else []
    if not batches:
        raise ValueError(f"{name} is empty: calibration needs at least one batch of inputs")
    for i, b in enumerate(batches):
        if not isinstance(b, Tensor) or not b.is_floating_point() or b.dim() != 4:
            raise ValueError(
                f"{name}[{i}] must be a float tensor of shape (N, 3, H, W), got "
                f"{type(b).__name__} {tuple(b.shape) if isinstance(b, Tensor) else ''}"
            )
    return batches


@torch.no_grad()
def calibrate(model: nn.Module, batches: Sequence[Tensor], progress: bool = True, desc: str = "calibrating") -> None:
    """Run ``batches`` through a prepared model so its observers record activation ranges."""
    from tqdm.auto import tqdm

    for x in tqdm(_check_batches(batches), desc=desc, disable=not progress, leave=False):
        model(x)


def quantize_ptq(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    backend: str = "x86",
    qconfig: Optional[Any] = None,
    progress: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Post-training static quantization in eager mode: fuse, qconfig, prepare, calibrate, convert.

    ``model``: a float ResNet (resnet_edu or torchvision; it is copied into a :class:`QuantizableResNet`)
    or any model with ``fuse_model()`` and quant stubs (a quantizable model, ours or torchvision's).
    ``qconfig``: ``None`` for :func:`get_qconfig(backend) <get_qconfig>`, ``"torchvision"`` for
    torchvision's recipe, or a ``QConfig``. Sets ``torch.backends.quantized.engine = backend`` (the
    converted model must run on that engine; :class:`QuantizedRunner` pins it).
    """
    check_backend(backend)
    batches = _check_batches(calibration_batches)
    if hasattr(model, "fuse_model") and hasattr(model, "quant"):
        qm = model if inplace else copy.deepcopy(model)
    elif inplace:
        raise ValueError("inplace=True needs a quantizable model (with fuse_model and quant stubs); got a float ResNet")
    else:
        qm = to_quantizable(model)
    if isinstance(qconfig, str):
        qconfig = get_qconfig(backend, recipe=qconfig)
    elif qconfig is None:
        qconfig = get_qconfig(backend)
    elif not isinstance(qconfig, torch.ao.quantization.QConfig):
        raise ValueError(f"qconfig must be None, 'default', 'torchvision' or a QConfig, got {qconfig!r}")
    torch.backends.quantized.engine = backend
    qm.eval()
    qm.fuse_model()
    qm.qconfig = qconfig
    torch.ao.quantization.prepare(qm, inplace=True)
    calibrate(qm, batches, progress=progress)
    torch.ao.quantization.convert(qm, inplace=True)
    return qm


def quantize_qat(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int = 2,
    lr: float = 1e-3,
    backend: str = "x86",
    freeze_bn_after: Optional[int] = 1,
    freeze_observers_after: Optional[int] = 1,
    seed: int = 0,
    progress: bool = True,
    qconfig: Optional[Any] = None,
) -> Tuple[nn.Module, List[Dict[str, float]]]:
    """Quantization-aware training: fine-tune with fake quantization for a few epochs, then convert.

    The float model is copied, fused for training (conv+bn+relu become ``ConvBnReLU2d``, which keeps
    BatchNorm live), fitted with fake-quant modules (``prepare_qat``) and trained with SGD. After
    ``freeze_bn_after`` epochs the BatchNorm statistics freeze; after ``freeze_observers_after`` the
    ranges stop moving (the usual recipe: the last epochs train with fixed scales). ``qconfig``:
    ``None`` for ``get_qconfig(backend, qat=True)``, or a QAT ``QConfig`` (e.g. ``make_qconfig(4, 8,
    qat=True)``). Returns the converted int8 model and one ``{"epoch", "train_loss"}`` dict per epoch.
    """
    from tqdm.auto import tqdm

    check_backend(backend)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    from .training import seed_everything

    seed_everything(seed)
    torch.backends.quantized.engine = backend
    qm = to_quantizable(model)
    qm.train()
    qm.fuse_model(is_qat=True)
    if qconfig is None:
        qconfig = get_qconfig(backend, qat=True)
    elif not isinstance(qconfig, torch.ao.quantization.QConfig):
        raise ValueError(f"qconfig must be None or a QConfig (e.g. make_qconfig(..., qat=True)), got {qconfig!r}")
    qm.qconfig = qconfig
    torch.ao.quantization.prepare_qat(qm, inplace=True)
    optimizer = torch.optim.SGD(qm.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    bar = tqdm(total=epochs * len(train_loader), desc="QAT", disable=not progress, leave=False)  # type: ignore[arg-type]
    for epoch in range(1, epochs + 1):
        qm.train()
        if freeze_bn_after is not None and epoch > freeze_bn_after:
            qm.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        if freeze_observers_after is not None and epoch > freeze_observers_after:
            qm.apply(torch.ao.quantization.disable_observer)
        total, count = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(qm(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.update(1)
        history.append({"epoch": epoch, "train_loss": total / max(count, 1)})
    bar.close()
    qm.eval()
    torch.ao.quantization.convert(qm, inplace=True)
    return qm, history


def _quantizable_units(fused: nn.Module) -> List[str]:
    """Names of the modules that become quantized kernels after fusion: convs (with BN/ReLU folded) and fc."""
    units = []
    for name, m in fused.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) or type(m).__module__.startswith("torch.ao.nn.intrinsic.modules"):
            if name and not any(name.startswith(u + ".") for u in units):
                units.append(name)
    return units


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    inputs: Tensor,
    labels: Tensor,
    backend: str = "x86",
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Quantize one layer at a time (everything else stays FP32); measure accuracy and logit SQNR.

    Each fused unit (conv+bn[+relu], the downsample conv+bn, fc) is wrapped in a ``QuantWrapper``
    (quantize its input, run it in int8, dequantize its output) while the rest of the network runs
    in float. Returns one ``{"layer", "accuracy", "sqnr_db"}`` row per unit, in network order, plus
    the FP32 accuracy in every row (``"fp32_accuracy"``) for reference.
    """
    from tqdm.auto import tqdm

    check_backend(backend)
    batches = _check_batches(calibration_batches)
    torch.backends.quantized.engine = backend
    base = to_quantizable(model).eval()
    base.fuse_model()
    ref = base(inputs)
    fp32_acc = (ref.argmax(1) == labels).float().mean().item()
    qconfig = get_qconfig(backend)
    rows = []
    for name in tqdm(_quantizable_units(base), desc="one layer at a time", disable=not progress, leave=False):
        m = copy.deepcopy(base)
        parent_name, _, child = name.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        wrapped = torch.ao.quantization.QuantWrapper(getattr(parent, child))
        wrapped.qconfig = qconfig
        setattr(parent, child, wrapped)
        torch.ao.quantization.prepare(m, inplace=True)
        for x in batches:
            m(x)
        torch.ao.quantization.convert(m, inplace=True)
        out = m(inputs)
        rows.append(
            {
                "layer": name,
                "accuracy": (out.argmax(1) == labels).float().mean().item(),
                "sqnr_db": sqnr_db(ref, out),
                "fp32_accuracy": fp32_acc,
            }
        )
    return rows


class QuantizedRunner(nn.Module):
    """Run a model under ``torch.no_grad()``, with the quantized engine it was converted for.

    An eager int8 model packs its weights for one engine (``torch.backends.quantized.engine`` at
    ``convert`` time); running it under another engine is wrong or fails. The runner sets the engine
    before every call, so models for x86 and qnnpack can be timed side by side.
    """

    def __init__(self, model: Callable[..., Tensor], engine: Optional[str] = None) -> None:
        super().__init__()
        if engine is not None:
            check_backend(engine)
        self.model = model
        self.engine = engine

    def train(self, mode: bool = True) -> "QuantizedRunner":
        """Only flips this wrapper's flag: the wrapped model stays in inference mode.

        (A converted model is for inference only, and an exported PT2E graph refuses ``.eval()``
        altogether, so ``evaluate(runner, loader)``, which calls ``.eval()``, must not recurse.)
        """
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.engine is not None and torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine
        with torch.no_grad():
            return self.model(x)


@torch.no_grad()
def capture_io(model: nn.Module, x: Tensor, names: Sequence[str]) -> Dict[str, Tuple[Tensor, Tensor]]:
    """Run ``model(x)`` once and return ``{name: (input, output)}`` of the named submodules (forward hooks)."""
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"no submodule named {missing}; some names: {list(found)[1:8]}")
    seen: Dict[str, Tuple[Tensor, Tensor]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Tuple[Tensor, ...], output: Tensor) -> None:  # returns None: output unchanged
            seen.setdefault(name, (inputs[0], output))

        return hook

    hooks = [found[n].register_forward_hook(record(n)) for n in names]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def residual_scales(qmodel: nn.Module, x: Tensor) -> List[Dict[str, Any]]:
    """For each block of a converted quantizable ResNet: the scales of the two tensors its add sums.

    ``branch_scale`` is the scale of the residual branch's last conv (conv2 or conv3, BN folded in),
    ``identity_scale`` that of the shortcut (the downsample conv, or the block's input), ``out_scale``
    that of the add's output. An integer add needs both inputs on one grid, so the quantized add
    rescales them: ``q_out = round((s_b (q_b - z_b) + s_i (q_i - z_i)) / s_out) + z_out``.
    """
    rows: List[Dict[str, Any]] = []
    inputs: Dict[str, Tensor] = {}
    import torchvision.models.resnet as tvr

    kinds = (BasicBlock, Bottleneck, tvr.BasicBlock, tvr.Bottleneck)
    blocks = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, kinds)]
    if not blocks:
        raise ValueError("qmodel has no residual blocks")

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Tuple[Tensor, ...]) -> None:  # returns None: input unchanged
            inputs.setdefault(name, args[0])

        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in blocks]
    try:
        qmodel(x)
    finally:
        for h in hooks:
            h.remove()
    for name, block in blocks:
        qx = inputs[name]
        if not qx.is_quantized:
            raise ValueError("residual_scales needs a converted (quantized) model")
        last = block.conv3 if hasattr(block, "conv3") else block.conv2
        add = block.skip_add_relu if hasattr(block, "skip_add_relu") else block.add_relu
        identity_scale = float(block.downsample[0].scale) if block.downsample is not None else float(qx.q_scale())
        rows.append(
            {
                "block": name,
                "branch_scale": float(last.scale),
                "identity_scale": identity_scale,
                "out_scale": float(add.scale),
                "downsample": block.downsample is not None,
            }
        )
    return rows


def compare_latency(
    models: Dict[str, Callable[[Tensor], Any]],
    inputs: Dict[str, Tensor],
    warmup: int = 1,
    repeats: int = 5,
    threads: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Median wall-clock milliseconds of every model on every input, timed interleaved.

    Each round runs every model once on the input, in turn, so a machine that slows down (shared
    cores, thermal limits) slows all of them alike. ``threads`` fixes ``torch.set_num_threads`` for
    the measurement (restored afterwards). Returns ``{"input", "model", "median_ms", "min_ms",
    "repeats"}`` rows. Short runs are noisy: the book's full benchmark is ``python -m resnet_edu.bench``.
    """
    import statistics
    import time

    if not models or not inputs:
        raise ValueError("compare_latency needs at least one model and one input")
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (integers), got repeats={repeats!r}, warmup={warmup!r}")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        with torch.no_grad():
            for label, x in inputs.items():
                for fn in models.values():
                    for _ in range(warmup):
                        fn(x)
                times: Dict[str, List[float]] = {name: [] for name in models}
                for _ in range(repeats):
                    for name, fn in models.items():
                        start = time.perf_counter()
                        fn(x)
                        times[name].append(1000.0 * (time.perf_counter() - start))
                for name, t in times.items():
                    rows.append({"input": label, "model": name, "median_ms": statistics.median(t), "min_ms": min(t), "repeats": repeats})
    finally:
        torch.set_num_threads(old)
    return rows


# ==================================================================================================
# 4. PT2E with torchao: export -> prepare_pt2e -> calibrate -> convert_pt2e -> torch.compile
# ==================================================================================================
def pt2e_available() -> bool:
    """True when torchao (the optional extra ``resnet-edu[pt2e]``) is installed."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def _require_torchao() -> None:
    if not pt2e_available():
        raise ImportError(
            "the PT2E flow needs torchao: pip install 'resnet-edu[pt2e]' (or pip install torchao; "
            "it declares no torch dependency, so it never replaces your torch)"
        )


def export_for_pt2e(model: nn.Module, example: Tensor, dynamic_batch: bool = True) -> torch.fx.GraphModule:
    """``torch.export.export(model, (example,), strict=True).module()``: the graph PT2E quantizes.

    ``strict=True`` matters: the non-strict export of a ResNet whose blocks reuse one ``self.relu``
    leaves a shared ReLU node that ``prepare_pt2e`` rejects ("Input partition has more than one output
    node"); strict (TorchDynamo) tracing gives each call its own node. With ``dynamic_batch`` the batch
    dimension stays symbolic (an example with batch 1 is doubled first, since export specializes size 1).
    """
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError(f"example must be an input batch of shape (N, 3, H, W), got {getattr(example, 'shape', example)!r}")
    if dynamic_batch and example.shape[0] < 2:
        example = example.repeat(2, 1, 1, 1)
    dynamic_shapes = ({0: torch.export.Dim.AUTO},) if dynamic_batch else None
    model = model.eval()
    return torch.export.export(model, (example,), strict=True, dynamic_shapes=dynamic_shapes).module()


def drop_unused_attributes(gm: torch.fx.GraphModule) -> List[str]:
    """Delete parameters and buffers no graph node reads; return their names.

    ``convert_pt2e`` folds each weight's quantization into an int8 constant but leaves the original
    FP32 weight attached to the module: the state dict of the int8 model ends up larger than the FP32
    one. This removes such leftovers (and submodules left empty).
    """
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = []
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name in used:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if attr in owner._parameters:
            del owner._parameters[attr]
        elif attr in owner._buffers:
            del owner._buffers[attr]
        else:  # pragma: no cover - named_* only yields these two kinds
            continue
        dropped.append(name)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return dropped


def quantize_pt2e(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    compile: bool = True,
    dynamic_batch: bool = True,
    reduce_range: Optional[bool] = None,
    progress: bool = True,
) -> nn.Module:
    """The maintained INT8 path: PT2E quantization with torchao's ``X86InductorQuantizer``.

    Steps: :func:`export_for_pt2e` (strict ``torch.export``) -> ``prepare_pt2e`` (inserts observers
    where the quantizer's annotations say) -> calibration -> ``convert_pt2e`` (quantize/dequantize
    pairs around float ops; weights become int8 constants) -> :func:`drop_unused_attributes` ->
    ``torch.compile`` with inductor, whose freezing pass fuses each dequant-conv-quant pattern into
    one oneDNN int8 convolution. Freezing must be on while inductor compiles, i.e. during the calls:
    the result is a :class:`FrozenInductorModule`, which sets ``torch._inductor.config.freezing``
    around each call (the global ``torch._inductor.config.freezing = True`` works too, but for the
    whole process; ``torch.compile(options={"freezing": True})`` fails on ``onednn.qconv_prepack``
    in torch 2.14).

    ``reduce_range=None`` uses 7-bit activations on CPUs without VNNI (see chapter 7), 8-bit otherwise.
    ``compile=False`` returns the converted graph module (quantize/dequantize ops, runs in float).
    """
    _require_torchao()
    batches = _check_batches(calibration_batches)
    _quiet_torchao_import()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from tqdm.auto import tqdm

    if reduce_range is None:
        reduce_range = not torch.cpu._is_vnni_supported()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    with torch.random.fork_rng(devices=[]):
        gm = export_for_pt2e(copy.deepcopy(model).eval(), batches[0], dynamic_batch=dynamic_batch)
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for x in tqdm(batches, desc="calibrating", disable=not progress, leave=False):
            prepared(x)
    converted = convert_pt2e(prepared)
    drop_unused_attributes(converted)
    if not compile:
        return converted
    return FrozenInductorModule(torch.compile(converted))


class FrozenInductorModule(nn.Module):
    """A ``torch.compile``-d module whose every call runs with inductor's freezing pass switched on.

    Compilation happens lazily, on the first call and again for each new input shape, so freezing must
    be on during the calls, not only when ``torch.compile`` is invoked. ``torch._inductor.config.patch``
    sets the same flag as the global ``torch._inductor.config.freezing = True``, but only for the
    duration of each call: other ``torch.compile`` users in the process (e.g. an FP32 baseline) are
    unaffected. (``torch.compile(options={"freezing": True})`` is not equivalent: it fails on
    ``onednn.qconv_prepack`` in torch 2.14.)
    """

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: Tensor) -> Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(x)


def quantized_op_counts(model: nn.Module) -> Dict[str, int]:
    """Count the quantization ops in a converted PT2E graph (``quantized_decomposed.*`` targets).

    Accepts the graph module or its wrappers (``torch.compile``, :class:`FrozenInductorModule`,
    :class:`QuantizedRunner`).
    """
    gm = model
    for attr in ("model", "compiled", "_orig_mod"):  # QuantizedRunner -> FrozenInductorModule -> torch.compile
        gm = getattr(gm, attr, gm)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValueError(f"expected a converted PT2E GraphModule (or its torch.compile wrapper), got {type(gm).__name__}")
    counts: Dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and str(n.target).startswith("quantized_decomposed."):
            key = str(n.target).split(".")[1]
            counts[key] = counts.get(key, 0) + 1
    return counts


# ==================================================================================================
# 5. Size on disk, the benchmark's flows, and the warnings we silence on purpose
# ==================================================================================================
def model_size_mb(obj: Any) -> float:
    """Size of ``obj``'s ``state_dict`` saved with ``torch.save`` to a buffer, in MB of 2**20 bytes.

    (torchvision's model cards count ``_file_size`` the same way.) ``obj`` may be a module, a
    ``torch.compile`` wrapper, a :class:`QuantizedRunner`, or a state dict.
    """
    if isinstance(obj, nn.Module):
        state = obj.state_dict()
    elif isinstance(obj, dict):
        state = obj
    else:
        raise ValueError(f"model_size_mb needs an nn.Module or a state dict, got {type(obj).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes / 2**20


def _flow_eager(backend: str) -> Callable[[nn.Module, List[Tensor]], nn.Module]:
    def build(fp32_model: nn.Module, calibration_batches: List[Tensor]) -> nn.Module:
        return QuantizedRunner(quantize_ptq(fp32_model, calibration_batches, backend=backend, progress=False), engine=backend)

    build.__doc__ = f"Eager PTQ ({backend} engine, default qconfig), wrapped to pin the engine."
    return build


def _flow_eager_torchvision(fp32_model: nn.Module, calibration_batches: List[Tensor]) -> nn.Module:
    """The same PTQ applied to torchvision's own QuantizableResNet holding the same weights."""
    tv = to_torchvision_quantizable(fp32_model)
    return QuantizedRunner(quantize_ptq(tv, calibration_batches, backend="x86", progress=False), engine="x86")


def _flow_pt2e(fp32_model: nn.Module, calibration_batches: List[Tensor]) -> nn.Module:
    """PT2E (torchao X86InductorQuantizer) compiled with inductor."""
    return QuantizedRunner(quantize_pt2e(fp32_model, calibration_batches, progress=False))


BENCH_FLOWS: Dict[str, Callable[[nn.Module, List[Tensor]], nn.Module]] = {
    "int8-eager-x86": _flow_eager("x86"),
    "int8-eager-qnnpack": _flow_eager("qnnpack"),
    "int8-eager-x86-torchvision": _flow_eager_torchvision,
    "int8-pt2e-inductor": _flow_pt2e,
}
"""Benchmark flows: ``name -> build(fp32_model, calibration_batches) -> callable model``.

``fp32_model`` is a resnet_edu (or torchvision) ResNet in eval mode; it is not modified. The returned
model runs under ``no_grad`` with its engine pinned. ``int8-pt2e-inductor`` needs torchao.
"""


def _quiet_torchao_import() -> None:
    # torchao registers an Enum with torch's pytree at import; torch 2.14 logs a deprecation line for it
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def silence_known_warnings() -> None:
    """Silence, deliberately and narrowly, the warnings the quantization chapters would otherwise repeat.

    * torch.ao.quantization's ``DeprecationWarning`` ("torch.ao.quantization is deprecated and will be
      removed ...") on every ``prepare``/``convert``: the book shows it once, on purpose, then calls this;
    * the observer's ``UserWarning`` that ``reduce_range`` "will be deprecated" (it is still how fbgemm's
      default qconfig avoids int16 saturation);
    * torch 2.14's ``UserWarning`` that quantized tensor creation (``torch.quantize_per_tensor`` etc.,
      which eager ``convert`` uses) is deprecated;
    * inductor's ``UserWarning`` "To copy construct from a tensor..." from its oneDNN lowering (torch 2.14);
    * two log lines: torch's pytree note about torchao's Enum, and cpp_extension's "No CUDA runtime is
      found" when inductor compiles C++ on a CPU-only machine.
    """
    warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max to specify the range", category=UserWarning)
    warnings.filterwarnings(
        "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation", category=UserWarning
    )
    warnings.filterwarnings(
        "ignore", message=r"To copy construct from a tensor", category=UserWarning, module=r"torch\._inductor\.mkldnn_lowerings"
    )
    _quiet_torchao_import()
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
