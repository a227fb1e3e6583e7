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
recommends ``reduce_range`` (7-bit weights) there, which :func:`quantize_onnx` applies by default, for
S8S8 too: ONNX Runtime rewrites a signed Q/DQ pair that feeds a single convolution to unsigned, so part
of an S8S8 model runs the same U8S8 kernels (see :func:`mlas_isa`).

What ran: ONNX Runtime reports no kernel names, so each :class:`OrtModel` records two things.
*Observed*: the operators of the graph after ONNX Runtime's optimizer (saved once, at load), e.g. how
many convolutions became ``QLinearConv`` and how many stayed FP32 ``Conv`` between a
``DequantizeLinear`` and a ``QuantizeLinear``. *Derived*: the instruction set MLAS (ONNX Runtime's CPU
kernel library) picks for this CPU's flags, by :func:`mlas_isa`, which follows MLAS's own dispatch
rules (the ``MLAS_PLATFORM`` constructor in ``onnxruntime/core/mlas/lib/platform.cpp``, and
``QDQIsInt8Allowed()`` in ``core/optimizer/qdq_transformer/selectors_actions/qdq_selector_action_transformer.h``).
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

__all__ = ["ort_available", "ACTIVATION_TYPES", "quantize_onnx", "OrtModel", "qdq_summary", "mlas_isa", "ort_kernel"]

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
    when ``per_channel``. ``reduce_range=None`` means: 7-bit weights on an x86 CPU without VNNI (ONNX
    Runtime's advice against ``vpmaddubsw`` saturation), 8-bit otherwise. That holds for S8S8 too, whose
    convolutions fed by a single signed pair run as U8S8: on the digits model under ``.ci/emulate-avx2``
    (a Zen3's CPUID), S8S8 with 8-bit weights gave 96.67 % and 25.0 dB logit SQNR against FP32, with 7-bit
    weights 97.56 % and 32.1 dB (FP32: 97.78 %; U8S8 with 8-bit weights: 96.89 %, 25.0 dB). The model is first
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
        reduce_range = f["arch"] == "x86_64" and not (f["avx512_vnni"] or f["avx_vnni"])

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


_ISA_NAMES = {"amx": "AMX", "avx512_vnni": "AVX512-VNNI", "avx512_core": "AVX-512 (BW)", "avx_vnni": "AVX-VNNI",
              "avx2": "AVX2", "sse": "SSE", "avx512f": "AVX-512F", "fma3": "AVX2/FMA3", "avx": "AVX",
              "neon": "NEON (dot product / i8mm if present)"}


def mlas_isa(features: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The kernels MLAS dispatches to for a CPU with ``features`` (default: this CPU, :func:`.cpu.cpu_features`).

    Follows the ``MLAS_PLATFORM`` constructor of ONNX Runtime's ``platform.cpp`` (1.2x), which tests
    CPUID bits in this order, each later match overriding the earlier one on x86-64:

    * AVX2 (+FMA): U8S8 QGEMM and ConvSym kernels ``Avx2``; FP32 conv ``Fma3``;
    * AVX-VNNI: U8S8 kernels ``AvxVnni``;
    * AVX-512 core (F, BW, DQ, VL): U8S8 kernels ``Avx512Core``; FP32 conv ``Avx512F`` already with F;
    * AVX512-VNNI (on top of AVX-512 core): U8S8 kernels ``Avx512Vnni``;
    * AMX-TILE + AMX-INT8 (and the OS granting tile state): U8S8 QGEMM dispatch ``Amx``; ConvSym keeps
      the previous kernel (there is no AMX ConvSym).

    S8S8 on x86: ``QDQIsInt8Allowed()`` is false unless MLAS targets ARM, so the QDQ optimizer does not
    fuse a ``DQ -> Conv -> Q`` with signed activations into ``QLinearConv``: the convolution runs in FP32
    (``fp32_conv``) between a DequantizeLinear and a QuantizeLinear. (Where a signed Q/DQ pair feeds
    one convolution only, ONNX Runtime first rewrites it to unsigned, and that conv is fused as U8S8:
    the optimized graph, which :class:`OrtModel` records, shows how many.) On ARM both types are fused and use
    MLAS's NEON dot-product (``udot``/``sdot``) or i8mm kernels, which it picks from HWCAP.

    Returns ``{"arch", "qgemm_u8s8", "conv_sym_u8s8", "fp32_conv", "s8s8_fused"}`` (ISA keys of
    :data:`_ISA_NAMES`; ``conv_sym_u8s8`` is None where MLAS has no ConvSym kernel, below AVX2).
    ``features["avx512"]`` is read as AVX-512 core; DQ and VL, not in the feature dict, come with BW on
    every CPU that has it.
    """
    f = cpu_features() if features is None else features
    arch = f.get("arch")
    if arch == "arm64":
        return {"arch": arch, "qgemm_u8s8": "neon", "conv_sym_u8s8": "neon", "fp32_conv": "neon", "s8s8_fused": True}
    if arch != "x86_64":
        return {"arch": arch, "qgemm_u8s8": None, "conv_sym_u8s8": None, "fp32_conv": None, "s8s8_fused": False}
    qgemm, conv_sym, fp32 = "sse", None, "sse"
    if f.get("avx2"):
        qgemm = conv_sym = "avx2"
        fp32 = "fma3"
        if f.get("avx_vnni"):
            qgemm = conv_sym = "avx_vnni"
        if f.get("avx512"):
            fp32 = "avx512f"
            qgemm = conv_sym = "avx512_core"
            if f.get("avx512_vnni"):
                qgemm = conv_sym = "avx512_vnni"
        if f.get("amx_int8"):
            qgemm = "amx"
    return {"arch": arch, "qgemm_u8s8": qgemm, "conv_sym_u8s8": conv_sym, "fp32_conv": fp32, "s8s8_fused": False}


def ort_kernel(ops: Dict[str, int], features: Optional[Dict[str, Any]] = None, version: str = "") -> Dict[str, str]:
    """The ``kernel`` record of an ONNX Runtime row from ``ops``, the operator counts of its *optimized* graph.

    ``ops`` comes from the optimized graph (observed); the ISA of each kind of convolution comes from
    :func:`mlas_isa` (MLAS's dispatch rules for this CPU's flags: derived, since the running library
    reports none). ``QLinearConv`` nodes with unsigned activations run MLAS's U8S8 kernels (ConvSym for
    symmetric weights with aligned channels, otherwise im2col + QGEMM); plain ``Conv`` nodes (also
    ONNX Runtime's blocked ``nchwc.Conv``) MLAS's FP32 convolution. ``isa`` joins the ISAs with ``+``,
    the integer kernels first.
    """
    m = mlas_isa(features)
    name = lambda k: _ISA_NAMES.get(m[k], str(m[k]))  # noqa: E731
    qconv = int(ops.get("QLinearConv", 0))
    signed = int(ops.get("QLinearConv:int8", 0))
    fconv = sum(int(ops.get(k, 0)) for k in ("Conv", "FusedConv", "com.microsoft.nchwc.Conv"))
    parts, isas = [], []
    if qconv - signed:
        conv_sym = f"ConvSym {name('conv_sym_u8s8')}, " if m["conv_sym_u8s8"] else ""
        parts.append(f"{qconv - signed} QLinearConv U8S8: MLAS ({conv_sym}QGEMM {name('qgemm_u8s8')})")
        isas.append(m["conv_sym_u8s8"] or m["qgemm_u8s8"])
    if signed:
        parts.append(f"{signed} QLinearConv S8S8: MLAS ({name('qgemm_u8s8') if m['arch'] == 'arm64' else 'S8S8 QGEMM'})")
        isas.append(m["qgemm_u8s8"] if m["arch"] == "arm64" else "s8s8")
    if fconv:
        q = int(ops.get("QuantizeLinear", 0)) + int(ops.get("DequantizeLinear", 0))
        between = " between Q/DQ" if q else ""
        parts.append(f"{fconv} FP32 Conv{between}: MLAS FP32 conv ({name('fp32_conv')})")
        isas.append(m["fp32_conv"])
    label = "; ".join(parts) or "no convolution in the optimized graph"
    return {"engine": f"onnxruntime {version}".strip(), "library": "MLAS",
            "isa": "+".join(str(i) for i in isas) or "none",
            "label": f"{label} (ISA from MLAS's dispatch rules for this CPU's flags)"}


def _optimized_ops(path: str) -> Dict[str, int]:
    """Operator counts of the graph ONNX Runtime's optimizer leaves (domain-prefixed for other domains than
    ONNX's and Microsoft's), plus ``QLinearConv:uint8`` / ``QLinearConv:int8``: the fused convolutions by
    the type of their activations (read from the ``x_zero_point`` initializer)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(path, load_external_data=False).graph
    init = {i.name: i for i in g.initializer}
    counts: Dict[str, int] = {}
    for n in g.node:
        key = n.op_type if n.domain in ("", "ai.onnx", "com.microsoft") else f"{n.domain}.{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
        if n.op_type == "QLinearConv" and len(n.input) > 2 and n.input[2] in init:
            sub = f"QLinearConv:{numpy_helper.to_array(init[n.input[2]]).dtype}"
            counts[sub] = counts.get(sub, 0) + 1
    return counts


class OrtModel:
    """An ONNX Runtime session behind a PyTorch-like call: ``OrtModel(path)(x) -> logits tensor``.

    ``threads`` fixes ``intra_op_num_threads`` (one inter-op thread, sequential execution), so a
    comparison with PyTorch at the same thread count is fair. ``spin_after_run=False`` sets
    ``session.force_spinning_stop``: the pool's threads still spin during a run, but stop when it
    ends, instead of spinning on for 100-200 ms and slowing whatever the process runs next (measured:
    an AOTInductor ResNet-18 at 4.9 ms took 12.8 ms right after an ONNX Runtime call; with the stop,
    5.4 ms, and ONNX Runtime's own time did not change). ``size_mb`` is the file's size;
    ``optimized_ops`` the operator counts of the graph after ONNX Runtime's optimizer (saved once, at
    load, then deleted); ``kernel`` (:func:`ort_kernel`) says what runs the convolutions.
    """

    def __init__(self, path: Union[str, Path], threads: int = 1, label: str = "", spin_after_run: bool = False) -> None:
        _require()
        import tempfile

        import onnxruntime as ort

        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if not spin_after_run:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        self.path = str(path)
        with tempfile.TemporaryDirectory(prefix="resnet_edu_ort_") as tmp:
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            self.optimized_ops = _optimized_ops(options.optimized_model_filepath)
        self.input_name = self.session.get_inputs()[0].name
        self.size_mb = file_size_mb(self.path)
        self.threads = threads
        self.spin_after_run = bool(spin_after_run)
        self.options = options  # what the session was created with
        self.kernel = ort_kernel(self.optimized_ops, version=ort.__version__)
        if label:
            self.kernel["label"] = f"{label}: {self.kernel['label']}"

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
