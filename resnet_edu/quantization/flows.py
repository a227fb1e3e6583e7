"""Size on disk, the benchmark's flows, and the warnings the chapters silence on purpose.

The benchmark (:mod:`resnet_edu.bench`) uses :data:`BENCH_FLOWS` (one INT8 recipe per entry, from
:mod:`~resnet_edu.quantization.eager` and :mod:`~resnet_edu.quantization.pt2e`) and :func:`model_size_mb`.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any, Callable, Dict, List

import torch
import torch.nn as nn
from torch import Tensor

from .eager import QuantizedRunner, quantize_ptq, to_torchvision_quantizable
from .pt2e import _quiet_torchao_import, quantize_pt2e

__all__ = [
    "model_size_mb",
    "BENCH_FLOWS",
    "silence_known_warnings",
    "DEPRECATION_MESSAGE_START",
]

DEPRECATION_MESSAGE_START = "torch.ao.quantization is deprecated"
"""How torch.ao.quantization's deprecation warning begins (torch 2.10 and later)."""


def model_size_mb(obj: Any) -> float:
    """Size of ``obj``'s ``state_dict`` saved with ``torch.save`` to a buffer, in MB of 2**20 bytes.

    (torchvision's model cards count ``_file_size`` the same way.) ``obj`` may be a module, a
    ``torch.compile`` wrapper, a :class:`.QuantizedRunner`, or a state dict.
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
