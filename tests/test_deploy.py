"""Chapter 10's machinery: ONNX export, ONNX Runtime and OpenVINO INT8, BF16, the limit model, kernel families.

No timing is asserted here (performance lives in ``make bench``): these tests check what each path
*is* (QDQ nodes, activation types, per-channel scales, INT8 primitives, BF16 precision), that it
agrees with FP32, and, for the chapter, that every comparison word it printed follows from the
numbers it measured (the branch that ran on this machine).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import runpy
from pathlib import Path

import pytest
import torch

import resnet_edu as rn
from resnet_edu import deploy
from resnet_edu import quantization as rq
from resnet_edu.quantization import kernels

ROOT = Path(__file__).resolve().parent.parent
HAVE_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
HAVE_OV = HAVE_ORT and all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="the extra 'deploy' (onnx, onnxscript, onnxruntime) is not installed")
needs_ov = pytest.mark.skipif(not HAVE_OV, reason="the extra 'deploy' (openvino, nncf) is not installed")


pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def small(small_resnet18):
    """conftest's small resnet18 at 32x32, with calibration batches, an input and its FP32 logits."""
    m = small_resnet18
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)]
    x = torch.randn(16, 3, 32, 32, generator=g)
    with torch.no_grad():
        ref = m(x)
    return m, cal, x, ref


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory):
    m, cal, _, _ = small
    return deploy.export_onnx(m, cal[0][:1], tmp_path_factory.mktemp("onnx") / "small.onnx")


def _agree(ref, out):
    return (ref.argmax(1) == out.argmax(1)).float().mean().item()


# --------------------------------------------------------------------------- the CPU, the limit model, the words
def test_cpu_features_and_the_bf16_sentence():
    f = deploy.cpu_features()
    ours = kernels.cpu_features()
    for key in ("avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"):
        assert isinstance(f[key], bool) and f[key] == bool(ours[key]), key
    assert f["avx512"] == bool(ours["avx512"] and ours["avx512bw"])  # AVX-512 integer kernels need BW
    assert f["model"] == ours["model"] and f["arch"] == deploy.cpu._arch(ours["arch"])
    assert [deploy.cpu._arch(m) for m in ("aarch64", "arm64", "AMD64", "x86_64", "riscv64")] == ["arm64", "arm64", "x86_64", "x86_64", "riscv64"]
    b = deploy.bf16_support(f)
    assert b["native"] == (f["avx512_bf16"] or f["amx_bf16"])
    assert ("AVX512_BF16" in b["via"]) == f["avx512_bf16"] and ("AMX_BF16" in b["via"]) == f["amx_bf16"]
    assert ("natively" in b["sentence"]) == b["native"]
    fake = dict(f, avx512_bf16=False, amx_bf16=False)
    assert "neither AVX512_BF16 nor AMX_BF16" in deploy.bf16_support(fake)["sentence"]
    assert deploy.best_isa(dict(f, amx_int8=False, avx512_vnni=True)) == "avx512_vnni"
    assert deploy.best_isa({"arch": "arm64"}) == "neon"
    assert deploy.best_isa(f) in deploy.MACS_PER_CYCLE
    clock = deploy.clock_ghz()
    assert clock["ghz"] > 0 and clock["source"]


def test_limit_model_arithmetic():
    m = deploy.MACS_PER_CYCLE
    assert m["avx512_vnni"]["int8"] == 128 and m["avx512"]["fp32"] == 32 and m["amx"]["int8"] == 1024
    assert m["avx512_vnni"]["int8"] / m["avx512"]["int8"] == pytest.approx(2.0)  # one vpdpbusd for the two multiply-port instructions
    assert m["avx512_vnni"]["int8"] / m["avx512_vnni"]["fp32"] == 4  # 4 bytes where one float fits
    names = {"avx512_core_amx": "amx", "avx512_core_vnni": "avx512_vnni", "avx512_vnni": "avx512_vnni", "avx512_core": "avx512",
             "avx512": "avx512", "avx2_vnni": "avx_vnni", "avx2": "avx2", "sse2": "sse2", "neon": "neon", None: "scalar"}
    assert {k: deploy.limit_isa(k) for k in names} == names
    macs = rn.count_macs(rn.resnet18())
    ms = deploy.lower_bound_ms(macs, 8, "avx512_vnni", "int8", cores=2, ghz=2.5)
    assert ms == pytest.approx(1e3 * macs * 8 / (128 * 2 * 2.5e9))
    rows = deploy.limit_rows(macs, [1, 8], cores=2, ghz=2.5, isas=["avx2", "amx"])
    assert len(rows) == 2 * 3 * 2 and all(r["lower_bound_ms"] > 0 for r in rows)
    with pytest.raises(ValueError, match="unknown instruction set 'avx1024'"):
        deploy.lower_bound_ms(macs, 1, "avx1024", "int8", 2, 2.5)
    with pytest.raises(ValueError, match="unknown data type 'int4'"):
        deploy.peak_macs_per_second("avx2", "int4", 2, 2.5)
    with pytest.raises(ValueError, match="cores must be >= 1"):
        deploy.peak_macs_per_second("avx2", "int8", 0, 2.5)


def test_comparison_words_follow_the_numbers():
    assert deploy.speed_word(5.0, 10.0) == "faster than"
    assert deploy.speed_word(10.0, 5.0) == "slower than"
    assert deploy.speed_word(10.0, 10.4) == "about as fast as"  # within 5 %
    assert deploy.speed_word(10.0, 10.6) == "faster than"
    assert deploy.speed_word(5.0, 10.0, noisy=True) == "not reliably comparable with"
    c = deploy.claim("u8 vs s8", 8.0, 19.0)
    assert c["word"] == "faster than" and deploy.check_claim(c) is None
    assert "means 'faster than'" in deploy.check_claim(dict(c, word="slower than"))
    with pytest.raises(ValueError, match="times must be positive"):
        deploy.ratio(0.0, 1.0)


def test_amount_word_follows_the_numbers():
    assert deploy.amount_word(0.5, 0.34) == "more than"
    assert deploy.amount_word(0.2, 0.34) == "less than"
    assert deploy.amount_word(0.36, 0.34) == deploy.amount_word(0.32, 0.34) == "about as much as"  # within 10 %
    with pytest.raises(ValueError, match="positive whole"):
        deploy.amount_word(0.2, 0.0)


@pytest.mark.skipif(deploy.conv_call_overhead(calls=1) is None, reason="this PyTorch has no oneDNN INT8 convolution (not x86, or no oneDNN)")
def test_conv_call_overhead_splits_a_call_into_kernel_python_and_the_rest():
    o = deploy.conv_call_overhead(calls=50, channels=32, size=4, rounds=3)
    assert o["call_us"] > o["kernel_us"] > 0 and o["dispatch_us"] > 0, o
    assert o["overhead_us"] == pytest.approx(o["call_us"] - o["kernel_us"] - o["dispatch_us"])
    assert o["kernel"] and o["shape"] == "32->32 channels, 3x3, 4x4 image, batch 1" and (o["calls"], o["rounds"]) == (50, 3)
    assert o["spread"] >= 1.0
    os.write(1, b"")  # fd 1 given back (the verbose lines were captured)
    for bad in ({"calls": 0}, {"channels": 0}, {"size": 2.5}, {"rounds": 0}):
        with pytest.raises(ValueError):
            deploy.conv_call_overhead(**bad)


