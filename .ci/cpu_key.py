#!/usr/bin/env python3
"""Print a short name for this CPU's instruction set, the folder TorchInductor's cache goes in.

TorchInductor's FX-graph cache is not keyed on the CPU's instruction set (torch 2.14). Measured here with
``.ci/emulate-avx2``: ``torch.compile(lambda x: (x.sin() * 2 + x.cos()).sum(1))`` compiled on the AVX-512
host, then run by an AVX2 process sharing the cache folder (same settings), was a cache hit and returned
328.9 where the right sum is 608.5: C++ written for 16-float vectors, rebuilt for 8-float ones, summed
about half of each row. No error, no warning. A checkout on a network home shared by machines of several
kinds would do the same. So the Makefile, ``tests/conftest.py`` and ``.ci/emulate-avx2`` put the cache in
``.cache/inductor/<this name>``: the machine, and a CRC of the CPU's feature flags (``/proc/cpuinfo``, or
the file given).
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
