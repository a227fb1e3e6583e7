"""The numbers chapters 7-9 state about the trained digits model, recomputed with the same package calls.

Tests marked ``kernel_family`` depend on the INT8 kernel that runs (bit-exactness, saturation, the 7- vs
8-bit ordering, accuracy of the eager flows, the requantizing add): ``tests/test_families.py`` runs them
again under every kernel family this machine can execute. They take their engine from
``rq.default_engine()`` (``RESNET_EDU_ENGINE`` in a family's environment), never a fixed one.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from resnet_edu import quantization as rq
from resnet_edu.data import calibration_batches
from resnet_edu.training import digits_loaders_for, get_digits_model


@pytest.fixture(autouse=True)
def _quiet():
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = rq.default_engine()  # the engine the digits model was converted for
    with warnings.catch_warnings():
        rq.silence_known_warnings()
        yield
    torch.backends.quantized.engine = old


@pytest.fixture(scope="module")
def digits():
    with warnings.catch_warnings():
        rq.silence_known_warnings()
        model, meta = get_digits_model(progress=False)
        train_loader, test_loader = digits_loaders_for(meta)
        cal = calibration_batches(train_loader, num_batches=8)
        x = torch.cat([x for x, _ in test_loader])
        y = torch.cat([y for _, y in test_loader])
        with torch.no_grad():
            logits = model(x)
        qmodel = rq.quantize_ptq(model, cal, backend=rq.default_engine(), progress=False)
    return {"model": model, "train": train_loader, "cal": cal, "x": x, "y": y, "logits": logits, "qmodel": qmodel,
            "acc": (logits.argmax(1) == y).float().mean().item()}


def accuracy(m, d, engine=None):
    engine = rq.default_engine() if engine is None else (engine or None)  # "": do not pin an engine
    with torch.no_grad():
        out = rq.QuantizedRunner(m, engine=engine)(d["x"])
    return (out.argmax(1) == d["y"]).float().mean().item(), out


@pytest.mark.kernel_family
def test_int8_accuracy_within_half_a_point(digits):
    """Issue 5's target: INT8 digits accuracy within 0.5 points of FP32 (chapter 8's table).

    The target holds for the recipe that fits the kernel (chapter 7): 8-bit activations where the kernel
    sums in int32, 7-bit where it sums int16 pairs. ``rq.get_qconfig`` applies that rule to PyTorch's
    ``onednn`` qconfig (8-bit, made for VNNI): with oneDNN capped to AVX2 (family ``onednn-avx2``) the
    8-bit default cost 0.67 points on the Zen4 machine (97.11 % vs 97.78 %), 7-bit activations 0.22.
    """
    qmodel = digits["qmodel"]
    acc_x86, out = accuracy(qmodel, digits)
    assert abs(acc_x86 - digits["acc"]) <= 0.005
    assert (out.argmax(1) == digits["logits"].argmax(1)).float().mean().item() >= 0.99
    qnn = rq.quantize_ptq(digits["model"], digits["cal"], backend="qnnpack", progress=False)
    acc_qnn, _ = accuracy(qnn, digits, engine="qnnpack")
    assert abs(acc_qnn - digits["acc"]) <= 0.005
    assert 3.8 < rq.model_size_mb(digits["model"]) / rq.model_size_mb(digits["qmodel"]) < 4.1


@pytest.mark.kernel_family
def test_default_recipe_fits_the_kernel():
    """Chapter 7's rule in ``rq.get_qconfig``: 7-bit activations wherever the engine's kernel sums int16 pairs."""
    engine = rq.default_engine()
    for qat in (False, True):
        act = rq.get_qconfig(engine, qat=qat).activation()
        if engine in ("x86", "fbgemm"):  # PyTorch's default for them is already 7-bit, whatever the kernel
            assert act.quant_max == 127, (engine, qat)
        elif engine == "qnnpack":  # QNNPACK accumulates in int32: 8-bit activations
            assert act.quant_max == 255 and rq.conv_kernel(engine)["accumulation"] == "int32", (engine, qat)
        else:  # onednn: chapter 7's rule, 7-bit only where its kernel here sums int16 pairs
            assert act.quant_max == (127 if rq.conv_kernel(engine)["accumulation"] != "int32" else 255), (engine, qat)
    if "onednn" in rq.quantized_engines():
        want = 127 if rq.conv_kernel("onednn")["accumulation"] != "int32" else 255
        assert rq.get_qconfig("onednn").activation().quant_max == want


@pytest.mark.kernel_family
def test_integer_conv_is_bit_exact_on_every_layer(digits):
    """Chapter 7: 0 mismatching integers over all convolutions of the quantized digits model."""
    qm = digits["qmodel"]
    convs = [n for n, m in qm.named_modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
    io = rq.capture_io(qm, digits["x"][:16], convs)
    assert len(convs) == 20
    differ = {n: int((rq.reference_qconv2d(qm.get_submodule(n), io[n][0]).int_repr() != io[n][1].int_repr()).sum()) for n in convs}
    assert not any(differ.values()), {n: d for n, d in differ.items() if d}  # exact everywhere, the stem included


@pytest.mark.kernel_family
def test_chapter7_saturation_claims_for_this_kernel():
    """Chapter 7's words for the branch that ran here: saturates or not, and the 7- vs 8-bit ordering."""
    from resnet_edu.quantization import kernel_check

    engine = rq.default_engine()
    result = kernel_check.lesson(engine)
    words = kernel_check.describe_lesson(result)
    rows = {r["activation_bits"]: r for r in result["rows"]}
    kernel = rq.conv_kernel(engine)
    assert rows[7]["differ_reference"] == 0 and rows[7]["differ_exact"] == 0  # 7-bit inputs never saturate
    assert rows[8]["differ_reference"] == 0  # the reference models this kernel exactly, oneDNN's stem included
    if kernel["accumulation"] == "int32":
        assert not words["saturates"] and words["verdict"].startswith("does not saturate")
        assert rows[8]["differ_exact"] == 0
        if rows[8]["differ_saturating"] is not None:
            assert rows[8]["differ_saturating"] > 0  # what a kernel without VNNI would have changed
    else:  # int16 pairs: the saturating model is the kernel's own, so it matches, and the exact sum does not
        assert rows[8]["differ_saturating"] == 0 and rows[8]["differ_exact"] > 0
        assert words["saturates"] and words["verdict"].startswith("saturates")
    assert words["eight_bit_better"] == (rows[8]["sqnr_db"] > rows[7]["sqnr_db"])
    assert words["order"].startswith("the 8-bit model matches the FP32 logits " + ("better" if words["eight_bit_better"] else "worse"))
    # on this machine's hardware: the lesson's expected direction (int16 saturation costs SQNR; int32 gains it)
    assert words["eight_bit_better"] == (kernel["accumulation"] == "int32")


