"""Which INT8 kernel runs on this machine, and how to run code under another one.

A quantized engine (``torch.backends.quantized.engine``) is a dispatcher, not a kernel library:

- ``x86`` sends a convolution to **oneDNN** when the CPU has AVX512-VNNI and the weights are symmetric
  (zero points 0) with at most 100 groups, and to **fbgemm** otherwise;
- ``fbgemm`` always uses fbgemm; ``onednn`` always uses oneDNN; ``qnnpack`` uses QNNPACK (ARM, and x86
  through SSE2 kernels).

Inside each library the instruction set decides the arithmetic. Without VNNI, ``vpmaddubsw`` multiplies
``uint8 x int8`` byte pairs and adds each pair into a **saturating int16**: with 8-bit activations the
sum can clip (``2 * 255 * 127 = 64770 > 32767``). With VNNI (``vpdpbusd``) or AMX the products go
straight into int32 and nothing saturates. :func:`conv_kernel` reports which case applies here.

Environment variables choose another code path, but only when set before the process starts, so
:func:`run_in_family` runs code in a subprocess: ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` or ``AVX512`` caps
fbgemm, ``ONEDNN_MAX_CPU_ISA`` caps oneDNN, ``ATEN_CPU_CAPABILITY`` caps ATen's float kernels.
``torch.cpu._is_vnni_supported()`` reads the hardware and ignores all three.

``RESNET_EDU_SIMULATE_ARM=1`` makes this machine look like an ARM one to the book: the x86-only engines
(``x86``, ``fbgemm``, ``onednn``) disappear from :func:`quantized_engines`, :func:`x86_engine_available`
is False, :func:`default_engine` is ``qnnpack`` and only the families an ARM CPU has remain in
:func:`available_families`. The chapters read nothing else to decide their x86-only sections, so one
variable builds them the way an ARM reader's machine does (``tests/test_chapters_forced_engine.py``).
The qnnpack kernels that then run are still x86's (SSE2), not NEON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from typing import Any, Dict, List, Mapping, Optional

import torch

__all__ = [
    "cpu_features",
    "fbgemm_isa",
    "onednn_isa",
    "conv_kernel",
    "activation_bits_for",
    "default_engine",
    "quantized_engines",
    "x86_engine_available",
    "SIMULATE_ARM",
    "FAMILIES",
    "available_families",
    "family_env",
    "run_in_family",
    "aten_capability",
    "family_kernels",
]

SIMULATE_ARM = "RESNET_EDU_SIMULATE_ARM"
"""Environment variable: set to ``1`` to build and test the book as on an ARM CPU (see the module docstring)."""

KERNEL_CAPS = ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
"""The environment variables that cap a library's kernels (fbgemm, oneDNN, ATen); read at process start."""

_X86_ONLY_ENGINES = ("x86", "fbgemm", "onednn")

_FLAGS = {
    "avx2": "avx2",
    "avx512": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}


@lru_cache(maxsize=None)
def _cpuinfo_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> Dict[str, Any]:
    """The CPU's INT8/BF16-relevant features: ``arch``, ``model``, and one boolean per instruction set.

    Read from ``/proc/cpuinfo`` on Linux; elsewhere from what PyTorch reports (``get_cpu_capability``,
    ``_is_vnni_supported``), so AMX and BF16 may read False on macOS or Windows although present.
    """
    arch = platform.machine().lower()
    flags = _cpuinfo_flags()
    out: Dict[str, Any] = {"arch": arch, "x86": arch in ("x86_64", "amd64", "i686", "x86")}
    if flags:
        out.update({name: flag in flags for name, flag in _FLAGS.items()})
    else:  # no /proc/cpuinfo: what torch can tell
        cap = torch.backends.cpu.get_cpu_capability().lower()
        vnni = bool(out["x86"] and torch.cpu._is_vnni_supported())
        out.update({name: False for name in _FLAGS})
        out.update(avx2=cap in ("avx2", "avx512"), avx512=cap == "avx512", avx512bw=cap == "avx512", avx512_vnni=vnni)
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor()
    out["model"] = model or platform.processor() or arch
    out["bf16"] = bool(out["avx512_bf16"] or out["amx_bf16"])
    return out


