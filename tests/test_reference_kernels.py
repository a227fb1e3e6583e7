"""The reference convolution against every kernel family this machine can run (issue 12, items 1, 2, 4).

Each family runs in its own interpreter (the kernel-selecting environment variables are read when the
process starts): ``resnet_edu.quantization.kernel_check`` quantizes the trained digits model and a
random-weight ResNet-18 with 7- and 8-bit activations and counts, over all their convolutions, the
output integers that differ from ``reference_qconv2d``. Families that would run the same kernel twice
here (same library, instruction set and ATen capability) are run once; families that need hardware
this machine lacks are listed as skipped, with the reason.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from resnet_edu import quantization as rq
from resnet_edu.quantization import kernel_check, kernels

CODE = "from resnet_edu.quantization.kernel_check import main; main()"


def _plan():
    seen, plan = set(), []
    available = kernels.available_families()
    for name in kernels.FAMILIES:
        if name not in available:
            plan.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{name} needs hardware or an engine this machine lacks")))
            continue
        # one rule with tests/test_families.py: rq.family_kernels; this test depends only on the convolution
        # kernel and ATen's capability (quantize), not on the other library's instruction set
        k = kernels.family_kernels(name)
        key = (k["conv"], k["aten"])
        if key in seen:
            plan.append(pytest.param(name, marks=pytest.mark.skip(reason=f"runs the same kernel here as an earlier family ({k['conv']})")))
            continue
        seen.add(key)
        plan.append(name)
    return plan


@pytest.fixture(scope="module")
def results():
    return {}


@pytest.mark.parametrize("family", _plan())
def test_reference_is_exact_under_family(family, results):
    out = kernels.run_in_family(family, CODE)
    k = out["kernel"]
    rows = {(r["model"], r["activation_bits"]): r for r in out["rows"]}
    assert set(rows) == {("digits", 7), ("digits", 8), ("resnet18", 7), ("resnet18", 8)}
    for key, r in rows.items():
        assert r["convs"] == 20 and r["integers"] > 500_000, key
        assert r["differ_reference"] == 0, (family, k["label"], key, r)  # 0 differing integers, every conv
    for model in ("digits", "resnet18"):
        r7 = rows[(model, 7)]
        assert r7["differ_exact"] == 0 and r7["differ_saturating"] in (0, None)  # 7-bit inputs: no pair can clip
    d8 = rows[("digits", 8)]
    if k["accumulation"] == "int16 pairs":  # the kernel saturates: chapter 7's lesson on this CPU
        assert d8["differ_exact"] > 0 and d8["differ_saturating"] == 0
        assert d8["sqnr_db"] < rows[("digits", 7)]["sqnr_db"]  # one more bit, yet a worse match
    else:  # int32 accumulation: nothing saturates, and the 8th bit helps
        assert d8["differ_exact"] == 0
        if d8["differ_saturating"] is not None:
            assert d8["differ_saturating"] > 0  # a non-VNNI kernel would have clipped these
        assert d8["sqnr_db"] > rows[("digits", 7)]["sqnr_db"]


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE"])
def test_reference_exact_for_onednn_without_vnni_few_channels(isa):
    """oneDNN capped below VNNI (``ONEDNN_MAX_CPU_ISA``; AVX512_CORE is no family of the book but is what
    an AVX-512 CPU without VNNI runs): adversarial convs with 1, 2, 3 and 5 input channels, 8-bit inputs
    and zero points up to 255 are bit-exact -- per-tap pairs, exact padded taps, and brgemm's lowered
    window for one channel. The exact int32 sum differs there: these inputs do saturate pairs."""
    env = {"ONEDNN_MAX_CPU_ISA": isa}
    need = {"AVX2": "avx2", "AVX512_CORE": "avx512_core"}[isa]
    if "onednn" not in rq.quantized_engines() or kernels.onednn_isa(env) != need:
        pytest.skip(f"oneDNN capped at {isa} does not run {need} kernels here")
    base = kernels.family_env("onednn-avx2")
    base.update(env)
    proc = subprocess.run([sys.executable, "-c", kernel_check.SMALL_CHANNEL_CODE], env=base, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["models"] == [{"AVX2": "onednn-avx2", "AVX512_CORE": "onednn-int16"}[isa]], out
    assert out["integers"] > 100_000 and out["differ_reference"] == 0 and out["differ_exact"] > 0, out


def test_conv_kernel_names_the_dispatch():
    f = rq.cpu_features()
    if not f["x86"]:
        pytest.skip("x86 dispatch rules; this machine is " + f["arch"])
    assert rq.conv_kernel("x86")["library"] == ("onednn" if f["avx512_vnni"] else "fbgemm")
    assert rq.conv_kernel("x86", symmetric_weights=False)["library"] == "fbgemm"
    assert rq.conv_kernel("x86", groups=128)["library"] == "fbgemm"
    assert rq.conv_kernel("fbgemm", env={"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"})["isa"] == "avx2"
    assert rq.conv_kernel("fbgemm", env={"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"})["accumulation"] == "int16 pairs"
    assert rq.conv_kernel("onednn", env={"ONEDNN_MAX_CPU_ISA": "AVX2"})["accumulation"] == "int16 pairs"
    assert rq.conv_kernel("qnnpack")["library"] == "qnnpack"
    with pytest.raises(ValueError, match="unknown quantized engine 'tpu'; accepted: x86, fbgemm, onednn, qnnpack"):
        rq.conv_kernel("tpu")
    with pytest.raises(ValueError, match="unknown kernel family 'avx9'"):
        rq.family_env("avx9")


def test_default_engine_follows_override(monkeypatch):
    monkeypatch.setenv("RESNET_EDU_ENGINE", "qnnpack")
    assert rq.default_engine() == "qnnpack"
    monkeypatch.setenv("RESNET_EDU_ENGINE", "tpu")
    with pytest.raises(ValueError, match="RESNET_EDU_ENGINE='tpu' is not a quantized engine"):
        rq.default_engine()
    monkeypatch.delenv("RESNET_EDU_ENGINE")
    assert rq.default_engine() in torch.backends.quantized.supported_engines


def test_reference_errors():
    import resnet_edu as rn

    qm = rq.quantize_ptq(rn.resnet18(num_classes=2), [torch.randn(2, 3, 32, 32)], progress=False)
    x = rq.capture_io(qm, torch.randn(1, 3, 32, 32), ["conv1"])["conv1"][0]
    with pytest.raises(ValueError, match="unknown kernel model 'avx'; accepted: fbgemm, fbgemm-int16, onednn-amx, onednn, onednn-int16, onednn-avx2, qnnpack"):
        rq.reference_qconv2d(qm.conv1, x, kernel="avx")
    with pytest.raises(ValueError, match="saturate_int16_pairs=True means kernel='fbgemm-int16'"):
        rq.reference_qconv2d(qm.conv1, x, saturate_int16_pairs=True, kernel="onednn")


def test_simulated_arm_hides_the_x86_engines(monkeypatch):
    """RESNET_EDU_SIMULATE_ARM=1: the book's one switch for building chapters 7-9 as on ARM."""
    monkeypatch.delenv("RESNET_EDU_ENGINE", raising=False)
    monkeypatch.setenv(rq.SIMULATE_ARM, "1")
    assert not rq.x86_engine_available()
    assert not {"x86", "fbgemm", "onednn"} & set(rq.quantized_engines())
    if "qnnpack" in torch.backends.quantized.supported_engines:
        assert rq.default_engine() == "qnnpack"
    assert set(rq.available_families()) <= {"default", "qnnpack", "aten-default"}
    monkeypatch.setenv("RESNET_EDU_ENGINE", "x86")
    with pytest.raises(ValueError, match="RESNET_EDU_SIMULATE_ARM=1 hides x86, fbgemm and onednn"):
        rq.default_engine()
    monkeypatch.setenv(rq.SIMULATE_ARM, "0")
    monkeypatch.delenv("RESNET_EDU_ENGINE")
    assert rq.x86_engine_available() == ("x86" in torch.backends.quantized.supported_engines)


def test_family_kernels_tell_families_apart():
    f = rq.cpu_features()
    if not (f["x86"] and f["avx2"]):
        pytest.skip("x86 kernel families; this machine is " + f["arch"])
    assert rq.aten_capability({"ATEN_CPU_CAPABILITY": "default"}) == "default"
    assert rq.aten_capability({}) == ("avx512" if f["avx512"] and f["avx512bw"] else "avx2")
    k = rq.family_kernels("fbgemm-avx2")
    assert k["engine"] == "fbgemm" and k["fbgemm"] == "avx2" and k["conv"].startswith("fbgemm AVX2")
    assert rq.family_kernels("aten-default")["aten"] == "default"
    assert rq.family_kernels("aten-default")["key"] != rq.family_kernels("default")["key"]
