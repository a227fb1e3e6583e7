"""INT8 ResNet: torchvision's quantizable models rebuilt, three ways to quantize them, and the arithmetic.

Four parts, in the order the book teaches them, one module each (every name below is importable
from ``resnet_edu.quantization`` directly):

1. **First principles** (chapter 7): affine quantization written out (:func:`~.arithmetic.qparams`,
   :func:`~.arithmetic.quantize_tensor`, :func:`~.arithmetic.fake_quantize`) and the error measure
   (:func:`~.arithmetic.sqnr_db`) in :mod:`~resnet_edu.quantization.arithmetic`;
   :func:`~.reference.reference_qconv2d` in :mod:`~resnet_edu.quantization.reference`, a quantized
   convolution recomputed with integers the way the kernel that runs here computes it (fbgemm, oneDNN
   or QNNPACK; exact or int16-saturated accumulation), and :mod:`~resnet_edu.quantization.kernels`,
   which names that kernel and runs code under another kernel family in a subprocess.
2. **The models** (chapter 8), :mod:`~resnet_edu.quantization.models`:
   :class:`~.models.QuantizableBasicBlock`, :class:`~.models.QuantizableBottleneck`,
   :class:`~.models.QuantizableResNet` and ten builders. They mirror
   ``torchvision.models.quantization.resnet`` name for name: same module tree, same ``state_dict`` keys
   before and after conversion, the same int8 outputs after the same post-training quantization
   (``tests/test_quantization.py`` checks all three). torchvision offers four quantizable variants;
   the other six builders here are new.
3. **Eager-mode recipes** (chapter 8), :mod:`~resnet_edu.quantization.eager`:
   :func:`~.eager.quantize_ptq` (fuse, qconfig, observers, calibration, convert),
   :func:`~.eager.quantize_qat` (fake quantization while training a few epochs), and
   :func:`~.eager.layer_sensitivity` (quantize one layer at a time).
4. **PT2E with torchao** (chapter 9), :mod:`~resnet_edu.quantization.pt2e`:
   :func:`~.pt2e.quantize_pt2e` (``torch.export`` with ``strict=True``, ``prepare_pt2e`` with
   ``X86InductorQuantizer``, calibration, ``convert_pt2e``, dropping the leftover FP32 weights,
   ``torch.compile``).

Status, stated plainly: ``torch.ao.quantization`` (eager mode, used in parts 2-3) still ships in torch
2.14 but every ``prepare``/``convert`` warns that it "is deprecated and will be removed"; the maintained
path is torchao's PT2E flow (part 4), installed with the optional extra ``resnet-edu[pt2e]``.

The benchmark (:mod:`resnet_edu.bench`) uses :data:`~.flows.BENCH_FLOWS` and
:func:`~.flows.model_size_mb`, from :mod:`~resnet_edu.quantization.flows` (with the warnings the
chapters silence on purpose).
"""

from __future__ import annotations

from .arithmetic import SCHEMES, dequantize_tensor, fake_quantize, qparams, quantize_tensor, sqnr_db
from .eager import (
    QuantizedRunner,
    calibrate,
    capture_io,
    compare_latency,
    layer_sensitivity,
    quantize_ptq,
    quantize_qat,
    residual_scales,
    to_quantizable,
    to_torchvision_quantizable,
)
from .flows import BENCH_FLOWS, DEPRECATION_MESSAGE_START, model_size_mb, silence_known_warnings
from .models import (
    BACKENDS,
    QUANTIZABLE_VARIANTS,
    QUANTIZED_WEIGHTS,
    QuantizableBasicBlock,
    QuantizableBottleneck,
    QuantizableResNet,
    ResNet18_QuantizedWeights,
    ResNet50_QuantizedWeights,
    ResNeXt101_32X8D_QuantizedWeights,
    ResNeXt101_64X4D_QuantizedWeights,
    check_backend,
    get_qconfig,
    get_quantized_weights,
    make_qconfig,
    quantize_model,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from .pt2e import (
    FrozenInductorModule,
    drop_unused_attributes,
    export_for_pt2e,
    pt2e_available,
    quantize_pt2e,
    quantized_op_counts,
)
from . import kernels
from .kernels import (
    FAMILIES,
    available_families,
    conv_kernel,
    cpu_features,
    default_engine,
    family_env,
    fbgemm_isa,
    onednn_isa,
    run_in_family,
)
from .reference import KERNEL_MODELS, integer_accumulate, reference_qconv2d

__all__ = [
    # first principles
    "qparams",
    "quantize_tensor",
    "dequantize_tensor",
    "fake_quantize",
    "sqnr_db",
    "reference_qconv2d",
    "integer_accumulate",
    "KERNEL_MODELS",
    "SCHEMES",
    # which kernel runs here, and how to run under another
    "cpu_features",
    "fbgemm_isa",
    "onednn_isa",
    "conv_kernel",
    "default_engine",
    "FAMILIES",
    "available_families",
    "family_env",
    "run_in_family",
    # models
    "QuantizableBasicBlock",
    "QuantizableBottleneck",
    "QuantizableResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "QUANTIZABLE_VARIANTS",
    "QUANTIZED_WEIGHTS",
    "ResNet18_QuantizedWeights",
    "ResNet50_QuantizedWeights",
    "ResNeXt101_32X8D_QuantizedWeights",
    "ResNeXt101_64X4D_QuantizedWeights",
    "get_quantized_weights",
    "quantize_model",
    # recipes
    "BACKENDS",
    "check_backend",
    "get_qconfig",
    "make_qconfig",
    "to_quantizable",
    "to_torchvision_quantizable",
    "calibrate",
    "quantize_ptq",
    "quantize_qat",
    "layer_sensitivity",
    "QuantizedRunner",
    "capture_io",
    "residual_scales",
    "compare_latency",
    # PT2E
    "pt2e_available",
    "export_for_pt2e",
    "quantize_pt2e",
    "drop_unused_attributes",
    "FrozenInductorModule",
    "quantized_op_counts",
    # sizes, benchmark, warnings
    "model_size_mb",
    "BENCH_FLOWS",
    "silence_known_warnings",
    "DEPRECATION_MESSAGE_START",
]
