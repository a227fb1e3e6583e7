"""What VNNI buys you: the same INT8 model timed under each kernel family this CPU can run.

A kernel library picks its instruction set once, when the process starts, from the CPU and from
environment variables (``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` or ``AVX512`` for fbgemm,
``ONEDNN_MAX_CPU_ISA`` for oneDNN). So each family runs in its own worker subprocess
(``python -m resnet_edu.deploy.families``), with the same seed, model and inputs, and
:func:`time_families` times the workers in lockstep, one turn each per round, as
:func:`~resnet_edu.deploy.timing.time_interleaved` times paths in one process. On a VNNI CPU this
shows what a CPU without VNNI would get from the same code.

The families, their environment variables and the kernel each one runs come from
:mod:`resnet_edu.quantization.kernels` (``FAMILIES``, ``available_families()``, ``family_env(name)``,
``conv_kernel(engine)``); this module adds only what the comparison needs: :data:`VNNI_FAMILIES` and
:func:`vnni_families` pick the families that answer "what does VNNI buy", :func:`family_spec` packs a
family's engine and environment for its subprocess, and the timing workers.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import tempfile
import threading
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


def _serve(engine: str, arch: str, size: int, threads: int, seed: int) -> None:
    """Runs inside a worker subprocess: build the eager-PTQ INT8 ``arch`` for ``engine``, then answer the parent.

    The protocol is one line each way. The worker first sends ``{"engine", "arch", "threads", "kernel"}``;
    then each line it reads is ``warm B`` (one untimed call at batch ``B``), ``time B`` (settle calls, then one
    timed call: :func:`~resnet_edu.deploy.timing.time_interleaved` with one runner and one round) or ``quit``,
    and it answers ``{"ms", "start", "end"}`` (``start``/``end``: wall-clock seconds of the timed call).
    Anything else the process prints goes to stderr, so stdout carries the protocol only.
    """
    import os
    import time

    import torch

    from .. import models
    from .. import quantization as rq
    from .timing import time_interleaved

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)   # stray prints (Python's or a C library's) land on stderr, not in the protocol
    sys.stdout = sys.stderr
    rq.silence_known_warnings()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    fp32 = models.VARIANTS[arch]().eval()
    g = torch.Generator().manual_seed(seed)
    cal = [torch.randn(2, 3, size, size, generator=g)]
    qmodel = rq.QuantizedRunner(rq.quantize_ptq(fp32, cal, backend=engine, progress=False), engine=engine)
    inputs: Dict[int, Any] = {}
    channel.write(json.dumps({"engine": engine, "arch": arch, "threads": threads, "kernel": kernels.conv_kernel(engine)}) + "\n")
    for line in sys.stdin:
        verb, _, arg = line.strip().partition(" ")
        if verb == "quit":
            break
        b = int(arg)
        if b not in inputs:   # one input per batch size, drawn in the order asked: the same in every worker
            inputs[b] = torch.randn(b, 3, size, size, generator=g)
        with torch.no_grad():
            if verb == "warm":
                qmodel(inputs[b])
                channel.write("{}\n")
                continue
            start = time.time()
            ms = time_interleaved({"int8": qmodel}, inputs[b], repeats=1, warmup=0)["int8"][0]
            channel.write(json.dumps({"ms": ms, "start": start, "end": time.time()}) + "\n")


class _Worker:
    """One family's worker subprocess, and a thread that reads its answers (so a wait can time out anywhere)."""

    def __init__(self, cmd: List[str], env: Dict[str, str]):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def answer(self, timeout: float) -> Dict[str, Any]:
        """The worker's next line, parsed; RuntimeError (its last line of stderr) if it died, TimeoutError if it hangs."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()   # a hung worker must not share the cores with the families still timed
            raise TimeoutError(f"no answer in {timeout:g} s") from None
        if line is None:
            self.proc.wait()
            self.stderr.seek(0)
            tail = [t for t in self.stderr.read().splitlines() if t.strip()]
            raise RuntimeError(tail[-1] if tail else f"exit status {self.proc.returncode}")
        return json.loads(line)

    def ask(self, verb: str, batch: int, timeout: float) -> Dict[str, Any]:
        try:
            self.proc.stdin.write(f"{verb} {batch}\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:  # it died: answer() says why
            pass
        return self.answer(timeout)

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def time_families(names: Optional[Sequence[str]] = None, arch: str = "resnet18", batches: Sequence[int] = (1, 8),
                  size: int = 224, repeats: int = 5, threads: Optional[int] = None, seed: int = 0,
                  timeout: float = 600) -> List[Dict[str, Any]]:
    """Time the eager INT8 ``arch`` under each kernel family in ``names`` (default: :func:`vnni_families`), interleaved.

    Each family gets its own worker subprocess (its libraries pick their instruction set at start), which
    builds and quantizes the model with the same seed and inputs, and then waits. The families are timed in
    lockstep, as :func:`~resnet_edu.deploy.timing.time_interleaved` times paths in one process: for each batch
    size, one untimed call each, then ``repeats`` rounds in which every family takes one turn (settle calls,
    one timed call) while the others wait, the first family rotating. So a busy minute of a shared machine
    slows every family alike, and a ratio between two families holds.

    Returns one dict per family, in the order of ``names``: ``family``, ``engine``, ``env``, ``command``, the
    worker's ``kernel``, ``arch`` and ``threads``, and ``rows`` (one per batch size: ``batch``, the
    :func:`~resnet_edu.deploy.timing.summarize` fields, and ``turns``, the wall-clock ``[start, end]`` of each
    turn). A family whose worker fails or gives no answer within ``timeout`` seconds (its setup included)
    holds ``error`` (its last line of stderr) instead of ``rows``; the others go on.
    """
    import torch

    from .. import models
    from .timing import summarize

    names = list(names or vnni_families())
    if len(set(names)) != len(names):
        raise ValueError(f"name each family once, got {names!r}")
    specs = {n: family_spec(n) for n in names}   # an unknown name raises here, before any process starts
    if arch not in models.VARIANTS:
        raise ValueError(f"unknown arch {arch!r}; accepted: {', '.join(models.VARIANTS)}")
    sizes = list(batches)
    if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (*sizes, repeats, size)):
        raise ValueError(f"batches (a non-empty list), size and repeats must be integers >= 1, got batches={batches!r}, "
                         f"size={size!r}, repeats={repeats!r}")
    threads = threads or torch.get_num_threads()
    results = {n: {"family": n, "engine": s["engine"], "env": s["env"], "command": " ".join(f"{k}={v}" for k, v in s["env"].items())}
               for n, s in specs.items()}
    turns: Dict[str, Dict[int, List[Tuple[float, float, float]]]] = {n: {b: [] for b in sizes} for n in names}
    workers: Dict[str, _Worker] = {}
    live: List[str] = []

    def ask(n: str, verb: Optional[str] = None, b: int = 0) -> Optional[Dict[str, Any]]:
        """Family ``n``'s answer to ``verb b`` (no verb: its first line); a failure becomes its ``error`` and it leaves ``live``."""
        try:
            return workers[n].answer(timeout) if verb is None else workers[n].ask(verb, b, timeout)
        except (RuntimeError, TimeoutError) as e:
            results[n]["error"] = str(e)
            live.remove(n)
            return None

    try:
        for n, s in specs.items():
            cmd = [sys.executable, "-m", "resnet_edu.deploy.families", "--engine", str(s["engine"]), "--arch", arch,
                   "--size", str(size), "--threads", str(threads), "--seed", str(seed)]
            workers[n] = _Worker(cmd, s["environ"])
            live.append(n)
        for n in list(live):   # they build their models at the same time; none is timed yet
            results[n].update(ask(n) or {})
        for b in sizes:
            for n in list(live):
                ask(n, "warm", b)
            for r in range(repeats):
                order = list(live)
                for i in range(len(order)):
                    n = order[(r + i) % len(order)]
                    got = ask(n, "time", b)
                    if got is not None:
                        turns[n][b].append((got["ms"], got["start"], got["end"]))
    finally:
        for w in workers.values():
            w.close()
    for n in live:
        results[n]["rows"] = [{"batch": b, **summarize([t[0] for t in turns[n][b]]), "turns": [[t[1], t[2]] for t in turns[n][b]]}
                              for b in sizes]
    return [results[n] for n in names]


def time_family(name: str, **kwargs: Any) -> Dict[str, Any]:
    """:func:`time_families` for one family: its result dict (``error`` instead of ``rows`` if its worker failed)."""
    return time_families([name], **kwargs)[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet_edu.deploy.families",
                                description="a timing worker of time_families: builds one INT8 model, then answers on stdin/stdout")
    p.add_argument("--engine", required=True)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    _serve(a.engine, a.arch, a.size, a.threads, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
