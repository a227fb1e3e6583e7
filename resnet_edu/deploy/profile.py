"""Where the time goes: the convolutions versus everything between them.

Two runtimes can call the very same oneDNN convolution kernels and still differ in speed; the
difference then lives between the convolutions (quantizing the input, pooling, the cost of each
call). These functions split one forward pass into "convolutions" and "the rest":

* :func:`onednn_times` runs a PyTorch callable with oneDNN's verbose mode on and reads the
  execution time oneDNN reports for each primitive (``onednn_verbose,...,exec,cpu,convolution,...``);
* :func:`openvino_times` compiles an OpenVINO model with ``PERF_COUNT`` and reads its per-node times;
* :func:`torch_op_times` reads ``torch.profiler``'s self time of each PyTorch operator a callable
  dispatches: what PyTorch's part of "the rest" is made of;
* :func:`conv_call_overhead` times one INT8 convolution call against the time oneDNN reports for its
  kernel: the cost of each call around the kernel, paid once per convolution of a pass.

The first two report milliseconds per forward pass: ``conv_ms`` (convolution primitives), ``n_conv``
(how many ran per pass) and ``primitives`` (time per primitive kind and implementation); the third
``ops`` (time per operator) and their sum ``ms``. Every table is per pass and slowest first.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ["parse_onednn_verbose", "onednn_times", "openvino_times", "torch_op_times", "conv_call_overhead"]

KINETO_LOG = re.compile(r"^[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \S+\.(cpp|h):\d+\] ")
"""A line of the log PyTorch's profiler (kineto) writes to fd 2 on each start and stop, e.g.
``USDT:2026-12-06 00:04:44 26307:26307 SyncActivityProfilerHandler.cpp:39] profiler_start`` or, on a
machine without a GPU, ``ERROR:... DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35``."""


def parse_onednn_verbose(lines: Iterable[str], passes: int) -> Dict[str, Any]:
    """Sum oneDNN's ``exec`` lines into milliseconds per pass: ``{"conv_ms", "n_conv", "other_ms", "primitives"}``.

    ``primitives`` maps ``"kind impl"`` (e.g. ``"convolution brg_conv_fwd:avx512_core_vnni"``) to
    ``[count per pass, ms per pass]``. Lines that are not ``exec`` lines (creation, info) are skipped.
    """
    _check_passes(passes)
    return _per_pass(_onednn_exec_events(lines), passes, conv_kind="convolution")


def _onednn_exec_events(lines: Iterable[str]) -> list:
    """``[("kind impl", ms)]`` for each ``exec`` line of oneDNN's verbose output, in order; other lines skipped."""
    events = []
    for line in lines:
        if not line.startswith("onednn_verbose"):
            continue
        f = line.strip().split(",")
        if "exec" not in f:
            continue
        i = f.index("exec")
        try:
            events.append((f"{f[i + 2]} {f[i + 3]}", float(f[-1])))
        except (ValueError, IndexError):
            continue
    return events


def _check_passes(passes: int) -> None:
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")


def _per_pass(events: Iterable[Tuple[str, float]], passes: int, conv_kind: str) -> Dict[str, Any]:
    """``(primitive, ms)`` events of ``passes`` passes -> ``{"conv_ms", "n_conv", "other_ms", "primitives"}`` per pass,
    the primitives with the most time first; a primitive is a convolution when its name starts with ``conv_kind``."""
    agg: Dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
    for name, ms in events:
        agg[name][0] += 1
        agg[name][1] += ms
    prims = _per_pass_table(agg, passes)
    is_conv = {k: k.startswith(conv_kind + " ") for k in prims}
    return {"conv_ms": sum(v[1] for k, v in prims.items() if is_conv[k]), "n_conv": sum(v[0] for k, v in prims.items() if is_conv[k]),
            "other_ms": sum(v[1] for k, v in prims.items() if not is_conv[k]), "primitives": prims}


def _per_pass_table(totals: Dict[str, Any], passes: int) -> Dict[str, list]:
    """``{name: (calls, ms)}`` summed over ``passes`` passes -> ``{name: [calls per pass, ms per pass]}``, slowest first."""
    return {k: [n / passes, ms / passes] for k, (n, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])}


