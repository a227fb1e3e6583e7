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
    "conv_output_size",
    "conv_params",
    "bottleneck_width",
    "basic_block_params",
    "bottleneck_params",
    "receptive_field_map",
    "make_stage",
    "output_stride",
    "stage_parameters",
    "as_v1",
    "model_card",
    "PlainBlock",
    "deep_stack",
    "gradient_norms",
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
    # on the model's device: a model built under ``torch.device("meta")`` is traced from shapes alone
    param = next(model.parameters(), None)
    x = torch.zeros(size, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as exc:
        raise ValueError(
            f"the model cannot run on an input of size {size}: {str(exc).splitlines()[0]} "
            "(torchvision's ResNets run on any H and W >= 1; a custom layer without padding may need a larger input)"
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
    input_size: Sequence[int] = (1, 3, 224, 224), names: Optional[Sequence[str]] = None, device: str = "meta"
) -> List[Dict[str, Any]]:
    """One row per variant: block, layers, groups, width_per_group, params, MACs at ``input_size``.

    Models are built with random weights (``weights=None``); counting needs no pretrained file.
    By default they are built on PyTorch's ``meta`` device, which keeps shapes but no numbers: the
    counts are the same as on the CPU (a test checks it) and ten models take a second, not a minute.
    """
    names = list(VARIANTS) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; accepted: {list(VARIANTS)}")
    if device not in ("meta", "cpu"):
        raise ValueError(f"device must be 'meta' (shapes only, fast) or 'cpu', got {device!r}")
    rows = []
    for name in names:
        with torch.device(device):
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



# --------------------------------------------------------------------------------------------------
# Chapter helpers: convolution arithmetic, block formulas, stages, v1 strides, the degradation nets
# --------------------------------------------------------------------------------------------------
def _int_arg(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution (or max-pool) along one axis:
    ``floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``.

    The same formula PyTorch documents for ``nn.Conv2d`` and ``nn.MaxPool2d`` (with ``ceil_mode=False``).
    Raises ValueError for non-integer or out-of-range arguments and when the dilated kernel does not fit
    in the padded input.
    """
    _int_arg("size", size, 1)
    _int_arg("kernel_size", kernel_size, 1)
    _int_arg("stride", stride, 1)
    _int_arg("padding", padding, 0)
    _int_arg("dilation", dilation, 1)
    span = dilation * (kernel_size - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(
            f"the dilated kernel spans {span} pixels but the padded input has only {size + 2 * padding} "
            f"(size={size}, padding={padding}); use a larger input, more padding or a smaller kernel/dilation"
        )
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv_params(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of a square ``nn.Conv2d``: ``k*k*in_channels*out_channels/groups`` (+ ``out_channels`` with a bias)."""
    _int_arg("in_channels", in_channels, 1)
    _int_arg("out_channels", out_channels, 1)
    _int_arg("kernel_size", kernel_size, 1)
    _int_arg("groups", groups, 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}"
        )
    return kernel_size * kernel_size * in_channels * out_channels // groups + (out_channels if bias else 0)


def bottleneck_width(planes: int, base_width: int = 64, groups: int = 1) -> int:
    """The inner width of a Bottleneck: ``int(planes * base_width / 64) * groups`` (torchvision's formula)."""
    _int_arg("planes", planes, 1)
    _int_arg("base_width", base_width, 1)
    _int_arg("groups", groups, 1)
    width = int(planes * (base_width / 64.0)) * groups
    if width < 1:
        raise ValueError(f"planes={planes} with base_width={base_width} gives an inner width of 0")
    return width


def basic_block_params(inplanes: int, planes: int, downsample: bool = False) -> int:
    """Parameters of a ``BasicBlock``: two 3x3 convs, two BNs (2 numbers per channel), optional 1x1 + BN shortcut."""
    _int_arg("inplanes", inplanes, 1)
    _int_arg("planes", planes, 1)
    total = conv_params(inplanes, planes, 3) + 2 * planes + conv_params(planes, planes, 3) + 2 * planes
    if downsample:
        total += conv_params(inplanes, planes, 1) + 2 * planes
    return total


def bottleneck_params(
    inplanes: int, planes: int, groups: int = 1, base_width: int = 64, downsample: bool = False
) -> int:
    """Parameters of a ``Bottleneck``: 1x1 reduce, grouped 3x3, 1x1 restore to ``4*planes``, three BNs,
    optional 1x1 + BN shortcut."""
    width = bottleneck_width(planes, base_width, groups)
    out = planes * 4
    total = conv_params(inplanes, width, 1) + 2 * width
    total += conv_params(width, width, 3, groups=groups) + 2 * width
    total += conv_params(width, out, 1) + 2 * out
    if downsample:
        total += conv_params(inplanes, out, 1) + 2 * out
    return total


def receptive_field_map(dilation: int = 1, layers: int = 1, size: int = 9) -> torch.Tensor:
    """Which input pixels reach the centre output pixel through ``layers`` stacked ``conv3x3(1, 1, dilation=d)``.

    Computed with real modules, not drawn by hand: all-ones weights, a one-pixel impulse in the
    middle of a ``size x size`` input; returns the ``size x size`` map of how many paths lead from
    each input pixel to the centre (0 = outside the receptive field).
    """
    from .models import conv3x3

    _int_arg("dilation", dilation, 1)
    _int_arg("layers", layers, 1)
    _int_arg("size", size, 3)
    if size % 2 == 0:
        raise ValueError(f"size must be odd so the grid has a centre pixel, got {size}")
    reach = layers * dilation
    if 2 * reach + 1 > size:
        raise ValueError(f"the receptive field ({2 * reach + 1} pixels) does not fit in size={size}; use size >= {2 * reach + 1}")
    conv = conv3x3(1, 1, dilation=dilation)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        x = torch.zeros(1, 1, size, size)
        x[0, 0, size // 2, size // 2] = 1.0
        for _ in range(layers):
            x = conv(x)  # a symmetric kernel: the impulse response equals the receptive field map
    return x[0, 0]


def make_stage(
    block: Any,
    inplanes: int,
    planes: int,
    blocks: int = 1,
    stride: int = 1,
    groups: int = 1,
    width_per_group: int = 64,
) -> nn.Sequential:
    """One stage built by the real ``ResNet._make_layer`` (not a copy of it), outside a full ResNet.

    ``inplanes`` is what ``self.inplanes`` holds when the stage starts; the downsample rule
    (``stride != 1 or inplanes != planes * block.expansion``) is therefore exactly torchvision's.
    """
    from .models import BasicBlock, Bottleneck

    if block not in (BasicBlock, Bottleneck):
        raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
    _int_arg("inplanes", inplanes, 1)
    _int_arg("planes", planes, 1)
    _int_arg("blocks", blocks, 1)
    _int_arg("stride", stride, 1)
    _int_arg("groups", groups, 1)
    _int_arg("width_per_group", width_per_group, 1)
    shell = ResNet.__new__(ResNet)
    nn.Module.__init__(shell)
    shell._norm_layer = nn.BatchNorm2d
    shell.inplanes = inplanes
    shell.dilation = 1
    shell.groups = groups
    shell.base_width = width_per_group
    return ResNet._make_layer(shell, block, planes, blocks, stride=stride)


def _check_resnet(model: Any, what: str) -> None:
    if not all(hasattr(model, n) for n in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")):
        raise ValueError(f"{what} expects a ResNet (with conv1, layer1..layer4, fc), got {type(model).__name__}")


def output_stride(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Input side divided by the side of ``layer4``'s output: 32 normally, 16 or 8 with
    ``replace_stride_with_dilation``. The input side must be a multiple of the result."""
    _check_resnet(model, "output_stride")
    size = check_input_size(model, input_size)
    rows = trace_shapes(model, size, depth=0)
    side = next(r["shape"][2] for r in rows if r["name"] == "layer4")
    if size[2] % side:
        raise ValueError(f"input side {size[2]} is not a multiple of layer4's side {side}; use a multiple of 32, e.g. 224")
    return size[2] // side


def stage_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameters per part of a ResNet: ``stem`` (conv1 + bn1), ``layer1``..``layer4``, ``fc``."""
    _check_resnet(model, "stage_parameters")
    parts = {"stem": count_parameters(model.conv1) + count_parameters(model.bn1)}
    for i in range(1, 5):
        parts[f"layer{i}"] = count_parameters(getattr(model, f"layer{i}"))
    parts["fc"] = count_parameters(model.fc)
    return parts


def as_v1(model: nn.Module) -> nn.Module:
    """A copy of a Bottleneck ResNet with the stride moved back to ``conv1`` (the 1x1), as in the 2015 paper.

    torchvision ("ResNet v1.5") strides on the 3x3 ``conv2``; the output shapes and the parameters are
    identical, only the first 1x1 of each strided block then runs at full resolution, 4x the MACs.
    """
    import copy

    from .models import Bottleneck

    _check_resnet(model, "as_v1")
    if not any(isinstance(m, Bottleneck) for m in model.modules()):
        raise ValueError("as_v1 needs a Bottleneck model (resnet50/101/152, ResNeXt, Wide); BasicBlock has no 1x1 to move the stride to")
    v1 = copy.deepcopy(model)
    for m in v1.modules():
        if isinstance(m, Bottleneck) and m.conv2.stride != (1, 1):
            m.conv1.stride, m.conv2.stride = m.conv2.stride, (1, 1)
    return v1


def model_card(name: str) -> Dict[str, Any]:
    """torchvision's model card for ``name``'s DEFAULT weights, read live:
    ``{"weights", "num_params", "gmacs" (the card's "_ops"), "acc1", "acc5"}``. Reads metadata only, downloads nothing."""
    from torchvision.models import get_model_weights

    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; accepted: {list(VARIANTS)}")
    w = get_model_weights(name).DEFAULT
    meta = w.meta
    metrics = next(iter(meta["_metrics"].values()))
    return {
        "weights": f"{type(w).__name__}.{w.name}",
        "num_params": meta["num_params"],
        "gmacs": meta["_ops"],
        "acc1": metrics["acc@1"],
        "acc5": metrics["acc@5"],
    }


# The degradation experiment ------------------------------------------------------------------------
from .models import BasicBlock as _BasicBlock  # noqa: E402
from .models import conv3x3 as _conv3x3  # noqa: E402


class PlainBlock(_BasicBlock):
    """A ``BasicBlock`` with the shortcut removed: ``relu(bn2(conv2(relu(bn1(conv1(x))))))``.

    Same modules and parameters as ``BasicBlock`` (it inherits ``__init__``); only ``out += identity``
    is gone. Used to show what the shortcut changes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out)


def deep_stack(num_blocks: int, shortcuts: bool = True, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """A small deep net for the degradation experiment: stem ``conv3x3 + BN + ReLU``, ``num_blocks``
    blocks at constant width and size (``BasicBlock`` with ``shortcuts=True``, else ``PlainBlock``),
    global average pooling and a linear layer. ``2*num_blocks + 1`` conv layers plus the classifier.

    Initialised like ``ResNet``'s init loop (Kaiming normal, fan_out, for convs; BN weight 1, bias 0).
    """
    _int_arg("num_blocks", num_blocks, 1)
    _int_arg("width", width, 1)
    _int_arg("num_classes", num_classes, 1)
    _int_arg("in_channels", in_channels, 1)
    if not isinstance(shortcuts, bool):
        raise ValueError(f"shortcuts must be True or False, got {shortcuts!r}")
    block = _BasicBlock if shortcuts else PlainBlock
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
    model.add_module("blocks", nn.Sequential(*[block(width, width) for _ in range(num_blocks)]))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(width, num_classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> List[Tuple[str, float]]:
    """One forward and backward pass of cross-entropy on ``(x, y)`` in training mode; returns
    ``(name, ||grad||)`` for every ``nn.Conv2d`` weight, input side first. The model's gradients are
    cleared again afterwards and its train/eval mode restored."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype != torch.long or len(y) != len(x):
        raise ValueError(f"y must be a 1-D int64 tensor of {len(x)} class indices, got {getattr(y, 'shape', y)!r}")
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer")
    was_training = model.training
    saved = {k: v.clone() for k, v in model.named_buffers()}  # BN statistics: leave them untouched
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        norms = [(n, m.weight.grad.norm().item()) for n, m in convs]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])
    return norms
