"""What the reader's CPU can do: its INT8/BF16 instruction sets, its cores and its clock.

:func:`cpu_features` is the quantization package's ``kernels.cpu_features`` (so the whole book reads
the machine one way) with the two readings this chapter needs (see there).
:func:`bf16_support` turns them into the sentence the deployment chapter prints.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from ..quantization import kernels

__all__ = ["cpu_features", "bf16_support", "best_isa", "clock_ghz", "physical_cores"]

_KEYS = ("avx2", "avx512", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def _arch(machine: str) -> str:
    """``arm64`` for any 64-bit ARM name (``aarch64`` on Linux, ``arm64`` on macOS), ``x86_64`` for ``amd64`` too."""
    machine = machine.lower()
    return "arm64" if machine in ("arm64", "aarch64") else ("x86_64" if machine in ("x86_64", "amd64") else machine)


def cpu_features() -> Dict[str, Any]:
    """:func:`resnet_edu.quantization.kernels.cpu_features`, with two deployment-specific readings.

    * ``arch`` is normalized (``arm64`` / ``x86_64``), as the limit model and the chapter name it;
    * ``avx512`` means the AVX-512 *integer* kernels can run: AVX512F **and** AVX512BW (the byte and
      word multiplies ``vpmaddubsw``/``vpmaddwd`` on 512-bit registers are BW instructions).

    The other booleans (``avx2``, ``avx512_vnni``, ``avx_vnni``, ``avx512_bf16``, ``amx_int8``,
    ``amx_bf16``) are kernels' own: whether the CPU reports the instruction set, not whether a library uses it.
    """
    out = dict(kernels.cpu_features())
    out["arch"] = _arch(str(out.get("arch", "")))
    out["avx512"] = bool(out["avx512"] and out["avx512bw"])   # kernels always reports both
    for key in _KEYS:
        out[key] = bool(out.get(key))
    return out


def best_isa(features: Optional[Dict[str, Any]] = None) -> str:
    """The widest INT8 instruction set of the CPU, as the limit model names it (see :mod:`.limits`)."""
    f = cpu_features() if features is None else features
    if f.get("amx_int8"):
        return "amx"
    if f.get("avx512_vnni"):
        return "avx512_vnni"
    if f.get("avx512"):
        return "avx512"
    if f.get("avx_vnni"):
        return "avx_vnni"
    if f.get("avx2"):
        return "avx2"
    if f.get("arch") == "arm64":
        return "neon"
    return "scalar"


def bf16_support(features: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Whether the CPU computes in BF16 natively: ``{"native", "via", "sentence"}``.

    ``via`` lists the instruction sets found (``AVX512_BF16``: BF16 dot products in AVX-512
    registers; ``AMX_BF16``: BF16 tile matrix multiplies). Without either, BF16 is emulated:
    converted to FP32 for the arithmetic, so it saves memory but not time.
    """
    f = cpu_features() if features is None else features
    via: List[str] = [name for key, name in (("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX_BF16")) if f.get(key)]
    if via:
        sentence = f"This CPU computes in BF16 natively ({' and '.join(via)})."
    else:
        sentence = "This CPU has neither AVX512_BF16 nor AMX_BF16: BF16 is converted to FP32 for the arithmetic."
    return {"native": bool(via), "via": via, "sentence": sentence}


def clock_ghz(default: float = 2.0) -> Dict[str, Any]:
    """The CPU clock the limit model uses: ``{"ghz", "source"}``.

    Read, in order, from cpufreq's ``cpuinfo_max_freq``, the ``@ 2.60GHz`` of the model name, or
    ``cpu MHz`` in ``/proc/cpuinfo`` (a VM reports its nominal clock there). ``default`` when none is readable.
    """
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return {"ghz": int(f.read().strip()) / 1e6, "source": "cpufreq cpuinfo_max_freq"}
    except (OSError, ValueError):
        pass
    m = re.search(r"@\s*([\d.]+)\s*GHz", str(kernels.cpu_features().get("model", "")))
    if m:
        return {"ghz": float(m.group(1)), "source": "model name"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return {"ghz": float(line.split(":", 1)[1]) / 1e3, "source": "/proc/cpuinfo cpu MHz"}
    except (OSError, ValueError):
        pass
    return {"ghz": default, "source": "default (clock not readable)"}


def physical_cores() -> int:
    """Cores available to this process (``os.sched_getaffinity`` where it exists, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
