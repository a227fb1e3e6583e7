"""INT8 ResNet: torchvision's quantizable models rebuilt, three ways to quantize them, and the arithmetic.

Four parts, in the order the book teaches them, in their own modules (every name below is importable
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
   :func:`~.eager.layer_sensitivity` (quantize one layer at a time);
   :func:`~.fuse_add.fuse_residual_adds` in :mod:`~resnet_edu.quantization.fuse_add` folds each block's
   residual add into the convolution before it (oneDNN's sum post-op, chapter 10).
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

from . import arithmetic, eager, flows, fuse_add, kernels, models, pt2e, reference
from .arithmetic import *  # noqa: F401,F403 - each part's __all__
from .reference import *  # noqa: F401,F403
from .kernels import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .eager import *  # noqa: F401,F403
from .fuse_add import *  # noqa: F401,F403
from .pt2e import *  # noqa: F401,F403
from .flows import *  # noqa: F401,F403

_PARTS = (arithmetic, reference, kernels, models, eager, fuse_add, pt2e, flows)  # the order the book teaches them
__all__ = [name for part in _PARTS for name in part.__all__]
