"""Export a ResNet to ONNX: the file both ONNX Runtime and OpenVINO read.

``torch.onnx.export(..., dynamo=True)`` (the exporter built on ``torch.export``) is tried first;
when it fails, the TorchScript exporter (``dynamo=False``) runs instead, and the result says which
one ran and why. The batch dimension stays dynamic, so one file serves batch 1 and batch 8.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["onnx_available", "export_onnx", "file_size_mb", "INPUT_NAME"]

INPUT_NAME = "x"
"""The name of the exported graph's input."""


def onnx_available() -> bool:
    """True when ``onnx`` and ``onnxscript`` (needed by the dynamo exporter) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def file_size_mb(*paths: Union[str, Path]) -> float:
    """Total size of files on disk, in MB of 2**20 bytes (an ONNX file, or OpenVINO's .xml + .bin)."""
    return sum(os.path.getsize(p) for p in paths) / 2**20


def _check(model: Any, example: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"export_onnx needs an nn.Module, got {type(model).__name__}")
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError(f"example must be an input batch of shape (N, 3, H, W), got {getattr(example, 'shape', example)!r}")


def export_onnx(model: nn.Module, example: Tensor, path: Union[str, Path], dynamo: Optional[bool] = None, opset: int = 18) -> Dict[str, Any]:
    """Write ``model`` (in eval mode) to ``path`` as one self-contained ONNX file.

    ``dynamo=None`` tries the dynamo exporter and falls back to TorchScript's; ``True`` or ``False``
    forces one. Returns ``{"path", "exporter" ("dynamo" or "torchscript"), "fallback_reason"
    (None, or why dynamo failed), "size_mb", "opset"}``. The exporters' progress lines and their
    deprecation warnings are kept off the output.
    """
    _check(model, example)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if example.shape[0] < 2:  # torch.export specializes a size-1 dimension: export with two images
        example = example.repeat(2, 1, 1, 1)
    reason = None
    if dynamo is not False:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(path), dynamo=True, external_data=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), verbose=False,
                )
            return {"path": str(path), "exporter": "dynamo", "fallback_reason": None, "size_mb": file_size_mb(path), "opset": opset}
        except Exception as exc:  # noqa: BLE001 - any failure of the new exporter means: use the old one
            if dynamo is True:
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=["logits"], dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
        )
    return {"path": str(path), "exporter": "torchscript", "fallback_reason": reason, "size_mb": file_size_mb(path), "opset": opset}
