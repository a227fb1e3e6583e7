"""Chapters 7-9 executed the way other CPUs run them (issue 12, item 4).

The chapters take their engine from ``rq.default_engine()``, which honours ``RESNET_EDU_ENGINE``;
``rq.family_env`` sets it together with the kernel caps. Here the notebooks run in a Jupyter kernel
started with such an environment: ``qnnpack`` (what an ARM reader's book uses) for chapters 7-9, and
fbgemm's AVX2 kernels (what the x86 engine runs on a CPU without VNNI) for chapter 7. Each glued
sentence about the kernel must be the one for the branch that ran.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from resnet_edu import quantization as rq

ROOT = Path(__file__).resolve().parent.parent


def execute(name: str, family: str, tmp_path: Path) -> dict:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    env = rq.family_env(family)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel subprocess inherits this environment
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    glued = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name_ = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name_:
                text = out["data"].get("application/papermill.record/text/plain")
                glued[name_] = ast.literal_eval(text) if text and text[0] in "'\"" else text
    return glued


@pytest.mark.skipif("qnnpack" not in rq.available_families(), reason="this PyTorch build has no qnnpack engine")
@pytest.mark.parametrize("name", ["07_quantization_basics", "08_quantize_resnet_eager", "09_pt2e_torchao"])
def test_chapters_build_on_qnnpack(name, tmp_path):
    if name == "09_pt2e_torchao" and not rq.pt2e_available():
        pytest.skip("torchao (extra 'pt2e') is not installed")
    glued = execute(name, "qnnpack", tmp_path)
    if name.startswith("07"):
        assert glued["ch7_engine"] == "qnnpack"
        assert glued["ch7_here_verdict"].startswith("does not saturate")  # QNNPACK accumulates in int32
        assert glued["ch7_exact_verdict"].startswith("0 differ")
    if name.startswith("08"):
        assert glued["ch8_engine"] == "qnnpack"


@pytest.mark.skipif("fbgemm-avx2" not in rq.available_families(), reason="fbgemm's AVX2 kernels need an x86 CPU with AVX2")
def test_chapter7_on_fbgemm_avx2(tmp_path):
    glued = execute("07_quantization_basics", "fbgemm-avx2", tmp_path)
    assert glued["ch7_engine"] == "fbgemm"
    assert glued["ch7_kernel"].startswith("fbgemm AVX2")
    assert glued["ch7_here_verdict"].startswith("saturates")
    assert glued["ch7_here_order"].startswith("the 8-bit model matches the FP32 logits worse")
    assert glued["ch7_exact_verdict"].startswith("0 differ")
    assert glued["ch7_avx2_sentence"] == "This CPU's own kernel is already one without VNNI, so its row is the lesson."
