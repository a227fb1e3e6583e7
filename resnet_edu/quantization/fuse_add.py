"""The residual add folded into the convolution before it: one oneDNN call instead of two operators.

After ``convert``, a block of chapter 8's eager model ends with two quantized operators: its last
convolution (``quantized::conv2d``), which writes an int8 tensor, and ``quantized::add_relu``, which
reads that tensor and the identity back and writes a third. oneDNN can do both in one call: its *sum
post-op* adds the identity to the convolution's int32 sums before ReLU and requantization.
PyTorch exposes that as ``torch.ao.nn.intrinsic.quantized.ConvAddReLU2d``
(``quantized::conv2d_add_relu``), for the ``onednn`` engine only. :func:`fuse_residual_adds` rebuilds a
converted model with it; this is what OpenVINO and PT2E's ``X86InductorQuantizer`` do to the same
blocks (chapter 10).

Two facts the rewrite keeps in view:

* The sum post-op writes its result into the identity tensor's memory. A ResNet block never reads its
  identity again after the add, so nothing is lost; the module's docstring says so where it matters.
* The convolution's output is no longer rounded to int8 before the add, so the result is at least as
  close to FP32 as the unfused model's (one rounding fewer), not the same integers.
"""
from __future__ import annotations

import copy
from typing import Union

import torch
import torch.nn as nn
from torch import Tensor

from .eager import QuantizedRunner
from .kernels import quantized_engines
from .models import QuantizableBasicBlock, QuantizableBottleneck

__all__ = ["FusedAddBasicBlock", "FusedAddBottleneck", "fuse_residual_adds"]

_ENGINE = "onednn"


def _conv_add_relu(conv: nn.Module, add: nn.Module) -> nn.Module:
    """A quantized ``ConvAddReLU2d`` with ``conv``'s weights and bias and ``add``'s output scale."""
    from torch.ao.nn.intrinsic.quantized import ConvAddReLU2d

    fused = ConvAddReLU2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True)
    fused.set_weight_bias(conv.weight(), conv.bias())   # packed for the current engine, oneDNN here
    fused.scale, fused.zero_point = float(add.scale), int(add.zero_point)
    return fused


class FusedAddBasicBlock(nn.Module):
    """A converted :class:`~.models.QuantizableBasicBlock` whose ``conv2`` also adds the identity and
    applies ReLU (``ConvAddReLU2d``). The sum is written into the identity tensor, which is not read again."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = block.conv1, block.bn1, block.relu
        self.conv2 = _conv_add_relu(block.conv2, block.add_relu)
        self.downsample = block.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.conv2(out, identity)


class FusedAddBottleneck(nn.Module):
    """A converted :class:`~.models.QuantizableBottleneck` whose ``conv3`` also adds the identity and
    applies ReLU. The sum is written into the identity tensor, which is not read again."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = block.conv1, block.bn1, block.relu1
        self.conv2, self.bn2, self.relu2 = block.conv2, block.bn2, block.relu2
        self.conv3 = _conv_add_relu(block.conv3, block.skip_add_relu)
        self.downsample = block.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.conv3(out, identity)


def _repack(module: nn.Module) -> None:
    """Pack every quantized convolution and linear layer's weights again, for the current engine."""
    for m in module.modules():
        if isinstance(m, (torch.ao.nn.quantized.Linear, torch.ao.nn.quantized.Conv2d)):
            m.set_weight_bias(m.weight(), m.bias())


def fuse_residual_adds(converted: Union[nn.Module, QuantizedRunner]) -> QuantizedRunner:
    """A copy of ``converted`` (an eager INT8 ResNet after ``convert``, e.g. from
    ``rq.quantize_ptq(model, batches, backend="onednn")``, or a :class:`QuantizedRunner` around one)
    whose blocks each end in one ``ConvAddReLU2d``; returned in a :class:`QuantizedRunner` for the
    ``onednn`` engine, the only one with that operator. Every weight is packed again for oneDNN, so a
    model converted for another engine runs too, with the activation ranges its qconfig chose."""
    model = getattr(converted, "model", converted)
    if _ENGINE not in quantized_engines():
        raise ValueError(f"fuse_residual_adds needs PyTorch's 'onednn' quantized engine (quantized::conv2d_add_relu is oneDNN's); "
                         f"this machine's engines are {quantized_engines()}")
    blocks = [m for m in model.modules() if isinstance(m, (QuantizableBasicBlock, QuantizableBottleneck))] if isinstance(model, nn.Module) else []
    converted_blocks = [b for b in blocks if isinstance(getattr(b, "add_relu", None) or getattr(b, "skip_add_relu", None),
                                                        torch.ao.nn.quantized.QFunctional)]
    if not blocks or len(converted_blocks) != len(blocks):
        raise ValueError("fuse_residual_adds needs an eager INT8 ResNet after convert (its blocks' residual adds are QFunctional), "
                         f"e.g. from rq.quantize_ptq; got {type(model).__name__} with {len(blocks)} quantizable blocks, "
                         f"{len(converted_blocks)} of them converted")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = _ENGINE
    try:
        fused = copy.deepcopy(model)
        _repack(fused)
        for parent in list(fused.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, QuantizableBasicBlock):
                    setattr(parent, name, FusedAddBasicBlock(child))
                elif isinstance(child, QuantizableBottleneck):
                    setattr(parent, name, FusedAddBottleneck(child))
    finally:
        torch.backends.quantized.engine = previous
    return QuantizedRunner(fused.eval(), engine=_ENGINE)
