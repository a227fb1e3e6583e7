"""Interleaved timing and honest summaries: min, median, spread, and a noise flag.

Every path of a comparison is timed in one process, round-robin (one call each per round, the
starting path rotating), with fixed threads, so a slow minute of a shared machine hits every path
alike. A row whose median is more than :data:`NOISE_LIMIT` times its minimum is *noisy*: the machine
was busy while it ran, and its ratio to another row is not a result.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import torch

__all__ = ["NOISE_LIMIT", "time_interleaved", "summarize", "speedup"]

NOISE_LIMIT = 1.5
"""A row is noisy when ``median_ms > NOISE_LIMIT * min_ms``."""


def time_interleaved(runners: Dict[str, Callable[[Any], Any]], x: Any, repeats: int, warmup: int = 2) -> Dict[str, List[float]]:
    """Milliseconds per call for every runner, measured round-robin.

    Each runner is first called ``warmup`` times (``torch.compile`` compiles on its first call).
    Then ``repeats`` rounds: in round ``r`` the runners are called once each, starting from runner
    ``r mod len(runners)``, so no runner always goes first. Returns ``{name: [ms, ...]}``.
    """
    if not isinstance(repeats, int) or not isinstance(warmup, int) or repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(runners)
    with torch.no_grad():
        for name in names:
            for _ in range(warmup):
                runners[name](x)
        times: Dict[str, List[float]] = {n: [] for n in names}
        for r in range(repeats):
            for i in range(len(names)):
                name = names[(r + i) % len(names)]
                start = time.perf_counter()
                runners[name](x)
                times[name].append((time.perf_counter() - start) * 1e3)
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
