#!/usr/bin/env python3
"""Name this CPU's instruction set, and keep what was computed on it apart from other CPUs' results.

``cpu_key()`` is the machine and a CRC of the CPU's feature flags (``/proc/cpuinfo``, or the file given).
Two things computed on one CPU are wrong on another, with no error:

* **TorchInductor's cache** is not keyed on the CPU's instruction set (torch 2.14). Measured here with
  ``.ci/emulate-avx2``: ``torch.compile(lambda x: (x.sin() * 2 + x.cos()).sum(1))`` compiled on the
  AVX-512 host, then run by an AVX2 process sharing the cache folder (same settings), was a cache hit and
  returned 328.9 where the right sum is 608.5: C++ written for 16-float vectors, rebuilt for 8-float ones,
  summed about half of each row. So the Makefile, ``tests/conftest.py`` and ``.ci/emulate-avx2`` put the
  cache in ``.cache/inductor/<key>``.
* **The book's executed notebooks.** Jupyter Book's execution cache (``_build/.jupyter_cache``) is keyed
  on the notebook's text only. A checkout built on an AVX-512 VNNI machine, then built again on an AVX2
  one (a network home, a laptop and a server, this project's own sessions), showed the first CPU's
  kernels, words and times, and the tests that check each claim against this CPU failed.
  ``use_cpu_build("_build")`` (``make book`` and the tests' book build call it) gives each CPU its own
  cache, ``_build/jupyter_caches/<key>`` behind the ``.jupyter_cache`` link, and when the CPU changes it
  removes the pages and executed notebooks the other CPU made, so every page is read again from this
  CPU's cache (notebooks this CPU ran before are not run again).

``python3 .ci/cpu_key.py [CPUINFO]`` prints the key; ``python3 .ci/cpu_key.py --build DIR`` prepares DIR.
"""
from __future__ import annotations

import platform
import shutil
import sys
import zlib
from pathlib import Path


def cpu_key(cpuinfo: str = "/proc/cpuinfo") -> str:
    flags = ""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")  # Features: ARM
    except OSError:
        pass
    words = " ".join(sorted(flags.partition(":")[2].split()))
    return f"{platform.machine() or 'cpu'}-{zlib.crc32(words.encode()):08x}"


CACHES = "jupyter_caches"
"""Under the build folder: one Jupyter execution cache per CPU key."""


def use_cpu_build(build: str = "_build", key: str = "") -> str:
    """Make the Jupyter Book output folder ``build`` this CPU's (``key``, default :func:`cpu_key`).

    Returns ``"kept"`` when it already was, ``"switched"`` when it was made so: the folder's
    ``.jupyter_cache`` now links to ``jupyter_caches/<key>``, and the pages (``html``), the executed
    notebooks (``jupyter_execute``) and Sphinx's record of what it read (``.doctrees``) made on another
    CPU are gone. A ``.jupyter_cache`` folder from before (not a link) was filled on a CPU nobody
    recorded: it is removed too.
    """
    key = key or cpu_key()
    b = Path(build)
    link, stamp = b / ".jupyter_cache", b / ".cpu"
    if link.is_symlink() and stamp.is_file() and stamp.read_text().strip() == key:
        return "kept"
    for name in (".doctrees", "html", "jupyter_execute"):
        shutil.rmtree(b / name, ignore_errors=True)
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    (b / CACHES / key).mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path(CACHES) / key)
    stamp.write_text(key + "\n")
    return "switched"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        if len(sys.argv) != 3:
            sys.exit("usage: cpu_key.py --build DIR")
        print(f"{sys.argv[2]}: {use_cpu_build(sys.argv[2])} to this CPU's notebooks ({cpu_key()})")
    else:
        print(cpu_key(*sys.argv[1:2]))
