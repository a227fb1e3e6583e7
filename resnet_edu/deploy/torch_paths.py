"""PyTorch's own fast paths, for comparison with the other runtimes and for closing the gap.

* :class:`Bf16Autocast`: FP32 weights, BF16 arithmetic through ``torch.autocast("cpu", torch.bfloat16)``
  (oneDNN runs the convolutions in BF16 on CPUs with AVX512_BF16 or AMX, and emulates it elsewhere);
* :func:`compile_frozen`: ``torch.compile`` with inductor's freezing pass (weights become constants,
  pre-packed for oneDNN), optionally in ``channels_last`` memory format;
* :class:`ChannelsLast`: any model fed ``channels_last`` inputs;
* :func:`compile_pt2e`: one converted PT2E graph compiled with chosen settings, on a copy, so one
  conversion serves every compiled variant (no second ``torch.export``: a strict export resets
  dynamo's caches, and every model compiled before it compiles again on its next call);
* :func:`quantize_pt2e_tuned`: chapter 9's PT2E INT8 model with every compile setting that closed part
  of the gap to the fastest runtime in chapter 10's measurements: 8-bit activations on VNNI, one
  static graph per input shape, inductor's C++ wrapper, ``channels_last`` inputs;
* :func:`aot_compile_pt2e`: the same converted graph compiled ahead of time by AOTInductor into one
  shared library per input shape (:class:`AOTInductorRunner`): no dynamo guards and no Python between
  kernels at call time.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["Bf16Autocast", "compile_frozen", "ChannelsLast", "torch_kernel", "compile_pt2e", "quantize_pt2e_tuned", "TUNED_SETTINGS",
           "AOTInductorRunner", "aot_compile_pt2e"]


def torch_kernel(kind: str) -> Dict[str, str]:
    """The ``kernel`` record of a PyTorch row: ``kind`` is ``"fp32"``, ``"bf16"``, ``"inductor"``, ``"pt2e-tuned"`` or ``"pt2e-aoti"``."""
    cap = torch.backends.cpu.get_cpu_capability()
    labels = {
        "fp32": f"ATen conv via oneDNN (mkldnn), FP32; ATen capability {cap}",
        "bf16": f"ATen conv via oneDNN (mkldnn), BF16 autocast; ATen capability {cap}",
        "inductor": f"inductor C++ + oneDNN (frozen weights); ATen capability {cap}",
        "pt2e-tuned": f"inductor + oneDNN int8 qconv (frozen, static shapes, C++ wrapper, channels_last); ATen capability {cap}",
        "pt2e-aoti": f"AOTInductor + oneDNN int8 qconv (frozen, one library per input shape); ATen capability {cap}",
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

    Freezing is also passed to ``torch.compile`` as an option, which makes its backend differ from a
    plain ``torch.compile`` of the same model class: dynamo keeps compiled graphs per code object
    (``forward`` of the class), and without a backend of its own the frozen model would reuse a plain
    compile's graph of the same shapes (measured: a first call of 0.02 s, no freezing at all).
    """
    from ..quantization import FrozenInductorModule, model_size_mb

    if not isinstance(model, nn.Module):
        raise ValueError(f"compile_frozen needs an nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    runner: nn.Module = _NoGrad(FrozenInductorModule(torch.compile(m, options={"freezing": True})))
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


TUNED_SETTINGS: Dict[str, Any] = {"reduce_range": None, "static_shapes": True, "cpp_wrapper": True, "channels_last": True,
                                  "max_autotune": False}
"""The settings of :func:`quantize_pt2e_tuned`'s default: ``reduce_range=None`` is 8-bit activations where
the CPU has VNNI (7-bit elsewhere); ``max_autotune`` stays off (in chapter 10's measurements it bought
little and costs compile time)."""


def _check_converted(converted: Any, caller: str) -> None:
    if not isinstance(converted, torch.fx.GraphModule):
        raise ValueError(f"{caller} needs a converted PT2E graph (quantize_pt2e(..., compile=False)), got {type(converted).__name__}")


def compile_pt2e(converted: nn.Module, static_shapes: bool = False, cpp_wrapper: bool = False, channels_last: bool = False,
                 max_autotune: bool = False) -> nn.Module:
    """Compile a copy of ``converted`` (``quantize_pt2e(..., compile=False)``) with inductor and freezing.

    The settings are those of chapter 10's "closing the gap": ``static_shapes`` is ``torch.compile(dynamic=False)``
    (one specialized graph per input shape), ``cpp_wrapper`` and ``max_autotune`` are inductor settings
    patched in with freezing around each call, ``channels_last`` converts each input to NHWC. All settings
    off is :func:`~resnet_edu.quantization.quantize_pt2e`'s compiled model.

    Each call compiles its own deep copy, so variants of one conversion never share dynamo's compiled graphs,
    and no variant needs a second ``torch.export``: a strict export resets dynamo's caches (every model
    compiled before it would compile again on its next call), so convert first, then compile.

    Returns a runner (under ``no_grad``) with ``kernel``, ``size_mb`` (the INT8 state dict) and ``settings``.
    """
    from ..quantization import FrozenInductorModule, QuantizedRunner, model_size_mb

    _check_converted(converted, "compile_pt2e")
    options: Dict[str, Any] = {}
    if cpp_wrapper:
        options["cpp_wrapper"] = True
    if max_autotune:
        options["max_autotune"] = True
    gm = copy.deepcopy(converted)
    runner: nn.Module = QuantizedRunner(FrozenInductorModule(torch.compile(gm, dynamic=False if static_shapes else None), options))
    if channels_last:
        runner = ChannelsLast(runner)
    settings = {"static_shapes": static_shapes, "cpp_wrapper": cpp_wrapper, "channels_last": channels_last, "max_autotune": max_autotune}
    if static_shapes and cpp_wrapper and channels_last and not max_autotune:
        runner.kernel = torch_kernel("pt2e-tuned")
    else:
        cap = torch.backends.cpu.get_cpu_capability()
        names = {"static_shapes": "static shapes", "cpp_wrapper": "C++ wrapper", "channels_last": "channels_last", "max_autotune": "max_autotune"}
        what = ", ".join(["frozen"] + [names[k] for k, on in settings.items() if on])
        runner.kernel = {"engine": f"torch {torch.__version__.split('+')[0]}", "library": "onednn", "isa": str(cap),
                         "label": f"inductor + oneDNN int8 qconv ({what}); ATen capability {cap}"}
    runner.size_mb = model_size_mb(gm)
    runner.settings = settings
    return runner


def quantize_pt2e_tuned(model: nn.Module, calibration_batches: Sequence[Tensor], reduce_range: Optional[bool] = None,
                        static_shapes: bool = True, cpp_wrapper: bool = True, channels_last: bool = True,
                        max_autotune: bool = False, progress: bool = False) -> nn.Module:
    """Chapter 9's :func:`~resnet_edu.quantization.quantize_pt2e` with the compile settings of chapter 10's
    "closing the gap": one static graph per input shape (``torch.compile(dynamic=False)``), inductor's
    ``cpp_wrapper`` (the calls between kernels made from C++, not Python: it matters most at batch 1),
    optionally ``max_autotune``, and ``channels_last`` inputs (NHWC, the layout oneDNN's convolutions use).

    The conversion (export, calibration, convert) followed by :func:`compile_pt2e`. Returns a runner
    (under ``no_grad``) with ``kernel``, ``size_mb`` (the INT8 state dict) and ``settings``.
    """
    from ..quantization import quantize_pt2e

    converted = quantize_pt2e(model, calibration_batches, reduce_range=reduce_range, progress=progress, compile=False)
    runner = compile_pt2e(converted, static_shapes=static_shapes, cpp_wrapper=cpp_wrapper, channels_last=channels_last,
                          max_autotune=max_autotune)
    runner.settings = {"reduce_range": reduce_range, **runner.settings}
    return runner


class AOTInductorRunner(nn.Module):
    """Run the AOTInductor package compiled for the input's shape (see :func:`aot_compile_pt2e`).

    A shape met for the first time is compiled then (one more package, seconds to a minute), as
    ``torch.compile`` with static shapes does; ``packages`` maps each input shape to its loaded package
    and ``paths`` to its ``.pt2`` file.
    """

    def __init__(self, converted: nn.Module, folder: Path) -> None:
        super().__init__()
        self.converted = converted
        self.folder = Path(folder)
        self.packages: Dict[Tuple[int, ...], Any] = {}
        self.paths: Dict[Tuple[int, ...], str] = {}

    def train(self, mode: bool = True) -> "AOTInductorRunner":
        self.training = mode  # a compiled library has no training mode
        return self

    def compile_for(self, x: Tensor) -> Any:
        """The loaded package for ``x``'s shape; the first time, export the converted graph at that shape,
        compile it with freezing and load the package."""
        import torch._inductor as inductor
        import torch._inductor.config as inductor_config

        shape = tuple(x.shape)
        if shape not in self.packages:
            with torch.no_grad():
                ep = torch.export.export(copy.deepcopy(self.converted), (x,), strict=False)
                with inductor_config.patch(freezing=True):
                    path = inductor.aoti_compile_and_package(ep, package_path=str(self.folder / f"pt2e_{'x'.join(map(str, shape))}.pt2"),
                                                             inductor_configs={"freezing": True})
            self.packages[shape] = inductor.aoti_load_package(path)
            self.paths[shape] = str(path)
        return self.packages[shape]

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"AOTInductorRunner needs a 4-d image batch tensor (N, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        with torch.no_grad():
            out = self.compile_for(x)(x)  # the loaded package for this shape (compiled on first sight)
        return out[0] if isinstance(out, (list, tuple)) else out


def aot_compile_pt2e(converted: nn.Module, example_inputs: Sequence[Tensor], directory: Optional[Union[str, Path]] = None) -> nn.Module:
    """Compile a converted PT2E graph ahead of time with AOTInductor (freezing on), one package per input shape.

    ``torch.compile`` checks its guards and runs a Python wrapper on every call; AOTInductor exports the
    graph (``torch.export``, non-strict, so dynamo's caches stay as they are), compiles it to a shared
    library once per shape of ``example_inputs``, and each call goes straight into that library. The
    packages (``.pt2`` files) are written to ``directory`` (default: a new temporary folder) and loaded
    with ``torch._inductor.aoti_load_package``. Returns an :class:`AOTInductorRunner` with ``kernel``,
    ``size_mb`` (the INT8 state dict) and ``settings``.
    """
    from ..quantization import model_size_mb

    _check_converted(converted, "aot_compile_pt2e")
    examples = list(example_inputs)
    if not examples or not all(isinstance(x, Tensor) and x.dim() == 4 for x in examples):
        raise ValueError("aot_compile_pt2e needs at least one example input, each a 4-d image batch tensor (one per input shape to compile)")
    if directory is None:
        folder = Path(tempfile.mkdtemp(prefix="resnet_edu_aoti_"))
        atexit.register(shutil.rmtree, folder, True)  # packages are ~50 MB each; do not leave them in /tmp
    else:
        folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    runner = AOTInductorRunner(converted, folder)
    for x in examples:
        runner.compile_for(x)
    runner.kernel = torch_kernel("pt2e-aoti")
    runner.size_mb = model_size_mb(converted)
    runner.settings = {"aot": True, "shapes": list(runner.packages)}
    return runner
