"""Part 1b, first principles (chapter 7): a quantized convolution recomputed with integers only.

:func:`reference_qconv2d` takes a converted ``torch.ao.nn.quantized.Conv2d`` and a ``quint8`` input and
redoes fbgemm's steps (int32 accumulation, float32 requantization, rounding, clamping); its output
equals the module's bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "reference_qconv2d",
]


def reference_qconv2d(qconv: nn.Module, qx: Tensor, saturate_int16_pairs: bool = False) -> Tensor:
    """A converted quantized conv, recomputed with integer accumulation: ``int_repr()`` equals the module's.

    ``qconv`` is a ``torch.ao.nn.quantized.Conv2d`` (or the fused ``ConvReLU2d``) as produced by
    ``convert``; ``qx`` a per-tensor ``quint8`` tensor. The steps are those of fbgemm's kernel:

    1. **int32 accumulation**: ``acc = sum((qx - zx) * (qw - zw))`` over the input channels of the group
       and the kernel positions (im2col order: kernel row, kernel column, channel); padding holds ``zx``,
       i.e. real 0, so it adds nothing.
    2. **requantization**: with ``s = float32(sx) * float32(sw[oc])`` (per output channel) the kernel
       computes ``y = (float32(acc) + bias / s) * (s / float32(so))`` in float32, exactly as fbgemm's
       ``ReQuantizeOutput`` does (the bias stays in float; fbgemm never quantizes it to int32).
    3. **rounding** half to even into an int32 (``cvtps_epi32``; a value beyond the int32 range comes
       out as ``INT32_MIN``, so absurdly large outputs clamp to 0, not 255) and adding ``zo``;
    4. **clamping** to ``[0, 255]`` (``[zo, 255]`` when a ReLU is fused).

    Exact on the fbgemm engine and on the x86 engine where it dispatches to fbgemm (CPUs without
    AVX512-VNNI) as long as no int16 pair saturates: guaranteed while the input integers stay in
    0..127 (``2 * 127 * 128 = 32512 <= 32767``), which ``reduce_range=True`` gives every activation
    inside its calibrated range. (An activation beyond that range still quantizes up to 255.)

    ``saturate_int16_pairs=True`` emulates AVX2's ``vpmaddubsw`` instead: the raw ``uint8 * int8``
    products of neighbouring K positions (pairs ``k, k+1`` for even ``k``) are added into an int16 that
    saturates at -32768/32767, and the zero-point corrections are applied afterwards. That reproduces
    fbgemm on AVX2 CPUs even with 8-bit activations (``reduce_range=False``); only for ``groups=1``.
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
    if saturate_int16_pairs and qconv.groups != 1:
        raise ValueError(f"saturate_int16_pairs emulates fbgemm's im2col GEMM, used for groups=1 only; got groups={qconv.groups}")
    fused_relu = isinstance(qconv, ConvReLU2d)

    w = qconv.weight()  # qint8, (O, C/groups, kh, kw)
    bias = qconv.bias()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        w_scale = w.q_per_channel_scales().to(torch.float32)
        w_zp = w.q_per_channel_zero_points().to(torch.int64)
    else:
        w_scale = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float32)
        w_zp = torch.full((w.shape[0],), w.q_zero_point(), dtype=torch.int64)

    # im2col on the raw integers: A is (N*Ho*Wo, groups, K), B is (groups, O/groups, K), K = kh*kw*C/groups
    zx = int(qx.q_zero_point())
    x_raw = qx.int_repr().to(torch.int64)
    w_raw = w.int_repr().to(torch.int64)
    (sh, sw), (ph, pw), (dh, dw), g = qconv.stride, qconv.padding, qconv.dilation, qconv.groups
    n, c, h, wd = x_raw.shape
    o, cg, kh, kw = w_raw.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input {tuple(qx.shape)} is too small for this convolution")
    x_pad = torch.nn.functional.pad(x_raw, (pw, pw, ph, ph), value=zx)
    taps = [
        x_pad[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]  # kh*kw tensors of shape (N, C, Ho, Wo)
    a = torch.stack(taps, 1).view(n, kh * kw, g, cg, ho, wo).permute(0, 4, 5, 2, 1, 3).reshape(n * ho * wo, g, -1)
    b = w_raw.view(g, o // g, cg, kh, kw).permute(0, 1, 3, 4, 2).reshape(g, o // g, -1)
    zw = w_zp.view(g, o // g)

    # 1. integer accumulation (int64 here, checked to fit the kernel's int32 accumulator)
    if not saturate_int16_pairs:
        acc = torch.einsum("mgk,gok->mgo", a - zx, b - zw.unsqueeze(-1))
    else:
        a2, b2 = a[:, 0], b[0]  # groups == 1
        if a2.shape[1] % 2:  # K is padded to a multiple of the pair size with zeros
            a2 = torch.nn.functional.pad(a2, (0, 1))
            b2 = torch.nn.functional.pad(b2, (0, 1))
        acc2 = torch.zeros(a2.shape[0], b2.shape[0], dtype=torch.int64)
        for k in range(0, a2.shape[1], 2):
            pair = a2[:, k : k + 1] * b2[:, k] + a2[:, k + 1 : k + 2] * b2[:, k + 1]
            acc2 += pair.clamp(-(2**15), 2**15 - 1)
        k_real = a.shape[2]
        acc2 = acc2 - zx * b[0].sum(1) - a[:, 0].sum(1, keepdim=True) * zw[0] + k_real * zx * zw[0]
        acc = acc2.unsqueeze(1)
    acc = acc.reshape(n, ho, wo, o).permute(0, 3, 1, 2)
    if acc.abs().max() >= 2**31:
        raise OverflowError("the int32 accumulator would overflow for this input")

    # 2. requantization in float32, as fbgemm's ReQuantizeOutput does it
    act_times_w_scale = torch.tensor(qx.q_scale(), dtype=torch.float32) * w_scale  # float32 product
    multiplier = act_times_w_scale / torch.tensor(qconv.scale, dtype=torch.float32)
    y = acc.to(torch.float32)
    if bias is not None:
        y = y + (bias.detach().to(torch.float32) / act_times_w_scale).view(1, -1, 1, 1)
    y = y * multiplier.view(1, -1, 1, 1)
    # 3. rounding half to even into an int32 (like cvtps_epi32: a value outside the int32 range becomes
    #    INT32_MIN), plus the output zero point; 4. clamping
    zo = int(qconv.zero_point)
    in_range = (y >= -(2.0**31)) & (y < 2.0**31)
    q = torch.where(in_range, torch.round(y), torch.tensor(-(2.0**31))).to(torch.int64) + zo
    q = torch.clamp(q, zo if fused_relu else 0, 255).to(torch.uint8)
    return torch._make_per_tensor_quantized_tensor(q, float(qconv.scale), zo)
