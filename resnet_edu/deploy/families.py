"""What VNNI buys you: the same INT8 model timed under each kernel family this CPU can run.

A kernel library picks its instruction set once, when the process starts, from the CPU and from
environment variables (``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` or ``AVX512`` for fbgemm,
``ONEDNN_MAX_CPU_ISA`` for oneDNN). So each family is timed in its own subprocess
(``python -m resnet_edu.deploy.families``), with the same seed, model and inputs. On a VNNI CPU
this shows what a CPU without VNNI would get from the same code.

The families, their environment variables and the kernel each one runs come from
:mod:`resnet_edu.quantization.kernels` (``FAMILIES``, ``available_families()``, ``family_env(name)``,
``conv_kernel(engine)``); this module adds only what the comparison needs: :data:`VNNI_FAMILIES` and
:func:`vnni_families` pick the families that answer "what does VNNI buy", :func:`family_spec` packs a
family's engine and environment for its subprocess, and the timing worker.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..quantization import kernels
from .words import claim

__all__ = ["VNNI_FAMILIES", "VNNI_ISAS", "vnni_families", "vnni_sentence", "family_spec", "time_family", "time_families"]

VNNI_FAMILIES = ("default", "onednn-avx512-vnni", "fbgemm-avx512", "fbgemm-avx2")
"""The kernel families "What VNNI buys you" times, in this order, where the machine can run them: the default
(AMX or VNNI through oneDNN on a recent Intel CPU), oneDNN capped at AVX512-VNNI (no AMX), and fbgemm
capped at AVX-512 and at AVX2 (no VNNI: what an older or smaller x86 CPU gets)."""


def vnni_families(names: Sequence[str] = VNNI_FAMILIES, distinct: bool = True) -> List[str]:
    """Which of ``names`` (default :data:`VNNI_FAMILIES`) this machine can run, in the order given.

    The machine's families are ``kernels.available_families()``; this only picks and orders the ones
    the VNNI comparison needs. With ``distinct`` (the default), a family whose convolutions run on the
    same kernel as an earlier family's (``kernels.family_kernels(name)["conv"]``) is left out: it would
    time the same code again in another subprocess (on a CPU without AMX, ``default`` already is
    oneDNN's AVX512-VNNI kernel, so ``onednn-avx512-vnni`` adds nothing; on one without VNNI, ``default``
    is fbgemm's widest kernel).
    """
    here = set(kernels.available_families())
    out: List[str] = []
    seen = set()
    for n in names:
        if n not in here:
            continue
        if distinct:
            conv = kernels.family_kernels(n)["conv"]
            if conv in seen:
                continue
            seen.add(conv)
        out.append(n)
    return out


VNNI_ISAS = ("amx", "avx512_vnni", "avx_vnni")
"""Instruction sets (``limit_isa`` names) that multiply-add 8-bit numbers into int32 in one step."""


def vnni_sentence(rows: Sequence[Dict[str, Any]]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """Chapter 10's sentence on what VNNI buys on this CPU, and the :func:`~resnet_edu.deploy.words.claim` behind it.

    ``rows``: one dict per timed family, with ``"family"``, ``"batch 8 ms"``, ``"noisy"`` and ``"_isa"`` (the
    instruction set of its kernel). Three branches: the default kernel has no VNNI or AMX (the claim is None:
    nothing here has VNNI to compare); it has, and fbgemm without VNNI was timed (AVX-512 preferred, the same
    width, else AVX2): the word compares the two at batch 8; else no comparison (a family failed)."""
    fam = {r["family"]: r for r in rows}
    default = fam.get("default")
    no_vnni = fam.get("fbgemm-avx512") or fam.get("fbgemm-avx2")
    if default and default["_isa"] not in VNNI_ISAS:
        return "This CPU has no VNNI or AMX, so every family above runs without them: these times are what the code gets here.", None
    if default and no_vnni:
        c = claim("vnni", default["batch 8 ms"], no_vnni["batch 8 ms"], noisy=default["noisy"] or no_vnni["noisy"])
        how_much = "a row was noisy, so no ratio" if c["noisy"] else f"{no_vnni['batch 8 ms'] / default['batch 8 ms']:.2f}x at batch 8"
        return (f"Here the default INT8 kernels (with {default['_isa'].upper().replace('_', '-')}) are {c['word']} "
                f"fbgemm without VNNI ({no_vnni['family']}): {how_much}."), c
    return "The default kernels could not be compared with a kernel without VNNI here: a family failed (see the output above).", None


def family_spec(name: str) -> Dict[str, Any]:
    """What a subprocess of family ``name`` needs: ``{"engine", "env", "environ"}``.

    ``environ`` is ``kernels.family_env(name)`` (the whole environment), ``env`` only the variables the
    family sets (``kernels.FAMILIES[name]["env"]``), and ``engine`` the quantized engine the worker passes
    to ``quantize_ptq`` (the family's ``RESNET_EDU_ENGINE``, else ``kernels.default_engine()``).
    """
    if name not in kernels.FAMILIES:
        raise ValueError(f"unknown kernel family {name!r}; accepted: {', '.join(kernels.FAMILIES)}")
    environ = kernels.family_env(name)
    engine = environ.get("RESNET_EDU_ENGINE") or kernels.default_engine()
    return {"engine": engine, "env": dict(kernels.FAMILIES[name]["env"]), "environ": environ}


def _worker(engine: str, arch: str, batches: Sequence[int], size: int, repeats: int, threads: int, seed: int) -> Dict[str, Any]:
    """Runs inside the subprocess: eager-PTQ INT8 model for ``engine``, timed at each batch size."""
    import torch

    from .. import models
    from .. import quantization as rq
    from .timing import summarize, time_interleaved

    rq.silence_known_warnings()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    fp32 = models.VARIANTS[arch]().eval()
    g = torch.Generator().manual_seed(seed)
    cal = [torch.randn(2, 3, size, size, generator=g)]
    qmodel = rq.QuantizedRunner(rq.quantize_ptq(fp32, cal, backend=engine, progress=False), engine=engine)
    out: Dict[str, Any] = {"engine": engine, "arch": arch, "threads": threads, "rows": [], "kernel": kernels.conv_kernel(engine)}
    for b in batches:
        x = torch.randn(b, 3, size, size, generator=g)
        times = time_interleaved({"int8": qmodel}, x, repeats=repeats, warmup=1)["int8"]
        out["rows"].append({"batch": b, **summarize(times)})
    return out


def time_family(name: str, arch: str = "resnet18", batches: Sequence[int] = (1, 8), size: int = 224, repeats: int = 5,
                threads: Optional[int] = None, seed: int = 0, timeout: float = 600) -> Dict[str, Any]:
    """Time the eager INT8 ``arch`` under kernel family ``name`` in a fresh subprocess; its result dict.

    On failure the dict holds ``"error"`` (the subprocess's last line of stderr) instead of ``"rows"``.
    """
    import torch

    spec = family_spec(name)
    threads = threads or torch.get_num_threads()
    env = spec["environ"]
    cmd = [sys.executable, "-m", "resnet_edu.deploy.families", "--engine", str(spec["engine"]), "--arch", arch,
           "--batches", ",".join(map(str, batches)), "--size", str(size), "--repeats", str(repeats),
           "--threads", str(threads), "--seed", str(seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    base = {"family": name, "engine": spec["engine"], "env": spec["env"], "command": " ".join(f"{k}={v}" for k, v in spec["env"].items())}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {**base, "error": tail[-1] if tail else f"exit status {proc.returncode}"}
    return {**base, **json.loads(proc.stdout.strip().splitlines()[-1])}


def time_families(names: Optional[Sequence[str]] = None, **kwargs: Any) -> List[Dict[str, Any]]:
    """:func:`time_family` for each name (default: :func:`vnni_families`), one after the other."""
    return [time_family(n, **kwargs) for n in (names or vnni_families())]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet_edu.deploy.families", description="time one INT8 model (one JSON line)")
    p.add_argument("--engine", required=True)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    result = _worker(a.engine, a.arch, [int(b) for b in a.batches.split(",")], a.size, a.repeats, a.threads, a.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
