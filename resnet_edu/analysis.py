"""Counting and tracing: the numbers the chapters print.

``count_parameters`` and ``count_macs`` reproduce torchvision's model cards (``num_params`` and
``_ops``, which counts multiply-accumulates and labels them "GFLOPS"). ``trace_shapes`` records what
every module outputs, via forward hooks. ``variant_table`` puts all ten variants side by side.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .models import VARIANTS, ResNet

__all__ = [
    "count_parameters",
    "count_macs",
    "trace_shapes",
    "variant_table",
    "check_input_size",
    "paper_gmacs",
]

# The ResNet paper (He et al. 2015, arXiv:1512.03385), Table 1: multiply-adds x 10^9 at 224x224.
# Source numbers, printed beside what our code measures; never used as a result.
paper_gmacs: Dict[str, float] = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (weights and biases; BN running statistics are buffers, not counted)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_parameters expects an nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _expected_channels(model: nn.Module) -> Optional[int]:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def check_input_size(model: nn.Module, input_size: Sequence[int]) -> Tuple[int, int, int, int]:
    """Validate an (N, C, H, W) input size for ``model`` and return it as a tuple of ints.

    Raises ValueError naming the problem: not 4 numbers (e.g. a missing batch dimension), a
    non-positive entry, or a channel count the first convolution does not accept.
    """
    try:
        size = tuple(input_size)
    except TypeError:
        raise ValueError(f"input_size must be (N, C, H, W), e.g. (1, 3, 224, 224); got {input_size!r}") from None
    if len(size) != 4:
        hint = " (missing the batch dimension? use (1, C, H, W))" if len(size) == 3 else ""
        raise ValueError(
            f"input_size must have 4 entries (N, C, H, W), e.g. (1, 3, 224, 224); got {size} with {len(size)}{hint}"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise ValueError(f"input_size entries must be integers; got {size}")
    if any(v <= 0 for v in size):
        raise ValueError(f"input_size entries must be positive; got {size}")
    channels = _expected_channels(model)
    if channels is not None and size[1] != channels:
        raise ValueError(
            f"input_size has {size[1]} channels but the model's first convolution expects {channels}; "
            f"use ({size[0]}, {channels}, {size[2]}, {size[3]})"
        )
    return size  # type: ignore[return-value]


def _run(model: nn.Module, size: Tuple[int, int, int, int]) -> None:
    x = torch.zeros(size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as exc:
        raise ValueError(
            f"the model cannot run on an input of size {size}: {str(exc).splitlines()[0]} "
            "(a ResNet needs H and W of at least 1 after the 32x downsampling; 32x32 and up always works)"
        ) from None
    finally:
        model.train(was_training)


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulate operations of one forward pass (torchvision's ``_ops`` x 1e9).

    Uses ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add;
    the result is its total divided by 2. Convolutions and the linear layer dominate; BN, ReLU,
    pooling and the residual adds are not counted (as in the model cards and the paper).
    """
    size = check_input_size(model, input_size)
    counter = FlopCounterMode(display=False)
    with counter:
        _run(model, size)
    return counter.get_total_flops() // 2


def trace_shapes(
    model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224), depth: Optional[int] = None
) -> List[Dict[str, Any]]:
    """One row per module, in execution order: ``{"name", "type", "shape", "params"}``.

    ``name`` is the module's path (``"layer2.0.downsample.0"``), ``shape`` its output shape as a
    tuple, ``params`` its own parameter count including children. ``depth`` keeps only modules at most
    that many dots deep (``depth=0``: the stem layers and stages; ``depth=1``: every block).
    """
    size = check_input_size(model, input_size)
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be None or a non-negative int, got {depth!r}")
    rows: List[Dict[str, Any]] = []
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            rows.append(
                {"name": name, "type": type(module).__name__, "shape": shape, "params": count_parameters(module)}
            )

        return record

    for name, module in model.named_modules():
        if not name:
            continue
        if depth is not None and name.count(".") > depth:
            continue
        handles.append(module.register_forward_hook(hook(name)))
    try:
        _run(model, size)
    finally:
        for h in handles:
            h.remove()
    return rows


def _arch_config(model: ResNet) -> Tuple[str, List[int]]:
    block = type(model.layer1[0])
    layers = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    return block.__name__, layers


def variant_table(
    input_size: Sequence[int] = (1, 3, 224, 224), names: Optional[Sequence[str]] = None
) -> List[Dict[str, Any]]:
    """One row per variant: block, layers, groups, width_per_group, params, MACs at ``input_size``.

    Models are built with random weights (``weights=None``); counting needs no pretrained file.
    """
    names = list(VARIANTS) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; accepted: {list(VARIANTS)}")
    rows = []
    for name in names:
        model = VARIANTS[name]()
        block, layers = _arch_config(model)
        rows.append(
            {
                "name": name,
                "block": block,
                "layers": layers,
                "groups": model.groups,
                "width_per_group": model.base_width,
                "params": count_parameters(model),
                "macs": count_macs(model, input_size),
            }
        )
        del model
    return rows

