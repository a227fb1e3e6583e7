"""OpenVINO: compile an ONNX file for the CPU, and quantize it to INT8 with NNCF.

OpenVINO reads the ONNX file directly. Two facts decide its speed on a recent x86 CPU:

* its *default inference precision hint* on a CPU with native BF16 (AVX512_BF16 / AMX) is BF16:
  an FP32 model runs in BF16 unless you ask for ``"f32"``, with no calibration at all;
* NNCF's post-training quantization (``nncf.quantize``) inserts FakeQuantize nodes from a few
  calibration batches; OpenVINO's CPU plugin runs them as INT8 oneDNN convolutions (AMX or VNNI
  where the CPU has them).

:class:`OpenVINOModel` reports which oneDNN primitive ran each convolution (``kernel``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .export import file_size_mb

__all__ = ["openvino_available", "nncf_available", "PRECISIONS", "quantize_nncf", "OpenVINOModel", "default_precision"]

PRECISIONS = (None, "f32", "bf16")
"""Inference precision hints :class:`OpenVINOModel` accepts (None: OpenVINO's default for this CPU)."""


def openvino_available() -> bool:
    """True when ``openvino`` (part of the extra ``resnet-edu[deploy]``) can be imported."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def nncf_available() -> bool:
    """True when ``nncf`` (part of the extra ``resnet-edu[deploy]``) can be imported."""
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def _require(nncf: bool = False) -> None:
    if not openvino_available() or (nncf and not nncf_available()):
        raise ImportError("OpenVINO/NNCF are not installed: pip install 'resnet-edu[deploy]' (or pip install openvino nncf)")


def default_precision() -> str:
    """The inference precision OpenVINO's CPU plugin picks by default here (``"bf16"`` or ``"f32"``...)."""
    _require()
    import openvino as ov

    return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")).replace("<Type: '", "").replace("'>", "").replace("bfloat16", "bf16").replace("float32", "f32")


def quantize_nncf(src: Union[str, Path], dst: Union[str, Path], calibration_batches: Sequence[Tensor]) -> Dict[str, Any]:
    """NNCF post-training INT8 quantization of the ONNX file ``src``, saved as OpenVINO IR ``dst`` (.xml + .bin).

    Uses NNCF's defaults (the "performance" preset: symmetric INT8 weights per channel, activations
    from min/max of the calibration batches) with every given batch as calibration data.
    Returns ``{"path", "size_mb"}`` (the size counts both files).
    """
    _require(nncf=True)
    batches = list(calibration_batches) if not isinstance(calibration_batches, Tensor) else []
    if not batches or any(not isinstance(b, Tensor) or b.dim() != 4 for b in batches):
        raise ValueError("calibration_batches must be a non-empty list of (N, 3, H, W) tensors")
    dst = Path(dst)
    if dst.suffix != ".xml":
        raise ValueError(f"dst must be an OpenVINO .xml path, got {str(dst)!r}")
    import openvino as ov

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), _no_rich_widgets():
        import nncf

        nncf.set_log_level(logging.ERROR)
        model = ov.Core().read_model(str(src))
        data = nncf.Dataset([b.detach().cpu().numpy().astype(np.float32) for b in batches])
        quantized = nncf.quantize(model, data, subset_size=len(batches))  # an item of the dataset is one batch
        ov.save_model(quantized, str(dst))
    return {"path": str(dst), "size_mb": file_size_mb(dst, dst.with_suffix(".bin"))}


@contextlib.contextmanager
def _no_rich_widgets():
    """NNCF draws its progress bar with rich, which in Jupyter becomes a widget in the cell's output;
    with Jupyter detection off, it writes to the (redirected) stdout instead."""
    try:
        import rich.console as rc
    except ImportError:  # pragma: no cover - nncf depends on rich
        yield
        return
    saved = rc._is_jupyter
    rc._is_jupyter = lambda: False
    try:
        yield
    finally:
        rc._is_jupyter = saved


class OpenVINOModel:
    """An OpenVINO compiled model behind a PyTorch-like call: ``OpenVINOModel(path)(x) -> logits tensor``.

    ``path``: an ONNX file or OpenVINO IR (.xml). ``threads`` fixes ``INFERENCE_NUM_THREADS`` (one
    stream, latency hint). ``precision``: None (OpenVINO's default for this CPU), ``"f32"`` or
    ``"bf16"``; ``perf_count=True`` turns on OpenVINO's per-node counters (``request.profiling_info``).
    After compiling, ``precision_used`` says what the plugin chose and ``kernel`` which oneDNN
    primitives run the convolutions (e.g. ``brgconv_avx512_amx_I8``).
    """

    def __init__(self, path: Union[str, Path], threads: int = 1, precision: Optional[str] = None, perf_count: bool = False) -> None:
        _require()
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.path = str(path)
        config: Dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        if perf_count:  # per-node times in request.profiling_info (deploy.openvino_times)
            config["PERF_COUNT"] = True
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(self.path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.threads = threads
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision_used = "bf16" if "bfloat16" in hint or "bf16" in hint else ("f16" if "f16" in hint or "float16" in hint else "f32")
        p = Path(self.path)
        self.size_mb = file_size_mb(p, p.with_suffix(".bin")) if p.suffix == ".xml" else file_size_mb(p)
        self.primitives = self._conv_primitives()
        top = self.primitives.most_common(1)[0][0] if self.primitives else ("unknown", "")
        self.kernel = {
            "engine": f"openvino {ov.__version__.split('-')[0]}",
            "library": "onednn",
            "isa": top[0],
            "label": ", ".join(f"{n}x {prim} ({prec})" for (prim, prec), n in self.primitives.most_common()),
        }

    def _conv_primitives(self) -> "collections.Counter":
        counts: "collections.Counter" = collections.Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and "Convolution" in info["layerType"].astype(str):
                counts[(info["primitiveType"].astype(str), info["runtimePrecision"].astype(str))] += 1
        return counts

    def __call__(self, x: Tensor) -> Tensor:
        self.request.infer({0: x.detach().cpu().numpy()})
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, copy=True))

    def __repr__(self) -> str:
        return f"OpenVINOModel({self.path!r}, threads={self.threads}, precision_used={self.precision_used!r})"
