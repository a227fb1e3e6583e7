"""What the reference convolution and the saturation lesson measure under one kernel family.

``python -m resnet_edu.quantization.kernel_check`` (run by :func:`~.kernels.run_in_family` in a
subprocess whose environment selects the family) prints one JSON line: for the digits model and for a
random-weight ResNet-18, with 7-bit and 8-bit activations, how many output integers of all their
convolutions differ from :func:`~.reference.reference_qconv2d` (the model of the kernel that ran), from
the exact int32 model and from the int16-saturating model; and the logit SQNR of each.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional

import torch


# the int16-pair accumulation each library would use without VNNI (same requantization as the kernel);
# oneDNN's AVX-512 brgemm kernel pairs a 1-channel convolution's window differently ("onednn-brgemm")
_PAIRS = {"fbgemm": "pairs", "onednn": "pairs-per-tap"}


def _saturating(kernel: Dict[str, Any]) -> Optional[str]:
    if kernel["library"] == "onednn" and kernel["isa"] == "avx512_core":
        return "onednn-brgemm"
    return _PAIRS.get(kernel["library"])


def _models(size: int = 64):
    import resnet_edu as rn

    from ..data import calibration_batches
    from ..training import digits_loaders_for, get_digits_model

    digits, meta = get_digits_model(progress=False)
    train_loader, test_loader = digits_loaders_for(meta)
    cal = calibration_batches(train_loader, num_batches=4)
    x = torch.cat([x for x, _ in test_loader])[:16]
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    r18 = rn.resnet18(num_classes=10).eval()
    for m in r18.modules():  # non-trivial BN statistics so the folded weights differ per channel
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.3, 0.3, generator=g)
    r18_cal = [torch.randn(8, 3, size, size, generator=g) for _ in range(2)]
    return {"digits": (digits, cal, x), "resnet18": (r18, r18_cal, torch.randn(4, 3, size, size, generator=g))}


def count_differences(qm: torch.nn.Module, x: torch.Tensor, saturating: Optional[str]) -> Dict[str, Any]:
    """Run converted model ``qm`` on ``x`` and compare every convolution's output integers with three
    models of its kernel: :func:`~.reference.reference_qconv2d` for the kernel that ran
    (``differ_reference``, ``max_abs_reference``), the exact int32 sum (``differ_exact``) and, where
    ``saturating`` names an int16-pair accumulation (``"pairs"``, ``"pairs-per-tap"``), that one
    (``differ_saturating``; None otherwise). Also ``convs`` and ``integers`` (outputs compared)."""
    from . import reference_qconv2d
    from .eager import capture_io

    convs = [n for n, m in qm.named_modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
    io = capture_io(qm, x, convs)
    out: Dict[str, Any] = {"convs": len(convs), "integers": 0, "differ_reference": 0, "differ_exact": 0,
                           "differ_saturating": 0 if saturating else None, "max_abs_reference": 0}
    for n in convs:
        qconv, (qx, qy) = qm.get_submodule(n), io[n]
        got = qy.int_repr().to(torch.int32)
        ref = reference_qconv2d(qconv, qx).int_repr().to(torch.int32)
        out["integers"] += got.numel()
        out["differ_reference"] += int((ref != got).sum())
        out["max_abs_reference"] = max(out["max_abs_reference"], int((ref - got).abs().max()))
        out["differ_exact"] += int((reference_qconv2d(qconv, qx, accumulation="int32").int_repr().to(torch.int32) != got).sum())
        if saturating:
            sat = reference_qconv2d(qconv, qx, accumulation=saturating).int_repr().to(torch.int32)
            out["differ_saturating"] += int((sat != got).sum())
    return out


def measure(engine: str) -> Dict[str, Any]:
    """Quantize both models on ``engine`` with 7- and 8-bit activations; count differing integers."""
    from torch.ao.quantization import HistogramObserver, QConfig, default_per_channel_weight_observer

    from . import conv_kernel, kernels, quantize_ptq, sqnr_db

    weight = default_per_channel_weight_observer
    qconfigs = {
        "7": QConfig(activation=HistogramObserver.with_args(reduce_range=True), weight=weight),
        "8": QConfig(activation=HistogramObserver.with_args(reduce_range=False), weight=weight),
    }
    kernel = conv_kernel(engine)
    saturating = _saturating(kernel)
    rows: List[Dict[str, Any]] = []
    for name, (model, cal, x) in _models().items():
        with torch.no_grad():
            ref_logits = model(x)
        for bits, qc in qconfigs.items():
            qm = quantize_ptq(model, cal, backend=engine, qconfig=qc, progress=False)
            row = {"model": name, "activation_bits": int(bits), **count_differences(qm, x, saturating)}
            with torch.no_grad():
                row["sqnr_db"] = sqnr_db(ref_logits, qm(x))
            rows.append(row)
    return {"engine": engine, "kernel": kernel, "rows": rows,
            "env": {k: os.environ[k] for k in kernels.KERNEL_CAPS if k in os.environ}}


def main() -> None:
    from . import default_engine
    from .flows import silence_known_warnings

    with warnings.catch_warnings():
        silence_known_warnings()
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        print(json.dumps(measure(default_engine())))


def small_channel_check(engine: str) -> Dict[str, Any]:
    """Adversarial convolutions with few input channels (1, 2, 3, 5) and full 8-bit inputs with a zero
    point up to 255, where padded taps and odd channel counts decide the int16 pairs: how many output
    integers differ from :func:`~.reference.reference_qconv2d` (``differ_reference``) and from the exact
    int32 sum (``differ_exact``), with ``integers`` compared and ``kernel`` the model that ran."""
    from . import reference_qconv2d
    from .reference import _model_for

    torch.backends.quantized.engine = engine
    out: Dict[str, Any] = {"engine": engine, "integers": 0, "differ_reference": 0, "differ_exact": 0, "models": []}
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 2, 3, 16), (7, 2, 3, 6), (3, 1, 1, 12), (3, 2, 1, 7), ((1, 3), 1, (0, 1), 9)]
    for cin in (1, 2, 3, 5):
        for k, stride, padding, size in shapes:
            kk = (k, k) if isinstance(k, int) else k
            qconv = torch.ao.nn.quantized.Conv2d(cin, 16, kk, stride=stride, padding=padding)
            w = torch.randn(16, cin, *kk, generator=g)
            # extreme weights (-128 or 127) make neighbouring products overflow an int16 pair
            qw = torch._make_per_channel_quantized_tensor(torch.where(w >= 0, 127, -128).to(torch.int8),
                                                          torch.rand(16, generator=g).double() * 1e-2 + 1e-3,
                                                          torch.zeros(16, dtype=torch.long), 0)
            qconv.set_weight_bias(qw, torch.randn(16, generator=g))
            for zx in (0, 128, 200, 255):
                ints = torch.where(torch.rand(2, cin, size, size, generator=g) < 0.5, 0, 255).to(torch.uint8)
                qx = torch._make_per_tensor_quantized_tensor(ints, 0.02, zx)
                qconv.scale, qconv.zero_point = 0.5, 128
                got = qconv(qx).int_repr()
                out["integers"] += got.numel()
                out["differ_reference"] += int((reference_qconv2d(qconv, qx).int_repr() != got).sum())
                out["differ_exact"] += int((reference_qconv2d(qconv, qx, accumulation="int32").int_repr() != got).sum())
            out["models"].append(_model_for(qconv))
    out["models"] = sorted(set(out["models"]))
    return out


SMALL_CHANNEL_CODE = ("import json; from resnet_edu.quantization.kernel_check import small_channel_check; "
                      "print(json.dumps(small_channel_check('onednn')))")


def lesson(engine: str, images: int = 16) -> Dict[str, Any]:
    """Chapter 7's saturation lesson on ``engine``: the digits model with 7- and 8-bit activations.

    For each: output integers of all convolutions (first ``images`` test images) that differ from the
    exact int32 model and from the int16-saturating one, the logit SQNR against FP32 and the accuracy on
    the whole test set.
    """
    from torch.ao.quantization import HistogramObserver, QConfig, default_per_channel_weight_observer

    from ..data import calibration_batches
    from ..training import digits_loaders_for, get_digits_model
    from . import conv_kernel, quantize_ptq, sqnr_db

    model, meta = get_digits_model(progress=False)
    train_loader, test_loader = digits_loaders_for(meta)
    cal = calibration_batches(train_loader, num_batches=8)
    x = torch.cat([x for x, _ in test_loader])
    y = torch.cat([y for _, y in test_loader])
    with torch.no_grad():
        fp32 = model(x)
    kernel = conv_kernel(engine)
    saturating = _saturating(kernel)
    rows = []
    for bits in (7, 8):
        qc = QConfig(activation=HistogramObserver.with_args(reduce_range=bits == 7), weight=default_per_channel_weight_observer)
        qm = quantize_ptq(model, cal, backend=engine, qconfig=qc, progress=False)
        counts = count_differences(qm, x[:images], saturating)
        row: Dict[str, Any] = {"activation_bits": bits, **{k: counts[k] for k in ("integers", "differ_exact", "differ_saturating", "differ_reference")}}
        with torch.no_grad():
            logits = qm(x)
        row["sqnr_db"] = sqnr_db(fp32, logits)
        row["accuracy"] = (logits.argmax(1) == y).float().mean().item()
        rows.append(row)
    return {"engine": engine, "kernel": kernel, "fp32_accuracy": (fp32.argmax(1) == y).float().mean().item(), "rows": rows}


def lesson_main() -> None:
    from . import default_engine
    from .flows import silence_known_warnings

    with warnings.catch_warnings():
        silence_known_warnings()
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        print(json.dumps(lesson(default_engine())))


LESSON_CODE = "from resnet_edu.quantization.kernel_check import lesson_main; lesson_main()"


def describe_lesson(result: Dict[str, Any]) -> Dict[str, Any]:
    """The words chapter 7 prints about a :func:`lesson` result: saturates or not, 7- vs 8-bit ordering."""
    rows = {r["activation_bits"]: r for r in result["rows"]}
    r7, r8 = rows[7], rows[8]
    saturates = r8["differ_exact"] > 0 and r8["differ_saturating"] == 0
    if saturates:
        verdict = (f"saturates: with 8-bit activations {r8['differ_exact']:,} of {r8['integers']:,} outputs differ from "
                   "the exact integer sum and none from the int16-saturating emulation")
    elif r8["differ_exact"] == 0 and r8["differ_saturating"]:
        verdict = (f"does not saturate: with 8-bit activations all {r8['integers']:,} outputs equal the exact int32 sum, "
                   f"where an int16-saturating kernel would have changed {r8['differ_saturating']:,} of them")
    elif r8["differ_exact"] == 0:
        verdict = f"does not saturate: with 8-bit activations all {r8['integers']:,} outputs equal the exact int32 sum"
    else:
        verdict = (f"matches neither model exactly with 8-bit activations ({r8['differ_exact']:,} outputs differ from the exact "
                   f"sum, {r8['differ_saturating']} from the saturating emulation)")
    better = r8["sqnr_db"] > r7["sqnr_db"]
    order = ("the 8-bit model matches the FP32 logits better than the 7-bit one: the extra bit buys what it should"
             if better else "the 8-bit model matches the FP32 logits worse than the 7-bit one: one more bit, yet a worse match")
    return {"saturates": saturates, "verdict": verdict, "eight_bit_better": better, "order": order,
            "sqnr7": r7["sqnr_db"], "sqnr8": r8["sqnr_db"], "acc7": 100 * r7["accuracy"], "acc8": 100 * r8["accuracy"]}


if __name__ == "__main__":
    main()
