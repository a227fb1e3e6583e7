"""Part 3, eager-mode recipes (chapter 8): FP32 model -> quantizable copy -> PTQ / QAT; one layer at a time.

:func:`quantize_ptq` (fuse, qconfig, observers, calibration, convert), :func:`quantize_qat` (fake
quantization while training a few epochs) and :func:`layer_sensitivity` (quantize one layer at a time),
with the helpers the chapter uses to look inside: :class:`QuantizedRunner`, :func:`capture_io`,
:func:`residual_scales`, :func:`compare_latency`. ``torch.ao.quantization`` warns that this path is
deprecated; :mod:`resnet_edu.quantization.pt2e` is the maintained one.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..models import BasicBlock, Bottleneck, ResNet
from .arithmetic import sqnr_db
from .kernels import default_engine
from .models import QuantizableBasicBlock, QuantizableBottleneck, QuantizableResNet, _replace_relu, check_backend, get_qconfig

__all__ = [
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
]


def _resnet_config(model: nn.Module) -> Dict[str, Any]:
    """The constructor arguments of a (resnet_edu or torchvision) ResNet, read off the module tree."""
    import torchvision.models.resnet as tvr

    if not isinstance(model, (ResNet, tvr.ResNet)):
        raise ValueError(
            f"expected a ResNet (resnet_edu.models.ResNet or torchvision's), got {type(model).__name__}"
        )
    norms = [model.bn1] + [
        m for blk in model.modules() if isinstance(blk, (BasicBlock, Bottleneck, tvr.BasicBlock, tvr.Bottleneck))
        for m in (getattr(blk, "bn1", None), getattr(blk, "bn2", None), getattr(blk, "bn3", None)) if m is not None
    ]
    for m in norms:
        if type(m) is not nn.BatchNorm2d:
            raise ValueError(f"only BatchNorm2d can be fused into convolutions, found {type(m).__name__}")
    first = model.layer1[0]
    bottleneck = hasattr(first, "conv3")
    strided = "conv2" if bottleneck else "conv1"
    return {
        "bottleneck": bottleneck,
        "layers": [len(getattr(model, f"layer{i}")) for i in range(1, 5)],
        "num_classes": model.fc.out_features,
        "groups": model.groups,
        "width_per_group": model.base_width,
        "replace_stride_with_dilation": [getattr(getattr(model, f"layer{i}")[0], strided).stride[0] == 1 for i in (2, 3, 4)],
    }


def _build_like(model: nn.Module, resnet_cls: type, basic: type, bottleneck: type) -> nn.Module:
    cfg = _resnet_config(model)
    # Build on the meta device (no memory, no init loop, no RNG use), then allocate and copy every
    # parameter and buffer from the float model: load_state_dict(strict=True) leaves nothing uninitialized.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        q = resnet_cls(
            bottleneck if cfg["bottleneck"] else basic,
            cfg["layers"],
            num_classes=cfg["num_classes"],
            groups=cfg["groups"],
            width_per_group=cfg["width_per_group"],
            replace_stride_with_dilation=cfg["replace_stride_with_dilation"],
        )
    device = next(iter(model.parameters())).device
    q = q.to_empty(device=device)
    _replace_relu(q)
    q.load_state_dict(model.state_dict(), strict=True)
    q.train(model.training)
    return q


def to_quantizable(model: nn.Module) -> QuantizableResNet:
    """A :class:`.QuantizableResNet` copy of a float ResNet (same weights; the original is untouched)."""
    if isinstance(model, QuantizableResNet):
        return copy.deepcopy(model)
    return _build_like(model, QuantizableResNet, QuantizableBasicBlock, QuantizableBottleneck)


def to_torchvision_quantizable(model: nn.Module) -> nn.Module:
    """The same weights in torchvision's own ``QuantizableResNet`` (for side-by-side comparisons)."""
    import torchvision.models.quantization.resnet as tvq

    return _build_like(model, tvq.QuantizableResNet, tvq.QuantizableBasicBlock, tvq.QuantizableBottleneck)


