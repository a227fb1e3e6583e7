"""ONNX Runtime: run an ONNX file, and quantize it statically to INT8 (QDQ, per-channel weights).

Static quantization inserts QuantizeLinear/DequantizeLinear (QDQ) pairs around every conv, with
scales from calibration; ONNX Runtime's graph optimizer then fuses each ``DQ -> Conv -> Q`` into
one integer convolution. The choice that matters on x86 is the *activation* type:

* ``"u8"`` (U8S8: unsigned 8-bit activations, signed 8-bit weights) maps straight onto x86's
  integer dot-product instructions, ``vpmaddubsw`` (AVX2/AVX-512) and ``vpdpbusd`` (VNNI), which
  multiply an *unsigned* byte by a *signed* byte;
* ``"s8"`` (S8S8, ONNX Runtime's default for QDQ) has no such instruction: the CPU kernel must
  shift or widen the activations first, a slower path that on many x86 CPUs is no faster than FP32.

Without VNNI, ``vpmaddubsw`` adds pairs of products into 16 bits and can saturate: ONNX Runtime
recommends ``reduce_range`` (7-bit weights) there, which :func:`quantize_onnx` applies by default.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .cpu import cpu_features
from .export import INPUT_NAME, file_size_mb

__all__ = ["ort_available", "ACTIVATION_TYPES", "quantize_onnx", "OrtModel", "qdq_summary"]

ACTIVATION_TYPES = ("u8", "s8")
"""Activation types :func:`quantize_onnx` accepts (weights are always signed 8-bit, per channel)."""


def ort_available() -> bool:
    """True when ``onnxruntime`` (part of the extra ``resnet-edu[deploy]``) can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _require() -> None:
    if not ort_available():
        raise ImportError("ONNX Runtime is not installed: pip install 'resnet-edu[deploy]' (or pip install onnxruntime)")


def _check_batches(batches: Any) -> List[Tensor]:
    if isinstance(batches, Tensor) or not batches:
        raise ValueError("calibration_batches must be a non-empty list of (N, 3, H, W) tensors")
    out = list(batches)
    for b in out:
        if not isinstance(b, Tensor) or b.dim() != 4:
            raise ValueError(f"every calibration batch must be a (N, 3, H, W) tensor, got {getattr(b, 'shape', type(b).__name__)!r}")
    return out


def quantize_onnx(
    src: Union[str, Path],
    dst: Union[str, Path],
    calibration_batches: Sequence[Tensor],
    activations: str = "u8",
    per_channel: bool = True,
    reduce_range: Optional[bool] = None,
) -> Dict[str, Any]:
    """Static INT8 quantization of the ONNX file ``src`` into ``dst``, QDQ format.

    ``activations``: ``"u8"`` (U8S8) or ``"s8"`` (S8S8); weights are signed 8-bit, per output channel
    when ``per_channel``. ``reduce_range=None`` means: 7-bit weights for U8S8 on a CPU without VNNI
    (ONNX Runtime's advice against ``vpmaddubsw`` saturation), 8-bit otherwise. The model is first
    pre-processed (shape inference and graph optimization, ``quant_pre_process``). Returns
    ``{"path", "activations", "per_channel", "reduce_range", "size_mb"}``.
    """
    _require()
    if activations not in ACTIVATION_TYPES:
        raise ValueError(f"activations must be one of {ACTIVATION_TYPES}, got {activations!r}")
    batches = _check_batches(calibration_batches)
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if reduce_range is None:
        f = cpu_features()
        reduce_range = activations == "u8" and f["arch"] == "x86_64" and not (f["avx512_vnni"] or f["avx_vnni"])

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT_NAME: b.detach().cpu().numpy().astype(np.float32)} for b in batches])

        def get_next(self):  # noqa: D401 - ONNX Runtime's interface
            return next(self._it, None)

    dst = Path(dst)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    logging.getLogger("root").setLevel(logging.ERROR)  # quant_pre_process logs through the root logger
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, reduce_range=reduce_range,
        )
    pre.unlink(missing_ok=True)
    return {"path": str(dst), "activations": activations, "per_channel": per_channel, "reduce_range": reduce_range,
            "size_mb": file_size_mb(dst)}


class OrtModel:
    """An ONNX Runtime session behind a PyTorch-like call: ``OrtModel(path)(x) -> logits tensor``.

    ``threads`` fixes ``intra_op_num_threads`` (one inter-op thread, sequential execution), so a
    comparison with PyTorch at the same thread count is fair. ``size_mb`` is the file's size;
    ``kernel`` says what runs the convolutions.
    """

    def __init__(self, path: Union[str, Path], threads: int = 1, label: str = "") -> None:
        _require()
        import onnxruntime as ort

        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.size_mb = file_size_mb(self.path)
        self.threads = threads
        quantized = any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in _graph_nodes(self.path))
        self.kernel = {
            "engine": f"onnxruntime {ort.__version__}",
            "library": "MLAS",
            "isa": "chosen by MLAS from CPUID at run time (not reported)",
            "label": "MLAS " + ("QGEMM/int8 conv" if quantized else "FP32 conv") + (f" ({label})" if label else ""),
        }

    def __call__(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"OrtModel({self.path!r}, threads={self.threads})"


def _graph_nodes(path: str):
    import onnx

    return onnx.load(path, load_external_data=False).graph.node


def qdq_summary(path: Union[str, Path]) -> Dict[str, Any]:
    """What static quantization put into an ONNX file: ``{"Conv", "QuantizeLinear", "DequantizeLinear",
    "activation_dtype", "per_channel_convs"}`` (convs whose weight has one scale per output channel)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {i.name: i for i in model.graph.initializer}
    nodes = model.graph.node
    count = {op: sum(n.op_type == op for n in nodes) for op in ("Conv", "QuantizeLinear", "DequantizeLinear")}
    zp = {str(numpy_helper.to_array(init[n.input[2]]).dtype) for n in nodes
          if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init}
    weights = {n.input[1] for n in nodes if n.op_type == "Conv"}
    per_channel = 0
    for n in nodes:
        if n.op_type == "DequantizeLinear" and n.output[0] in weights and n.input[1] in init:
            per_channel += int(len(init[n.input[1]].dims) == 1 and init[n.input[1]].dims[0] > 1)
    return {**count, "activation_dtype": ", ".join(sorted(zp)) or None, "per_channel_convs": per_channel}