def _flush_c() -> None:
    """Flush C's stdio buffers, so that what C code printed reaches its file descriptor now."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, TypeError, AttributeError):  # no C library by name (Windows): lines still buffered are missed
        pass


@contextlib.contextmanager
def _captured_fd(fd: int) -> Iterator[Callable[[], List[str]]]:
    """Point file descriptor ``fd`` (1 or 2) at a temporary file for the block; yields ``read()``, which
    flushes C's stdio buffers and returns the lines written so far.

    Native libraries (oneDNN, PyTorch's profiler) write to the descriptors directly, past Python's
    ``sys.stdout``/``sys.stderr``, so this is the only way to read (or keep off the page) what they print.
    Call ``read()`` inside the ``with`` block; the file is deleted on exit.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _flush_c()
    saved = os.dup(fd)
    with tempfile.TemporaryDirectory(prefix="resnet_edu_fd_") as tmp:
        log = Path(tmp) / "captured.txt"
        target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.dup2(target, fd)

            def read() -> List[str]:
                _flush_c()
                return log.read_text(errors="replace").splitlines()

            try:
                yield read
            finally:
                _flush_c()
                os.dup2(saved, fd)
        finally:
            os.close(saved)
            os.close(target)


def onednn_times(fn: Callable[[Tensor], Any], x: Tensor, passes: int = 5) -> Dict[str, Any]:
    """Run ``fn(x)`` ``passes`` times with oneDNN's verbose mode on; see :func:`parse_onednn_verbose`.

    oneDNN prints from C to the process's standard output, so file descriptor 1 is pointed at a
    temporary file for the calls (:func:`_captured_fd`). Call ``fn`` once before, so that compilation
    and one-time primitive creation are not counted. A callable that runs no oneDNN primitive
    (fbgemm, QNNPACK) gives ``n_conv == 0``.
    """
    _check_passes(passes)
    with _captured_fd(1) as read:
        with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            for _ in range(passes):
                fn(x)
        lines = read()
    return parse_onednn_verbose(lines, passes)


def openvino_times(path: Union[str, Path], x: Tensor, threads: int = 1, passes: int = 5) -> Dict[str, Any]:
    """Compile ``path`` (ONNX or IR) with ``PERF_COUNT`` and return OpenVINO's per-node times per pass.

    ``primitives`` maps ``"node type exec type"`` (e.g. ``"Convolution brgconv_avx512_I8"``) to
    ``[count per pass, ms per pass]``; ``conv_ms`` and ``n_conv`` count the convolution nodes. The
    settings are :class:`~resnet_edu.deploy.OpenVINOModel`'s (latency hint, one stream, ``threads``).
    """
    _check_passes(passes)
    from .ov_runtime import OpenVINOModel

    request = OpenVINOModel(path, threads=threads, perf_count=True).request
    data = x.detach().cpu().numpy()
    request.infer({0: data})  # first call: not counted
    events = []
    for _ in range(passes):
        request.infer({0: data})
        events += [(f"{p.node_type} {p.exec_type}", p.real_time.total_seconds() * 1e3) for p in request.profiling_info
                   if p.real_time.total_seconds() > 0]
    return _per_pass(events, passes, conv_kind="Convolution")


def torch_op_times(fn: Callable[[Tensor], Any], x: Tensor, passes: int = 5) -> Dict[str, Any]:
    """Self time of each PyTorch operator ``fn(x)`` dispatches, per pass: ``{"ops", "ms"}``.

    ``ops`` maps an operator name (``"aten::copy_"``, ``"quantized::max_pool2d"``) to ``[calls per
    pass, ms per pass]``, slowest first; ``ms`` is their sum. Read from ``torch.profiler`` (CPU) over
    ``passes`` calls after one untimed call; records that are not operators (a compiled region, a
    graph call: names without ``::``) are left out, and so is work that bypasses the dispatcher (an
    AOTInductor library calls its oneDNN convolutions and its own C++ kernels directly). The
    profiler's own cost per operator is included, so small operators read a little slow.
    """
    _check_passes(passes)
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        fn(x)
        with _captured_fd(2) as read:  # the profiler's C++ side logs each start and stop to fd 2
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(passes):
                    fn(x)
            printed = read()
    kept = [line for line in printed if line.strip() and not KINETO_LOG.match(line)]
    if kept:  # anything else fn or the profiler printed goes where it would have gone
        print("\n".join(kept), file=sys.stderr)
    ops = _per_pass_table({e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages() if "::" in e.key}, passes)
    return {"ops": ops, "ms": sum(v[1] for v in ops.values())}


def conv_call_overhead(calls: int = 200, channels: int = 64, size: int = 4, rounds: int = 5) -> Optional[Dict[str, Any]]:
    """What one INT8 convolution costs when PyTorch calls it, beyond oneDNN's kernel: times in microseconds.

    A ``channels -> channels`` 3x3 convolution on a ``size x size`` uint8 image (small, so the kernel
    itself takes a few microseconds) is called through ``torch.ops.onednn.qconv_pointwise``, the operator
    PT2E's compiled graphs call for each convolution (AOTInductor calls the same C++ function without
    Python), in ``rounds`` rounds of ``calls`` calls, alternating with rounds of a trivial operator
    (``aten::relu`` on one number: the cost of Python and the dispatcher). Each time is the median of a
    round, and the round least disturbed by the rest of the machine (the lowest median) is the one
    reported. Returns ``{"call_us", "dispatch_us", "kernel_us"`` (the median time oneDNN reports for the
    convolution primitive in verbose mode, in a separate round), ``"overhead_us"`` (call minus kernel
    minus dispatch: the work per call around the kernel), ``"spread"`` (the call's second-fastest round
    median over the fastest: near 1 when another round confirms the reported one; rounds disturbed by
    the rest of the machine, e.g. another runtime's threads still spinning, only lengthen the slow end), ``"kernel"`` (the oneDNN implementation), ``"shape"``, ``"calls"``,
    ``"rounds"}``; ``None`` where this PyTorch has no oneDNN INT8 convolution (not x86, or no oneDNN).
    """
    _check_passes(calls)
    _check_passes(rounds)
    if not isinstance(channels, int) or channels < 1 or not isinstance(size, int) or size < 1:
        raise ValueError(f"channels and size must be integers >= 1, got channels={channels!r}, size={size!r}")
    onednn = getattr(torch.ops, "onednn", None)
    try:
        prepack, qconv = onednn.qconv_prepack, onednn.qconv_pointwise
    except (AttributeError, RuntimeError):
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, channels, size, size), dtype=torch.uint8, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randint(-127, 128, (channels, channels, 3, 3), dtype=torch.int8, generator=g)
    w_scale = torch.rand(channels, generator=g) * 0.01 + 1e-3
    w_zp = torch.zeros(channels, dtype=torch.int64)
    bias = torch.zeros(channels)
    try:
        packed = prepack(w, w_scale, 0.02, 0, [1, 1], [1, 1], [1, 1], 1, (1, channels, size, size))
    except RuntimeError:  # the operator is registered but cannot run here (no oneDNN INT8 support on this CPU)
        return None

    def call() -> Tensor:
        return qconv(x, 0.02, 0, packed, w_scale, w_zp, bias, [1, 1], [1, 1], [1, 1], 1, 0.05, 0, None, "relu", [], "")

    one = torch.zeros(1)

    def dispatch() -> Tensor:
        return torch.ops.aten.relu.default(one)

    def median_us(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            fn()
            times.append((time.perf_counter_ns() - t0) / 1e3)
        return statistics.median(times)

    with torch.no_grad():
        for _ in range(min(calls, 50)):  # warm-up: primitive cache, allocator
            call()
            dispatch()
        medians = [(median_us(call), median_us(dispatch)) for _ in range(rounds)]
        call_us, dispatch_us = min(m[0] for m in medians), min(m[1] for m in medians)
        ranked = sorted(m[0] for m in medians)
        spread = ranked[1] / ranked[0] if len(ranked) > 1 else 1.0  # is the fastest round confirmed by another?
        with _captured_fd(1) as read:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                for _ in range(calls):
                    call()
            lines = read()
    execs = [(name.split(" ", 1)[1], ms) for name, ms in _onednn_exec_events(lines) if name.startswith("convolution ")]
    if not execs:
        return None
    kernel_us = statistics.median(ms for _, ms in execs) * 1e3
    return {"call_us": call_us, "kernel_us": kernel_us, "dispatch_us": dispatch_us, "overhead_us": call_us - kernel_us - dispatch_us,
            "spread": spread, "kernel": execs[0][0], "shape": f"{channels}->{channels} channels, 3x3, {size}x{size} image, batch 1",
            "calls": calls, "rounds": rounds}
