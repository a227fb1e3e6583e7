"""Part 1a, first principles (chapter 7): affine quantization written out, and its error.

:func:`qparams` (scale and zero point from a range), :func:`quantize_tensor`, :func:`dequantize_tensor`,
:func:`fake_quantize` (quantize then dequantize, per tensor or per channel) and :func:`sqnr_db`, the
error measure every later chapter reports.
"""

from __future__ import annotations

import math
from typing import Any, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "qparams",
    "quantize_tensor",
    "dequantize_tensor",
    "fake_quantize",
    "sqnr_db",
    "SCHEMES",
]

SCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")
"""The four quantization schemes :func:`fake_quantize` understands."""


def _check_bits(bits: Any) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    return bits


def qparams(
    x_min: Union[float, Tensor], x_max: Union[float, Tensor], bits: int = 8, symmetric: bool = False, signed: bool = False
) -> Tuple[Tensor, Tensor, int, int]:
    """Scale and zero point that map ``[x_min, x_max]`` onto the integers ``[qmin, qmax]``.

    Returns ``(scale, zero_point, qmin, qmax)``. The formulas are those of PyTorch's ``MinMaxObserver``:
    the range is first widened to include 0 (so that real 0, e.g. padding and ReLU outputs, is exactly
    representable), then

    * affine: ``scale = (max - min) / (qmax - qmin)``, ``zero_point = qmin - round(min / scale)``;
    * symmetric: ``scale = max(|min|, |max|) / ((qmax - qmin) / 2)``, zero point in the middle of the
      range (0 for signed integers, ``2**(bits-1)`` for unsigned).

    ``x_min``/``x_max`` may be tensors (one entry per channel for per-channel quantization).
    ``signed=False`` gives ``[0, 2**bits - 1]`` (like quint8), ``signed=True`` ``[-2**(bits-1), 2**(bits-1) - 1]``.
    """
    bits = _check_bits(bits)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    lo = torch.clamp(torch.as_tensor(x_min, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(x_max, dtype=torch.float32), min=0.0)
    if bool((lo > hi).any()):
        raise ValueError(f"x_min must not exceed x_max, got x_min={x_min!r}, x_max={x_max!r}")
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = torch.clamp(amax / (float(qmax - qmin) / 2), min=eps)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2, dtype=torch.int64)
    else:
        scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(lo / scale).to(torch.int64), qmin, qmax)
    return scale, zero_point, qmin, qmax


def quantize_tensor(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` as an int64 tensor (round half to even).

    Like PyTorch's kernels, it multiplies by the float32 inverse ``1 / scale`` instead of dividing
    (cheaper, and the results then agree bit for bit; the two can differ on exact ties).
    """
    inv_scale = 1.0 / torch.as_tensor(scale, dtype=torch.float32)
    return torch.clamp(torch.round(x * inv_scale).to(torch.int64) + zero_point, qmin, qmax)


def dequantize_tensor(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """``x_hat = (q - zero_point) * scale``: the real number each integer stands for."""
    return (q - zero_point).to(torch.float32) * scale


def fake_quantize(x: Tensor, bits: int = 8, scheme: str = "per_tensor_affine", axis: int = 0) -> Tensor:
    """Quantize then dequantize ``x`` (min/max calibrated on ``x`` itself): what the network "sees".

    ``scheme`` is one of :data:`SCHEMES`. Per-channel schemes use one scale per index of ``axis``
    (the output channel of a conv weight is ``axis=0``). Affine schemes use unsigned integers,
    symmetric ones signed integers, as PyTorch does for activations (quint8) and weights (qint8).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; accepted: {', '.join(SCHEMES)}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
    symmetric = scheme.endswith("symmetric")
    if scheme.startswith("per_channel"):
        if x.dim() < 1 or not -x.dim() <= axis < x.dim():
            raise ValueError(f"axis={axis} is out of range for a tensor of shape {tuple(x.shape)}")
        axis = axis % x.dim()
        flat = x.transpose(0, axis).reshape(x.shape[axis], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zp, qmin, qmax = qparams(lo, hi, bits, symmetric=symmetric, signed=symmetric)
        scale, zp = scale.view(shape), zp.view(shape)
    else:
        scale, zp, qmin, qmax = qparams(x.min(), x.max(), bits, symmetric=symmetric, signed=symmetric)
    return dequantize_tensor(quantize_tensor(x, scale, zp, qmin, qmax), scale, zp)


def sqnr_db(reference: Tensor, approximation: Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - approx)^2))`` in dB.

    Each extra bit buys about 6 dB; ``inf`` means the approximation is exact. A quantized tensor is
    dequantized first.
    """
    ref = reference.dequantize() if reference.is_quantized else reference
    app = approximation.dequantize() if approximation.is_quantized else approximation
    if ref.shape != app.shape:
        raise ValueError(f"shapes differ: reference {tuple(ref.shape)} vs approximation {tuple(app.shape)}")
    ref, app = ref.detach().double(), app.detach().double()
    noise = (ref - app).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