def test_timing_summary_and_speedup(monkeypatch):
    s = deploy.summarize([4.0, 5.0, 5.0, 6.0, 20.0])
    assert s["median_ms"] == 5.0 and s["min_ms"] == 4.0 and not s["noisy"]
    assert deploy.speedup(s, deploy.summarize([10.0, 10.0])) == 2.0
    assert deploy.speedup(s, deploy.summarize([1.0, 10.0, 10.0])) is None  # the baseline is noisy
    calls = []
    deploy.time_interleaved({"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")}, None, repeats=2, warmup=0, settle=0,
                          settle_ms=0)
    assert calls == ["a", "b", "b", "a"]
    # by default each timed call follows an untimed call of the same runner, never another runtime's call
    calls.clear()
    times = deploy.time_interleaved({"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")}, None, repeats=2, warmup=0,
                                    settle_ms=0)
    assert calls == ["a", "a", "b", "b", "b", "b", "a", "a"] and {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}
    for bad in (dict(settle=-1), dict(settle=True), dict(warmup=1.5)):
        with pytest.raises(ValueError, match="settle >= 0"):
            deploy.time_interleaved({"a": lambda x: None}, None, repeats=1, **bad)
    for bad in (-1, True, "20", 1e6):
        with pytest.raises(ValueError, match=r"settle_ms must be a number of milliseconds in \[0, 10000\)"):
            deploy.time_interleaved({"a": lambda x: None}, None, repeats=1, settle_ms=bad)
    # settle calls go on until settle_ms have passed: with a fake clock that advances 4 ms per call, 20 ms is 5 calls
    clock = {"t": 0.0}
    monkeypatch.setattr(deploy.timing.time, "perf_counter", lambda: clock["t"])
    def tick(x):
        clock["t"] += 0.004
        calls.append("c")
    calls.clear()
    times = deploy.time_interleaved({"c": tick}, None, repeats=2, warmup=0, settle_ms=20.0)
    assert len(calls) == 2 * (5 + 1) and times["c"] == pytest.approx([4.0, 4.0])


