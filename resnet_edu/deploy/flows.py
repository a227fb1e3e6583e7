"""The deployment paths as benchmark flows: ``name -> build(fp32_model, calibration_batches) -> runner``.

The same contract as ``resnet_edu.quantization.BENCH_FLOWS``: a builder gets a ResNet in eval mode
(not modified) and calibration batches, and returns a callable ``runner(x) -> logits`` that runs
under ``no_grad``. Every runner here also carries ``size_mb`` (what it would ship: the ONNX file,
the OpenVINO .xml + .bin, or the PyTorch state dict) and ``kernel`` (what runs its convolutions).
Threads: a runner uses ``torch.get_num_threads()`` at build time, so PyTorch, ONNX Runtime and
OpenVINO all run with the same count.

One ONNX export per model serves every ONNX Runtime and OpenVINO flow (cached by a fingerprint of
the weights and input shape, in a temporary directory removed at exit).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
import torch.nn as nn
from torch import Tensor

from .export import export_onnx, onnx_available
from .ort_runtime import OrtModel, ort_available, quantize_onnx
from .ov_runtime import OpenVINOModel, nncf_available, openvino_available, quantize_nncf
from .torch_paths import Bf16Autocast, aot_compile_pt2e, compile_frozen, quantize_pt2e_tuned
from .torchscript import trace_frozen

__all__ = ["DEPLOY_FLOWS", "deploy_flows", "FLOW_LABELS", "onnx_file"]

_TMP: Dict[str, Path] = {}
_EXPORTS: Dict[str, Dict[str, Any]] = {}


def _tmpdir() -> Path:
    if "dir" not in _TMP:
        _TMP["dir"] = Path(tempfile.mkdtemp(prefix="resnet_edu_deploy_"))
        atexit.register(shutil.rmtree, _TMP["dir"], True)
    return _TMP["dir"]


def _fingerprint(model: nn.Module, example: Tensor) -> str:
    h = hashlib.sha1(repr(tuple(example.shape[1:])).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_file(model: nn.Module, example: Tensor) -> Dict[str, Any]:
    """The ONNX export of ``model`` (see :func:`.export.export_onnx`), made once per weights and input shape."""
    key = _fingerprint(model, example)
    if key not in _EXPORTS:
        _EXPORTS[key] = export_onnx(model, example[:1], _tmpdir() / f"{key}.onnx")
    return _EXPORTS[key]


def _threads() -> int:
    return torch.get_num_threads()


def _ort_fp32(model: nn.Module, batches: List[Tensor]) -> Callable[[Tensor], Tensor]:
    exp = onnx_file(model, batches[0])
    runner = OrtModel(exp["path"], threads=_threads(), label="FP32")
    runner.exporter = exp["exporter"]
    return runner


def _ort_int8(activations: str) -> Callable[[nn.Module, List[Tensor]], Callable[[Tensor], Tensor]]:
    def build(model: nn.Module, batches: List[Tensor]) -> Callable[[Tensor], Tensor]:
        exp = onnx_file(model, batches[0])
        src = Path(exp["path"])
        q = quantize_onnx(src, src.with_name(f"{src.stem}.{activations}s8.onnx"), batches, activations=activations)
        runner = OrtModel(q["path"], threads=_threads(), label=f"{activations.upper()}S8")
        runner.exporter = exp["exporter"]
        runner.reduce_range = q["reduce_range"]
        return runner

    build.__doc__ = f"ONNX Runtime static INT8, QDQ, per-channel weights, {activations.upper()}S8."
    return build


def _ov(precision: Any) -> Callable[[nn.Module, List[Tensor]], Callable[[Tensor], Tensor]]:
    def build(model: nn.Module, batches: List[Tensor]) -> Callable[[Tensor], Tensor]:
        exp = onnx_file(model, batches[0])
        return OpenVINOModel(exp["path"], threads=_threads(), precision=precision)

    build.__doc__ = f"OpenVINO on the FP32 ONNX file, inference precision hint {precision or 'default'}."
    return build


def _ov_int8(model: nn.Module, batches: List[Tensor]) -> Callable[[Tensor], Tensor]:
    exp = onnx_file(model, batches[0])
    src = Path(exp["path"])
    q = quantize_nncf(src, src.with_name(f"{src.stem}.nncf.xml"), batches)
    return OpenVINOModel(q["path"], threads=_threads())


def _bf16_autocast(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    return Bf16Autocast(model)


def _fp32_frozen_cl(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    return compile_frozen(model, channels_last=True)


def _pt2e_tuned(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    return quantize_pt2e_tuned(model, batches)


def _eager_jit(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    """Chapter 8's eager INT8 model (default engine and recipe), traced and frozen by TorchScript."""
    from ..quantization import default_engine, quantize_ptq

    engine = default_engine()
    return trace_frozen(quantize_ptq(model, batches, backend=engine, progress=False), batches[0], engine=engine)


