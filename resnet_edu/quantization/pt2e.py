"""Part 4, PT2E with torchao (chapter 9): export -> prepare_pt2e -> calibrate -> convert_pt2e -> torch.compile.

:func:`quantize_pt2e` is the maintained INT8 path (``torch.export`` with ``strict=True``, ``prepare_pt2e``
with ``X86InductorQuantizer``, calibration, ``convert_pt2e``, dropping the leftover FP32 weights,
``torch.compile``). torchao is the optional extra ``resnet-edu[pt2e]``; it is imported only inside the
functions that need it (:func:`pt2e_available` says whether it is installed).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .eager import _check_batches
from .kernels import activation_bits_for

__all__ = [
    "pt2e_available",
    "export_for_pt2e",
    "quantize_pt2e",
    "drop_unused_attributes",
    "FrozenInductorModule",
    "quantized_op_counts",
]


def pt2e_available() -> bool:
    """True when torchao (the optional extra ``resnet-edu[pt2e]``) is installed."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def _require_torchao() -> None:
    if not pt2e_available():
        raise ImportError(
            "the PT2E flow needs torchao: pip install 'resnet-edu[pt2e]' (or pip install torchao; "
            "it declares no torch dependency, so it never replaces your torch)"
        )


def export_for_pt2e(model: nn.Module, example: Tensor, dynamic_batch: bool = True) -> torch.fx.GraphModule:
    """``torch.export.export(model, (example,), strict=True).module()``: the graph PT2E quantizes.

    ``strict=True`` matters: the non-strict export of a ResNet whose blocks reuse one ``self.relu``
    leaves a shared ReLU node that ``prepare_pt2e`` rejects ("Input partition has more than one output
    node"); strict (TorchDynamo) tracing gives each call its own node. With ``dynamic_batch`` the batch
    dimension stays symbolic (an example with batch 1 is doubled first, since export specializes size 1).
    """
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError(f"example must be an input batch of shape (N, 3, H, W), got {getattr(example, 'shape', example)!r}")
    if dynamic_batch and example.shape[0] < 2:
        example = example.repeat(2, 1, 1, 1)
    dynamic_shapes = ({0: torch.export.Dim.AUTO},) if dynamic_batch else None
    model = model.eval()
    return torch.export.export(model, (example,), strict=True, dynamic_shapes=dynamic_shapes).module()


def drop_unused_attributes(gm: torch.fx.GraphModule) -> List[str]:
    """Delete parameters and buffers no graph node reads; return their names.

    ``convert_pt2e`` folds each weight's quantization into an int8 constant but leaves the original
    FP32 weight attached to the module: the state dict of the int8 model ends up larger than the FP32
    one. This removes such leftovers (and submodules left empty).
    """
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = []
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name in used:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if attr in owner._parameters:
            del owner._parameters[attr]
        elif attr in owner._buffers:
            del owner._buffers[attr]
        else:  # pragma: no cover - named_* only yields these two kinds
            continue
        dropped.append(name)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return dropped