# --------------------------------------------------------------------------- ONNX export
@needs_ort
def test_export_runs_in_onnx_runtime_at_any_batch(small, exported, tmp_path):
    m, _, x, ref = small
    assert exported["exporter"] in ("dynamo", "torchscript")
    assert (exported["fallback_reason"] is None) == (exported["exporter"] == "dynamo")
    assert exported["size_mb"] == pytest.approx(rq.model_size_mb(m), rel=0.02)  # weights inside the one file
    sess = deploy.OrtModel(exported["path"], threads=1)
    assert torch.allclose(sess(x), ref, atol=1e-4) and torch.allclose(sess(x[:1]), ref[:1], atol=1e-4)
    old = deploy.export_onnx(m, x[:1], tmp_path / "ts.onnx", dynamo=False)
    assert old["exporter"] == "torchscript"
    assert torch.allclose(deploy.OrtModel(old["path"])(x[:3]), ref[:3], atol=1e-4)
    with pytest.raises(ValueError, match=r"example must be an input batch of shape \(N, 3, H, W\)"):
        deploy.export_onnx(m, torch.zeros(3, 32, 32), tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="export_onnx needs an nn.Module"):
        deploy.export_onnx("resnet18", x, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        deploy.OrtModel(exported["path"], threads=0)
    # the pool stops spinning when a run ends (so the next runtime timed in this process gets the cores)
    assert sess.options.get_session_config_entry("session.force_spinning_stop") == "1" and not sess.spin_after_run
    spinning = deploy.OrtModel(exported["path"], threads=1, spin_after_run=True)
    with pytest.raises(RuntimeError, match="does not have configuration with key: session.force_spinning_stop"):
        spinning.options.get_session_config_entry("session.force_spinning_stop")  # ONNX Runtime's default: spin on


# --------------------------------------------------------------------------- ONNX Runtime static INT8
@needs_ort
@pytest.mark.parametrize("activations", ["u8", "s8"])
def test_ort_static_quantization_is_qdq_per_channel(small, exported, tmp_path, activations):
    import onnx
    from onnx import numpy_helper

    m, cal, x, ref = small
    q = deploy.quantize_onnx(exported["path"], tmp_path / f"{activations}.onnx", cal, activations=activations)
    f = deploy.cpu_features()
    assert q["reduce_range"] == (f["arch"] == "x86_64" and not (f["avx512_vnni"] or f["avx_vnni"]))  # S8S8 too: see quantize_onnx
    model = onnx.load(q["path"])
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = model.graph.node
    assert sum(n.op_type == "Conv" for n in nodes) == sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    qs = [n for n in nodes if n.op_type == "QuantizeLinear"]
    assert qs, "no QuantizeLinear: not the QDQ format"
    act_dtypes = {str(init[n.input[2]].dtype) for n in qs if len(n.input) > 2 and n.input[2] in init}
    assert act_dtypes == {"uint8" if activations == "u8" else "int8"}
    # the conv weights: int8 constants with one scale per output channel
    conv_inputs = {n.input[1] for n in nodes if n.op_type == "Conv"}
    weight_dq = [n for n in nodes if n.op_type == "DequantizeLinear" and n.output[0] in conv_inputs]
    assert len(weight_dq) == len(conv_inputs)
    for n in weight_dq:
        w, scale = init[n.input[0]], init[n.input[1]]
        assert str(w.dtype) == "int8" and scale.shape == (w.shape[0],)
    assert 0.2 < q["size_mb"] / exported["size_mb"] < 0.3  # int8 weights: a quarter of the file
    summary = deploy.qdq_summary(q["path"])
    assert summary["per_channel_convs"] == summary["Conv"] == len(conv_inputs)
    assert summary["activation_dtype"] == ("uint8" if activations == "u8" else "int8")
    assert summary["QuantizeLinear"] == len(qs) and deploy.qdq_summary(exported["path"])["QuantizeLinear"] == 0
    out = deploy.OrtModel(q["path"], threads=1)(x)
    assert _agree(ref, out) >= 0.75 and rq.sqnr_db(ref, out) > 12
    with pytest.raises(ValueError, match=r"activations must be one of \('u8', 's8'\)"):
        deploy.quantize_onnx(exported["path"], tmp_path / "x.onnx", cal, activations="u4")
    with pytest.raises(ValueError, match="non-empty list"):
        deploy.quantize_onnx(exported["path"], tmp_path / "x.onnx", [])


def test_mlas_isa_follows_mlas_dispatch_rules_on_synthetic_cpus():
    base = {"arch": "x86_64", "avx2": False, "avx512": False, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
    cpu = lambda **k: deploy.mlas_isa(dict(base, **k))  # noqa: E731
    assert cpu() == {"arch": "x86_64", "qgemm_u8s8": "sse", "conv_sym_u8s8": None, "fp32_conv": "sse", "s8s8_fused": False}
    assert (cpu(avx2=True)["qgemm_u8s8"], cpu(avx2=True)["fp32_conv"]) == ("avx2", "fma3")
    assert cpu(avx2=True, avx_vnni=True)["conv_sym_u8s8"] == "avx_vnni"  # Alder Lake, Zen 5 client
    # AVX-512 core overrides AVX-VNNI, AVX512-VNNI overrides both (platform.cpp tests them in this order)
    assert cpu(avx2=True, avx_vnni=True, avx512=True)["qgemm_u8s8"] == "avx512_core"
    skylake = cpu(avx2=True, avx512=True)
    assert (skylake["qgemm_u8s8"], skylake["conv_sym_u8s8"], skylake["fp32_conv"]) == ("avx512_core", "avx512_core", "avx512f")
    zen4 = cpu(avx2=True, avx512=True, avx512_vnni=True)
    assert zen4["qgemm_u8s8"] == zen4["conv_sym_u8s8"] == "avx512_vnni"
    spr = cpu(avx2=True, avx512=True, avx512_vnni=True, avx_vnni=True, amx_int8=True)
    assert (spr["qgemm_u8s8"], spr["conv_sym_u8s8"]) == ("amx", "avx512_vnni")  # AMX for QGEMM only, no AMX ConvSym
    assert cpu(amx_int8=True)["qgemm_u8s8"] == "sse"  # AMX is tested inside the AVX2 branch
    assert deploy.mlas_isa({"arch": "arm64"})["s8s8_fused"] is True and deploy.mlas_isa({"arch": "arm64"})["qgemm_u8s8"] == "neon"
    here = deploy.mlas_isa()
    f = deploy.cpu_features()
    if f["arch"] == "x86_64":
        assert here == deploy.mlas_isa(f) and (here["qgemm_u8s8"] == "amx") == (f["amx_int8"] and f["avx2"])


def test_ort_kernel_names_what_the_optimized_graph_runs():
    spr = {"arch": "x86_64", "avx2": True, "avx512": True, "avx512_vnni": True, "avx_vnni": True, "amx_int8": True}
    k = deploy.ort_kernel({"QLinearConv": 20, "QLinearConv:uint8": 20, "QuantizeLinear": 2, "DequantizeLinear": 2}, spr, "1.0")
    assert k["engine"] == "onnxruntime 1.0" and k["library"] == "MLAS" and k["isa"] == "avx512_vnni"
    assert k["label"].startswith("20 QLinearConv U8S8: MLAS (ConvSym AVX512-VNNI, QGEMM AMX)") and "dispatch rules" in k["label"]
    mixed = deploy.ort_kernel({"QLinearConv": 9, "QLinearConv:uint8": 9, "Conv": 11, "QuantizeLinear": 22}, spr)
    assert mixed["isa"] == "avx512_vnni+avx512f" and "11 FP32 Conv between Q/DQ: MLAS FP32 conv (AVX-512F)" in mixed["label"]
    fp32 = deploy.ort_kernel({"com.microsoft.nchwc.Conv": 20, "Gemm": 1}, dict(spr, avx512=False, avx512_vnni=False, amx_int8=False))
    assert fp32["isa"] == "fma3" and fp32["label"].startswith("20 FP32 Conv: MLAS FP32 conv (AVX2/FMA3)")
    assert deploy.ort_kernel({}, spr)["isa"] == "none"


@needs_ort
def test_ort_model_records_what_its_optimizer_fused(small, exported, tmp_path):
    m, cal, _, _ = small
    n_conv = sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    fp32 = deploy.OrtModel(exported["path"], threads=1)
    assert fp32.optimized_ops.get("QLinearConv", 0) == 0
    assert sum(fp32.optimized_ops.get(k, 0) for k in ("Conv", "FusedConv", "com.microsoft.nchwc.Conv")) == n_conv
    isa = deploy.mlas_isa()
    for act in ("u8", "s8"):
        q = deploy.quantize_onnx(exported["path"], tmp_path / f"{act}.onnx", cal, activations=act)
        ops = deploy.OrtModel(q["path"], threads=1, label=act.upper() + "S8").optimized_ops
        fused, signed = ops.get("QLinearConv", 0), ops.get("QLinearConv:int8", 0)
        left = sum(ops.get(k, 0) for k in ("Conv", "FusedConv", "com.microsoft.nchwc.Conv"))
        assert fused + left == n_conv and ops.get("QLinearConv:uint8", 0) + signed == fused
        if act == "u8":
            assert fused == n_conv and signed == 0  # every U8S8 conv becomes one integer convolution
        elif not isa["s8s8_fused"]:  # x86: signed QDQ is not fused (QDQIsInt8Allowed() is false off ARM) ...
            assert left >= 1 and signed == 0  # ... except where ONNX Runtime rewrote a pair to unsigned first
        runner = deploy.OrtModel(q["path"], threads=1)
        assert runner.kernel["isa"].split("+")[0] == (isa["conv_sym_u8s8"] or isa["qgemm_u8s8"] if fused - signed else isa["fp32_conv"])


# --------------------------------------------------------------------------- OpenVINO, NNCF, BF16
@needs_ov
def test_openvino_default_precision_follows_the_cpu(small, exported):
    _, _, x, ref = small
    native = deploy.bf16_support()["native"]
    default = deploy.OpenVINOModel(exported["path"], threads=1)
    if deploy.cpu_features()["arch"] == "x86_64":
        assert default.precision_used == ("bf16" if native else "f32")
        assert deploy.default_precision() == default.precision_used
    f32 = deploy.OpenVINOModel(exported["path"], threads=1, precision="f32")
    assert f32.precision_used == "f32" and {p for (_, p) in f32.primitives} == {"f32"}
    assert rq.sqnr_db(ref, f32(x)) > 60  # FP32 in, FP32 out: only rounding differs
    if default.precision_used == "bf16":
        assert {p for (_, p) in default.primitives} == {"bf16"}
        assert 20 < rq.sqnr_db(ref, default(x)) < 70 and _agree(ref, default(x)) >= 0.9
    with pytest.raises(ValueError, match="precision must be one of"):
        deploy.OpenVINOModel(exported["path"], precision="int4")


@needs_ov
def test_nncf_int8_runs_int8_convolutions(small, exported, tmp_path):
    m, cal, x, ref = small
    q = deploy.quantize_nncf(exported["path"], tmp_path / "int8.xml", cal)
    ov = deploy.OpenVINOModel(q["path"], threads=1)
    n_conv = sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    assert sum(ov.primitives.values()) == n_conv
    assert {p for (_, p) in ov.primitives} <= {"u8", "i8"}, ov.primitives  # every conv runs in INT8
    assert 0.2 < q["size_mb"] / exported["size_mb"] < 0.3
    assert _agree(ref, ov(x)) >= 0.75 and rq.sqnr_db(ref, ov(x)) > 12
    with pytest.raises(ValueError, match="must be an OpenVINO .xml path"):
        deploy.quantize_nncf(exported["path"], tmp_path / "int8.bin", cal)


# --------------------------------------------------------------------------- one pass split: convolutions and the rest
_VERBOSE = [
    "onednn_verbose,v1,info,oneDNN v3.7.1 (commit x)",
    "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core_vnni,forward_inference,src:u8,,0.5",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_vnni,forward_inference,src:u8::blocked:acdb,,mb1_ic64oc64,0.25",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_vnni,forward_inference,src:u8,,mb1_ic64oc128,0.125",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_vnni,forward_inference,src:u8,,1x512:512x10,0.5",
    "some other line",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_vnni,forward_inference,src:u8,,mb1,not-a-number",
]


def test_onednn_verbose_is_summed_per_pass():
    t = deploy.parse_onednn_verbose(_VERBOSE * 2, passes=2)
    assert t["n_conv"] == 2 and t["conv_ms"] == 0.375 and t["other_ms"] == 0.5
    assert t["primitives"]["convolution brg_conv_fwd:avx512_core_vnni"] == [1, 0.25]
    assert list(t["primitives"])[0] == "matmul brg_matmul:avx512_core_vnni"  # the most time first
    assert deploy.parse_onednn_verbose([], passes=1) == {"conv_ms": 0, "n_conv": 0, "other_ms": 0, "primitives": {}}
    with pytest.raises(ValueError, match="passes must be an integer >= 1"):
        deploy.parse_onednn_verbose(_VERBOSE, passes=0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN (mkldnn)")
def test_onednn_times_counts_every_convolution_of_a_pass(small):
    m = small[0]
    n_conv = sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    x = torch.randn(2, 3, 32, 32)
    m(x)
    t = deploy.onednn_times(m, x, passes=3)
    assert t["n_conv"] == n_conv and t["conv_ms"] > 0, t
    assert all(k.split(" ")[0] in ("convolution", "reorder", "matmul", "inner_product", "pooling", "eltwise", "binary", "sum", "reduction",
                                   "batch_normalization", "softmax") for k in t["primitives"]), t["primitives"]


def test_onednn_times_gives_fd_1_back(small, capfd):
    m = small[0]
    x = torch.randn(1, 3, 32, 32)
    m(x)
    capfd.readouterr()
    deploy.onednn_times(m, x, passes=1)
    assert "onednn_verbose" not in capfd.readouterr().out  # the verbose lines went to the capture, not the page
    os.write(1, b"fd 1 restored\n")
    assert capfd.readouterr().out == "fd 1 restored\n"


def test_torch_op_times_counts_the_operators_of_a_pass(small):
    m = small[0]
    n_conv = sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    n_relu_calls = 1 + 2 * sum(type(mod).__name__ == "BasicBlock" for mod in m.modules())  # the stem's and two per block
    t = deploy.torch_op_times(m, torch.randn(2, 3, 32, 32), passes=3)
    assert t["ops"]["aten::convolution"][0] == n_conv and t["ops"]["aten::relu_"][0] == n_relu_calls, t["ops"]
    assert all("::" in k for k in t["ops"]) and t["ms"] == pytest.approx(sum(v[1] for v in t["ops"].values()))
    assert [v[1] for v in t["ops"].values()] == sorted((v[1] for v in t["ops"].values()), reverse=True)
    with pytest.raises(ValueError, match="passes must be an integer >= 1"):
        deploy.torch_op_times(m, torch.randn(2, 3, 32, 32), passes=0)


def test_torch_op_times_keeps_the_profilers_log_off_the_page(small, capfd):
    """The profiler's C++ side logs every start/stop to fd 2 (a red stderr box in the book); other output passes through."""
    from resnet_edu.deploy.profile import KINETO_LOG

    assert KINETO_LOG.match("USDT:2026-12-06 00:04:44 26307:26307 SyncActivityProfilerHandler.cpp:39] profiler_start")
    assert KINETO_LOG.match("ERROR:2026-12-06 00:04:44 26307:26307 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35")
    assert not KINETO_LOG.match("UserWarning: something the reader should see") and not KINETO_LOG.match("ERROR: a real error")
    m = small[0]

    def fn(x):
        os.write(2, b"printed by the callable itself\n")
        return m(x)

    capfd.readouterr()
    deploy.torch_op_times(fn, torch.randn(2, 3, 32, 32), passes=2)
    out, err = capfd.readouterr()
    assert "printed by the callable itself" in err  # passed through, once per call (1 untimed + 2 profiled)
    assert err.count("printed by the callable itself") == 3
    assert not [line for line in err.splitlines() if KINETO_LOG.match(line)], err
    os.write(2, b"fd 2 restored\n")
    assert "fd 2 restored" in capfd.readouterr().err


@needs_ov
def test_openvino_times_counts_every_convolution_of_a_pass(small, exported, tmp_path):
    m, cal, x, _ = small
    q = deploy.quantize_nncf(exported["path"], tmp_path / "int8.xml", cal)
    t = deploy.openvino_times(q["path"], x[:2], threads=1, passes=2)
    assert t["n_conv"] == sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules()) and t["conv_ms"] > 0, t
    with pytest.raises(ValueError, match="passes must be an integer >= 1"):
        deploy.openvino_times(q["path"], x[:2], passes=0)


def test_bf16_autocast_rounds_to_bf16(small):
    m, _, x, ref = small
    out = deploy.Bf16Autocast(m)(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 20 < rq.sqnr_db(ref, out) < 70  # an 8-bit mantissa: far from FP32's exactness, far from INT8's error
    assert _agree(ref, out) >= 0.9


def test_compile_frozen_channels_last_matches_eager(small):
    m, _, x, ref = small
    runner = deploy.compile_frozen(m, channels_last=True)
    assert torch.allclose(runner(x), ref, atol=1e-3)
    assert runner.kernel["engine"].startswith("torch")
    with pytest.raises(ValueError, match="compile_frozen needs an nn.Module"):
        deploy.compile_frozen(lambda t: t)


def test_compile_frozen_does_not_reuse_a_plain_compile_of_the_same_class(small):
    """dynamo keeps graphs per code object: with the same backend, a frozen model would run a plain compile's graph."""
    import copy

    from torch._dynamo.utils import counters

    m, _, x, ref = small
    plain = torch.compile(copy.deepcopy(m))
    with torch.no_grad():
        plain(x)
        before = counters["stats"]["unique_graphs"]
        got = deploy.compile_frozen(m)(x)
    assert counters["stats"]["unique_graphs"] > before  # a graph of its own, compiled with freezing
    assert torch.allclose(got, ref, atol=1e-3)


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
def test_pt2e_tuned_is_the_pt2e_model_with_faster_compile_settings(small):
    import torch._inductor.config as inductor_config

    m, cal, x, ref = small
    tuned = deploy.quantize_pt2e_tuned(m, cal)
    assert isinstance(tuned, deploy.ChannelsLast) and tuned.settings == {**deploy.TUNED_SETTINGS}
    frozen = tuned.model.model  # ChannelsLast -> QuantizedRunner -> FrozenInductorModule
    assert frozen.options == {"cpp_wrapper": True}
    converted = rq.quantize_pt2e(m, cal, compile=False, progress=False)
    with torch.no_grad():
        want = converted(x)
        got = tuned(x)
        assert rq.sqnr_db(want, got) > 25 and _agree(want, got) >= 0.9  # the same INT8 model, fused kernels
        assert tuned(x[:3]).shape == (3, 10)  # a new shape: one more static graph
    assert inductor_config.cpp_wrapper is False and inductor_config.freezing is False  # patched per call only
    assert _agree(ref, got) >= 0.75 and "C++ wrapper" in tuned.kernel["label"]
    assert 0 < tuned.size_mb < rq.model_size_mb(m) / 3
    assert "int8-pt2e-tuned" in deploy.deploy_flows()
    with pytest.raises(ValueError, match="always freezes"):
        rq.FrozenInductorModule(torch.nn.Identity(), {"freezing": False})


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
def test_aot_compile_pt2e_runs_the_converted_graph_from_a_library(small, tmp_path):
    """AOTInductor: one package per input shape on disk, the same INT8 model as the converted graph."""
    from torch._dynamo.utils import counters

    m, cal, x, ref = small
    converted = rq.quantize_pt2e(m, cal, compile=False, progress=False)
    before = counters["stats"]["unique_graphs"]
    aot = deploy.aot_compile_pt2e(converted, [x, x[:1], x.clone()], directory=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.pt2")) == ["pt2e_16x3x32x32.pt2", "pt2e_1x3x32x32.pt2"]  # one per shape
    assert counters["stats"]["unique_graphs"] == before  # nothing went through dynamo
    with torch.no_grad():
        want = converted(x)
        got = aot(x)
        assert rq.sqnr_db(want, got) > 25 and _agree(want, got) >= 0.9
        assert torch.equal(aot(x[:1]), got[:1]) or rq.sqnr_db(got[:1], aot(x[:1])) > 40  # the batch-1 library, same model
    assert _agree(ref, got) >= 0.75 and "AOTInductor" in aot.kernel["label"]
    assert aot.settings == {"aot": True, "shapes": [(16, 3, 32, 32), (1, 3, 32, 32)]}
    assert 0 < aot.size_mb < rq.model_size_mb(m) / 3
    with torch.no_grad():
        assert rq.sqnr_db(got[:3], aot(x[:3])) > 40  # a new shape: one more library, compiled on first sight
    assert len(list(tmp_path.glob("*.pt2"))) == 3 and (3, 3, 32, 32) in aot.packages
    with pytest.raises(ValueError, match="aot_compile_pt2e needs a converted PT2E graph"):
        deploy.aot_compile_pt2e(m, [x])
    for bad in ([], [x[0]]):
        with pytest.raises(ValueError, match="at least one example input, each a 4-d image batch tensor"):
            deploy.aot_compile_pt2e(converted, bad)
    with pytest.raises(ValueError, match=r"needs a 4-d image batch tensor \(N, C, H, W\), got \(3, 32, 32\)"):
        aot(x[0])
    assert "int8-pt2e-aoti" in deploy.deploy_flows()


@pytest.mark.parametrize("engine", [e for e in ("x86", "qnnpack", "onednn", "fbgemm") if e in torch.backends.quantized.supported_engines])
def test_trace_frozen_gives_the_eager_models_bits(small, engine):
    """TorchScript runs the eager model's own quantized operators: the same integers, at any batch size,
    under the engine the model was converted for whatever engine is current."""
    m, cal, x, _ = small
    runner = rq.QuantizedRunner(rq.quantize_ptq(m, cal, backend=engine, progress=False), engine=engine)
    traced = deploy.trace_frozen(runner, x[:1])
    other = next((e for e in torch.backends.quantized.supported_engines if e not in (engine, "none")), engine)
    torch.backends.quantized.engine = other
    got = traced(x)
    assert torch.backends.quantized.engine == engine  # pinned, as QuantizedRunner does
    assert torch.equal(got, runner(x)) and torch.equal(traced(x[:3]), runner(x[:3]))  # traced at batch 1, run at 16 and 3
    assert traced.engine == engine and traced.size_mb == rq.model_size_mb(runner.model)
    assert traced.kernel["label"].endswith("TorchScript (traced, frozen)") and traced.kernel["library"] == kernels.conv_kernel(engine)["library"]
    assert all("deprecated" in w and "torch.jit" in w for w in traced.settings["deprecation"])  # only torch.jit's own warnings


def test_trace_frozen_refuses_what_it_cannot_trace(small):
    m, cal, x, _ = small
    with pytest.raises(ValueError, match="needs an eager INT8 model after convert"):
        deploy.trace_frozen(m, x[:1])
    q = rq.quantize_ptq(m, cal, progress=False)
    with pytest.raises(ValueError, match=r"needs a 4-d image batch tensor \(N, C, H, W\) as example, got \(3, 32, 32\)"):
        deploy.trace_frozen(q, x[0])
    with pytest.raises(ValueError, match="unknown or unsupported quantization backend 'tpu'; accepted here"):
        deploy.trace_frozen(q, x[:1], engine="tpu")
    traced = deploy.trace_frozen(q, x[:1])
    with pytest.raises(ValueError, match=r"needs a 4-d image batch tensor \(N, C, H, W\), got \(3, 32, 32\)"):
        traced(x[0])
    assert "int8-eager-jit" in deploy.deploy_flows() and "TorchScript" in deploy.FLOW_LABELS["int8-eager-jit"]


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
def test_aot_packages_and_inductor_cache_do_not_pile_up_in_tmp(small, monkeypatch, tmp_path):
    """Without ``directory`` the packages go to a temporary folder that is removed at exit; TorchInductor's
    cache lives in the checkout (Makefile, conftest), not in the shared /tmp/torchinductor_$USER."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from resnet_edu.deploy import torch_paths

    cpu_key = runpy.run_path(str(ROOT / ".ci" / "cpu_key.py"))["cpu_key"]()
    assert Path(cache_dir()).resolve() == (ROOT / ".cache" / "inductor" / cpu_key).resolve()
    makefile = (ROOT / "Makefile").read_text()
    assert "export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor/$(shell $(PYTHON) .ci/cpu_key.py)" in makefile
    assert 'TORCHINDUCTOR_CACHE_DIR="$root/.cache/inductor/$(python3 "$root/.ci/cpu_key.py" "$work/cpuinfo")"' in (ROOT / ".ci" / "emulate-avx2").read_text()
    registered = []  # what asks to remove a folder at exit (torch registers its own handlers too)
    monkeypatch.setattr(torch_paths.atexit, "register", lambda *a: registered.append(a) if a[0] is torch_paths.shutil.rmtree else None)

    class Runner:  # no compiling: this test is about where the files go
        def __init__(self, converted, folder):
            self.folder, self.packages = folder, {}

        def compile_for(self, x):
            self.packages[tuple(x.shape)] = self.folder / "p.pt2"

    monkeypatch.setattr(torch_paths, "AOTInductorRunner", Runner)
    m, cal, x, _ = small
    converted = rq.quantize_pt2e(m, cal, compile=False, progress=False)
    default = deploy.aot_compile_pt2e(converted, [x])
    assert registered == [(torch_paths.shutil.rmtree, default.folder, True)] and default.folder.name.startswith("resnet_edu_aoti_")
    deploy.aot_compile_pt2e(converted, [x], directory=tmp_path)
    assert len(registered) == 1  # a folder the caller chose is the caller's to keep
    default.folder.rmdir()


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
def test_compile_pt2e_compiles_copies_of_one_conversion(small):
    m, cal, x, _ = small
    converted = rq.quantize_pt2e(m, cal, compile=False, progress=False)
    default = deploy.compile_pt2e(converted)
    static = deploy.compile_pt2e(converted, static_shapes=True)
    graphs = [r.model.compiled._orig_mod for r in (default, static)]  # QuantizedRunner -> FrozenInductorModule -> torch.compile
    assert graphs[0] is not converted and graphs[1] is not converted and graphs[0] is not graphs[1]
    with torch.no_grad():
        want = converted(x)
        for r in (default, static):
            got = r(x)
            assert rq.sqnr_db(want, got) > 25 and _agree(want, got) >= 0.9
    assert default.settings == {"static_shapes": False, "cpp_wrapper": False, "channels_last": False, "max_autotune": False}
    assert default.model.options == {} and "(frozen)" in default.kernel["label"]
    assert "static shapes" in static.kernel["label"] and 0 < static.size_mb < rq.model_size_mb(m) / 3
    with pytest.raises(ValueError, match="compile_pt2e needs a converted PT2E graph"):
        deploy.compile_pt2e(m)


# --------------------------------------------------------------------------- the flows on the trained digits model
@needs_ov
def test_every_deployment_path_keeps_the_digits_accuracy():
    """Chapter 10's claim: on the trained digits model every path stays within 1 point of FP32's accuracy."""
    from resnet_edu.data import calibration_batches
    from resnet_edu.training import digits_loaders_for, get_digits_model

    model, meta = get_digits_model(progress=False)
    train_loader, test_loader = digits_loaders_for(meta)
    cal = calibration_batches(train_loader, 4)
    x = torch.cat([b for b, _ in test_loader])
    y = torch.cat([t for _, t in test_loader])
    with torch.no_grad():
        ref = model(x)
    fp32_acc = (ref.argmax(1) == y).float().mean().item()
    flows = deploy.deploy_flows()
    assert {"ort-int8-s8s8", "ort-int8-u8s8", "ov-int8-nncf", "ov-default", "bf16-autocast"} <= set(flows)
    fused = "onednn" in kernels.quantized_engines()   # the fused-add flow needs oneDNN's quantized::conv2d_add_relu
    assert ("int8-eager-jit-fused" in flows) == fused
    for name in ("ort-int8-s8s8", "ort-int8-u8s8", "ov-int8-nncf", "ov-default", "bf16-autocast", "int8-eager-jit") + (("int8-eager-jit-fused",) if fused else ()):
        runner = flows[name](model, cal)
        out = runner(x)
        acc = (out.argmax(1) == y).float().mean().item()
        assert 100 * (fp32_acc - acc) <= 1.0, (name, acc, fp32_acc)
        assert _agree(ref, out) >= 0.98, name
        assert isinstance(runner.size_mb, float) and set(runner.kernel) >= {"engine", "library", "isa", "label"}


# --------------------------------------------------------------------------- kernel families in subprocesses
def test_families_this_machine_can_run():
    every = deploy.vnni_families(distinct=False)
    assert every and set(every) <= set(deploy.VNNI_FAMILIES) and set(every) <= set(kernels.available_families())
    assert every[0] == "default"
    f = deploy.cpu_features()
    if f["arch"] == "x86_64" and f["avx2"]:
        assert "fbgemm-avx2" in every
    assert ("onednn-avx512-vnni" in every) == bool(f["avx512_vnni"])
    # distinct (the default): one family per convolution kernel, the first of each in VNNI_FAMILIES' order
    names = deploy.vnni_families()
    conv = {n: kernels.family_kernels(n)["conv"] for n in every}
    assert names[0] == "default" and [n for n in every if n in names] == names
    assert len({conv[n] for n in names}) == len(names) and {conv[n] for n in names} == set(conv.values())
    for n in set(every) - set(names):  # left out only because an earlier family runs the same kernel
        assert any(conv[m] == conv[n] for m in names[: [x for x in every if x in names or x == n].index(n)])
    if f["avx512_vnni"] and not f["amx_int8"]:  # oneDNN's VNNI kernel is already the default here
        assert "onednn-avx512-vnni" not in names
    if f["avx2"] and f["arch"] == "x86_64":
        if f["avx512"]:  # fbgemm's AVX2 kernel is nobody else's
            assert "fbgemm-avx2" in names
        else:  # an AVX2-only CPU runs fbgemm's AVX2 kernel by default: one family (found under .ci/emulate-avx2)
            assert names == ["default"] and conv["fbgemm-avx2"] == conv["default"]
    spec = deploy.family_spec("fbgemm-avx2")
    assert spec["engine"] == "fbgemm" and spec["env"] == {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    assert spec["environ"]["FBGEMM_ENABLE_INSTRUCTIONS"] == "AVX2"
    with pytest.raises(ValueError, match="unknown kernel family 'avx9000'"):
        deploy.family_spec("avx9000")


def test_a_family_is_timed_in_its_own_process():
    name = "fbgemm-avx2" if "fbgemm-avx2" in deploy.vnni_families() else deploy.vnni_families()[0]
    r = deploy.time_family(name, size=32, batches=(1, 2), repeats=2, threads=1)
    assert "error" not in r, r.get("error")
    assert [row["batch"] for row in r["rows"]] == [1, 2] and all(row["median_ms"] > 0 and row["repeats"] == 2 for row in r["rows"])
    spec = deploy.family_spec(name)
    assert r["kernel"] == kernels.conv_kernel(spec["engine"], env=spec["environ"])
    if name == "fbgemm-avx2":
        assert r["kernel"]["isa"] == "avx2" and r["kernel"]["library"] == "fbgemm"


def test_families_are_timed_in_lockstep():
    """Chapter 10's families take turns, one timed call each per round, the first rotating: never two at once, never one
    family's rounds all before another's (timed one after the other, a busy minute once made the VNNI kernel look slower)."""
    names = list(dict.fromkeys(deploy.vnni_families() + kernels.available_families()))[:2]   # chapter 10's first two, or any two
    res = deploy.time_families(names, size=32, batches=(1, 2), repeats=3, threads=1)
    assert [r["family"] for r in res] == names and not any("error" in r for r in res), res
    for b in (1, 2):
        turns = sorted((t[0], t[1], r["family"]) for r in res for row in r["rows"] if row["batch"] == b for t in row["turns"])
        assert len(turns) == 6 and all(a[1] <= z[0] for a, z in zip(turns, turns[1:]))   # one worker at a time
        rounds = [[f for _, _, f in turns[i:i + 2]] for i in range(0, 6, 2)]
        assert all(sorted(r) == sorted(names) for r in rounds)   # every family once per round
        assert [r[0] for r in rounds] == [names[0], names[1], names[0]]   # the first turn rotates


def test_a_failed_family_is_reported_and_the_others_go_on(monkeypatch):
    spec, other = deploy.family_spec, [f for f in kernels.available_families() if f != "default"][0]

    def broken(name):  # the second family's worker is sent an engine PyTorch does not have
        return {**spec(name), "engine": "no-such-engine"} if name == other else spec(name)

    monkeypatch.setattr(deploy.families, "family_spec", broken)
    ok, bad = deploy.time_families(["default", other], size=32, batches=(1,), repeats=2, threads=1)
    assert "error" not in ok and ok["rows"][0]["repeats"] == 2
    assert "rows" not in bad and "no-such-engine" in bad["error"], bad
    slow = deploy.time_family("default", size=32, batches=(1,), repeats=1, threads=1, timeout=0.01)  # no model builds in 10 ms
    assert slow["error"] == "no answer in 0.01 s" and "rows" not in slow
    with pytest.raises(ValueError, match="unknown kernel family 'avx9000'"):
        deploy.time_families(["default", "avx9000"])
    with pytest.raises(ValueError, match="each family once"):
        deploy.time_families(["default", "default"])
    with pytest.raises(ValueError, match="unknown arch 'resnet9000'"):
        deploy.time_family("default", arch="resnet9000")
    with pytest.raises(ValueError, match="batches .* must be integers >= 1"):
        deploy.time_family("default", batches=(0,))


# --------------------------------------------------------------------------- the chapter's claims, for the branch that ran
CHAPTER = "notebooks/10_deployment"


GLUE_TEXTS: dict | None = None
"""Chapter 10's glued texts from a run elsewhere (``tests/test_chapters_forced_engine.py`` executes it on an emulated
AVX2-only CPU and checks it with ``CHAPTER_CHECKS``); None: the built book's."""


def _glued(name: str):
    if GLUE_TEXTS is not None:
        text = GLUE_TEXTS[name]
    else:
        path = ROOT / "_build" / "jupyter_execute" / f"{CHAPTER}.glue.json"
        text = json.loads(path.read_text(encoding="utf-8"))[name]["data"]["text/plain"]
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return text.strip("'\"")


def _chapter_rows():
    """The chapter's timed rows (every path, batch 1 and 8, and the static-shapes step) as glued by it."""
    return {(r["flow"], r["batch"]): r for r in _glued("ch10_rows")}


def test_chapter_rounds_follow_its_budget(built_book):
    """Every row of a batch size got the rounds the page names, at least its minimum; batch 1's rounds are cheaper, so never fewer."""
    rows = _chapter_rows()
    least = int(_glued("ch10_repeats"))
    for b in (1, 8):
        rounds = {r["repeats"] for (f, batch), r in rows.items() if batch == b}
        assert rounds == {int(_glued(f"ch10_rounds_b{b}"))} and least <= rounds.pop() <= deploy.MAX_ROUNDS, b
    assert int(_glued("ch10_rounds_b1")) >= int(_glued("ch10_rounds_b8"))


def test_chapter_words_follow_its_measurements(built_book):
    claims = _glued("ch10_claims")
    assert len(claims) >= 5
    for c in claims:
        assert deploy.check_claim(c) is None, deploy.check_claim(c)
        if c["name"] == "vnni":  # this word sits inside a glued sentence
            assert f" {c['word']} " in _glued("ch10_vnni_sentence")
        else:
            assert _glued(f"ch10_word_{c['name']}") == c["word"]
        if c["noisy"]:  # a noisy comparison never shows a ratio
            assert c["word"] == "not reliably comparable with"
            if c["name"].startswith("split_rest_"):  # noisy rows, or a rest within the timing noise
                assert _glued(f"ch10_x_{c['name']}") in ("no ratio: a row was noisy", "no ratio: the rest is within the timing noise")
            elif c["name"] not in ("vnni", "best_pytorch_vs_reference"):
                assert _glued(f"ch10_x_{c['name']}") == "no ratio: a row was noisy"
        elif c["name"] not in ("vnni", "best_pytorch_vs_reference"):  # the ratio printed beside the word
            assert _glued(f"ch10_x_{c['name']}") == f"{c['b_ms'] / c['a_ms']:.2f}x"


def test_chapter_call_overhead_sentence_is_this_machines_branch(built_book):
    """The per-call cost around oneDNN's kernel, summed over ResNet-18's convolutions, set against the rest gap it may explain."""
    o, sentence = _glued("ch10_overhead"), _glued("ch10_overhead_sentence")
    if deploy.conv_call_overhead(calls=1) is None:
        assert o is None and sentence.startswith("Not measured here") and _glued("ch10_overhead_why") == "Nothing to explain here."
        return
    assert o["widths"] == {64: 5, 128: 5, 256: 5, 512: 5}  # ResNet-18's 20 convolutions by output width
    assert o["per_pass_ms"] == pytest.approx(sum(o["widths"][c] * o["overhead_us"][c] for c in o["widths"]) / 1e3)
    assert f"{o['per_pass_ms']:.2f} ms" in sentence
    assert o["calls_noisy"] == any(v > deploy.NOISE_LIMIT for v in o["spread"].values()) and set(o["spread"]) == set(o["widths"])
    rest = {c["name"]: c for c in _glued("ch10_claims")}.get("split_rest_b1")
    if o["gap_ms"] is None or rest is None or rest["noisy"] or o["calls_noisy"]:
        assert o["word"] == "not compared" and "not compared with the split" in sentence
        assert ("the call timings were noisy" in sentence) == o["calls_noisy"]
    elif o["gap_ms"] <= 0:
        assert o["word"] == "no gap" and "there is no gap for it to explain" in sentence
    else:
        split = {(s["flow"], s["batch"]): s for s in _glued("ch10_split")}
        assert o["gap_ms"] == pytest.approx(split[(o["flow"], 1)]["rest_ms"] - split[("ov-int8-nncf", 1)]["rest_ms"])
        assert o["word"] == deploy.amount_word(o["per_pass_ms"], o["gap_ms"])
        assert f", {o['word']} the {o['gap_ms']:.2f} ms by which" in sentence
    rows = _chapter_rows()
    why = _glued("ch10_overhead_why")
    assert why.startswith("That work is done on every call") == (o["share"][1] >= 0.03)  # the explanation only where the cost shows
    assert set(o["share"]) == {1, 8}  # the compiled PyTorch path the split names, timed in the table at both batches
    for b, share in o["share"].items():
        assert share == pytest.approx(o["per_pass_ms"] / rows[(o["flow"], b)]["median_ms"])
        assert f"{share:.0%} of the batch-{b} pass" in _glued("ch10_overhead_share")


def test_chapter_vnni_sentence_is_this_machines_branch(built_book):
    claims = {c["name"]: c for c in _glued("ch10_claims")}
    sentence = _glued("ch10_vnni_sentence")
    default_isa = deploy.limit_isa(kernels.conv_kernel(kernels.default_engine())["isa"])
    if default_isa not in deploy.VNNI_ISAS:
        assert "vnni" not in claims and sentence.startswith("This CPU has no VNNI or AMX")
    else:  # compared with fbgemm without VNNI, at the same vector width where the CPU has AVX-512
        assert "vnni" in claims, sentence
        without = "fbgemm-avx512" if "fbgemm-avx512" in deploy.vnni_families() else "fbgemm-avx2"
        assert f"fbgemm without VNNI ({without})" in sentence


def test_vnni_sentence_has_a_branch_for_every_cpu():
    """Every branch of chapter 10's VNNI sentence, whatever CPU runs the tests: a CPU without VNNI or AMX (no
    comparison), a VNNI CPU against fbgemm at AVX-512 (preferred) or AVX2, noisy rows (no ratio), a failed family."""
    row = lambda fam, ms, isa, noisy=False: {"family": fam, "batch 8 ms": ms, "_isa": isa, "noisy": noisy}  # noqa: E731
    sentence, c = deploy.vnni_sentence([row("default", 90.0, "avx2")])
    assert c is None and sentence.startswith("This CPU has no VNNI or AMX")
    sentence, c = deploy.vnni_sentence([row("default", 40.0, "avx512_vnni"), row("fbgemm-avx512", 50.0, "avx512"),
                                        row("fbgemm-avx2", 80.0, "avx2")])
    assert c["word"] == "faster than" and (c["a_ms"], c["b_ms"]) == (40.0, 50.0) and deploy.check_claim(c) is None
    assert sentence == "Here the default INT8 kernels (with AVX512-VNNI) are faster than fbgemm without VNNI (fbgemm-avx512): 1.25x at batch 8."
    sentence, c = deploy.vnni_sentence([row("default", 20.0, "amx"), row("fbgemm-avx2", 19.5, "avx2")])
    assert c["word"] == "about as fast as" and "(with AMX)" in sentence and "(fbgemm-avx2): 0.97x at batch 8." in sentence
    sentence, c = deploy.vnni_sentence([row("default", 20.0, "avx_vnni", noisy=True), row("fbgemm-avx2", 60.0, "avx2")])
    assert c["word"] == "not reliably comparable with" and sentence.endswith("a row was noisy, so no ratio.")
    for rows in ([row("default", 20.0, "avx512_vnni")], [row("fbgemm-avx2", 60.0, "avx2")], []):
        sentence, c = deploy.vnni_sentence(rows)
        assert c is None and "could not be compared" in sentence


def test_chapter_claims_compare_the_rows_they_name(built_book):
    """Each word compares the two timed rows the prose names (the same run as the table), at batch 1 unless named."""
    rows, claims = _chapter_rows(), {c["name"]: c for c in _glued("ch10_claims")}
    eager = next(f for f, _ in rows if f.startswith("int8-eager-") and not f.startswith("int8-eager-jit"))
    pairs = {"u8_vs_s8": ("ort-int8-u8s8", "ort-int8-s8s8", 1), "s8_vs_fp32": ("ort-int8-s8s8", "ort-fp32", 1),
             "ov_default_vs_fp32": ("ov-default", "fp32-eager", 1), "ov_default_vs_f32": ("ov-default", "ov-f32", 1),
             "bf16_vs_fp32": ("bf16-autocast", "fp32-eager", 1)}
    steps = {"fp32_compiled": ("fp32-compile-frozen-cl", "fp32-eager"), "pt2e": ("int8-pt2e-inductor", eager),
             "static": ("int8-pt2e-static", "int8-pt2e-inductor"), "tuned": ("int8-pt2e-tuned", "int8-pt2e-static"),
             "aoti": ("int8-pt2e-aoti", "int8-pt2e-tuned"), "jit": ("int8-eager-jit", eager),
             "fused_add": ("int8-eager-jit-fused", "int8-eager-jit")}
    for batch in (1, 8):  # TorchScript's row against AOTInductor's
        if ("int8-eager-jit", batch) in rows and ("int8-pt2e-aoti", batch) in rows:
            pairs[f"jit_vs_aoti_b{batch}"] = ("int8-eager-jit", "int8-pt2e-aoti", batch)
        else:
            assert f"jit_vs_aoti_b{batch}" not in claims and _glued(f"ch10_word_jit_vs_aoti_b{batch}") == "not compared here (a row is missing)"
    if ("int8-pt2e-tuned", 1) in rows:  # where PT2E compiles, AOTInductor compiles the same graph: its row must be there
        assert ("int8-pt2e-aoti", 1) in rows and ("int8-pt2e-aoti", 8) in rows
    for key, (a, b) in steps.items():
        for batch in (1, 8):
            name = f"step_{key}_b{batch}"
            if (a, batch) in rows and (b, batch) in rows:
                pairs[name] = (a, b, batch)
            else:  # PT2E not available, or TorchScript could not trace: no claim, and the prose says so
                assert name not in claims and _glued(f"ch10_word_{name}").startswith("not measured here")
    for name, (a, b, batch) in pairs.items():
        if (a, batch) not in rows or (b, batch) not in rows:
            continue
        c, ra, rb = claims[name], rows[(a, batch)], rows[(b, batch)]
        assert (c["a_ms"], c["b_ms"], c["noisy"]) == (ra["median_ms"], rb["median_ms"], ra["noisy"] or rb["noisy"]), name
    # OpenVINO INT8 against the fastest clean PyTorch INT8 path of the table (the first one when all are noisy)
    table = {f for f, _ in rows if f != "int8-pt2e-static"}
    pt_int8 = [rows[(f, 1)] for f in table if "int8" in f and not f.startswith(("ort-", "ov-"))]
    clean = [r for r in pt_int8 if not r["noisy"]]
    if "ov_int8_vs_pt_int8" in claims:
        c = claims["ov_int8_vs_pt_int8"]
        assert c["a_ms"] == rows[("ov-int8-nncf", 1)]["median_ms"]
        assert c["b_ms"] in [r["median_ms"] for r in pt_int8]
        if clean:
            assert c["b_ms"] == min(r["median_ms"] for r in clean)
        else:  # every PyTorch INT8 row noisy: whichever is named, the comparison must say it is not reliable
            assert c["noisy"] and c["word"] == "not reliably comparable with"
    # the best PyTorch step against the fastest other runtime
    others = [rows[(f, 1)] for f in table if f.startswith(("ort-", "ov-"))]
    if others:
        ref = min([r for r in others if not r["noisy"]] or others, key=lambda r: r["median_ms"])
        c = claims["best_pytorch_vs_reference"]
        assert _glued("ch10_reference") == deploy.FLOW_LABELS[ref["flow"]]
        step_flows = {"fp32-eager", "fp32-compile-frozen-cl", eager, *(a for a, _ in steps.values())}
        clean_steps = [rows[(f, 1)] for f in step_flows if (f, 1) in rows and not rows[(f, 1)]["noisy"]]
        if clean_steps:
            assert (c["a_ms"], c["b_ms"], c["noisy"]) == (min(r["median_ms"] for r in clean_steps), ref["median_ms"], ref["noisy"])
        else:
            assert c["noisy"] and _glued("ch10_best_step") == "none (all noisy)"


def test_chapter_torchscript_row_is_the_eager_model(built_book):
    """The TorchScript row: present wherever torch.jit can trace, the eager model's own numbers, and the
    deprecation quoted as this PyTorch prints it."""
    rows = _chapter_rows()
    if ("int8-eager-jit", 1) not in rows:
        assert _glued("ch10_jit_same") == "not checked here (no TorchScript row)"
        return
    logits = 8 * rn.resnet18().fc.out_features  # the chapter's batch of 8 through ResNet-18's classifier
    assert _glued("ch10_jit_same") == f"the same numbers as the eager model's, all {logits:,} logits of the batch of 8 checked here"
    m = rn.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    said = deploy.trace_frozen(rq.quantize_ptq(m, [x], progress=False), x).settings["deprecation"]
    version = torch.__version__.split("+")[0]
    assert _glued("ch10_jit_deprecation") == (f"this PyTorch ({version}) warns \u201c{said[-1]}\u201d" if said else
                                              f"this PyTorch ({version}) printed no deprecation warning for it; newer versions do")


def test_chapter_split_compares_convolutions_and_the_rest(built_book):
    """The split of one pass: ResNet-18's 20 convolutions on both sides, the rest = the table's median minus them,
    and each word compares exactly those numbers."""
    split, rows = _glued("ch10_split"), _chapter_rows()
    claims = {c["name"]: c for c in _glued("ch10_claims")}
    if not split:  # not x86, or a path missing: no claim, and the prose says so
        assert not any(n.startswith("split_") for n in claims) and _glued("ch10_word_split_conv_b1") == "not measured here"
        return
    assert deploy.cpu_features()["arch"] == "x86_64"
    by = {(s["flow"], s["batch"]): s for s in split}
    pt = "int8-pt2e-aoti" if ("int8-pt2e-aoti", 1) in rows else "int8-pt2e-tuned"  # PyTorch's fastest compiled INT8 path
    assert set(by) == {(f, b) for f in (pt, "ov-int8-nncf") for b in (1, 8)}
    assert _glued("ch10_split_pt") == deploy.FLOW_LABELS[pt]
    for (flow, b), s in by.items():
        assert s["n_conv"] == 20, s  # every convolution of ResNet-18, in one pass
        assert (s["whole_ms"], s["min_ms"]) == (rows[(flow, b)]["median_ms"], rows[(flow, b)]["min_ms"])
        assert abs(s["rest_ms"] - (s["whole_ms"] - s["conv_ms"])) < 1e-9
    assert "PyTorch's" in _glued("ch10_split_kernels") and by[("ov-int8-nncf", 8)]["kernel"] in _glued("ch10_split_kernels")
    # the profiler's operators of PyTorch's pass: the sentence's list is the slowest four that are not convolutions,
    # and the copies sentence is the branch its counts choose
    ops, n_add = _glued("ch10_ops")["ops"], _glued("ch10_n_binary")
    others = [(k, v) for k, v in ops.items() if "conv" not in k]
    assert ops and _glued("ch10_ops_top") == "; ".join(f"{k} ({v[0]:.0f} per pass, {v[1]:.2f} ms)" for k, v in others[:4])
    copies = ops.get("aten::copy_", [0.0, 0.0])
    assert _glued("ch10_ops_copy_sentence").startswith(
        f"The {n_add} tensor copies (aten::copy_, {copies[1]:.2f} ms per pass) match" if n_add and round(copies[0]) == n_add
        else f"The profiler counts {copies[0]:.0f} tensor copies per pass")
    for part in ("conv", "rest"):
        for b in (1, 8):
            c, a, o = claims[f"split_{part}_b{b}"], by[(pt, b)], by[("ov-int8-nncf", b)]
            assert (c["a_ms"], c["b_ms"]) == (a[f"{part}_ms"], o[f"{part}_ms"])
            within_noise = part == "rest" and any(s["rest_ms"] <= s["whole_ms"] - s["min_ms"] for s in (a, o))
            assert c["noisy"] == (a["noisy"] or o["noisy"] or within_noise)
            assert _glued(f"ch10_x_split_{part}_b{b}") == (
                "no ratio: a row was noisy" if a["noisy"] or o["noisy"] else
                "no ratio: the rest is within the timing noise" if within_noise else f"{c['b_ms'] / c['a_ms']:.2f}x")


def test_chapter_targets_and_fastest_paths_follow_its_table(built_book):
    from resnet_edu import bench

    rows = [r for r in _glued("ch10_rows") if r["flow"] != "int8-pt2e-static"]  # the table's rows
    report = {"results": [{"model": "resnet18", "input": [r["batch"], 3, 224, 224], "flow": r["flow"], "median_ms": r["median_ms"],
                           "min_ms": r["min_ms"], "noisy": r["noisy"], "speedup_vs_fp32": None} for r in rows]}
    targets = [t for t in bench.check_targets(report) if "fastest" in t["target"]]
    words = {True: "held", False: "did not hold", None: "could not be judged (noisy rows)"}
    assert [_glued(f"ch10_target_{k}") for k in ("b1", "b8", "int8")] == [words[t["met"]] for t in targets]
    for batch in (1, 8):
        clean = [r for r in rows if r["batch"] == batch and not r["noisy"]]
        want = deploy.FLOW_LABELS[min(clean, key=lambda r: r["median_ms"])["flow"]] if clean else "none (all rows noisy)"
        assert _glued(f"ch10_fastest_b{batch}") == want


def test_chapter_machine_facts_match_this_machine(built_book):
    f = deploy.cpu_features()
    assert _glued("ch10_bf16_sentence") == deploy.bf16_support(f)["sentence"]
    assert _glued("ch10_isa") == deploy.best_isa(f)
    if HAVE_OV and f["arch"] == "x86_64":
        assert _glued("ch10_ov_default_precision") == deploy.default_precision()
    exporter = _glued("ch10_exporter")
    assert exporter in ("dynamo", "torchscript")
    assert _glued("ch10_export_sentence").startswith("The dynamo exporter handled") == (exporter == "dynamo")
    if HAVE_ORT:  # quantize_onnx's rule: 7-bit weights (both activation types) only on x86 without any VNNI
        seven = f["arch"] == "x86_64" and not (f["avx512_vnni"] or f["avx_vnni"])
        assert _glued("ch10_ort_reduce_range").startswith("uses 7-bit") == seven
        assert ("this CPU has VNNI" in _glued("ch10_ort_reduce_range")) == (f["arch"] == "x86_64" and not seven)
    drop = _glued("ch10_worst_drop_points")
    assert drop <= 1.0  # the prose says: every path within a point of FP32 on the digits
    assert _glued("ch10_families_timed") == ", ".join(deploy.vnni_families())
    assert _glued("ch10_settle_ms") == f"{deploy.SETTLE_MS:.0f}"  # the settle time the table's timing used
    # PT2E's convolutions run on oneDNN whatever the eager engine is: the bits and the kernel named are oneDNN's
    onednn = kernels.conv_kernel("onednn")
    vnni = onednn["accumulation"] == "int32"
    assert _glued("ch10_pt2e_bits") == (8 if vnni else 7) == rq.activation_bits_for("onednn")
    why = _glued("ch10_pt2e_bits_why")
    assert onednn["label"] in why and ("sums its products in int32" in why) == vnni


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
def test_chapter_fusion_counts_are_resnet18s(built_book):
    # ResNet-18 has 8 BasicBlocks, each ending in add + ReLU: inductor fuses each into the conv before it
    # (qconv2d_binary); the other 12 (stem, first conv of each block, 3 downsamples) run as qconv_unary
    assert _glued("ch10_n_binary") == 8 and _glued("ch10_n_unary") == 12


CHAPTER_CHECKS = [f for name, f in list(globals().items()) if name.startswith("test_chapter_")]
"""Every check of chapter 10's words above, in order, to run on glued texts from elsewhere (set ``GLUE_TEXTS``)."""
