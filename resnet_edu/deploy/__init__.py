"""Deployment (chapter 10): the book's ResNets on ONNX Runtime and OpenVINO, BF16, and the CPU's limits.

One file per stage:

* :mod:`.export`: ``torch.onnx.export`` (the dynamo exporter, TorchScript's as fallback);
* :mod:`.ort_runtime`: ONNX Runtime sessions and static INT8 quantization (QDQ, per-channel, U8S8 or S8S8);
* :mod:`.ov_runtime`: OpenVINO compiled models (default BF16 hint or FP32) and NNCF INT8 quantization;
* :mod:`.torch_paths`: PyTorch's own paths (BF16 autocast, frozen inductor, ``channels_last``, PT2E compiled, AOTInductor);
* :mod:`.torchscript`: chapter 8's eager INT8 model traced and frozen by TorchScript (deprecated, measured anyway);
* :mod:`.flows`: all of them as benchmark flows (:data:`DEPLOY_FLOWS`), for ``python -m resnet_edu.bench``;
* :mod:`.timing`: interleaved timing, min/median/spread and the noise flag;
* :mod:`.cpu`, :mod:`.limits`, :mod:`.families`: the CPU's features, the physical limit, and the same
  INT8 model under each kernel family in subprocesses ("What VNNI buys you");
* :mod:`.words`: comparison words chosen from the measurement, for the chapter's prose;
* :mod:`.profile`: one pass split into convolutions and the rest (oneDNN verbose, OpenVINO's counters, torch.profiler).

ONNX Runtime, OpenVINO and NNCF are the optional extra ``resnet-edu[deploy]``; without them the
ONNX-based flows are simply absent and the PyTorch ones remain.
"""

from .cpu import bf16_support, best_isa, clock_ghz, cpu_features, physical_cores
from .export import INPUT_NAME, export_onnx, file_size_mb, onnx_available
from .families import VNNI_FAMILIES, VNNI_ISAS, family_spec, time_families, time_family, vnni_families, vnni_sentence
from .flows import DEPLOY_FLOWS, FLOW_LABELS, deploy_flows, onnx_file
from .limits import MACS_PER_CYCLE, limit_isa, limit_rows, lower_bound_ms, peak_macs_per_second
from .ort_runtime import ACTIVATION_TYPES, OrtModel, mlas_isa, ort_available, ort_kernel, qdq_summary, quantize_onnx
from .profile import conv_call_overhead, onednn_times, openvino_times, parse_onednn_verbose, torch_op_times
from .ov_runtime import PRECISIONS, OpenVINOModel, default_precision, nncf_available, openvino_available, quantize_nncf
from .timing import MAX_ROUNDS, NOISE_LIMIT, SETTLE_MS, agreement, measure, speedup, summarize, time_interleaved
from .torch_paths import TUNED_SETTINGS, AOTInductorRunner, Bf16Autocast, ChannelsLast, aot_compile_pt2e, compile_frozen, compile_pt2e, quantize_pt2e_tuned, torch_kernel
from .torchscript import TracedInt8, trace_frozen
from .words import TOLERANCE, amount_word, check_claim, claim, ratio, speed_word

__all__ = [
    "cpu_features", "bf16_support", "best_isa", "clock_ghz", "physical_cores",
    "export_onnx", "onnx_available", "file_size_mb", "INPUT_NAME",
    "ort_available", "quantize_onnx", "OrtModel", "ACTIVATION_TYPES", "qdq_summary", "mlas_isa", "ort_kernel",
    "openvino_available", "nncf_available", "quantize_nncf", "OpenVINOModel", "PRECISIONS", "default_precision",
    "Bf16Autocast", "ChannelsLast", "compile_frozen", "compile_pt2e", "torch_kernel", "quantize_pt2e_tuned", "TUNED_SETTINGS",
    "AOTInductorRunner", "aot_compile_pt2e", "TracedInt8", "trace_frozen",
    "DEPLOY_FLOWS", "deploy_flows", "FLOW_LABELS", "onnx_file",
    "NOISE_LIMIT", "SETTLE_MS", "MAX_ROUNDS", "time_interleaved", "summarize", "speedup", "agreement", "measure",
    "MACS_PER_CYCLE", "peak_macs_per_second", "lower_bound_ms", "limit_rows", "limit_isa",
    "VNNI_FAMILIES", "VNNI_ISAS", "vnni_families", "vnni_sentence", "family_spec", "time_family", "time_families",
    "TOLERANCE", "speed_word", "amount_word", "ratio", "claim", "check_claim",
    "parse_onednn_verbose", "onednn_times", "openvino_times", "torch_op_times", "conv_call_overhead",
]