def _eager_jit_fused(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    """Chapter 8's eager recipe for the onednn engine, each block's residual add folded into its last
    convolution (``rq.fuse_residual_adds``), traced and frozen by TorchScript."""
    from ..quantization import fuse_residual_adds, quantize_ptq

    traced = trace_frozen(fuse_residual_adds(quantize_ptq(model, batches, backend="onednn", progress=False)), batches[0], engine="onednn")
    traced.kernel["label"] = f"{traced.kernel['label']}; residual adds fused (oneDNN sum post-op)"
    return traced


def _pt2e_aoti(model: nn.Module, batches: List[Tensor]) -> nn.Module:
    """PT2E INT8 (8-bit activations where the kernel accumulates in int32), compiled by AOTInductor for the calibration batches' shape."""
    from ..quantization import quantize_pt2e

    converted = quantize_pt2e(model, batches, progress=False, compile=False)
    return aot_compile_pt2e(converted, [batches[0]])  # its own temporary folder, removed at exit


FLOW_LABELS: Dict[str, str] = {
    "fp32-eager": "PyTorch FP32 eager",
    "fp32-compile": "PyTorch FP32 torch.compile",
    "fp32-compile-frozen-cl": "PyTorch FP32 compile, freezing, channels_last",
    "bf16-autocast": "PyTorch BF16 autocast",
    "int8-eager-x86": "PyTorch INT8 eager x86",
    "int8-eager-qnnpack": "PyTorch INT8 eager qnnpack",
    "int8-eager-x86-torchvision": "torchvision INT8 eager x86",
    "int8-pt2e-inductor": "PyTorch INT8 PT2E + inductor",
    "int8-pt2e-static": "PyTorch INT8 PT2E, static shapes",
    "int8-pt2e-tuned": "PyTorch INT8 PT2E, tuned (static shapes, C++ wrapper, channels_last)",
    "int8-pt2e-aoti": "PyTorch INT8 PT2E, AOTInductor (compiled ahead of time)",
    "int8-eager-jit": "PyTorch INT8 eager, TorchScript (traced, frozen)",
    "int8-eager-jit-fused": "PyTorch INT8 eager onednn, residual adds fused, TorchScript",
    "ort-fp32": "ONNX Runtime FP32",
    "ort-int8-s8s8": "ONNX Runtime INT8 QDQ, S8S8",
    "ort-int8-u8s8": "ONNX Runtime INT8 QDQ, U8S8",
    "ov-default": "OpenVINO FP32 model, default hint",
    "ov-f32": "OpenVINO FP32 model, f32 hint",
    "ov-int8-nncf": "OpenVINO INT8 (NNCF PTQ)",
}
"""Readable names of every flow the benchmark and chapter 10 know."""


def deploy_flows() -> Dict[str, Callable[[nn.Module, List[Tensor]], Callable[[Tensor], Tensor]]]:
    """The deployment flows whose packages are installed (ONNX Runtime's need onnx + onnxruntime, and so on)."""
    flows: Dict[str, Callable[[nn.Module, List[Tensor]], Callable[[Tensor], Tensor]]] = {
        "bf16-autocast": _bf16_autocast,
        "fp32-compile-frozen-cl": _fp32_frozen_cl,
    }
    if hasattr(torch, "jit") and hasattr(torch.jit, "freeze"):  # deprecated: gone from some future PyTorch
        flows["int8-eager-jit"] = _eager_jit
        from ..quantization import quantized_engines

        if "onednn" in quantized_engines():   # quantized::conv2d_add_relu is oneDNN's (x86 CPUs)
            flows["int8-eager-jit-fused"] = _eager_jit_fused
    from ..quantization import pt2e_available

    if pt2e_available():
        flows["int8-pt2e-tuned"] = _pt2e_tuned
        flows["int8-pt2e-aoti"] = _pt2e_aoti
    if onnx_available() and ort_available():
        flows.update({"ort-fp32": _ort_fp32, "ort-int8-s8s8": _ort_int8("s8"), "ort-int8-u8s8": _ort_int8("u8")})
    if onnx_available() and openvino_available():
        flows.update({"ov-default": _ov(None), "ov-f32": _ov("f32")})
        if nncf_available():
            flows["ov-int8-nncf"] = _ov_int8
    return flows


DEPLOY_FLOWS = deploy_flows()
"""The flows of :func:`deploy_flows` found at import time."""