def test_describe_lesson_both_branches():
    """The chapter's sentence is chosen by the numbers, for either branch (synthetic results)."""
    from resnet_edu.quantization.kernel_check import describe_lesson

    def result(d8_exact, d8_sat, sq7, sq8):
        return {"rows": [{"activation_bits": 7, "integers": 100, "differ_exact": 0, "differ_saturating": 0, "sqnr_db": sq7, "accuracy": 0.9},
                         {"activation_bits": 8, "integers": 100, "differ_exact": d8_exact, "differ_saturating": d8_sat, "sqnr_db": sq8, "accuracy": 0.8}]}

    sat = describe_lesson(result(40, 0, 30.0, 25.0))
    assert sat["saturates"] and sat["verdict"].startswith("saturates: with 8-bit activations 40 of 100") and "worse" in sat["order"]
    ok = describe_lesson(result(0, 40, 30.0, 35.0))
    assert not ok["saturates"] and "would have changed 40" in ok["verdict"] and "better" in ok["order"]
    arm = describe_lesson(result(0, None, 30.0, 35.0))
    assert arm["verdict"] == "does not saturate: with 8-bit activations all 100 outputs equal the exact int32 sum"


def test_first_principles_claims(digits):
    """Chapter 7: affine beats symmetric on ReLU outputs by about a bit; per channel beats per tensor; ~6 dB/bit."""
    fused = rq.to_quantizable(digits["model"]).eval()
    fused.fuse_model()
    stem = rq.capture_io(fused, digits["cal"][0], ["conv1"])["conv1"][1]
    gain = rq.sqnr_db(stem, rq.fake_quantize(stem, 8, "per_tensor_affine")) - rq.sqnr_db(stem, rq.fake_quantize(stem, 8, "per_tensor_symmetric"))
    assert 4.5 < gain < 7.5
    for m in fused.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.detach()
            assert rq.sqnr_db(w, rq.fake_quantize(w, 8, "per_channel_symmetric")) > rq.sqnr_db(w, rq.fake_quantize(w, 8, "per_tensor_symmetric"))
    w = fused.conv1[0].weight.detach()
    bits = list(range(4, 9))
    slope = np.polyfit(bits, [rq.sqnr_db(w, rq.fake_quantize(w, b, "per_channel_symmetric")) for b in bits], 1)[0]
    assert 5.5 < slope < 6.5


