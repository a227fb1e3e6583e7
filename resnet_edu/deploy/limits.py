"""The physical limit: how fast could this CPU run a model if it did nothing but multiply-accumulate?

A convolution is multiply-accumulates (MACs). A core issues a fixed number of them per cycle,
which depends on the instruction set and the data type. The model here is the textbook peak:

``lower bound (s) = model MACs x batch / (MACs per cycle per core x cores x clock)``

It ignores memory traffic, im2col/packing, requantization, the non-conv layers and the clock
actually sustained under vector load, so real runtimes sit above it; the ratio says how much of
the machine a runtime uses. :data:`MACS_PER_CYCLE` lists what it assumes per instruction set,
per core, with two vector ports (Intel's optimization reference manual; server cores from Skylake-SP on;
single-port parts reach half).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["MACS_PER_CYCLE", "peak_macs_per_second", "lower_bound_ms", "limit_rows", "limit_isa"]

MACS_PER_CYCLE: Dict[str, Dict[str, float]] = {
    # isa: {dtype: MACs per cycle per core}
    "scalar": {"fp32": 2, "int8": 2, "bf16": 2},
    # 2 x 128-bit ports: 4 fp32 lanes; QNNPACK's x86 kernels widen int8 to int16 for pmaddwd (8 MACs per instruction)
    "sse2": {"fp32": 8, "int8": 8, "bf16": 8},
    # 2 x 128-bit FMA (4 fp32 lanes); sdot: 16 int8 MACs per instruction (ARMv8.2 dot product)
    "neon": {"fp32": 8, "int8": 32, "bf16": 8},
    # 2 FMA ports x 8 fp32 lanes; int8 without VNNI: vpmaddubsw + vpmaddwd on the 2 multiply ports
    # (vpaddd can go to a third port): 32 u8*s8 MACs per 2 port-slots. (An earlier 2 x 32 / 3 counted
    # vpaddd on the multiply ports too; fbgemm's AVX2 kernel measured faster than that "limit".)
    "avx2": {"fp32": 16, "int8": 32, "bf16": 16},
    # AVX-VNNI (256-bit vpdpbusd): 32 MACs per instruction, 2 ports
    "avx_vnni": {"fp32": 16, "int8": 64, "bf16": 16},
    # 2 FMA ports x 16 fp32 lanes; int8: the same sequence on 64 bytes
    "avx512": {"fp32": 32, "int8": 64, "bf16": 32},
    # AVX512_VNNI (512-bit vpdpbusd): 64 MACs per instruction, 2 ports; AVX512_BF16 vdpbf16ps: 32 per instruction
    "avx512_vnni": {"fp32": 32, "int8": 128, "bf16": 64},
    # AMX: one TMUL tile multiply (16x16x64 int8, or 16x16x32 bf16) every 16 cycles
    "amx": {"fp32": 32, "int8": 1024, "bf16": 512},
}
"""Peak multiply-accumulates per cycle per core, by instruction set and data type (see the module text)."""


def _check(isa: str, dtype: str) -> None:
    if isa not in MACS_PER_CYCLE:
        raise ValueError(f"unknown instruction set {isa!r}; known: {list(MACS_PER_CYCLE)}")
    if dtype not in MACS_PER_CYCLE[isa]:
        raise ValueError(f"unknown data type {dtype!r}; known: {list(MACS_PER_CYCLE[isa])}")


def peak_macs_per_second(isa: str, dtype: str, cores: int, ghz: float) -> float:
    """``MACS_PER_CYCLE[isa][dtype] x cores x ghz x 1e9``."""
    _check(isa, dtype)
    if cores < 1 or ghz <= 0:
        raise ValueError(f"cores must be >= 1 and ghz > 0, got cores={cores!r}, ghz={ghz!r}")
    return MACS_PER_CYCLE[isa][dtype] * cores * ghz * 1e9


def lower_bound_ms(macs: int, batch: int, isa: str, dtype: str, cores: int, ghz: float) -> float:
    """The fastest a forward pass of ``macs`` MACs per image could take, in milliseconds."""
    if macs <= 0 or batch < 1:
        raise ValueError(f"macs must be > 0 and batch >= 1, got macs={macs!r}, batch={batch!r}")
    return 1e3 * macs * batch / peak_macs_per_second(isa, dtype, cores, ghz)


def limit_rows(macs: int, batches: List[int], cores: int, ghz: float, isas: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """One row per (instruction set, data type, batch): the lower bound, for the chapter's figure."""
    rows = []
    for isa in isas or list(MACS_PER_CYCLE):
        for dtype in ("fp32", "int8", "bf16"):
            for b in batches:
                rows.append({"isa": isa, "dtype": dtype, "batch": b, "macs_per_cycle": MACS_PER_CYCLE[isa][dtype],
                             "lower_bound_ms": lower_bound_ms(macs, b, isa, dtype, cores, ghz)})
    return rows


def limit_isa(kernel_isa: Optional[str]) -> str:
    """The :data:`MACS_PER_CYCLE` key for an instruction set as a kernel library names it.

    fbgemm says ``avx2``/``avx512``/``avx512_vnni``; oneDNN ``avx2``, ``avx2_vnni``, ``avx512_core``,
    ``avx512_core_vnni``, ``avx512_core_bf16``, ``avx512_core_amx``; QNNPACK ``sse2``/``neon``.
    """
    name = (kernel_isa or "").lower()
    if "amx" in name:
        return "amx"
    if name.startswith("avx512") and ("vnni" in name or "bf16" in name):
        return "avx512_vnni"
    if name.startswith("avx512"):
        return "avx512"
    if name == "avx2_vnni" or name == "avx_vnni":
        return "avx_vnni"
    if name.startswith("avx2"):
        return "avx2"
    if name in ("neon", "sse2"):
        return name
    return "scalar"
