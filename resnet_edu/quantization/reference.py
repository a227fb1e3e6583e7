"""Part 1b, first principles (chapter 7): a quantized convolution recomputed with integers only.

:func:`reference_qconv2d` takes a converted ``torch.ao.nn.quantized.Conv2d`` and a ``quint8`` input and
redoes, step by step, what the kernel that ran computed: integer accumulation (exact int32, or
``vpmaddubsw``'s int16-saturated byte pairs where the CPU has no VNNI), then the library's own float32
requantization (fbgemm, oneDNN and QNNPACK each order it differently), rounding and clamping.
``kernel=None`` models the kernel :func:`~resnet_edu.quantization.kernels.conv_kernel` reports for the
current engine, and for grouped convolutions the one each library really dispatches them to (measured
with 8-bit inputs and extreme weights, see ``_grouped_accumulation``): fbgemm's depthwise kernel sums
int16 pairs on every CPU, VNNI included, its groupwise kernel sums exactly, and its im2col path pairs
like ``groups=1``; oneDNN's AVX2 kernel pairs only groups of 4k channels, its AVX-512 brgemm without
VNNI pairs like ``groups=1`` in each group. QNNPACK (x86 SSE2 kernels, ``q8conv/4x4c2-sse2.c``,
``q8dwconv``, ``q8gemm``) is modelled from its source down to its int32 corners, bit-exact at extreme
scales too: PyTorch quantizes the bias to int32 with clamping, QNNPACK packs it through float32 (so the
clamped ``2^31 - 1`` becomes INT32_MIN), starts the accumulator at it and adds with wrap-around, and
converts the scaled sum with ``cvtps2dq`` (INT32_MIN, so output 0, out of range); those out-of-range
conversions are x86's, ARM's NEON kernels are not modelled there (nor checked on hardware). State the reference does
not model: PyTorch's QNNPACK convolution re-packs, recomputes its requantization scales and refills its
padding with the input zero point only when the input *scale* changes, so a module called again with the
same input scale and another input zero point or output scale pads and requantizes with the old ones (a
converted model never does that: each layer's qparams are fixed). oneDNN without VNNI is modelled from its
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

from .kernels import conv_kernel, cpu_features

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
        return "onednn-avx2"  # grouped too (see _grouped_accumulation)
    if k["library"] == "fbgemm" and _fbgemm_depthwise(qconv):
        return "fbgemm-int16"  # its depthwise kernel is AVX2 code (vpmaddubsw) on every CPU, VNNI included
    if k["library"] == "fbgemm" and _fbgemm_groupwise(qconv):
        return "fbgemm"  # its groupwise kernel sums exactly in int32 on every CPU (measured: AVX2, AVX-512, VNNI)
    return k["library"] + ("" if k["accumulation"] == "int32" else "-int16")


def _fbgemm_depthwise(qconv: nn.Module) -> bool:
    """Whether fbgemm runs ``qconv`` on its depthwise kernel (``takeDepthWiseFastPath``, FbgemmConv.cc)."""
    (kh, kw), (ph, pw) = qconv.kernel_size, qconv.padding
    return (qconv.groups == qconv.in_channels and qconv.out_channels in (qconv.groups, 2 * qconv.groups)
            and qconv.groups % 8 == 0 and all(s in (1, 2) for s in qconv.stride) and kh == kw and kh in (3, 5, 7)
            and qconv.dilation == (1, 1) and ph == pw == (kh - 1) // 2)


def _fbgemm_groupwise(qconv: nn.Module) -> bool:
    """Whether fbgemm runs ``qconv`` on its groupwise kernel (``fbgemmOptimizedGConv``; the groups it
    packs together, ``numOfGroupsTogether``, depend on whether the CPU has AVX-512, whatever
    ``FBGEMM_ENABLE_INSTRUCTIONS`` says)."""
    g = qconv.groups
    cpg, kpg = qconv.in_channels // g, qconv.out_channels // g
    f = cpu_features()
    width = 64 if (f["avx512"] and f["avx512bw"]) else 32
    return (g > 1 and cpg == kpg and cpg in (2, 4, 8, 16) and g >= max(width // kpg // max(cpg, 4), 1)
            and qconv.kernel_size == (3, 3) and qconv.padding == (1, 1) and qconv.dilation == (1, 1)
            and qconv.stride in ((1, 1), (2, 2)))


def _grouped_accumulation(qconv: nn.Module, kernel: str, accumulation: str) -> str:
    """The accumulation the running kernel uses for a grouped convolution (``groups > 1``).

    fbgemm: int16 pairs in its depthwise kernel (every CPU) and, without VNNI, in its im2col/pointwise
    path; exact int32 in its groupwise kernel (``_model_for`` picks the model). oneDNN's AVX2 kernel
    (``jit_uni_x8s8s32x``) takes a grouped convolution only when the channels per group, in and out,
    are multiples of 4 (per-tap pairs then); it hands the others to its depthwise kernel or its gemm
    convolution, both exact int32 (measured). oneDNN's AVX-512 kernels without VNNI: its depthwise kernel
    (exact) for one channel in and out per group, else brgemm with the pairs of ``groups=1`` in each group
    (a single input channel per group lowered like the 1-channel stem; measured).
    """
    cpg, kpg = qconv.in_channels // qconv.groups, qconv.out_channels // qconv.groups
    if kernel == "onednn-avx2":
        return "pairs-per-tap" if cpg % 4 == 0 and kpg % 4 == 0 else "int32"
    if kernel == "onednn-int16":  # depthwise: its depthwise kernel; else brgemm, lowered like groups=1
        return "int32" if cpg == kpg == 1 else accumulation
    return accumulation if accumulation == "pairs" else "int32"


def _brgemm_accumulation(qconv: nn.Module, wo: int) -> str:
    """The pairs oneDNN's AVX-512 brgemm convolution (no VNNI) forms, for output width ``wo``.

    Per tap (``"pairs-per-tap"``), except with a single input channel on a CPU with AVX512-VBMI (which
    its weight-copy kernel needs): then it lowers the kernel window into the reduction ("relo",
    ``jit_brgemm_conv_utils.cpp``): ``kh > 1`` and ``wo > 4``: the whole window in (kernel column,
    kernel row) order (``"pairs-whi"``); else ``kw > 1``: each kernel row (``"pairs-per-row"``).
    """
    from .kernels import _cpuinfo_flags

    kh, kw = qconv.kernel_size
    if qconv.in_channels != qconv.groups or "avx512vbmi" not in _cpuinfo_flags():  # one input channel per group
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
    With ``groups > 1`` each mode pairs within each group's own row (kernel row, kernel column, the
    group's channels).
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
        acc = torch.stack([_pairs(a[:, gi], b[gi], zw[gi], zx, mode, (n, h, wd, kh, kw, cg), (ph, pw), im2col) for gi in range(g)], 1)
    acc = acc.reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    if acc.abs().max() >= 2**31:
        raise OverflowError("the int32 accumulator would overflow for this input")
    return acc


def _pairs(a: Tensor, b: Tensor, zw: Tensor, zx: int, mode: str, dims, pads, im2col) -> Tensor:
    """One group's int16-pair sums (see :func:`integer_accumulate`): ``a`` (rows, kh*kw*cg) raw input bytes
    padded with ``zx``, ``b`` (outputs, kh*kw*cg) raw weights, ``zw`` their zero points; (rows, outputs)."""
    n, h, wd, kh, kw, cg = dims
    ph, pw = pads
    m, o = a.shape[0], b.shape[0]
    # (rows, kernel row, kernel column, channel): the raw bytes vpmaddubsw reads, in the layout's order
    a4, b4 = a.view(m, kh, kw, cg), b.view(o, kh, kw, cg)
    exact = torch.zeros(m, o, dtype=torch.int64)
    if mode != "pairs":
        # oneDNN reads 0 at padded positions and adds zx * sum(w) for them in int32 (its source
        # zero-point padding term): nothing there saturates, whatever zx is
        inside = torch.nn.functional.pad(torch.ones(1, 1, h, wd, dtype=torch.int64), (pw, pw, ph, ph))
        padded = (1 - im2col(inside)[:, :, 0]).repeat(n, 1)  # (rows, kh*kw): 1 where the tap is padding
        exact = zx * (padded @ b.view(o, kh * kw, cg).sum(2).T)
        a4 = a4.masked_fill(padded.view(m, kh, kw, 1).bool(), 0)
    if mode == "pairs-whi":  # one sequence in (kernel column, kernel row, channel) order
        a3, b3 = a4.permute(0, 2, 1, 3).reshape(m, 1, -1), b4.permute(0, 2, 1, 3).reshape(o, 1, -1)
    else:  # the sequences that are padded to whole pairs separately
        seq = {"pairs": 1, "pairs-per-row": kh, "pairs-per-tap": kh * kw}[mode]
        a3, b3 = a4.reshape(m, seq, -1), b4.reshape(o, seq, -1)
    if a3.shape[2] % 2:  # each sequence is padded to whole pairs with zeros
        a3, b3 = torch.nn.functional.pad(a3, (0, 1)), torch.nn.functional.pad(b3, (0, 1))
    a2, b2 = a3.reshape(m, -1), b3.reshape(o, -1)
    acc = torch.zeros(m, o, dtype=torch.int64)
    for k in range(0, a2.shape[1], 2):
        pair = a2[:, k : k + 1] * b2[:, k] + a2[:, k + 1 : k + 2] * b2[:, k + 1]
        acc += pair.clamp(-(2**15), 2**15 - 1)
    return acc + exact - zx * b.sum(1) - a.sum(1, keepdim=True) * zw + a.shape[1] * zx * zw


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
       - QNNPACK: the bias is first quantized to int32 (``round(bias * (1 / float32(sx * sw)))``,
         clamped to int32, stored through float32: ``2^31 - 1`` becomes INT32_MIN), then
         ``y = float32(acc + bias_q) * (s * (1 / so))`` with the int32 sum wrapping around and a ``y``
         outside int32 giving INT32_MIN (x86);
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
        kernel_accumulation = _grouped_accumulation(qconv, kernel, kernel_accumulation)
    accumulation = accumulation or kernel_accumulation
    if accumulation not in ACCUMULATIONS + ("onednn-brgemm",):
        raise ValueError(f"accumulation must be one of {', '.join(map(repr, ACCUMULATIONS + ('onednn-brgemm',)))}, got {accumulation!r}")
    if accumulation == "onednn-brgemm":
        (sw_, pw_), kw_ = (qconv.stride[1], qconv.padding[1]), qconv.kernel_size[1]
        accumulation = _brgemm_accumulation(qconv, (qx.shape[3] + 2 * pw_ - qconv.dilation[1] * (kw_ - 1) - 1) // sw_ + 1)

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
        # PyTorch's QuantizeBias (fbgemm::Quantize): round(bias * (1 / float32(sx * sw))), clamped to int32
        bias_q = torch.round(bias * (1.0 / (w_scale64 * sx).to(torch.float32))).double().clamp(-(2**31), 2**31 - 1)
        # QNNPACK's weight packing stores it through float32 (``b ? b[i] : 0.0f`` in pack.h). bias_q comes
        # from a float32 product, so only the clamped 2^31 - 1 changes: it rounds to 2^31, which converts
        # back to INT32_MIN (x86's cvttss2si)
        bias_q = bias_q.to(torch.float32).double()
        bias_q = torch.where(bias_q >= 2.0**31, -(2.0**31), bias_q).to(torch.int64)
        mult = (sw * _f32(sx)) * (1.0 / _f32(so))  # generate_requantization_scales, all float32
        # the kernel starts its int32 accumulator at the bias and adds the products with wrap-around (paddd)
        total = (acc + col(bias_q) + 2**31) % 2**32 - 2**31
        y = total.to(torch.int32).to(torch.float32) * col(mult)
        # cvtps2dq rounds half to even and gives INT32_MIN (so output 0) out of the int32 range; the
        # int16/uint8 saturating packs after it are the [0, 255] clamp below
        q = torch.where(y.abs() < 2.0**31, torch.round(y), torch.tensor(-(2.0**31))) + zo
    lo = zo if isinstance(qconv, ConvReLU2d) else 0
    q = torch.clamp(q, lo, 255).to(torch.uint8)
    return torch._make_per_tensor_quantized_tensor(q, so, zo)
