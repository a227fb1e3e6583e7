"""What the book decides on each kind of CPU, from that CPU's flags (issue 12: every CPU).

The machines this project runs on are AMD Zen3 (AVX2 only) and Zen4 (AVX512-VNNI + BF16); readers also
have Skylake-SP (AVX-512 without VNNI, many cloud and Colab machines), Cascade Lake (AVX512-VNNI),
Sapphire Rapids (AMX), Alder Lake (AVX-VNNI on 256-bit registers, no AVX-512) and ARM. Every choice the
book makes from the CPU goes through ``kernels.cpu_features()``, which reads ``/proc/cpuinfo``; here that
reading is replaced by each profile's flags, and the decisions are checked against what the libraries do
on such a CPU:

- PyTorch's ``x86`` engine runs a convolution on oneDNN only where cpuinfo reports AVX512-VNNI
  (``should_use_onednn_quant``), else on fbgemm;
- fbgemm picks AVX512-VNNI, AVX-512 (F+BW) or AVX2 kernels; only the VNNI one accumulates in int32;
- oneDNN uses VNNI where it exists (AVX512-VNNI, or AVX-VNNI on 256-bit registers) and AMX over it.

This checks the decision code on CPUs no test machine is; the kernels themselves are checked against the
reference on the hardware present (``tests/test_families.py``).
"""
from __future__ import annotations

import json
import os
import platform
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from resnet_edu import deploy
from resnet_edu import quantization as rq
from resnet_edu.quantization import kernels