def _check_batches(batches: Any, name: str = "calibration_batches") -> List[Tensor]:
    if isinstance(batches, Tensor):
        raise ValueError(f"{name} must be a list of input tensors (batches), not a single tensor; wrap it: [x]")
    batches = list(batches) if batches is not None else []
    if not batches:
        raise ValueError(f"{name} is empty: calibration needs at least one batch of inputs")
    for i, b in enumerate(batches):
        if not isinstance(b, Tensor) or not b.is_floating_point() or b.dim() != 4:
            raise ValueError(
                f"{name}[{i}] must be a float tensor of shape (N, 3, H, W), got "
                f"{type(b).__name__} {tuple(b.shape) if isinstance(b, Tensor) else ''}"
            )
    return batches


@torch.no_grad()
def calibrate(model: nn.Module, batches: Sequence[Tensor], progress: bool = True, desc: str = "calibrating") -> None:
    """Run ``batches`` through a prepared model so its observers record activation ranges."""
    from tqdm.auto import tqdm

    for x in tqdm(_check_batches(batches), desc=desc, disable=not progress, leave=False):
        model(x)


def quantize_ptq(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    backend: Optional[str] = None,
    qconfig: Optional[Any] = None,
    progress: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Post-training static quantization in eager mode: fuse, qconfig, prepare, calibrate, convert.

    ``model``: a float ResNet (resnet_edu or torchvision; it is copied into a :class:`.QuantizableResNet`)
    or any model with ``fuse_model()`` and quant stubs (a quantizable model, ours or torchvision's).
    ``backend``: the engine; None for :func:`~.kernels.default_engine` (``x86`` on x86 CPUs, ``qnnpack``
    on ARM, ``RESNET_EDU_ENGINE`` when set). ``qconfig``: ``None`` for :func:`get_qconfig(backend) <.get_qconfig>`, ``"torchvision"`` for
    torchvision's recipe, or a ``QConfig``. Sets ``torch.backends.quantized.engine = backend`` (the
    converted model must run on that engine; :class:`QuantizedRunner` pins it).
    """
    backend = check_backend(default_engine() if backend is None else backend)
    batches = _check_batches(calibration_batches)
    if hasattr(model, "fuse_model") and hasattr(model, "quant"):
        qm = model if inplace else copy.deepcopy(model)
    elif inplace:
        raise ValueError("inplace=True needs a quantizable model (with fuse_model and quant stubs); got a float ResNet")
    else:
        qm = to_quantizable(model)
    if isinstance(qconfig, str):
        qconfig = get_qconfig(backend, recipe=qconfig)
    elif qconfig is None:
        qconfig = get_qconfig(backend)
    elif not isinstance(qconfig, torch.ao.quantization.QConfig):
        raise ValueError(f"qconfig must be None, 'default', 'torchvision' or a QConfig, got {qconfig!r}")
    torch.backends.quantized.engine = backend
    qm.eval()
    qm.fuse_model()
    qm.qconfig = qconfig
    torch.ao.quantization.prepare(qm, inplace=True)
    calibrate(qm, batches, progress=progress)
    torch.ao.quantization.convert(qm, inplace=True)
    return qm


def quantize_qat(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int = 2,
    lr: float = 1e-3,
    backend: Optional[str] = None,
    freeze_bn_after: Optional[int] = 1,
    freeze_observers_after: Optional[int] = 1,
    seed: int = 0,
    progress: bool = True,
    qconfig: Optional[Any] = None,
) -> Tuple[nn.Module, List[Dict[str, float]]]:
    """Quantization-aware training: fine-tune with fake quantization for a few epochs, then convert.

    The float model is copied, fused for training (conv+bn+relu become ``ConvBnReLU2d``, which keeps
    BatchNorm live), fitted with fake-quant modules (``prepare_qat``) and trained with SGD. After
    ``freeze_bn_after`` epochs the BatchNorm statistics freeze; after ``freeze_observers_after`` the
    ranges stop moving (the usual recipe: the last epochs train with fixed scales). ``qconfig``:
    ``None`` for ``get_qconfig(backend, qat=True)``, or a QAT ``QConfig`` (e.g. ``make_qconfig(4, 8,
    qat=True)``). Returns the converted int8 model and one ``{"epoch", "train_loss"}`` dict per epoch.
    """
    from tqdm.auto import tqdm

    backend = check_backend(default_engine() if backend is None else backend)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    from ..training import seed_everything

    seed_everything(seed)
    torch.backends.quantized.engine = backend
    qm = to_quantizable(model)
    qm.train()
    qm.fuse_model(is_qat=True)
    if qconfig is None:
        qconfig = get_qconfig(backend, qat=True)
    elif not isinstance(qconfig, torch.ao.quantization.QConfig):
        raise ValueError(f"qconfig must be None or a QConfig (e.g. make_qconfig(..., qat=True)), got {qconfig!r}")
    qm.qconfig = qconfig
    torch.ao.quantization.prepare_qat(qm, inplace=True)
    optimizer = torch.optim.SGD(qm.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    bar = tqdm(total=epochs * len(train_loader), desc="QAT", disable=not progress, leave=False)  # type: ignore[arg-type]
    for epoch in range(1, epochs + 1):
        qm.train()
        if freeze_bn_after is not None and epoch > freeze_bn_after:
            qm.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        if freeze_observers_after is not None and epoch > freeze_observers_after:
            qm.apply(torch.ao.quantization.disable_observer)
        total, count = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(qm(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.update(1)
        history.append({"epoch": epoch, "train_loss": total / max(count, 1)})
    bar.close()
    qm.eval()
    torch.ao.quantization.convert(qm, inplace=True)
    return qm, history


def _quantizable_units(fused: nn.Module) -> List[str]:
    """Names of the modules that become quantized kernels after fusion: convs (with BN/ReLU folded) and fc."""
    units = []
    for name, m in fused.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) or type(m).__module__.startswith("torch.ao.nn.intrinsic.modules"):
            if name and not any(name.startswith(u + ".") for u in units):
                units.append(name)
    return units


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    calibration_batches: Sequence[Tensor],
    inputs: Tensor,
    labels: Tensor,
    backend: Optional[str] = None,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Quantize one layer at a time (everything else stays FP32); measure accuracy and logit SQNR.

    Each fused unit (conv+bn[+relu], the downsample conv+bn, fc) is wrapped in a ``QuantWrapper``
    (quantize its input, run it in int8, dequantize its output) while the rest of the network runs
    in float. Returns one ``{"layer", "accuracy", "sqnr_db"}`` row per unit, in network order, plus
    the FP32 accuracy in every row (``"fp32_accuracy"``) for reference.
    """
    from tqdm.auto import tqdm

    backend = check_backend(default_engine() if backend is None else backend)
    batches = _check_batches(calibration_batches)
    torch.backends.quantized.engine = backend
    base = to_quantizable(model).eval()
    base.fuse_model()
    ref = base(inputs)
    fp32_acc = (ref.argmax(1) == labels).float().mean().item()
    qconfig = get_qconfig(backend)
    rows = []
    for name in tqdm(_quantizable_units(base), desc="one layer at a time", disable=not progress, leave=False):
        m = copy.deepcopy(base)
        parent_name, _, child = name.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        wrapped = torch.ao.quantization.QuantWrapper(getattr(parent, child))
        wrapped.qconfig = qconfig
        setattr(parent, child, wrapped)
        torch.ao.quantization.prepare(m, inplace=True)
        for x in batches:
            m(x)
        torch.ao.quantization.convert(m, inplace=True)
        out = m(inputs)
        rows.append(
            {
                "layer": name,
                "accuracy": (out.argmax(1) == labels).float().mean().item(),
                "sqnr_db": sqnr_db(ref, out),
                "fp32_accuracy": fp32_acc,
            }
        )
    return rows


class QuantizedRunner(nn.Module):
    """Run a model under ``torch.no_grad()``, with the quantized engine it was converted for.

    An eager int8 model packs its weights for one engine (``torch.backends.quantized.engine`` at
    ``convert`` time); running it under another engine is wrong or fails. The runner sets the engine
    before every call, so models for x86 and qnnpack can be timed side by side.
    """

    def __init__(self, model: Callable[..., Tensor], engine: Optional[str] = None) -> None:
        super().__init__()
        if engine is not None:
            check_backend(engine)
        self.model = model
        self.engine = engine

    def train(self, mode: bool = True) -> "QuantizedRunner":
        """Only flips this wrapper's flag: the wrapped model stays in inference mode.

        (A converted model is for inference only, and an exported PT2E graph refuses ``.eval()``
        altogether, so ``evaluate(runner, loader)``, which calls ``.eval()``, must not recurse.)
        """
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.engine is not None and torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine
        with torch.no_grad():
            return self.model(x)


@torch.no_grad()
def capture_io(model: nn.Module, x: Tensor, names: Sequence[str]) -> Dict[str, Tuple[Tensor, Tensor]]:
    """Run ``model(x)`` once and return ``{name: (input, output)}`` of the named submodules (forward hooks)."""
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"no submodule named {missing}; some names: {list(found)[1:8]}")
    seen: Dict[str, Tuple[Tensor, Tensor]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Tuple[Tensor, ...], output: Tensor) -> None:  # returns None: output unchanged
            seen.setdefault(name, (inputs[0], output))

        return hook

    hooks = [found[n].register_forward_hook(record(n)) for n in names]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def residual_scales(qmodel: nn.Module, x: Tensor) -> List[Dict[str, Any]]:
    """For each block of a converted quantizable ResNet: the scales of the two tensors its add sums.

    ``branch_scale`` is the scale of the residual branch's last conv (conv2 or conv3, BN folded in),
    ``identity_scale`` that of the shortcut (the downsample conv, or the block's input), ``out_scale``
    that of the add's output. An integer add needs both inputs on one grid, so the quantized add
    rescales them: ``q_out = round((s_b (q_b - z_b) + s_i (q_i - z_i)) / s_out) + z_out``.
    """
    rows: List[Dict[str, Any]] = []
    inputs: Dict[str, Tensor] = {}
    import torchvision.models.resnet as tvr

    kinds = (BasicBlock, Bottleneck, tvr.BasicBlock, tvr.Bottleneck)
    blocks = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, kinds)]
    if not blocks:
        raise ValueError("qmodel has no residual blocks")

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Tuple[Tensor, ...]) -> None:  # returns None: input unchanged
            inputs.setdefault(name, args[0])

        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in blocks]
    try:
        qmodel(x)
    finally:
        for h in hooks:
            h.remove()
    for name, block in blocks:
        qx = inputs[name]
        if not qx.is_quantized:
            raise ValueError("residual_scales needs a converted (quantized) model")
        last = block.conv3 if hasattr(block, "conv3") else block.conv2
        add = block.skip_add_relu if hasattr(block, "skip_add_relu") else block.add_relu
        identity_scale = float(block.downsample[0].scale) if block.downsample is not None else float(qx.q_scale())
        rows.append(
            {
                "block": name,
                "branch_scale": float(last.scale),
                "identity_scale": identity_scale,
                "out_scale": float(add.scale),
                "downsample": block.downsample is not None,
            }
        )
    return rows


