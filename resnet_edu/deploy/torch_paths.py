"""PyTorch's own fast paths, for comparison with the other runtimes and for closing the gap.

* :class:`Bf16Autocast`: FP32 weights, BF16 arithmetic through ``torch.autocast("cpu", torch.bfloat16)``
  (oneDNN runs the convolutions in BF16 on CPUs with AVX512_BF16 or AMX, and emulates it elsewhere);
* :func:`compile_frozen`: ``torch.compile`` with inductor's freezing pass (weights become constants,
  pre-packed for oneDNN), optionally in ``channels_last`` memory format;
* :func:`quantize_pt2e_channels_last`: the chapter-9 PT2E model fed ``channels_last`` inputs.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["Bf16Autocast", "compile_frozen", "ChannelsLast", "torch_kernel"]


def torch_kernel(kind: str) -> Dict[str, str]:
    """The ``kernel`` record of a PyTorch row: ``kind`` is ``"fp32"``, ``"bf16"`` or ``"inductor"``."""
    cap = torch.backends.cpu.get_cpu_capability()
    labels = {
        "fp32": f"ATen conv via oneDNN (mkldnn), FP32; ATen capability {cap}",
        "bf16": f"ATen conv via oneDNN (mkldnn), BF16 autocast; ATen capability {cap}",
        "inductor": f"inductor C++ + oneDNN (frozen weights); ATen capability {cap}",
    }
    if kind not in labels:
        raise ValueError(f"kind must be one of {list(labels)}, got {kind!r}")
    return {"engine": f"torch {torch.__version__.split('+')[0]}", "library": "onednn", "isa": str(cap), "label": labels[kind]}


class Bf16Autocast(nn.Module):
    """Run ``model`` under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and ``no_grad``; FP32 logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from ..quantization import model_size_mb

        self.model = model.eval()
        self.kernel = torch_kernel("bf16")
        self.size_mb = model_size_mb(model)  # FP32 weights: autocast converts them on the fly

    def train(self, mode: bool = True) -> "Bf16Autocast":
        self.training = mode  # inference only: the wrapped model stays in eval mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


class ChannelsLast(nn.Module):
    """Convert each input to ``channels_last`` (NHWC in memory) before calling ``model``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.kernel = getattr(model, "kernel", None)

    def train(self, mode: bool = True) -> "ChannelsLast":
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x.contiguous(memory_format=torch.channels_last))


def compile_frozen(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """``torch.compile`` (inductor) with freezing on during every call; ``channels_last`` converts model and inputs.

    Returns a module that runs under ``no_grad`` (freezing applies to inference only).
    """
    from ..quantization import FrozenInductorModule, model_size_mb

    if not isinstance(model, nn.Module):
        raise ValueError(f"compile_frozen needs an nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    runner: nn.Module = _NoGrad(FrozenInductorModule(torch.compile(m)))
    if channels_last:
        runner = ChannelsLast(runner)
    runner.kernel = torch_kernel("inductor")
    runner.size_mb = model_size_mb(model)
    return runner


class _NoGrad(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x)
