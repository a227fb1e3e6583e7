"""Chapter 8's eager INT8 model without Python between its layers: traced and frozen by TorchScript.

``torch.jit.trace`` runs the converted model once and records the quantized operators it calls
(``quantized::conv2d_relu``, ``quantized::add_relu``, ...) in a graph; ``torch.jit.freeze`` turns its
weights and scales into constants. The graph then runs in C++, with no Python call per module. The
operators, their packed weights and so their integers are the eager model's own: the outputs are the
same bits. TorchScript is deprecated (recent PyTorch warns so on every call to ``trace`` and
``freeze``) in favour of ``torch.export``; :func:`trace_frozen` records the warning it printed, so a
page can quote what the reader's PyTorch says.
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..quantization import QuantizedRunner

__all__ = ["TracedInt8", "trace_frozen"]


class TracedInt8(QuantizedRunner):
    """A traced and frozen eager INT8 model (``model``), run like any :class:`QuantizedRunner`: under the
    quantized engine it was converted for, without gradients."""

    def __init__(self, graph: Any, engine: str, size_mb: float, deprecation: List[str]) -> None:
        super().__init__(graph, engine=engine)
        from ..quantization import kernels

        self.size_mb = size_mb
        k = dict(kernels.conv_kernel(engine))
        k["label"] = f"{k['label']}; TorchScript (traced, frozen)"
        self.kernel = k
        self.settings = {"torchscript": True, "engine": engine, "deprecation": deprecation}

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"TracedInt8 needs a 4-d image batch tensor (N, C, H, W), got {tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return super().forward(x)


def trace_frozen(quantized: nn.Module, example: Tensor, engine: Optional[str] = None) -> TracedInt8:
    """Trace ``quantized`` (an eager INT8 model after ``convert``, or a ``QuantizedRunner`` around one)
    on ``example`` (a 4-d image batch; the graph then serves any batch size) and freeze it.

    ``engine``: the quantized engine the model was converted for (default: the runner's, else the
    current ``torch.backends.quantized.engine``). Returns a :class:`TracedInt8` with ``kernel``,
    ``size_mb`` and ``settings`` (``settings["deprecation"]``: the deprecation warnings this PyTorch
    printed for ``torch.jit``, empty where it printed none).
    """
    from ..quantization import check_backend, model_size_mb

    model = getattr(quantized, "model", quantized)
    engine = engine or getattr(quantized, "engine", None) or torch.backends.quantized.engine
    check_backend(engine)
    if not isinstance(model, nn.Module) or not any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        raise ValueError("trace_frozen needs an eager INT8 model after convert (with torch.ao.nn.quantized modules), e.g. from "
                         f"rq.quantize_ptq; got {type(model).__name__} with no quantized module")
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError(f"trace_frozen needs a 4-d image batch tensor (N, C, H, W) as example, got "
                         f"{tuple(example.shape) if isinstance(example, Tensor) else type(example).__name__}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            # the tracer warns that the scales read as Python numbers become constants: after convert they are
            graph = torch.jit.freeze(torch.jit.trace(model.eval(), example).eval())
    finally:
        torch.backends.quantized.engine = previous
    deprecation = sorted({str(w.message) for w in caught if "deprecated" in str(w.message) and "torch.jit" in str(w.message)})
    return TracedInt8(graph, engine, model_size_mb(model), deprecation)

