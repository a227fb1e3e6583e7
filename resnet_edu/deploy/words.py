"""Comparison words chosen by the measurement, so the chapter's prose is true on the reader's machine.

Chapter 10 never writes "faster" into its text: a cell calls :func:`speed_word` on two measured
rows, glues the word next to the numbers, and records the claim in :func:`claim`; the test suite
(``tests/test_deploy.py``) re-derives every recorded word from its recorded numbers.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["TOLERANCE", "speed_word", "amount_word", "ratio", "claim", "check_claim"]

TOLERANCE = 0.05
"""Two times within 5 % of each other are "about as fast as" each other."""


def ratio(slow_ms: float, fast_ms: float) -> float:
    """``slow_ms / fast_ms``: how many times faster the second is."""
    if not (slow_ms > 0 and fast_ms > 0):
        raise ValueError(f"times must be positive, got {slow_ms!r} and {fast_ms!r}")
    return slow_ms / fast_ms


def speed_word(a_ms: float, b_ms: float, tolerance: float = TOLERANCE, noisy: bool = False) -> str:
    """How path A compares with path B: ``"faster than"``, ``"slower than"`` or ``"about as fast as"``.

    ``noisy=True`` (either row was flagged noisy) gives ``"not reliably comparable with"``.
    """
    if noisy:
        return "not reliably comparable with"
    r = ratio(b_ms, a_ms)  # > 1: A is faster
    if r > 1 + tolerance:
        return "faster than"
    if r < 1 / (1 + tolerance):
        return "slower than"
    return "about as fast as"


def amount_word(part_ms: float, whole_ms: float, tolerance: float = 0.1) -> str:
    """How a cost compares with a gap it might explain: ``"more than"``, ``"about as much as"`` or ``"less than"``.

    Within ``tolerance`` (10 %: both are estimates) of each other counts as "about as much as". ``whole_ms``
    must be positive (a gap that is not there explains nothing; the caller says so instead).
    """
    if not whole_ms > 0 or part_ms < 0:
        raise ValueError(f"amount_word needs a positive whole and a part >= 0, got part={part_ms!r}, whole={whole_ms!r}")
    if part_ms > whole_ms * (1 + tolerance):
        return "more than"
    if part_ms < whole_ms / (1 + tolerance):
        return "less than"
    return "about as much as"


def claim(name: str, a_ms: float, b_ms: float, noisy: bool = False, tolerance: float = TOLERANCE) -> Dict[str, Any]:
    """A recorded comparison: ``{"name", "a_ms", "b_ms", "noisy", "tolerance", "word"}``."""
    return {"name": name, "a_ms": float(a_ms), "b_ms": float(b_ms), "noisy": bool(noisy), "tolerance": tolerance,
            "word": speed_word(a_ms, b_ms, tolerance, noisy)}


def check_claim(c: Dict[str, Any]) -> Optional[str]:
    """None when ``c["word"]`` follows from its numbers, else what is wrong."""
    want = speed_word(c["a_ms"], c["b_ms"], c.get("tolerance", TOLERANCE), c.get("noisy", False))
    return None if want == c["word"] else f"{c['name']}: says {c['word']!r} but {c['a_ms']:.2f} vs {c['b_ms']:.2f} ms means {want!r}"
