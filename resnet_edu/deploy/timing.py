"""Interleaved timing and honest summaries: min, median, spread, and a noise flag.

Every path of a comparison is timed in one process, round-robin (one call each per round, the
starting path rotating), with fixed threads, so a slow minute of a shared machine hits every path
alike. A row whose median is more than :data:`NOISE_LIMIT` times its minimum is *noisy*: the machine
was busy while it ran, and its ratio to another row is not a result.

Each timed call comes right after untimed *settle* calls of the same path, for at least
:data:`SETTLE_MS` milliseconds. Runtimes keep their worker threads spinning for a while after a call
(PyTorch's OpenMP pool, ONNX Runtime's and OpenVINO's own pools), and a different runtime called in
that moment shares the cores with them. Measured on a 2-core Zen4, ResNet-18 INT8 at batch 1:
OpenVINO took 4.9 ms per call on its own and 8.7 ms when each call came right after an AOTInductor
call; ONNX Runtime U8S8 5.3 ms on its own, 7.4 ms after one AOTInductor call and one settle call,
5.4 ms after 15 ms of settle calls. ONNX Runtime's own pool spins for 100-200 ms after a run
(AOTInductor: 4.9 ms alone, 12.8 ms right after it, still 9.8 ms 50 ms later), which no settle time
short enough for a table can absorb; :class:`~resnet_edu.deploy.OrtModel` therefore stops its
spinning at the end of each run (``session.force_spinning_stop``), which left its own time unchanged.
So every path is timed in the steady state it has when it is the only runtime a server calls.

How many rounds: on a shared machine a median of 20 rounds still moves by several percent from run to
run (ResNet-18 INT8 at batch 1 on the 2-core Zen4: the same two paths' ratio was 1.06 in one 20-round
run and 1.007 and 1.017 in two 150-round runs). ``budget_s`` therefore adds rounds where rounds are
cheap: one untimed pilot round measures what a round costs, and the run gets as many rounds as fit in
the budget (at least ``repeats``, at most :data:`MAX_ROUNDS`). The count depends on the cost of a round
only, never on the times measured.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import torch

__all__ = ["NOISE_LIMIT", "SETTLE_MS", "MAX_ROUNDS", "time_interleaved", "summarize", "speedup", "agreement", "measure"]

NOISE_LIMIT = 1.5
"""A row is noisy when ``median_ms > NOISE_LIMIT * min_ms``."""

SETTLE_MS = 20.0
"""Untimed calls of a path before each of its timed calls last at least this long (see the module docstring)."""

MAX_ROUNDS = 200
"""The most rounds a time budget adds up to (see the module docstring)."""


def time_interleaved(runners: Dict[str, Callable[[Any], Any]], x: Any, repeats: int, warmup: int = 2,
                     settle: int = 1, settle_ms: float = SETTLE_MS, budget_s: float = 0.0) -> Dict[str, List[float]]:
    """Milliseconds per call for every runner, measured round-robin.

    Each runner is first called ``warmup`` times (``torch.compile`` compiles on its first call).
    Then ``repeats`` rounds: in round ``r`` the runners take their turn once each, starting from runner
    ``r mod len(runners)``, so no runner always goes first. A turn is untimed settle calls (at least
    ``settle`` of them, and more until ``settle_ms`` milliseconds have passed: they outlast the threads
    another runtime left spinning, see the module docstring), then one timed call.
    ``budget_s`` > 0: after the warm-up, one untimed pilot round, then as many rounds as fit in
    ``budget_s`` seconds at the pilot's pace (at least ``repeats``, at most :data:`MAX_ROUNDS`).
    Returns ``{name: [ms, ...]}``.
    """
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (repeats, warmup, settle)) or repeats < 1 or warmup < 0 or settle < 0:
        raise ValueError(f"repeats must be >= 1, warmup and settle >= 0 (integers), got repeats={repeats!r}, warmup={warmup!r}, settle={settle!r}")
    if isinstance(settle_ms, bool) or not isinstance(settle_ms, (int, float)) or not 0 <= settle_ms < 10_000:
        raise ValueError(f"settle_ms must be a number of milliseconds in [0, 10000), got {settle_ms!r}")
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not 0 <= budget_s <= 3600:
        raise ValueError(f"budget_s must be a number of seconds in [0, 3600] (0: exactly `repeats` rounds), got {budget_s!r}")
    names = list(runners)
    times: Dict[str, List[float]] = {n: [] for n in names}

    def one_round(r: int) -> None:
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            start = time.perf_counter()
            calls = 0
            while calls < settle or (time.perf_counter() - start) * 1e3 < settle_ms:
                runners[name](x)
                calls += 1
            start = time.perf_counter()
            runners[name](x)
            times[name].append((time.perf_counter() - start) * 1e3)

    with torch.no_grad():
        for name in names:
            for _ in range(warmup):
                runners[name](x)
        if budget_s > 0 and names:
            start = time.perf_counter()
            one_round(0)   # the pilot: what one round costs; its times are dropped
            pace = time.perf_counter() - start
            repeats = max(repeats, min(MAX_ROUNDS, int(budget_s / pace) if pace > 0 else MAX_ROUNDS))
            times = {n: [] for n in names}
        for r in range(repeats):
            one_round(r)
    return times


def summarize(times_ms: List[float], noise_limit: float = NOISE_LIMIT) -> Dict[str, Any]:
    """``{"min_ms", "median_ms", "max_ms", "spread_pct", "repeats", "noisy"}`` of one row's times.

    ``spread_pct`` is the interquartile range in percent of the median (0 for fewer than 4 times:
    there are no quartiles); ``noisy`` is ``median > noise_limit x min``.
    """
    if not times_ms:
        raise ValueError("summarize needs at least one time")
    if any(not (t > 0) for t in times_ms):
        raise ValueError(f"times must be positive milliseconds, got {times_ms!r}")
    med = statistics.median(times_ms)
    if len(times_ms) >= 4:
        q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
        spread = 100.0 * (q3 - q1) / med
    else:
        spread = 0.0
    return {"min_ms": min(times_ms), "median_ms": med, "max_ms": max(times_ms), "spread_pct": spread,
            "repeats": len(times_ms), "noisy": med > noise_limit * min(times_ms)}


def speedup(row: Dict[str, Any], base: Optional[Dict[str, Any]]) -> Optional[float]:
    """``base median / row median``, or None when either row is noisy or missing."""
    if base is None or row.get("noisy") or base.get("noisy"):
        return None
    return base["median_ms"] / row["median_ms"]


def agreement(reference: torch.Tensor, out: torch.Tensor) -> Dict[str, float]:
    """``{"top1_agree", "sqnr_db"}``: the fraction of rows whose arg-max equals ``reference``'s, and the
    signal-to-quantization-noise ratio of ``out`` against ``reference`` in dB (``inf`` when equal)."""
    if reference.shape != out.shape:
        raise ValueError(f"reference and out must have the same shape, got {tuple(reference.shape)} and {tuple(out.shape)}")
    reference, out = reference.float(), out.float()
    same = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    noise = (reference - out).pow(2).sum().item()
    sqnr = float("inf") if noise == 0 else 10 * math.log10(reference.pow(2).sum().item() / noise)
    return {"top1_agree": same, "sqnr_db": sqnr}


def measure(runners: Dict[str, Callable[[Any], Any]], inputs: Dict[str, torch.Tensor], repeats: int = 5, warmup: int = 1,
            baseline: str = "fp32-eager", budget_s: float = 0.0) -> List[Dict[str, Any]]:
    """Time every runner on every input, interleaved, and compare each with ``baseline``.

    For each input: one first call per runner (timed as ``first_call_s``: a compiler compiles
    here; its output gives the agreement with the baseline's), then :func:`time_interleaved` (with
    ``budget_s`` seconds per input: more rounds where a round is cheap).
    Returns one row per (input, runner): ``input``, ``batch``, ``flow``, the :func:`summarize`
    fields, ``speedup_vs_fp32`` (None when noisy), ``first_call_s``, ``top1_agree``, ``sqnr_db``.
    """
    rows: List[Dict[str, Any]] = []
    for label, x in inputs.items():
        outs, first = {}, {}
        with torch.no_grad():
            for name, run in runners.items():
                start = time.perf_counter()
                outs[name] = run(x).float()
                first[name] = time.perf_counter() - start
        times = time_interleaved(runners, x, repeats=repeats, warmup=warmup, budget_s=budget_s)
        stats = {n: summarize(t) for n, t in times.items()}
        base = stats.get(baseline)
        for name, st in stats.items():
            row = {"input": label, "batch": int(x.shape[0]), "flow": name, **st, "speedup_vs_fp32": speedup(st, base),
                   "first_call_s": first[name]}
            if baseline in outs:
                row.update(agreement(outs[baseline], outs[name]))
            rows.append(row)
    return rows
