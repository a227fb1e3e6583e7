"""Part 1b, first principles (chapter 7): a quantized convolution recomputed with integers only.

:func:`reference_qconv2d` takes a converted ``torch.ao.nn.quantized.Conv2d`` and a ``quint8`` input and
redoes, step by step, what the kernel that ran computed: integer accumulation (exact int32, or
``vpmaddubsw``'s int16-saturated byte pairs where the CPU has no VNNI), then the library's own float32
requantization (fbgemm, oneDNN and QNNPACK each order it differently), rounding and clamping.
``kernel=None`` models the kernel :func:`~resnet_edu.quantization.kernels.conv_kernel` reports for the
current engine (grouped convolutions with exact int32 sums: int16 pairs are modelled for ``groups=1``
only, exact while activations fit in 7 bits). Known gap, measured by the tests: QNNPACK at extreme
scales (outputs clamped at 0 and 255, weight scales near 1e-7). A QNNPACK quirk the reference does not
model: PyTorch's QNNPACK convolution fills its padding with the zero point of the *first* input a module
sees and keeps it, so a module called again with another input zero point pads with the old one (a
converted model never does that: each layer's input zero point is fixed). oneDNN without VNNI is modelled from its
source (``jit_uni_x8s8s32x_conv_kernel.cpp``, ``jit_brgemm_conv_utils.cpp``) and bit-exact, the
3-channel stem with 8-bit activations included: padded taps skip ``vpmaddubsw`` and enter as an exact
int32 ``zx * sum(w)`` (only a zero point above 128 could saturate them otherwise), its AVX2 kernel
multiplies by one combined scale ``sx * sw`` and its AVX-512 brgemm kernel lowers the window of a
1-channel convolution into the pairs. ``tests/test_reference_kernels.py`` compares it with every
convolution of the digits model and of ResNet-18 under each kernel family the test machine can run.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .kernels import conv_kernel

__all__ = ["reference_qconv2d", "KERNEL_MODELS", "integer_accumulate"]

# kernel model -> (accumulation, requantization): what reference_qconv2d(kernel=...) accepts
KERNEL_MODELS = {
    "fbgemm": ("int32", "fbgemm"),  # fbgemm with VNNI, or any fbgemm with 7-bit activations
    "fbgemm-int16": ("pairs", "fbgemm"),  # fbgemm's AVX2 / AVX-512 kernels: vpmaddubsw on im2col pairs
    "onednn-amx": ("int32", "onednn-combined"),  # oneDNN's AMX (brgemm) kernels: one combined scale per channel
    "onednn": ("int32", "onednn"),  # oneDNN with AVX512-VNNI or AVX-VNNI: input scale, then weight scale
    "onednn-int16": ("onednn-brgemm", "onednn"),  # oneDNN's AVX-512 (brgemm) kernels without VNNI
    "onednn-avx2": ("pairs-per-tap", "onednn-combined"),  # oneDNN's AVX2 kernels (jit_uni_x8s8s32x)
    "qnnpack": ("int32", "qnnpack"),
}

# integer_accumulate's modes; reference_qconv2d also takes "onednn-brgemm" (see _brgemm_accumulation)
ACCUMULATIONS = ("int32", "pairs", "pairs-per-tap", "pairs-per-row", "pairs-whi")


def _f32(v: float) -> Tensor:
    return torch.tensor(v, dtype=torch.float64).to(torch.float32)


def _model_for(qconv: nn.Module) -> str:
    w = qconv.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        symmetric = bool((w.q_per_channel_zero_points() == 0).all())
    else:
        symmetric = w.q_zero_point() == 0
    k = conv_kernel(symmetric_weights=symmetric, groups=qconv.groups)
    if k["library"] == "qnnpack":
        return "qnnpack"
    if k["isa"] == "avx512_core_amx":
        return "onednn-amx"
    if k["library"] == "onednn" and k["isa"] == "avx2":
        return "onednn-avx2"  # grouped too: its requantization, with int32 sums (see below)
    if qconv.groups != 1:  # int16 pairs are modelled for groups=1 only: exact while activations fit 7 bits
        return k["library"]
    return k["library"] + ("" if k["accumulation"] == "int32" else "-int16")


def _brgemm_accumulation(qconv: nn.Module, wo: int) -> str:
    """The pairs oneDNN's AVX-512 brgemm convolution (no VNNI) forms, for output width ``wo``.

    Per tap (``"pairs-per-tap"``), except with a single input channel on a CPU with AVX512-VBMI (which
    its weight-copy kernel needs): then it lowers the kernel window into the reduction ("relo",
    ``jit_brgemm_conv_utils.cpp``): ``kh > 1`` and ``wo > 4``: the whole window in (kernel column,
    kernel row) order (``"pairs-whi"``); else ``kw > 1``: each kernel row (``"pairs-per-row"``).
    """
    from .kernels import _cpuinfo_flags

    kh, kw = qconv.kernel_size
    if qconv.in_channels != 1 or qconv.groups != 1 or "avx512vbmi" not in _cpuinfo_flags():
        return "pairs-per-tap"
    if kh > 1 and wo > 4 and qconv.dilation == (1, 1):
        return "pairs-whi"
    if kw > 1 and qconv.dilation[1] == 1:
        return "pairs-per-row"
    return "pairs-per-tap"


def integer_accumulate(qconv: nn.Module, qx: Tensor, mode: str = "int32") -> Tensor:
    """``acc[n, o, y, x] = sum((qx - zx) * (qw - zw))`` as int64, shape ``(N, O, Ho, Wo)``.

    ``mode="int32"``: the exact sum. ``"pairs"``: AVX2/AVX-512 ``vpmaddubsw`` -- the raw ``uint8 x int8``
    products of neighbouring positions ``k, k+1`` of the im2col row (kernel row, kernel column, channel)
    are added into an int16 that saturates at -32768/32767, the zero-point corrections come afterwards
    (fbgemm; its im2col fills the padding with ``zx``). oneDNN's modes read 0 at padded positions and
    add ``zx * sum(w)`` over them in int32 (exact, its source zero-point padding term), and pair within
    its weight layout: ``"pairs-per-tap"`` pads each tap's channels to an even count (its blocked layout;
    AVX2 ``jit_uni_x8s8s32x`` and AVX-512 brgemm kernels); ``"pairs-per-row"`` pairs along each kernel
    row, (kernel column, channel) (brgemm's "relo wi" lowering); ``"pairs-whi"`` pairs along the whole
    window in (kernel column, kernel row, channel) order (brgemm's "relo whi", weights ``Owhi16o``).
    """
    if mode not in ACCUMULATIONS:
        raise ValueError(f"mode must be one of {', '.join(map(repr, ACCUMULATIONS))}, got {mode!r}")
    w = qconv.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        w_zp = w.q_per_channel_zero_points().to(torch.int64)
    else:
        w_zp = torch.full((w.shape[0],), w.q_zero_point(), dtype=torch.int64)
    zx = int(qx.q_zero_point())
    x_raw = qx.int_repr().to(torch.int64)
    w_raw = w.int_repr().to(torch.int64)
    (sh, sw), (ph, pw), (dh, dw), g = qconv.stride, qconv.padding, qconv.dilation, qconv.groups
    n, _, h, wd = x_raw.shape
    o, cg, kh, kw = w_raw.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input {tuple(qx.shape)} is too small for this convolution")
    if mode != "int32" and g != 1:
        raise ValueError(f"int16-pair accumulation is modelled for groups=1 only; got groups={g}")
    # padding holds zx (real 0): it adds nothing to the centred sum
    x_pad = torch.nn.functional.pad(x_raw, (pw, pw, ph, ph), value=zx)

    def im2col(t: Tensor) -> Tensor:  # (N', C', H+2ph, W+2pw) -> (N'*Ho*Wo, kh*kw, C'), taps by kernel row, column
        taps = [
            t[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]  # kh*kw tensors of shape (N, C', Ho, Wo)
        m, c = t.shape[:2]
        return torch.stack(taps, 1).view(m, kh * kw, c, ho, wo).permute(0, 3, 4, 1, 2).reshape(m * ho * wo, kh * kw, c)

    a = im2col(x_pad).view(n * ho * wo, kh * kw, g, cg).transpose(1, 2).reshape(n * ho * wo, g, -1)
    b = w_raw.view(g, o // g, cg, kh, kw).permute(0, 1, 3, 4, 2).reshape(g, o // g, -1)
    zw = w_zp.view(g, o // g)
    if mode == "int32":
        acc = torch.einsum("mgk,gok->mgo", a - zx, b - zw.unsqueeze(-1))
    else:
        # (rows, kernel row, kernel column, channel): the raw bytes vpmaddubsw reads, in the layout's order
        m = n * ho * wo
        a4, b4 = a[:, 0].view(m, kh, kw, cg), b[0].view(o, kh, kw, cg)
        exact = torch.zeros(m, o, dtype=torch.int64)
        if mode != "pairs":
            # oneDNN reads 0 at padded positions and adds zx * sum(w) for them in int32 (its source
            # zero-point padding term): nothing there saturates, whatever zx is
            inside = torch.nn.functional.pad(torch.ones(1, 1, h, wd, dtype=torch.int64), (pw, pw, ph, ph))
            padded = (1 - im2col(inside)[:, :, 0]).repeat(n, 1)  # (rows, kh*kw): 1 where the tap is padding
            exact = zx * (padded @ b[0].view(o, kh * kw, cg).sum(2).T)
            a4 = a4.masked_fill(padded.view(m, kh, kw, 1).bool(), 0)
        if mode == "pairs-whi":  # one sequence in (kernel column, kernel row, channel) order
            a3, b3 = a4.permute(0, 2, 1, 3).reshape(m, 1, -1), b4.permute(0, 2, 1, 3).reshape(o, 1, -1)
        else:  # the sequences that are padded to whole pairs separately
            seq = {"pairs": 1, "pairs-per-row": kh, "pairs-per-tap": kh * kw}[mode]
            a3, b3 = a4.reshape(m, seq, -1), b4.reshape(o, seq, -1)
        if a3.shape[2] % 2:  # each sequence is padded to whole pairs with zeros
            a3, b3 = torch.nn.functional.pad(a3, (0, 1)), torch.nn.functional.pad(b3, (0, 1))
        a2, b2 = a3.reshape(m, -1), b3.reshape(o, -1)
        acc2 = torch.zeros(m, o, dtype=torch.int64)
        for k in range(0, a2.shape[1], 2):
            pair = a2[:, k : k + 1] * b2[:, k] + a2[:, k + 1 : k + 2] * b2[:, k + 1]
            acc2 += pair.clamp(-(2**15), 2**15 - 1)
        acc2 = acc2 + exact - zx * b[0].sum(1) - a[:, 0].sum(1, keepdim=True) * zw[0] + a.shape[2] * zx * zw[0]
        acc = acc2.unsqueeze(1)
    acc = acc.reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    if acc.abs().max() >= 2**31:
        raise OverflowError("the int32 accumulator would overflow for this input")
    return acc


def reference_qconv2d(
    qconv: nn.Module,
    qx: Tensor,
    saturate_int16_pairs: bool = False,
    kernel: Optional[str] = None,
    accumulation: Optional[str] = None,
) -> Tensor:
    """A converted quantized conv recomputed with integers, as the kernel that runs here computes it.

    ``qconv``: a ``torch.ao.nn.quantized.Conv2d`` (or fused ``ConvReLU2d``) from ``convert``; ``qx``: a
    per-tensor ``quint8`` tensor. ``kernel``: one of :data:`KERNEL_MODELS`, or None for the kernel the
    current engine dispatches to on this CPU (``saturate_int16_pairs=True`` is ``kernel="fbgemm-int16"``).
    ``accumulation`` (one of :data:`ACCUMULATIONS`, or ``"onednn-brgemm"``: the pairs oneDNN's AVX-512
    brgemm kernel forms for this shape) replaces the kernel's accumulation and keeps its
    requantization: what this kernel would give if it summed the other way.

    1. **accumulation** (:func:`integer_accumulate`): exact int32, or int16-saturated byte pairs;
    2. **requantization** in float32, in each library's order (``s = float32(sx) * float32(sw[oc])``):

       - fbgemm: ``y = (acc + bias / s) * (s / so)``, the bias stays float;
       - oneDNN: ``y = ((acc * sx') * sw + bias) * (1 / so') + zo`` with the scales PyTorch hands over
         as reciprocals and oneDNN inverts again (``sx' = 1 / float32(1 / sx)``,
         ``so' = 1 / float32(1 / so)``); its AMX kernels and its AVX2 kernels without VNNI multiply once
         by the product ``sx' * sw`` instead (``"onednn-amx"``, ``"onednn-avx2"``), which rounds
         differently in a few outputs per million;
       - QNNPACK: the bias is first quantized to int32 (``round(bias * (1 / float32(sx * sw)))``), then
         ``y = (acc + bias_q) * (s * (1 / so))``;
    3. **rounding** half to even, adding ``zo``, **clamping** to ``[0, 255]`` (``[zo, 255]`` with a
       fused ReLU).
    """
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d as QConv2d

    if not isinstance(qconv, QConv2d):
        raise ValueError(
            f"qconv must be a converted torch.ao.nn.quantized.Conv2d (or intrinsic ConvReLU2d), got {type(qconv).__name__}; "
            "run prepare/calibrate/convert first"
        )
    if not isinstance(qx, Tensor) or not qx.is_quantized or qx.dtype != torch.quint8:
        raise ValueError(f"qx must be a quint8 quantized tensor, got {getattr(qx, 'dtype', type(qx).__name__)}")
    if qx.qscheme() != torch.per_tensor_affine:
        raise ValueError(f"qx must be quantized per tensor (torch.per_tensor_affine), got {qx.qscheme()}")
    if qx.dim() != 4 or qx.shape[1] != qconv.in_channels:
        raise ValueError(f"qx must have shape (N, {qconv.in_channels}, H, W), got {tuple(qx.shape)}")
    if qconv.padding_mode != "zeros":
        raise ValueError(f"only padding_mode='zeros' is supported, got {qconv.padding_mode!r}")
    if saturate_int16_pairs:
        if kernel not in (None, "fbgemm-int16"):
            raise ValueError(f"saturate_int16_pairs=True means kernel='fbgemm-int16'; got kernel={kernel!r} too")
        kernel = "fbgemm-int16"
    running = kernel is None
    if running:
        kernel = _model_for(qconv)
    if kernel not in KERNEL_MODELS:
        raise ValueError(f"unknown kernel model {kernel!r}; accepted: {', '.join(KERNEL_MODELS)} (or None: the one running here)")
    kernel_accumulation, requant = KERNEL_MODELS[kernel]
    if running and accumulation is None and qconv.groups != 1:
        kernel_accumulation = "int32"  # int16 pairs are modelled for groups=1 only: exact while activations fit 7 bits
    accumulation = accumulation or kernel_accumulation
    if accumulation not in ACCUMULATIONS + ("onednn-brgemm",):
        raise ValueError(f"accumulation must be one of {', '.join(map(repr, ACCUMULATIONS + ('onednn-brgemm',)))}, got {accumulation!r}")
    if accumulation == "onednn-brgemm":
        (sw_, pw_), kw_ = (qconv.stride[1], qconv.padding[1]), qconv.kernel_size[1]
        accumulation = _brgemm_accumulation(qconv, (qx.shape[3] + 2 * pw_ - qconv.dilation[1] * (kw_ - 1) - 1) // sw_ + 1)
    if accumulation != "int32" and qconv.groups != 1:
        raise ValueError(f"kernel {kernel!r} (int16 pairs) is modelled for groups=1 only; got groups={qconv.groups}")

    acc = integer_accumulate(qconv, qx, accumulation)
    w = qconv.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        w_scale64 = w.q_per_channel_scales().to(torch.float64)
    else:
        w_scale64 = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float64)
    bias = qconv.bias()
    bias = torch.zeros(w.shape[0]) if bias is None else bias.detach().to(torch.float32)
    sx, so, zo = float(qx.q_scale()), float(qconv.scale), int(qconv.zero_point)
    sw = w_scale64.to(torch.float32)
    col = lambda t: t.view(1, -1, 1, 1)  # noqa: E731 - per output channel
    y = acc.to(torch.float32)
    if requant == "fbgemm":
        s = _f32(sx) * sw
        y = (y + col(bias / s)) * col(s / _f32(so))
        q = torch.where(y.abs() < 2.0**31, torch.round(y), torch.tensor(-(2.0**31))) + zo
    elif requant in ("onednn", "onednn-combined"):
        sx_ = 1.0 / _f32(1.0 / sx)
        inv_dst = 1.0 / (1.0 / _f32(1.0 / so))
        scaled = y * col(sx_ * sw) if requant == "onednn-combined" else (y * sx_) * col(sw)
        q = torch.round((scaled + col(bias)) * inv_dst + float(zo))
    else:  # qnnpack
        bias_q = torch.round(bias * (1.0 / (w_scale64 * sx).to(torch.float32))).to(torch.int64)
        mult = (sw * _f32(sx)) * (1.0 / _f32(so))
        y = (acc + col(bias_q)).to(torch.float32) * col(mult)
        q = torch.round(y) + zo
    lo = zo if isinstance(qconv, ConvReLU2d) else 0
    q = torch.clamp(q, lo, 255).to(torch.uint8)
    return torch._make_per_tensor_quantized_tensor(q, so, zo)