def compare_latency(
    models: Dict[str, Callable[[Tensor], Any]],
    inputs: Dict[str, Tensor],
    warmup: int = 1,
    repeats: int = 5,
    threads: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Median wall-clock milliseconds of every model on every input, timed interleaved.

    Each round runs every model once on the input, in turn, so a machine that slows down (shared
    cores, thermal limits) slows all of them alike. ``threads`` fixes ``torch.set_num_threads`` for
    the measurement (restored afterwards). Returns ``{"input", "model", "median_ms", "min_ms",
    "repeats"}`` rows. Short runs are noisy: the book's full benchmark is ``python -m resnet_edu.bench``.
    """
    import statistics
    import time

    if not models or not inputs:
        raise ValueError("compare_latency needs at least one model and one input")
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (integers), got repeats={repeats!r}, warmup={warmup!r}")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        with torch.no_grad():
            for label, x in inputs.items():
                for fn in models.values():
                    for _ in range(warmup):
                        fn(x)
                times: Dict[str, List[float]] = {name: [] for name in models}
                for _ in range(repeats):
                    for name, fn in models.items():
                        start = time.perf_counter()
                        fn(x)
                        times[name].append(1000.0 * (time.perf_counter() - start))
                for name, t in times.items():
                    rows.append({"input": label, "model": name, "median_ms": statistics.median(t), "min_ms": min(t), "repeats": repeats})
    finally:
        torch.set_num_threads(old)
    return rows