@pytest.mark.kernel_family
def test_residual_add_formula(digits):
    """Chapter 7: the requantizing add formula, in float32, reproduces the kernel on the first block."""
    qm = digits["qmodel"]
    io = rq.capture_io(qm, digits["x"][:32], ["layer1.0", "layer1.0.conv2"])
    q_i, q_out = io["layer1.0"]
    q_b = io["layer1.0.conv2"][1]
    add = qm.layer1[0].add_relu
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)
    real = f32(q_b.q_scale()) * (q_b.int_repr().float() - q_b.q_zero_point()) + f32(q_i.q_scale()) * (q_i.int_repr().float() - q_i.q_zero_point())
    mine = torch.clamp(torch.round(real / f32(add.scale)) + add.zero_point, add.zero_point, 255)
    assert (mine == q_out.int_repr().float()).float().mean().item() > 0.99
    rows = rq.residual_scales(qm, digits["x"][:8])
    assert max(max(r["branch_scale"], r["identity_scale"]) / min(r["branch_scale"], r["identity_scale"]) for r in rows) > 1.1


@pytest.mark.kernel_family
def test_qat_recovers_two_bit_weights(digits):
    """Chapter 8: with 2-bit weights PTQ loses a lot; two short QAT epochs win much of it back."""
    pairs = [(x, y) for x, y in digits["train"]][:4]
    ptq = rq.quantize_ptq(digits["model"], digits["cal"][:4], qconfig=rq.make_qconfig(weight_bits=2), progress=False)
    qat, history = rq.quantize_qat(digits["model"], pairs, epochs=2, lr=1e-3, qconfig=rq.make_qconfig(weight_bits=2, qat=True), progress=False)
    acc_ptq, _ = accuracy(ptq, digits)
    acc_qat, _ = accuracy(qat, digits)
    assert acc_ptq < digits["acc"] - 0.05
    assert acc_qat > acc_ptq + 0.10
    with pytest.raises(ValueError, match="weight_bits must be an integer from 2 to 8"):
        rq.make_qconfig(weight_bits=1)


def test_sensitivity_single_layers_beat_whole_network(digits):
    """Chapter 8: every layer alone keeps a higher logit SQNR than the whole INT8 network."""
    x, y = digits["x"][:64], digits["y"][:64]
    rows = rq.layer_sensitivity(digits["model"], digits["cal"][:1], x, y, progress=False)
    with torch.no_grad():
        full = rq.sqnr_db(digits["logits"][:64], digits["qmodel"](x))
    assert len(rows) == 21  # 20 convs (BN folded in) and fc, in network order
    assert rows[0]["layer"] == "conv1" and rows[-1]["layer"] == "fc"
    assert all(0 <= r["accuracy"] <= 1 and np.isfinite(r["sqnr_db"]) and r["fp32_accuracy"] == rows[0]["fp32_accuracy"] for r in rows)
    assert min(r["sqnr_db"] for r in rows) > full


@pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed")
@pytest.mark.kernel_family
def test_pt2e_digits_accuracy(digits):
    """Chapter 9: the compiled PT2E model keeps the accuracy (within 0.5 points) and is ~4x smaller."""
    runner = rq.BENCH_FLOWS["int8-pt2e-inductor"](digits["model"], digits["cal"])
    acc, out = accuracy(runner, digits, engine="")
    assert abs(acc - digits["acc"]) <= 0.005
    assert rq.sqnr_db(digits["logits"], out) > 25
    assert 3.8 < rq.model_size_mb(digits["model"]) / rq.model_size_mb(runner) < 4.1
