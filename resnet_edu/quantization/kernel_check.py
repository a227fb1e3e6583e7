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
from typing import Any, Dict, List

import torch


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


def measure(engine: str) -> Dict[str, Any]:
    """Quantize both models on ``engine`` with 7- and 8-bit activations; count differing integers."""
    from torch.ao.quantization import HistogramObserver, QConfig, default_per_channel_weight_observer

    from . import conv_kernel, quantize_ptq, reference_qconv2d, sqnr_db
    from .eager import capture_io

    weight = default_per_channel_weight_observer
    qconfigs = {
        "7": QConfig(activation=HistogramObserver.with_args(reduce_range=True), weight=weight),
        "8": QConfig(activation=HistogramObserver.with_args(reduce_range=False), weight=weight),
    }
    kernel = conv_kernel(engine)
    saturating = "fbgemm-int16" if kernel["library"] == "fbgemm" else "onednn-int16" if kernel["library"] == "onednn" else None
    exact = {"fbgemm": "fbgemm", "onednn": "onednn", "qnnpack": "qnnpack"}[kernel["library"]]
    rows: List[Dict[str, Any]] = []
    for name, (model, cal, x) in _models().items():
        with torch.no_grad():
            ref_logits = model(x)
        for bits, qc in qconfigs.items():
            qm = quantize_ptq(model, cal, backend=engine, qconfig=qc, progress=False)
            convs = [n for n, m in qm.named_modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
            io = capture_io(qm, x, convs)
            row = {"model": name, "activation_bits": int(bits), "convs": len(convs), "integers": 0,
                   "differ_reference": 0, "differ_exact": 0, "differ_saturating": None, "max_abs_reference": 0}
            if saturating:
                row["differ_saturating"] = 0
            for n in convs:
                qconv, (qx, qy) = qm.get_submodule(n), io[n]
                got = qy.int_repr().to(torch.int32)
                ref = reference_qconv2d(qconv, qx).int_repr().to(torch.int32)
                row["integers"] += got.numel()
                row["differ_reference"] += int((ref != got).sum())
                row["max_abs_reference"] = max(row["max_abs_reference"], int((ref - got).abs().max()))
                row["differ_exact"] += int((reference_qconv2d(qconv, qx, kernel=exact).int_repr().to(torch.int32) != got).sum())
                if saturating:
                    sat = reference_qconv2d(qconv, qx, kernel=saturating).int_repr().to(torch.int32)
                    row["differ_saturating"] += int((sat != got).sum())
            with torch.no_grad():
                row["sqnr_db"] = sqnr_db(ref_logits, qm(x))
            rows.append(row)
    return {"engine": engine, "kernel": kernel, "rows": rows,
            "env": {k: os.environ[k] for k in ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}}


def main() -> None:
    from . import default_engine
    from .flows import silence_known_warnings

    with warnings.catch_warnings():
        silence_known_warnings()
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        print(json.dumps(measure(default_engine())))


if __name__ == "__main__":
    main()