BASE = {"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "fma"}
PROFILES = {
    "zen3": BASE | {"avx2"},
    "skylake-sp": BASE | {"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "cascade-lake": BASE | {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"},
    "zen4": BASE | {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"},
    "sapphire-rapids": BASE | {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
                               "amx_tile", "amx_int8", "amx_bf16"},
    "alder-lake": BASE | {"avx2", "avx_vnni"},
}

# profile -> (x86 engine's conv: library, isa, accumulation), fbgemm's isa, oneDNN's isa, ATen's capability, limit ISA
EXPECTED = {
    "zen3": (("fbgemm", "avx2", "int16 pairs"), "avx2", "avx2", "avx2", "avx2"),
    "skylake-sp": (("fbgemm", "avx512", "int16 pairs"), "avx512", "avx512_core", "avx512", "avx512"),
    "cascade-lake": (("onednn", "avx512_core_vnni", "int32"), "avx512_vnni", "avx512_core_vnni", "avx512", "avx512_vnni"),
    "zen4": (("onednn", "avx512_core_bf16", "int32"), "avx512_vnni", "avx512_core_bf16", "avx512", "avx512_vnni"),
    "sapphire-rapids": (("onednn", "avx512_core_amx", "int32"), "avx512_vnni", "avx512_core_amx", "avx512", "amx"),
    "alder-lake": (("fbgemm", "avx2", "int16 pairs"), "avx2", "avx2_vnni", "avx2", "avx_vnni"),
}


# the x86 profiles ask PyTorch for its x86 engines (families, qconfigs): an ARM build of PyTorch has none
x86_build = pytest.mark.skipif("x86" not in torch.backends.quantized.supported_engines,
                               reason="this PyTorch build has no x86 quantized engine (an ARM build); the x86 profiles need it")


@pytest.fixture
def as_cpu(monkeypatch):
    """``as_cpu(flags, machine="x86_64")``: make ``cpu_features()`` read this CPU (the rest of the process is unchanged)."""
    def use(flags, machine: str = "x86_64"):
        monkeypatch.setattr(kernels, "_cpuinfo_flags", lambda: frozenset(flags))
        monkeypatch.setattr(platform, "machine", lambda: machine)
        for var in (*kernels.KERNEL_CAPS, "RESNET_EDU_ENGINE", rq.SIMULATE_ARM):
            monkeypatch.delenv(var, raising=False)
    return use


@x86_build
@pytest.mark.parametrize("profile", list(PROFILES))
def test_kernel_choices_per_cpu(as_cpu, profile, monkeypatch):
    as_cpu(PROFILES[profile])
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: "avx512_vnni" in PROFILES[profile])
    (library, isa, acc), fbgemm, onednn, aten, limit = EXPECTED[profile]
    k = rq.conv_kernel("x86")
    assert (k["library"], k["isa"], k["accumulation"]) == (library, isa, acc)
    assert rq.fbgemm_isa() == fbgemm and rq.onednn_isa() == onednn and rq.aten_capability() == aten
    assert deploy.best_isa() == limit
    # fbgemm by name: int32 only with its VNNI kernel
    assert rq.conv_kernel("fbgemm")["accumulation"] == ("int32" if fbgemm == "avx512_vnni" else "int16 pairs")
    # per-tensor (asymmetric) weights: the x86 engine keeps fbgemm even on VNNI CPUs
    assert rq.conv_kernel("x86", symmetric_weights=False)["library"] == "fbgemm"
    # the 7-bit rule everywhere it is applied: onednn's qconfig, PT2E's default, the explorers
    onednn_int16 = rq.conv_kernel("onednn")["accumulation"] != "int32"
    assert onednn_int16 == (onednn in ("avx2", "avx512_core"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert rq.get_qconfig("onednn").activation.p.keywords.get("reduce_range", False) == onednn_int16
        pytorch_qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    vnni_warnings = [str(w.message) for w in caught if "Vector Neural Network" in str(w.message)]
    if onednn_int16:  # PyTorch's own qconfig warns of 8-bit activations without VNNI; the book's, which has 7, does not
        assert len(vnni_warnings) == 1 and pytorch_qconfig.activation.p.keywords.get("reduce_range") is False, vnni_warnings
    assert rq.activation_bits_for("onednn") == (7 if onednn_int16 else 8)
    assert rq.activation_bits_for("x86") == (7 if acc == "int16 pairs" else 8)
    # BF16: native only with AVX512_BF16 or AMX_BF16
    assert deploy.bf16_support()["native"] == (profile in ("zen4", "sapphire-rapids"))


@x86_build
@pytest.mark.parametrize("profile", list(PROFILES))
def test_families_per_cpu(as_cpu, profile):
    """Which kernel families a machine of this kind runs, and which of them are the same kernels."""
    as_cpu(PROFILES[profile])
    fams = rq.available_families()
    avx512 = profile not in ("zen3", "alder-lake")
    assert ("fbgemm-avx512" in fams) == avx512
    assert ("onednn-avx512-vnni" in fams) == (profile in ("cascade-lake", "zen4", "sapphire-rapids"))
    assert {"default", "fbgemm", "fbgemm-avx2", "onednn", "onednn-avx2", "aten-avx2", "aten-default"} <= set(fams)
    keys = {name: rq.family_kernels(name)["key"] for name in fams}
    # on an AVX2-only CPU fbgemm's own kernels are its AVX2 ones: one family
    assert (keys["fbgemm"] == keys["fbgemm-avx2"]) == (profile in ("zen3", "alder-lake"))
    assert (keys["onednn"] == keys["onednn-avx2"]) == (profile == "zen3")
    # the default family is the x86 engine with this CPU's own kernel
    assert rq.family_kernels("default")["conv"] == rq.conv_kernel("x86")["label"]


@x86_build
@pytest.mark.parametrize("profile", ["zen3", "cascade-lake"])
def test_caps_lower_the_kernel_per_cpu(as_cpu, profile):
    """``FBGEMM_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA`` only ever lower the instruction set."""
    as_cpu(PROFILES[profile])
    assert rq.fbgemm_isa({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}) == ("avx2" if profile == "zen3" else "avx512")
    assert rq.onednn_isa({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == rq.onednn_isa()
    assert rq.onednn_isa({"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "avx2"
    assert rq.conv_kernel("onednn", env={"ONEDNN_MAX_CPU_ISA": "AVX2"})["accumulation"] == "int16 pairs"


def test_arm_profile(as_cpu):
    """An ARM CPU: qnnpack on NEON, no fbgemm or oneDNN kernels, no x86 limit."""
    as_cpu({"fp", "asimd", "asimddp", "sve"}, machine="aarch64")
    f = rq.cpu_features()
    assert not f["x86"] and not f["avx2"]
    k = rq.conv_kernel("qnnpack")
    assert (k["isa"], k["accumulation"]) == ("neon", "int32")
    assert rq.fbgemm_isa() is None and rq.onednn_isa() is None
    assert deploy.cpu_features()["arch"] == "arm64" and deploy.best_isa() == "neon"
    assert not deploy.bf16_support()["native"]


EMULATOR = Path(__file__).resolve().parent.parent / ".ci" / "emulate-avx2"
CPU_KEY_PY = runpy.run_path(str(EMULATOR.parent / "cpu_key.py"))  # .ci/cpu_key.py: cpu_key, use_cpu_build
EMULATED_CODE = """
import json, subprocess, sys, torch
import numpy as np
from resnet_edu import quantization as rq
# what NNCF's quantizer computes; QEMU's AVX2 crashed NumPy's AVX2 loop for it (SIGSEGV) before the emulator
# kept NumPy on its baseline loops
low = float(np.maximum(np.float32(0.01), np.linspace(0, 1, 64, dtype=np.float32).reshape(64, 1, 1, 1)).min())
child = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                       capture_output=True, text=True, check=True).stdout.strip()
f = rq.cpu_features()
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "vnni": torch.cpu._is_vnni_supported(),
                  "child": child, "avx2": f["avx2"], "avx512": f["avx512"], "avx512_vnni": f["avx512_vnni"],
                  "x86": rq.conv_kernel("x86"), "families": rq.available_families(), "low": low}))
"""


@pytest.mark.skipif(platform.machine() != "x86_64" or not (shutil.which("qemu-x86_64") and shutil.which("bwrap")),
                    reason="the AVX2 emulator (.ci/emulate-avx2) needs an x86-64 host with qemu-user and bubblewrap")
@pytest.mark.skipif(bool(os.environ.get("RESNET_EDU_EMULATED_CPU")), reason="already running under .ci/emulate-avx2")
def test_avx2_emulator_is_an_avx2_only_cpu():
    """``.ci/emulate-avx2`` (``make test-avx2-emulated``) runs Python, and every Python it starts, as on a Zen3:
    CPUID and /proc/cpuinfo agree on AVX2 without AVX-512, so PyTorch's x86 engine itself picks fbgemm's AVX2
    kernel, which on a VNNI machine no environment variable can make it do."""
    proc = subprocess.run([str(EMULATOR), sys.executable, "-c", EMULATED_CODE], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["capability"], out["vnni"], out["child"]) == ("AVX2", False, "AVX2")
    assert out["avx2"] and not out["avx512"] and not out["avx512_vnni"]
    assert (out["x86"]["library"], out["x86"]["isa"], out["x86"]["accumulation"]) == ("fbgemm", "avx2", "int16 pairs")
    assert "fbgemm-avx512" not in out["families"] and "onednn-avx512-vnni" not in out["families"]
    assert abs(out["low"] - 0.01) < 1e-6


def test_avx2_emulator_usage():
    proc = subprocess.run(["bash", str(EMULATOR)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "emulate-avx2" in proc.stdout


def test_inductor_cache_folder_is_per_cpu(tmp_path):
    """``.ci/cpu_key.py`` names TorchInductor's cache folder (Makefile, conftest, emulator) after the CPU's
    flags: the cache is not keyed on the instruction set, and an AVX-512 graph dies with SIGILL on AVX2."""
    cpu_key = CPU_KEY_PY["cpu_key"]
    zen3, zen4, shuffled = (tmp_path / n for n in ("zen3", "zen4", "shuffled"))
    zen3.write_text("processor\t: 0\nflags\t\t: " + " ".join(sorted(PROFILES["zen3"])) + "\n")
    zen4.write_text("processor\t: 0\nflags\t\t: " + " ".join(sorted(PROFILES["zen4"])) + "\n")
    shuffled.write_text("flags\t\t: " + " ".join(sorted(PROFILES["zen3"], reverse=True)) + "\nflags\t: avx512f\n")
    assert cpu_key(str(zen3)) != cpu_key(str(zen4))
    assert cpu_key(str(zen3)) == cpu_key(str(shuffled))  # the first flags line; order does not matter
    assert cpu_key(str(tmp_path / "missing")).endswith("-00000000")


def test_book_build_is_per_cpu(tmp_path):
    """``use_cpu_build`` (``make book``, the tests' book build) keeps one Jupyter execution cache per CPU and
    drops the pages and executed notebooks another CPU made: Jupyter Book's cache is keyed on the notebook's
    text only, so a checkout built on a VNNI machine showed that machine's claims on an AVX2 one."""
    use_cpu_build = CPU_KEY_PY["use_cpu_build"]
    b = tmp_path / "_build"
    legacy = b / ".jupyter_cache"
    legacy.mkdir(parents=True)
    (legacy / "global.db").write_text("from a CPU nobody recorded")
    made = {name: b / name / "page" for name in ("html", "jupyter_execute", ".doctrees")}
    for f in made.values():
        f.parent.mkdir()
        f.write_text("zen4")
    assert use_cpu_build(str(b), "x86_64-zen4") == "switched"
    assert legacy.is_symlink() and legacy.resolve() == (b / "jupyter_caches" / "x86_64-zen4").resolve()
    assert not any(f.exists() for f in made.values()) and list(legacy.iterdir()) == []
    (legacy / "global.db").write_text("zen4's notebooks")
    made["html"].parent.mkdir()
    made["html"].write_text("zen4")
    assert use_cpu_build(str(b), "x86_64-zen4") == "kept" and made["html"].read_text() == "zen4"
    assert use_cpu_build(str(b), "x86_64-zen3") == "switched"
    assert not made["html"].exists() and list(legacy.iterdir()) == []
    assert (b / "jupyter_caches" / "x86_64-zen4" / "global.db").read_text() == "zen4's notebooks"  # kept for later
    assert use_cpu_build(str(b), "x86_64-zen4") == "switched" and (legacy / "global.db").read_text() == "zen4's notebooks"
    assert (b / ".cpu").read_text().strip() == "x86_64-zen4"
    makefile = (EMULATOR.parent.parent / "Makefile").read_text()
    assert "\t$(PYTHON) .ci/cpu_key.py --build _build\n\t$(VENV)/bin/jupyter-book build" in makefile
