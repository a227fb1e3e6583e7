"""Chapters 7-10 executed the way other CPUs run them (issue 12, item 4).

The chapters take their engine from ``rq.default_engine()`` and decide their x86-only sections with
``rq.x86_engine_available()``; ``rq.family_env`` sets the kernel caps and ``RESNET_EDU_ENGINE``. Here the
notebooks run in a Jupyter kernel started with such an environment:

- **ARM, simulated**: ``RESNET_EDU_SIMULATE_ARM=1`` with the qnnpack family, chapters 7-9. A first cell
  (not part of the chapter) also makes PyTorch itself look like an ARM build: ``supported_engines`` lists
  no x86 engine and selecting one raises, so a chapter that still hard-codes ``x86``, ``fbgemm`` or
  ``onednn`` fails here. Each skipped x86 section must say why (the glued sentences below). The qnnpack
  kernels are still the x86 build's (SSE2), not NEON: this checks the chapters' choices, not ARM's
  arithmetic.
- **fbgemm's AVX2 kernels** (what the x86 engine runs on a CPU without VNNI), chapter 7.
- **Nothing forced**, opt-in (``RESNET_EDU_EXECUTE_CHAPTERS``): chapters 7 to 10 as the CPU running the tests
  runs them, for ``.ci/emulate-avx2`` (``make test-avx2-emulated``), where that CPU is an AVX2-only one.

With ``RESNET_EDU_KEEP_EXECUTED=<folder>`` each executed notebook is written there, outputs and all, named by
the environment it ran in. Each glued sentence about the kernel must be the one for the branch that ran; the normal build (the
session's ``built_book``) must show the x86 sentences instead.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from resnet_edu import quantization as rq

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "_build" / "jupyter_execute" / "notebooks"
# the variables that choose a chapter's kernels: the caps, the book's engine, the simulated ARM
FORCED = (*rq.kernels.KERNEL_CAPS, "RESNET_EDU_ENGINE", rq.SIMULATE_ARM)

# run first in the simulated-ARM kernel: PyTorch without its x86 engines, as an ARM wheel has
ARM_TORCH = '''
import torch, torch.backends.quantized as _q
_cls, _x86 = type(_q), ("x86", "fbgemm", "onednn")
_prop = _cls.__dict__["engine"]  # the descriptor (reading it through the class gives a string)
_get, _set = _prop.__get__, _prop.__set__
_engines = [e for e in torch.backends.quantized.supported_engines if e not in _x86]
def _set_engine(obj, value):
    if value in _x86:
        raise RuntimeError(f"simulated ARM: quantized engine {value!r} does not exist on this CPU")
    _set(obj, value)
_cls.engine = property(lambda obj: _get(obj, _cls), _set_engine)
_cls.supported_engines = property(lambda obj: list(_engines))
torch.backends.quantized.engine = "qnnpack"
'''


def _glued(text: str):
    """A glued value from its text: a string glued is shown quoted (its repr), a number as itself."""
    return ast.literal_eval(text) if text[:1] in "'\"" else text


def execute(name: str, env: dict, first_cell: str = "", raw: bool = False) -> dict:
    """Every value the chapter glued, run in a kernel with environment ``env`` (as its text where ``raw``)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    if first_cell:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first_cell))
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel subprocess inherits this environment
    try:
        NotebookClient(nb, timeout=int(os.environ.get("RESNET_EDU_CELL_TIMEOUT", "900")), kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    keep = old.get("RESNET_EDU_KEEP_EXECUTED")  # a folder: keep the executed notebook there, to read its outputs
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        label = "-".join(f"{k}={v}" for k, v in sorted(env.items()) if k in (*FORCED, "RESNET_EDU_EMULATED_CPU"))
        nbformat.write(nb, Path(keep) / f"{name}{'.' + label if label else ''}.ipynb")
    glued = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name_ = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name_:
                text = out["data"].get("application/papermill.record/text/plain")
                glued[name_] = text if raw or not text else _glued(text)
    return glued


def arm_env() -> dict:
    return {**rq.family_env("qnnpack"), rq.SIMULATE_ARM: "1"}


@pytest.mark.skipif("qnnpack" not in rq.available_families(), reason="this PyTorch build has no qnnpack engine")
@pytest.mark.parametrize("name", ["07_quantization_basics", "08_quantize_resnet_eager", "09_pt2e_torchao"])
def test_chapters_build_as_on_arm(name):
    if name == "09_pt2e_torchao" and not rq.pt2e_available():
        pytest.skip("torchao (extra 'pt2e') is not installed")
    glued = execute(name, arm_env(), ARM_TORCH)
    if name.startswith("07"):
        assert glued["ch7_engine"] == "qnnpack"
        assert glued["ch7_kernel"].startswith("QNNPACK")
        assert glued["ch7_here_verdict"].startswith("does not saturate")  # QNNPACK accumulates in int32
        assert glued["ch7_exact_verdict"].startswith("0 differ")
        assert glued["ch7_avx2_sentence"].startswith("fbgemm's AVX2 kernel exists only on x86 CPUs, and this PyTorch offers no x86 engine here (engines: qnnpack)")
    if name.startswith("08"):
        assert glued["ch8_engine"] == "qnnpack"
        assert glued["ch8_engine_bullet"].startswith("qnnpack is written for ARM CPUs like this one, and it is the only engine this PyTorch offers here (qnnpack)")
        check_chapter8_words(glued, arm=True)
    if name.startswith("09"):
        assert "ArmInductorQuantizer" in glued["ch9_quantizer_sentence"]
        assert glued["ch9_compile_sentence"].startswith("Step 5 is skipped on this CPU")
        assert glued["ch9_pt2e_kernels"].startswith("PT2E here is the converted graph")
        assert glued["ch9_r18_sentence"].startswith("This comparison is skipped on this CPU")
        assert glued["ch9_wrap_speed"] == "the speed comparison needs an x86 CPU (skipped here)"
        assert float(glued["ch9_pt2e_acc"]) > float(glued["ch9_fp32_acc"]) - 1.0  # the converted graph keeps the accuracy


@pytest.mark.skipif("fbgemm-avx2" not in rq.available_families(), reason="fbgemm's AVX2 kernels need an x86 CPU with AVX2")
def test_chapter7_on_fbgemm_avx2():
    glued = execute("07_quantization_basics", rq.family_env("fbgemm-avx2"))
    assert glued["ch7_engine"] == "fbgemm"
    assert glued["ch7_kernel"].startswith("fbgemm AVX2")
    assert glued["ch7_here_verdict"].startswith("saturates")
    assert glued["ch7_here_order"].startswith("the 8-bit model matches the FP32 logits worse")
    assert glued["ch7_exact_verdict"].startswith("0 differ")
    assert glued["ch7_avx2_sentence"] == "This CPU's own kernel is already one without VNNI, so its row is the lesson."


def check_chapter7_branch(glued: dict, engine: str) -> None:
    """Chapter 7's glued words are the ones for the kernel ``engine`` runs on this CPU: its name, saturates or
    not, the 7- vs 8-bit ordering, and which AVX2 sentence follows."""
    k = rq.conv_kernel(engine)
    assert glued["ch7_engine"] == engine and glued["ch7_kernel"] == k["label"]
    assert glued["ch7_exact_verdict"].startswith("0 differ")
    if k["accumulation"] == "int16 pairs":  # fbgemm AVX2 / AVX-512 or oneDNN without VNNI: this CPU's row is the lesson
        assert glued["ch7_here_verdict"].startswith("saturates")
        assert glued["ch7_here_order"].startswith("the 8-bit model matches the FP32 logits worse")
        assert glued["ch7_avx2_sentence"] == "This CPU's own kernel is already one without VNNI, so its row is the lesson."
    else:  # int32 accumulation (VNNI, qnnpack): nothing saturates, and an AVX2 run shows the lesson beside it
        assert glued["ch7_here_verdict"].startswith("does not saturate")
        assert glued["ch7_here_order"].startswith("the 8-bit model matches the FP32 logits better")
        if rq.x86_engine_available() and "fbgemm-avx2" in rq.available_families():
            assert glued["ch7_avx2_sentence"].startswith("fbgemm's AVX2 kernel, run the way a CPU without VNNI runs it, saturates")


EXECUTE_CHAPTERS = {c.strip() for c in os.environ.get("RESNET_EDU_EXECUTE_CHAPTERS", "").split(",") if c.strip()}
"""Chapters the opt-in test below executes with nothing forced (``make test-avx2-emulated`` sets ``7,8,9,10``)."""


@pytest.mark.parametrize("chapter", ["7", "8", "9", "10"])
def test_chapter_as_this_cpu_runs_it(chapter):
    """Chapter 7, 8, 9 or 10 executed with nothing forced: under ``.ci/emulate-avx2`` this is an AVX2-only CPU's own
    run, where the x86 engine picks fbgemm's AVX2 kernel from CPUID (no variable can make a VNNI CPU do that).
    Chapter 10's words get the checks ``tests/test_deploy.py`` runs on the built book."""
    if chapter not in EXECUTE_CHAPTERS:
        pytest.skip(f"opt-in (RESNET_EDU_EXECUTE_CHAPTERS={chapter}, set by `make test-avx2-emulated`); the normal "
                    "build executes the chapters on this CPU's kernel and test_normal_build_shows_the_x86_sections checks them")
    env = {k: v for k, v in os.environ.items() if k not in FORCED}
    if chapter == "7":
        check_chapter7_branch(execute("07_quantization_basics", env), rq.default_engine())
    elif chapter == "8":
        glued = execute("08_quantize_resnet_eager", env)
        assert glued["ch8_engine"] == rq.default_engine()
        check_chapter8_words(glued, arm=not rq.x86_engine_available())
    elif chapter == "9":
        if not rq.pt2e_available():
            pytest.skip("torchao (extra 'pt2e') is not installed")
        glued = execute("09_pt2e_torchao", env)
        if rq.x86_engine_available():
            check_chapter9_x86(glued)
        else:
            assert glued["ch9_compile_sentence"].startswith("Step 5 is skipped on this CPU")
    elif chapter == "10":
        import test_deploy  # tests/ is on sys.path (pytest's default import mode)

        test_deploy.GLUE_TEXTS = execute("10_deployment", env, raw=True)
        try:
            for check in test_deploy.CHAPTER_CHECKS:
                if not any(m.name == "skipif" and m.args[0] for m in getattr(check, "pytestmark", [])):
                    check(None)
        finally:
            test_deploy.GLUE_TEXTS = None


def check_chapter8_words(glued: dict, arm: bool = False) -> None:
    """Chapter 8's comparison words are the ones its own glued times give: qnnpack against the book's engine,
    INT8 against FP32 on the digits model, and the list of cases where INT8 was slower than FP32."""
    from resnet_edu.deploy.words import speed_word

    num = lambda key: float(glued[key])  # noqa: E731 - a glued number is its text
    assert glued["ch8_qnnpack_word"] == speed_word(num("ch8_r18_b1_qnnpack"), num("ch8_r18_b1_x86"))
    assert f"took {num('ch8_r18_b1_qnnpack'):.1f} ms with qnnpack" in glued["ch8_engine_bullet"]
    if not arm:  # the ARM bullet has no other engine to compare with
        assert f"{glued['ch8_qnnpack_word']} the {glued['ch8_engine']} engine" in glued["ch8_engine_bullet"]
    for word, speedup in (("ch8_digits_main_word", "ch8_digits_b1_speedup"), ("ch8_digits_qnnpack_word", "ch8_digits_b1_qnnpack_speedup")):
        assert glued[word] == speed_word(1.0 / num(speedup), 1.0), (word, num(speedup))
    slower = glued["ch8_slower_cases"]
    main = f"INT8 {glued['ch8_engine']} on "  # the book's engine; on ARM that is qnnpack itself
    for key, case in (("ch8_r18_b1_speedup", "resnet18 batch 1"), ("ch8_r50_b8_speedup", "resnet50 batch 8"),
                      ("ch8_digits_b1_speedup", "digits resnet18 (32x32) batch 1"),
                      ("ch8_digits_b1_qnnpack_speedup", "digits resnet18 (32x32) batch 1")):
        prefix = "INT8 qnnpack on " if "qnnpack" in key else main
        listed = any(part.rpartition(" (")[0] == prefix + case for part in slower.split("; "))
        assert listed == (num(key) < 1.0), (key, num(key), slower)
    assert (slower == "none") == all(p == "none" for p in slower.split("; "))
    drop8 = num("ch8_x86_drop")  # the 8-bit PTQ row of the QAT table is the chapter's main INT8 model
    assert glued["ch8_ptq8_verdict"].startswith("there was nothing left" if drop8 <= 0.5 else "QAT, or keeping"), drop8


def _glue_all(docname: str) -> dict:
    """Every glued value of an executed chapter: strings as strings, numbers as their text."""
    data = json.loads((EXECUTED / f"{docname}.glue.json").read_text(encoding="utf-8"))
    out = {}
    for k, v in data.items():
        text = v.get("data", {}).get("text/plain")
        if text is not None:
            out[k] = _glued(text)
    return out


def _glue_values(docname: str) -> dict:
    data = json.loads((EXECUTED / f"{docname}.glue.json").read_text(encoding="utf-8"))
    return {k: ast.literal_eval(v["data"]["text/plain"]) for k, v in data.items() if "text/plain" in v.get("data", {})
            and v["data"]["text/plain"][:1] in "'\""}


@pytest.mark.skipif(not rq.x86_engine_available(), reason="the x86 sentences are the ones an x86 CPU builds")
def test_normal_build_shows_the_x86_sections(built_book):
    """The book as built on this x86 machine: the x86 branch of every sentence the ARM build replaces."""
    ch7, ch8 = _glue_values("07_quantization_basics"), _glue_values("08_quantize_resnet_eager")
    assert not ch7["ch7_avx2_sentence"].startswith("fbgemm's AVX2 kernel exists only on x86 CPUs")
    check_chapter7_branch(ch7, rq.default_engine())
    assert ch8["ch8_engine_bullet"].startswith("qnnpack is written for ARM CPUs (phones, Raspberry Pi), where it is the fast path; on an x86 CPU")
    check_chapter8_words(_glue_all("08_quantize_resnet_eager"))
    if rq.pt2e_available():
        check_chapter9_x86(_glue_values("09_pt2e_torchao"))


def check_chapter9_x86(ch9: dict) -> None:
    """Chapter 9 on an x86 CPU: X86InductorQuantizer, compiled into oneDNN kernels, and ResNet-18 timed."""
    assert "X86InductorQuantizer" in ch9["ch9_quantizer_sentence"] and "Arm" not in ch9["ch9_quantizer_sentence"]
    assert ch9["ch9_compile_sentence"].startswith("Compilation took")
    assert ch9["ch9_pt2e_kernels"] == "PT2E runs inductor's fused oneDNN kernels"
    assert ch9["ch9_eager_kernel"] == rq.conv_kernel(rq.default_engine())["label"]
    assert ch9["ch9_r18_sentence"].startswith("In this run PT2E ran ResNet-18 at batch 1")
    assert ch9["ch9_wrap_speed"].startswith("at ResNet-18 batch 1, PT2E ran at")
