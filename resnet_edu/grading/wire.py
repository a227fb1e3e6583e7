"""The wire between the grader and a sandbox: framing, and the plain-data encoding of answers.

Grader -> sandbox: pickled requests (the grader's own data: the inputs of a test case; unpickled by
the sandbox, which trusts the grader). Sandbox -> grader: **never pickle**. A reply is a JSON tree
plus raw byte buffers (tensor/array values), size-limited, decoded by :func:`decode` into plain
Python values, tensors and numpy arrays built by the grader's own torch/numpy from bytes. Anything
that is not plain data (a module, a student's class, a generator) stays in the sandbox and comes
back as a reference (:class:`resnet_edu.grading.remote.Remote`) whose attributes and calls are
further requests. Every value a reply carries is the student's word about their own answer: the
grader compares it with its own reference, never runs it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

MAX_HEADER = 16 << 20  # bytes of JSON per reply
MAX_REPLY = 256 << 20  # bytes of a reply in all (JSON + buffers)
MAX_DEPTH = 64  # nesting of lists/dicts in a reply
INLINE_NUMEL = 4_000_000  # tensors with more elements stay in the sandbox (a reference)
_LEN = struct.Struct("!Q")

TENSOR_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool",
    "complex64", "complex128", "quint8", "qint8", "qint32",
)
TORCH_NAMES = (  # torch attributes a reply may name (dtypes, quantization schemes, layouts)
    *TENSOR_DTYPES, "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
    "per_channel_affine_float_qparams", "strided", "sparse_coo", "contiguous_format", "channels_last", "preserve_format",
)


class ProtocolError(Exception):
    """A reply that is not well-formed plain data (too big, too deep, an unknown tag, bad bytes)."""


# --------------------------------------------------------------------------------------------------
# framing: 8-byte length + payload
# --------------------------------------------------------------------------------------------------
def write_frame(fd: int, payload: bytes) -> None:
    data = _LEN.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int, wait: Optional[Callable[[], None]] = None) -> bytes:
    chunks: List[bytes] = []
    left = n
    while left:
        if wait is not None:
            wait()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int, wait: Optional[Callable[[], None]] = None) -> bytes:
    (n,) = _LEN.unpack(read_exact(fd, _LEN.size, wait))
    if n > limit:
        raise ProtocolError(f"a reply of {n} bytes is over the limit of {limit}")
    return read_exact(fd, n, wait)


def pack_reply(tree: Any, buffers: List[bytes]) -> bytes:
    header = json.dumps({"v": tree, "b": [len(b) for b in buffers]}, allow_nan=False).encode()
    return _LEN.pack(len(header)) + header + b"".join(buffers)


def unpack_reply(data: bytes) -> Tuple[Any, List[bytes]]:
    if len(data) < _LEN.size:
        raise ProtocolError("truncated reply")
    (n,) = _LEN.unpack(data[: _LEN.size])
    if n > MAX_HEADER or _LEN.size + n > len(data):
        raise ProtocolError("reply header too big or truncated")
    try:
        header = json.loads(data[_LEN.size : _LEN.size + n])
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"reply header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("b"), list) or "v" not in header:
        raise ProtocolError("reply header has the wrong shape")
    sizes = header["b"]
    if not all(type(s) is int and s >= 0 for s in sizes) or _LEN.size + n + sum(sizes) != len(data):
        raise ProtocolError("reply buffers do not add up")
    buffers, at = [], _LEN.size + n
    for s in sizes:
        buffers.append(data[at : at + s])
        at += s
    return header["v"], buffers


# --------------------------------------------------------------------------------------------------
# encoding (in the sandbox): a value -> JSON tree + buffers; non-plain values -> references
# --------------------------------------------------------------------------------------------------
def _tensor_bytes(t: Any) -> bytes:
    import torch

    t = t.detach().cpu().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def encode(value: Any, make_ref: Callable[[Any], Dict[str, Any]]) -> Tuple[Any, List[bytes]]:
    """``value`` as plain data; ``make_ref(obj)`` gives the reference node of anything else."""
    buffers: List[bytes] = []
    seen: set = set()

    def buf(data: bytes) -> int:
        buffers.append(data)
        return len(buffers) - 1

    def enc(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError("nested too deeply to send back")
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return v if abs(v) < 2**63 else {"bigint": str(v)}
        if t is float:
            return v if math.isfinite(v) else {"float": repr(v)}
        if v is Ellipsis:
            return {"ellipsis": 1}
        if t in (list, tuple, set, frozenset, dict):
            if id(v) in seen:
                raise ValueError("a container that contains itself cannot be sent back")
            seen.add(id(v))
            try:
                if t is dict:
                    return {"dict": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
                items = [enc(x, depth + 1) for x in v]
            finally:
                seen.discard(id(v))
            return items if t is list else {{tuple: "tuple", set: "set", frozenset: "set"}[t]: items}
        mod = getattr(t, "__module__", "") or ""
        if mod.startswith("torch") or mod.startswith("numpy"):
            import torch

            if t is torch.Size:
                return {"size": [int(x) for x in v]}
            if t in (torch.Tensor, torch.nn.Parameter) and v.numel() <= INLINE_NUMEL and v.layout == torch.strided and v.device.type in ("cpu", "meta") and str(v.dtype).replace("torch.", "") in TENSOR_DTYPES:
                node: Dict[str, Any] = {"shape": list(v.shape), "rg": bool(v.requires_grad), "param": t is torch.nn.Parameter}
                if v.device.type == "meta":
                    node.update(tensor=-1, dtype=str(v.dtype).replace("torch.", ""), meta=True)
                    return node
                if v.is_quantized:
                    scheme = str(v.qscheme()).replace("torch.", "")
                    node.update(tensor=buf(_tensor_bytes(v.int_repr())), dtype=str(v.dtype).replace("torch.", ""), qscheme=scheme)
                    if scheme.startswith("per_tensor"):
                        node.update(scale=float(v.q_scale()), zero_point=int(v.q_zero_point()))
                    else:
                        node.update(scales=enc(v.q_per_channel_scales(), depth + 1), zero_points=enc(v.q_per_channel_zero_points(), depth + 1), axis=int(v.q_per_channel_axis()))
                    return node
                node.update(tensor=buf(_tensor_bytes(v)), dtype=str(v.dtype).replace("torch.", ""))
                return node
            if t in (torch.dtype, torch.qscheme, torch.layout, torch.memory_format):
                name = str(v).replace("torch.", "")
                if name in TORCH_NAMES:
                    return {"torch": name}
            if t is torch.device:
                return {"device": str(v)}
            import numpy as np

            if t is np.ndarray and v.dtype.kind in "biufc" and v.size <= INLINE_NUMEL:
                return {"ndarray": buf(np.ascontiguousarray(v).tobytes()), "dtype": v.dtype.str, "shape": list(v.shape)}
            if isinstance(v, np.generic) and t.__module__ == "numpy" and v.dtype.kind in "biuf":
                return enc(v.item(), depth)
        return make_ref(v)

    return enc(value, 0), buffers


# --------------------------------------------------------------------------------------------------
# decoding (in the grader): JSON tree + buffers -> values built by the grader itself
# --------------------------------------------------------------------------------------------------
def decode(tree: Any, buffers: List[bytes], make_remote: Callable[[Dict[str, Any]], Any]) -> Any:
    def tensor(node: Dict[str, Any]) -> Any:
        import torch

        dtype_name, shape = node.get("dtype"), node.get("shape")
        if dtype_name not in TENSOR_DTYPES or not isinstance(shape, list) or not all(type(s) is int and 0 <= s < 2**40 for s in shape):
            raise ProtocolError("bad tensor description")
        dtype = getattr(torch, dtype_name)
        if node.get("meta"):
            return torch.empty(shape, dtype=dtype, device="meta")
        i = node.get("tensor")
        if type(i) is not int or not 0 <= i < len(buffers):
            raise ProtocolError("bad tensor buffer index")
        raw = buffers[i]
        numel = math.prod(shape)
        if "qscheme" in node:
            storage = {"quint8": torch.uint8, "qint8": torch.int8, "qint32": torch.int32}.get(dtype_name)
            if storage is None:
                raise ProtocolError("bad quantized dtype")
            ints = _from_bytes(raw, storage, numel, shape)
            if str(node["qscheme"]).startswith("per_tensor"):
                scale, zp = node.get("scale"), node.get("zero_point")
                if type(scale) not in (int, float) or type(zp) is not int:
                    raise ProtocolError("bad quantization parameters")
                return torch._make_per_tensor_quantized_tensor(ints, float(scale), zp)
            scales, zps, axis = dec(node.get("scales"), 1), dec(node.get("zero_points"), 1), node.get("axis")
            if not (isinstance(scales, torch.Tensor) and isinstance(zps, torch.Tensor) and type(axis) is int and 0 <= axis < max(len(shape), 1)):
                raise ProtocolError("bad per-channel quantization parameters")
            return torch._make_per_channel_quantized_tensor(ints, scales.double(), zps.long(), axis)
        out = _from_bytes(raw, dtype, numel, shape)
        if node.get("param"):
            out = torch.nn.Parameter(out, requires_grad=bool(node.get("rg")) and out.is_floating_point())
        elif node.get("rg") and out.is_floating_point():
            out.requires_grad_(True)
        return out

    def dec(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH + 2:
            raise ProtocolError("reply nested too deeply")
        t = type(v)
        if v is None or t in (bool, int, float, str):
            return v
        if t is list:
            return [dec(x, depth + 1) for x in v]
        if t is not dict or not v:
            raise ProtocolError(f"unexpected value of type {t.__name__} in a reply")
        if "tuple" in v and len(v) == 1:
            return tuple(dec(x, depth + 1) for x in _list(v["tuple"]))
        if "set" in v and len(v) == 1:
            return set(dec(x, depth + 1) for x in _list(v["set"]))
        if "dict" in v and len(v) == 1:
            out = {}
            for pair in _list(v["dict"]):
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("bad dict entry")
                out[dec(pair[0], depth + 1)] = dec(pair[1], depth + 1)
            return out
        if "bigint" in v:
            return int(str(v["bigint"])[:400])
        if "float" in v:
            if v["float"] not in ("nan", "inf", "-inf"):
                raise ProtocolError("bad float")
            return float(v["float"])
        if "ellipsis" in v:
            return Ellipsis
        if "size" in v:
            import torch

            return torch.Size([int(x) for x in _list(v["size"]) if type(x) is int])
        if "tensor" in v:
            return tensor(v)
        if "ndarray" in v:
            import numpy as np

            dt, shape, i = v.get("dtype"), v.get("shape"), v.get("ndarray")
            if type(dt) is not str or len(dt) > 8 or np.dtype(dt).kind not in "biufc" or type(i) is not int or not 0 <= i < len(buffers) or not isinstance(shape, list):
                raise ProtocolError("bad array")
            dt = np.dtype(dt)
            if not all(type(s) is int and s >= 0 for s in shape) or math.prod(shape) * dt.itemsize != len(buffers[i]):
                raise ProtocolError("array bytes do not match its shape")
            return np.frombuffer(buffers[i], dtype=dt).reshape(shape).copy()
        if "torch" in v:
            import torch

            if v["torch"] not in TORCH_NAMES:
                raise ProtocolError("unknown torch name")
            return getattr(torch, v["torch"])
        if "device" in v:
            import torch

            return torch.device(str(v["device"])[:20])
        if "ref" in v:
            return make_remote(v)
        raise ProtocolError(f"unknown tag in a reply: {sorted(v)[:3]}")

    return dec(tree, 0)


def _list(v: Any) -> list:
    if type(v) is not list:
        raise ProtocolError("expected a list")
    return v


def _from_bytes(raw: bytes, dtype: Any, numel: int, shape: List[int]) -> Any:
    import torch

    item = torch.empty((), dtype=torch.uint8 if dtype == torch.bool else dtype).element_size()
    if len(raw) != numel * item:
        raise ProtocolError("tensor bytes do not match its shape")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    if dtype == torch.bool:
        return flat.view(torch.uint8).to(torch.bool).reshape(shape)
    return flat.view(dtype).reshape(shape).clone()
