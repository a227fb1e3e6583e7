"""The PT2E flow through torchao (chapter 9): an INT8 graph, INT8 kernels after compile, and the traps."""
from __future__ import annotations

import warnings

import pytest
import torch

from resnet_edu import quantization as rq

pytestmark = [pytest.mark.skipif(not rq.pt2e_available(), reason="torchao (extra 'pt2e') is not installed"),
              pytest.mark.usefixtures("quiet_warnings")]


@pytest.fixture(scope="module")
def small(small_resnet18):
    return small_resnet18, [torch.randn(4, 3, 32, 32) for _ in range(2)]


@pytest.fixture(scope="module")
def steps(small):
    """PT2E by hand on the small model, recording what the graph looked like before dropping orphans."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model, cal = small
    with warnings.catch_warnings():
        rq.silence_known_warnings()
        q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=True))
        prepared = prepare_pt2e(rq.export_for_pt2e(model, cal[0], dynamic_batch=False), q)
        with torch.no_grad():
            for xb in cal:
                prepared(xb)
        converted = convert_pt2e(prepared)
        x = cal[1]
        with torch.no_grad():
            before = converted(x)
        size_before = rq.model_size_mb(converted)
        dropped = rq.drop_unused_attributes(converted)
    return {"converted": converted, "x": x, "before": before, "size_before": size_before, "dropped": dropped}


def test_converted_graph_is_int8_and_four_times_smaller(small, steps):
    model, cal = small
    converted = steps["converted"]
    counts = rq.quantized_op_counts(converted)
    assert counts["dequantize_per_channel"] == 21  # 20 convs + fc: every weight is an int8 constant
    assert counts["quantize_per_tensor"] > 0 and counts["dequantize_per_tensor"] > 0
    int8_constants = [v for v in converted.state_dict().values() if v.dtype == torch.int8]
    assert len(int8_constants) == 21
    float_weights = [k for k, v in converted.state_dict().items() if v.dtype == torch.float32 and v.dim() >= 2]
    assert float_weights == [], f"leftover FP32 weights: {float_weights[:3]}"
    ratio = rq.model_size_mb(model) / rq.model_size_mb(converted)
    assert 3.8 < ratio < 4.1, ratio
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert rq.sqnr_db(model(x), converted(x)) > 20
    with pytest.raises(ValueError, match="converted PT2E GraphModule"):
        rq.quantized_op_counts(model)


def test_drop_unused_attributes_removes_only_orphans(small, steps):
    model, _ = small
    assert steps["size_before"] > rq.model_size_mb(model), "convert_pt2e keeps the FP32 weights (the trap chapter 9 shows)"
    assert len(steps["dropped"]) == 21 and all(name.endswith("weight") for name in steps["dropped"])
    with torch.no_grad():
        assert torch.equal(steps["converted"](steps["x"]), steps["before"])


def test_export_traps(small):
    model, cal = small
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    non_strict = torch.export.export(model, (cal[0],), strict=False).module()
    # If this starts passing, chapter 9's "strict export" gotcha needs rewriting.
    with pytest.raises(ValueError, match="Input partition has more than one output node"):
        prepare_pt2e(non_strict, q)
    # batch 1 examples are doubled so the batch dimension stays dynamic
    gm = rq.export_for_pt2e(model, cal[0][:1])
    with torch.no_grad():
        assert gm(cal[0]).shape == (4, 10)
    with pytest.raises(ValueError, match="input batch of shape"):
        rq.export_for_pt2e(model, torch.randn(3, 32, 32))


def test_torchao_quantize_leaves_conv_float():
    """Chapter 9's claim: torchao's quantize_ INT8 configs handle Linear, not Conv2d."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)).eval()
    quantize_(net, Int8DynamicActivationInt8WeightConfig())
    assert type(net[0].weight.data) is torch.Tensor and net[0].weight.dtype == torch.float32
    assert type(net[2].weight.data) is not torch.Tensor


def test_torch_ao_pt2e_is_gone():
    """Chapter 9's table: PyTorch's own PT2E module is gone in this torch; torchao's is there."""
    import importlib

    with pytest.raises(ImportError):
        importlib.import_module("torch.ao.quantization.quantize_pt2e")
    assert hasattr(importlib.import_module("torchao.quantization.pt2e.quantize_pt2e"), "prepare_pt2e")


def test_compiled_flow_runs_int8_kernels(small):
    """The benchmark flow: inductor fuses every conv into a oneDNN INT8 kernel (pattern-matcher counters)."""
    from torch._dynamo.utils import counters

    model, cal = small
    runner = rq.BENCH_FLOWS["int8-pt2e-inductor"](model, cal)
    counters.clear()
    x = torch.randn(4, 3, 32, 32)
    out = runner(x)
    lowered = counters["inductor"]
    assert lowered["qconv_unary_lower_count"] + lowered["qconv2d_binary_lower_count"] == 20
    assert lowered["qlinear_unary_lower_count"] == 1
    with torch.no_grad():
        assert rq.sqnr_db(model(x), out) > 20
    assert 3.8 < rq.model_size_mb(model) / rq.model_size_mb(runner) < 4.1
    assert rq.quantized_op_counts(runner)["dequantize_per_channel"] == 21
    # evaluate() calls .eval(); the runner absorbs it (the exported graph inside would refuse)
    from resnet_edu.training import evaluate

    loader = [(x, torch.zeros(4, dtype=torch.long))]
    assert 0.0 <= evaluate(runner, loader, device=torch.device("cpu"))["accuracy"] <= 1.0
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False, "freezing is switched on per call, not for the whole process"


def test_options_freezing_still_fails(small, steps):
    """Chapter 9 says torch.compile(options={"freezing": True}) fails on onednn.qconv_prepack; keep that true."""
    model, cal = small
    import torch._inductor.config as inductor_config

    converted = steps["converted"]
    old = inductor_config.freezing
    inductor_config.freezing = False
    try:
        compiled = torch.compile(converted, options={"freezing": True})
        with pytest.raises(Exception, match="qconv_prepack"), torch.no_grad():
            compiled(cal[0])
    finally:
        inductor_config.freezing = old
        torch._dynamo.reset()
