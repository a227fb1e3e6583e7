#!/usr/bin/env python3
"""Print a short name for this CPU's instruction set, the folder TorchInductor's cache goes in.

TorchInductor's cache is not keyed on the CPU's instruction set: a graph compiled on an AVX-512 CPU is
found again on an AVX2-only one and dies there with SIGILL ("Fatal Python error: Illegal instruction";
seen here when a checkout's cache was reused under ``.ci/emulate-avx2``). A checkout on a network home
shared by machines of several kinds would do the same. So the Makefile, ``tests/conftest.py`` and
``.ci/emulate-avx2`` put the cache in ``.cache/inductor/<this name>``: the machine, and a CRC of the
CPU's feature flags (``/proc/cpuinfo``, or the file given).
"""
from __future__ import annotations

import platform
import sys
import zlib


def cpu_key(cpuinfo: str = "/proc/cpuinfo") -> str:
    flags = ""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")  # Features: ARM
    except OSError:
        pass
    words = " ".join(sorted(flags.partition(":")[2].split()))
    return f"{platform.machine() or 'cpu'}-{zlib.crc32(words.encode()):08x}"


if __name__ == "__main__":
    print(cpu_key(*sys.argv[1:2]))