def quantize_pt2e(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    compile: bool = True,
    dynamic_batch: bool = True,
    reduce_range: Optional[bool] = None,
    progress: bool = True,
    static_shapes: bool = False,
    inductor_options: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """The maintained INT8 path: PT2E quantization with torchao's ``X86InductorQuantizer``.

    Steps: :func:`export_for_pt2e` (strict ``torch.export``) -> ``prepare_pt2e`` (inserts observers
    where the quantizer's annotations say) -> calibration -> ``convert_pt2e`` (quantize/dequantize
    pairs around float ops; weights become int8 constants) -> :func:`drop_unused_attributes` ->
    ``torch.compile`` with inductor, whose freezing pass fuses each dequant-conv-quant pattern into
    one oneDNN int8 convolution. Freezing must be on while inductor compiles, i.e. during the calls:
    the result is a :class:`FrozenInductorModule`, which sets ``torch._inductor.config.freezing``
    around each call (the global ``torch._inductor.config.freezing = True`` works too, but for the
    whole process; ``torch.compile(options={"freezing": True})`` fails on ``onednn.qconv_prepack``
    in torch 2.14).

    ``reduce_range=None`` uses 7-bit activations where oneDNN's int8 kernel here sums ``vpmaddubsw``'s
    int16 pairs (no VNNI, or ``ONEDNN_MAX_CPU_ISA`` capped below it; see chapter 7), 8-bit otherwise.
    ``compile=False`` returns the converted graph module (quantize/dequantize ops, runs in float).

    Two compile settings for speed (chapter 10 measures what each buys): ``static_shapes=True`` is
    ``torch.compile(dynamic=False)``, one specialized graph per input shape (by default the second
    batch size seen gets a graph with a symbolic batch dimension); ``inductor_options`` are more
    ``torch._inductor.config`` settings patched in with freezing around each call, e.g.
    ``{"cpp_wrapper": True}`` (the calls between kernels in C++ instead of Python).
    """
    _require_torchao()
    batches = _check_batches(calibration_batches)
    _quiet_torchao_import()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from tqdm.auto import tqdm

    if reduce_range is None:  # inductor runs the convolutions on oneDNN: 7-bit where it sums int16 pairs
        reduce_range = activation_bits_for("onednn") == 7
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    with torch.random.fork_rng(devices=[]):
        gm = export_for_pt2e(copy.deepcopy(model).eval(), batches[0], dynamic_batch=dynamic_batch)
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for x in tqdm(batches, desc="calibrating", disable=not progress, leave=False):
            prepared(x)
    converted = convert_pt2e(prepared)
    drop_unused_attributes(converted)
    if not compile:
        return converted
    return FrozenInductorModule(torch.compile(converted, dynamic=False if static_shapes else None), inductor_options)


class FrozenInductorModule(nn.Module):
    """A ``torch.compile``-d module whose every call runs with inductor's freezing pass switched on.

    Compilation happens lazily, on the first call and again for each new input shape, so freezing must
    be on during the calls, not only when ``torch.compile`` is invoked. ``torch._inductor.config.patch``
    sets the same flag as the global ``torch._inductor.config.freezing = True``, but only for the
    duration of each call: other ``torch.compile`` users in the process (e.g. an FP32 baseline) are
    unaffected. (``torch.compile(options={"freezing": True})`` is not equivalent: it fails on
    ``onednn.qconv_prepack`` in torch 2.14.) ``options`` are more ``torch._inductor.config`` settings
    patched in the same way (e.g. ``{"cpp_wrapper": True}``); unknown names raise at the first call.
    """

    def __init__(self, compiled: nn.Module, options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.compiled = compiled
        self.options: Dict[str, Any] = dict(options or {})
        if "freezing" in self.options:
            raise ValueError("FrozenInductorModule always freezes; pass other inductor settings in options")

    def forward(self, x: Tensor) -> Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True, **self.options):
            return self.compiled(x)


def quantized_op_counts(model: nn.Module) -> Dict[str, int]:
    """Count the quantization ops in a converted PT2E graph (``quantized_decomposed.*`` targets).

    Accepts the graph module or its wrappers (``torch.compile``, :class:`FrozenInductorModule`,
    :class:`.QuantizedRunner`).
    """
    gm = model
    for attr in ("model", "compiled", "_orig_mod"):  # QuantizedRunner -> FrozenInductorModule -> torch.compile
        gm = getattr(gm, attr, gm)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValueError(f"expected a converted PT2E GraphModule (or its torch.compile wrapper), got {type(gm).__name__}")
    counts: Dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and str(n.target).startswith("quantized_decomposed."):
            key = str(n.target).split(".")[1]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _quiet_torchao_import() -> None:
    # torchao registers an Enum with torch's pytree at import; torch 2.14 logs a deprecation line for it
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
