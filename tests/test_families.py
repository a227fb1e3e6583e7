"""The kernel-dependent quantization tests under every kernel family this machine can run (issue 12, item 4).

The tests marked ``kernel_family`` in ``tests/test_quant_digits.py`` and ``tests/test_quantization.py``
(bit-exactness of the reference convolution, the saturation branch and the 7- vs 8-bit ordering,
accuracy of the eager flows and QAT, the requantizing add, ATen's quantize against our arithmetic, the
compiled PT2E model) run here once more per family, each in a fresh ``python -m pytest`` whose
environment is ``rq.family_env(family)``: the kernel caps (``FBGEMM_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``) are read when a process starts, and
``RESNET_EDU_ENGINE`` makes the family's engine the one ``rq.default_engine()`` returns.

What runs, and what does not (each skip says why):

- ``default`` is skipped here: the main pytest run already runs these tests in the default environment.
- A family that selects exactly the kernels of one listed before it (same engine, same convolution
  kernel, same fbgemm and oneDNN instruction sets, same ATen capability: ``rq.family_kernels``) is
  skipped with the name of that family; on an AVX2-only CPU ``fbgemm`` and ``fbgemm-avx2`` are one.
- A family that needs hardware or an engine the machine lacks is skipped with what it needs.
- ``test_pt2e_digits_accuracy`` (10 s, inductor) depends only on oneDNN's instruction set and ATen's
  capability, so it runs only in families where one of those differs from the default environment's.
- ``aten-avx2`` and ``aten-default`` change only ATen's capability: they run the tests that use ATen's
  quantized kernels (quantize, the requantizing add, the model's accuracy, PT2E), not the convolution
  reference tests, whose kernels (fbgemm, oneDNN, QNNPACK) ignore ``ATEN_CPU_CAPABILITY``.

Cost, measured on the 2-core Sapphire Rapids machine (AMX) of issue 12 while four other jobs shared it
(load 4-9): 70-180 s per family. On the idle machine the same tests' durations add up to about 30 s
per family (plus about 10 s of start-up), so about 4-6 min for the families that run there (an estimate
from those durations, not a timed idle run). An AVX2-only CPU has fewer distinct families (fbgemm's AVX2 kernels are its default).
On the 2-core Zen4 machine (AVX512-VNNI, no AMX), load 3-8 from other jobs, each family timed alone:
fbgemm 110 s, fbgemm-avx512 112 s, fbgemm-avx2 188 s, onednn 198 s, onednn-avx512-vnni 180 s,
onednn-avx2 296 s, qnnpack 102 s, aten-avx2 15 s, aten-default 16 s (20 min in all; the default
environment's own run of these tests: 298 s).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_edu import quantization as rq

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/test_quant_digits.py", "tests/test_quantization.py"]
PT2E_TEST = "tests/test_quant_digits.py::test_pt2e_digits_accuracy"
# a family that changes only ATen's capability: the tests that run ATen's quantized kernels
ATEN_ONLY = "qparams or residual_add or int8_accuracy or bit_exact or pt2e"


def _needs(name: str) -> str:
    """What family ``name`` needs that this machine lacks."""
    engine = rq.FAMILIES[name]["engine"]
    if engine is not None and engine not in rq.quantized_engines():
        return f"the {engine!r} quantized engine, which this PyTorch build does not offer here ({', '.join(rq.quantized_engines())})"
    if rq.kernels._simulating_arm():
        return f"an x86 CPU ({rq.SIMULATE_ARM}=1 simulates ARM)"
    return {"fbgemm-avx512": "a CPU with AVX-512 (F and BW) for fbgemm's AVX-512 kernels",
            "onednn-avx512-vnni": "a CPU with AVX512-VNNI for oneDNN's VNNI kernels",
            "fbgemm-avx2": "an x86 CPU with AVX2", "onednn-avx2": "an x86 CPU with AVX2",
            "aten-avx2": "an x86 CPU with AVX2"}.get(name, "hardware this machine lacks")


def _plan():
    available = rq.available_families()
    seen = {rq.family_kernels("default")["key"]: "default"} if "default" in available else {}
    plan = []
    for name in rq.FAMILIES:
        if name == "default":
            plan.append(pytest.param(name, marks=pytest.mark.skip(reason="the main pytest run already runs the kernel_family tests in the default environment")))
            continue
        if name not in available:
            plan.append(pytest.param(name, marks=pytest.mark.skip(reason=f"family {name} needs {_needs(name)}")))
            continue
        k = rq.family_kernels(name)
        if k["key"] in seen:
            plan.append(pytest.param(name, marks=pytest.mark.skip(
                reason=f"family {name} selects exactly the kernels of family {seen[k['key']]} here (engine {k['engine']}, {k['conv']}, "
                       f"fbgemm {k['fbgemm']}, oneDNN {k['onednn']}, ATen {k['aten']})")))
            continue
        seen[k["key"]] = name
        plan.append(name)
    return plan


@pytest.mark.parametrize("family", _plan())
def test_kernel_family_tests_pass_under(family):
    k = rq.family_kernels(family)
    base = rq.family_kernels("default")
    args = [sys.executable, "-m", "pytest", "-m", "kernel_family", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", *FILES]
    if (k["onednn"], k["aten"]) == (base["onednn"], base["aten"]):
        args += ["--deselect", PT2E_TEST]  # inductor's kernels do not change in this family
    if k["key"][:4] == base["key"][:4]:  # only ATen's capability differs: its quantize/add kernels, not the convolutions
        args += ["-k", ATEN_ONLY]
    print(f"family {family}: engine {k['engine']}, convolutions on {k['conv']}, fbgemm {k['fbgemm']}, "
          f"oneDNN {k['onednn']}, ATen {k['aten']}; {' '.join(args[3:])}")
    proc = subprocess.run(args, cwd=ROOT, env=rq.family_env(family), capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, f"kernel family {family} ({k['conv']}; fbgemm {k['fbgemm']}, oneDNN {k['onednn']}, ATen {k['aten']}) failed:\n{tail}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= (4 if "-k" in args else 40), f"family {family}: too few tests ran ({summary!r})"
    assert not re.search(r"\d+ (failed|error)", summary), f"family {family}: {summary}"
    print(summary)


def test_family_plan_names_every_family():
    """Every family is either run or skipped with a reason; the AVX2 and VNNI branches are among those run
    where the hardware has them (the point of running families on one machine)."""
    plan = _plan()
    assert len(plan) == len(rq.FAMILIES)
    ran = [p for p in plan if isinstance(p, str)]
    f = rq.cpu_features()
    if f["x86"] and f["avx2"] and not rq.kernels._simulating_arm():
        assert "fbgemm-avx2" in ran or rq.family_kernels("default")["key"] == rq.family_kernels("fbgemm-avx2")["key"]
        assert rq.conv_kernel("fbgemm", env=rq.family_env("fbgemm-avx2"))["accumulation"] == "int16 pairs"
    if f["avx512_vnni"] and not rq.kernels._simulating_arm():
        assert "onednn-avx512-vnni" in ran and "fbgemm" in ran  # oneDNN's and fbgemm's VNNI kernels
        assert rq.family_kernels("fbgemm")["conv"].startswith("fbgemm AVX512-VNNI")