def fbgemm_isa(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """fbgemm's code path here: ``"avx512_vnni"``, ``"avx512"``, ``"avx2"``, or None (no fbgemm kernels).

    ``FBGEMM_ENABLE_INSTRUCTIONS`` (read from ``env``, default ``os.environ``) caps it, as fbgemm does
    when the process starts.
    """
    f = cpu_features()
    if not f["x86"] or not f["avx2"]:
        return None
    hw = "avx512_vnni" if (f["avx512_vnni"] and f["avx512bw"]) else "avx512" if (f["avx512"] and f["avx512bw"]) else "avx2"
    order = ["avx2", "avx512", "avx512_vnni"]
    cap = (env if env is not None else os.environ).get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
    capped = {"AVX2": "avx2", "AVX512": "avx512", "AVX512_E1": "avx512_vnni", "AVX512_VNNI": "avx512_vnni"}.get(cap)
    if capped and order.index(capped) < order.index(hw):
        return capped
    return hw


_ONEDNN_ORDER = ["sse41", "avx", "avx2", "avx2_vnni", "avx512_core", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_amx"]


def onednn_isa(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """oneDNN's int8 instruction set here (``"avx512_core_amx"``, ``"avx512_core_vnni"``, ``"avx2_vnni"``,
    ``"avx512_core"``, ``"avx2"``), capped by ``ONEDNN_MAX_CPU_ISA``; None off x86."""
    f = cpu_features()
    if not f["x86"]:
        return None
    if f["amx_int8"] and f["avx512_vnni"]:
        hw = "avx512_core_amx"
    elif f["avx512_vnni"]:
        hw = "avx512_core_bf16" if f["avx512_bf16"] else "avx512_core_vnni"
    elif f["avx512"] and f["avx512bw"]:
        hw = "avx512_core"
    elif f["avx_vnni"]:
        hw = "avx2_vnni"
    elif f["avx2"]:
        hw = "avx2"
    else:
        hw = "sse41"
    cap = (env if env is not None else os.environ).get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    cap = {"avx512_core_amx_fp16": "avx512_core_amx", "avx2_vnni_2": "avx2_vnni", "all": ""}.get(cap, cap)
    if cap in _ONEDNN_ORDER and _ONEDNN_ORDER.index(cap) < _ONEDNN_ORDER.index(hw):
        # a cap between two levels the CPU has: the highest level the CPU has under the cap
        have = [i for i in _ONEDNN_ORDER[: _ONEDNN_ORDER.index(cap) + 1] if _onednn_has(i, f)]
        return have[-1] if have else None
    return hw


def _onednn_has(isa: str, f: Mapping[str, Any]) -> bool:
    return {
        "sse41": True,
        "avx": True,
        "avx2": f["avx2"],
        "avx2_vnni": f["avx_vnni"],
        "avx512_core": f["avx512"] and f["avx512bw"],
        "avx512_core_vnni": f["avx512_vnni"],
        "avx512_core_bf16": f["avx512_bf16"],
        "avx512_core_amx": f["amx_int8"],
    }[isa]


def _simulating_arm(env: Optional[Mapping[str, str]] = None) -> bool:
    return (env if env is not None else os.environ).get(SIMULATE_ARM, "").strip() not in ("", "0")


def quantized_engines(env: Optional[Mapping[str, str]] = None) -> List[str]:
    """``torch.backends.quantized.supported_engines`` without ``none``, and without the x86-only engines
    when ``RESNET_EDU_SIMULATE_ARM=1`` (read from ``env``, default ``os.environ``): the engines a chapter
    may choose from."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if _simulating_arm(env):
        engines = [e for e in engines if e not in _X86_ONLY_ENGINES]
    return engines


def x86_engine_available() -> bool:
    """True where the ``x86`` engine exists (x86 CPUs, unless ``RESNET_EDU_SIMULATE_ARM=1``).

    The chapters run their x86-only sections (the x86/fbgemm/oneDNN kernels, ``X86InductorQuantizer``
    compiled by inductor) only then, and otherwise print why they are skipped.
    """
    return "x86" in quantized_engines()


def default_engine(env: Optional[Mapping[str, str]] = None) -> str:
    """The engine a chapter should use here: ``x86`` where supported, else ``qnnpack`` (ARM), else the first.

    ``RESNET_EDU_ENGINE`` (set by :func:`family_env`) overrides it, so one machine can build the chapters
    the way another CPU would run them (``qnnpack`` as on ARM; ``fbgemm`` with
    ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` as the x86 engine runs on a CPU without VNNI). ``env``: the
    variables to read (default ``os.environ``), e.g. :func:`family_env`'s for another family.
    """
    env = env if env is not None else os.environ
    engines = quantized_engines(env)
    forced = env.get("RESNET_EDU_ENGINE", "").strip()
    if forced:
        if forced not in engines:
            hidden = f" ({SIMULATE_ARM}=1 hides x86, fbgemm and onednn)" if _simulating_arm(env) else ""
            raise ValueError(f"RESNET_EDU_ENGINE={forced!r} is not a quantized engine of this PyTorch build{hidden}; accepted: {', '.join(engines)}")
        return forced
    for e in ("x86", "qnnpack"):
        if e in engines:
            return e
    if not engines:
        raise RuntimeError("this PyTorch build has no quantized engine (torch.backends.quantized.supported_engines is empty)")
    return engines[0]


def conv_kernel(engine: Optional[str] = None, symmetric_weights: bool = True, groups: int = 1,
                env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The kernel a quantized convolution runs on: library, instruction set and its int8 arithmetic.

    ``engine``: ``x86``, ``fbgemm``, ``onednn`` or ``qnnpack`` (default: the current
    ``torch.backends.quantized.engine``). Returns ``engine``, ``library`` (``fbgemm``, ``onednn`` or
    ``qnnpack``), ``isa``, ``accumulation`` (``"int32"``: products summed exactly; ``"int16 pairs"``:
    ``vpmaddubsw`` saturation possible with activations above 127) and a one-line ``label``.
    """
    engine = engine or torch.backends.quantized.engine
    accepted = ("x86", "fbgemm", "onednn", "qnnpack")
    if engine not in accepted:
        raise ValueError(f"unknown quantized engine {engine!r}; accepted: {', '.join(accepted)}")
    f = cpu_features()
    if engine == "qnnpack":
        isa = "neon" if f["arch"] in ("aarch64", "arm64") else "sse2"
        return {"engine": engine, "library": "qnnpack", "isa": isa, "accumulation": "int32",
                "label": f"QNNPACK ({isa.upper()}): int32 accumulation, bias quantized to int32"}
    if engine == "x86":
        use_onednn = bool(f["avx512_vnni"]) and symmetric_weights and groups <= 100
        library = "onednn" if use_onednn else "fbgemm"
    else:
        library = engine
    if library == "fbgemm":
        isa = fbgemm_isa(env)
        acc = "int32" if isa == "avx512_vnni" else "int16 pairs"
        what = {"avx512_vnni": "AVX512-VNNI (vpdpbusd, int32 accumulation)",
                "avx512": "AVX-512 (vpmaddubsw, int16-saturated pairs)",
                "avx2": "AVX2 (vpmaddubsw, int16-saturated pairs)"}.get(isa or "", "no kernel for this CPU")
        label = f"fbgemm {what}"
    else:
        isa = onednn_isa(env)
        acc = "int32" if isa in ("avx2_vnni", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_amx") else "int16 pairs"
        what = {"avx512_core_amx": "AMX tiles (int32 accumulation)", "avx2_vnni": "AVX-VNNI (int32 accumulation)",
                "avx512_core_vnni": "AVX512-VNNI (int32 accumulation)", "avx512_core_bf16": "AVX512-VNNI (int32 accumulation)",
                "avx512_core": "AVX-512 (vpmaddubsw, int16-saturated pairs)", "avx2": "AVX2 (vpmaddubsw, int16-saturated pairs)"}.get(isa or "", str(isa))
        label = f"oneDNN {what}"
    return {"engine": engine, "library": library, "isa": isa, "accumulation": acc, "label": label}


def activation_bits_for(engine: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> int:
    """The book's rule for activations (chapter 7): 7 bits where ``engine``'s convolution kernel here sums
    ``vpmaddubsw``'s int16 pairs (8-bit activations can saturate them), 8 where it accumulates in int32.

    ``engine`` and ``env`` as in :func:`conv_kernel` (PT2E's inductor path runs its convolutions on
    ``"onednn"``). Used by ``get_qconfig("onednn")``, ``quantize_pt2e``'s default and the INT8 explorer.
    """
    return 8 if conv_kernel(engine, env=env)["accumulation"] == "int32" else 7


# name -> (environment, engine): the kernel families a single machine can be made to run
FAMILIES: Dict[str, Dict[str, Any]] = {
    "default": {"env": {}, "engine": None},
    "fbgemm": {"env": {}, "engine": "fbgemm"},
    "fbgemm-avx512": {"env": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}, "engine": "fbgemm"},
    "fbgemm-avx2": {"env": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "engine": "fbgemm"},
    "onednn": {"env": {}, "engine": "onednn"},
    "onednn-avx512-vnni": {"env": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "engine": "onednn"},
    "onednn-avx2": {"env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "engine": "onednn"},
    "qnnpack": {"env": {}, "engine": "qnnpack"},
    "aten-avx2": {"env": {"ATEN_CPU_CAPABILITY": "avx2"}, "engine": None},
    "aten-default": {"env": {"ATEN_CPU_CAPABILITY": "default"}, "engine": None},
}


def available_families() -> List[str]:
    """The families of :data:`FAMILIES` this machine can execute (the rest need hardware it lacks)."""
    f = cpu_features()
    engines = set(quantized_engines())
    out = []
    for name, fam in FAMILIES.items():
        engine = fam["engine"]
        if engine is not None and engine not in engines:
            continue
        if _simulating_arm() and name not in ("default", "qnnpack", "aten-default"):
            continue  # the other families select x86 kernels (fbgemm, oneDNN, ATen's AVX2/AVX-512)
        if name == "fbgemm-avx512" and not (f["avx512"] and f["avx512bw"]):
            continue
        if name == "onednn-avx512-vnni" and not f["avx512_vnni"]:
            continue
        if name in ("fbgemm-avx2", "onednn-avx2", "aten-avx2") and not f["avx2"]:
            continue
        out.append(name)
    return out


def family_env(name: str, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for a subprocess of family ``name``: ``base`` (default ``os.environ``) with the
    family's variables set, the other kernel caps removed, and ``RESNET_EDU_ENGINE`` naming its engine."""
    if name not in FAMILIES:
        raise ValueError(f"unknown kernel family {name!r}; accepted: {', '.join(FAMILIES)}")
    env = dict(os.environ if base is None else base)
    for var in (*KERNEL_CAPS, "RESNET_EDU_ENGINE"):
        env.pop(var, None)
    env.update(FAMILIES[name]["env"])
    if FAMILIES[name]["engine"]:
        env["RESNET_EDU_ENGINE"] = FAMILIES[name]["engine"]
    return env


def run_in_family(name: str, code: str, timeout: float = 600.0) -> Any:
    """Run Python ``code`` in a fresh interpreter under kernel family ``name``; return the JSON it prints last.

    ``code`` must print one JSON document as its last line (``print(json.dumps(result))``). A failure
    raises ``RuntimeError`` with the subprocess's last lines of stderr.
    """
    if name not in available_families():
        raise ValueError(f"kernel family {name!r} cannot run on this machine; available: {', '.join(available_families())}")
    proc = subprocess.run([sys.executable, "-c", code], env=family_env(name), capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"family {name!r}: exit {proc.returncode}; stderr:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    return json.loads(lines[-1])


_ATEN_ORDER = ["default", "avx2", "avx512"]


def aten_capability(env: Optional[Mapping[str, str]] = None) -> str:
    """ATen's vectorized code path for ``env`` (default ``os.environ``): ``"avx512"``, ``"avx2"`` or
    ``"default"`` on x86, capped by ``ATEN_CPU_CAPABILITY`` as ATen does when the process starts; off x86,
    what this process reports (``torch.backends.cpu.get_cpu_capability()``)."""
    f = cpu_features()
    if not f["x86"]:
        return torch.backends.cpu.get_cpu_capability().lower()
    hw = "avx512" if (f["avx512"] and f["avx512bw"]) else "avx2" if f["avx2"] else "default"
    cap = (env if env is not None else os.environ).get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if cap in _ATEN_ORDER and _ATEN_ORDER.index(cap) < _ATEN_ORDER.index(hw):
        return cap
    return hw


def family_kernels(name: str) -> Dict[str, Any]:
    """What family ``name`` selects on this machine: the engine :func:`default_engine` gives under it, the
    kernel its convolutions run on (``conv``: :func:`conv_kernel`'s label), fbgemm's and oneDNN's
    instruction sets (tests also call those engines by name) and ATen's capability (quantize, add, relu).

    Two families with equal ``key`` run exactly the same kernels here; tests may run one of them only.
    """
    env = family_env(name)
    engine = FAMILIES[name]["engine"] or default_engine(env)
    conv = conv_kernel(engine, env=env)["label"]
    out = {"family": name, "engine": engine, "conv": conv, "fbgemm": fbgemm_isa(env), "onednn": onednn_isa(env),
           "aten": aten_capability(env)}
    out["key"] = (engine, conv, out["fbgemm"], out["onednn"], out["aten"])
    return out
