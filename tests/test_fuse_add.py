"""rq.fuse_residual_adds: each block's last convolution and residual add_relu become one oneDNN call."""
from __future__ import annotations

import pytest
import torch
from torch.ao.nn.intrinsic.quantized import ConvAddReLU2d

import resnet_edu as rn
from resnet_edu import quantization as rq
from resnet_edu.quantization import fuse_add, kernels

pytestmark = [pytest.mark.usefixtures("quiet_warnings"),
              pytest.mark.skipif("onednn" not in kernels.quantized_engines(), reason="no onednn quantized engine on this machine (it is x86's)")]


def _setup(arch, size=32, seed=0):
    torch.manual_seed(seed)
    m = getattr(rn, arch)(num_classes=10).eval()
    g = torch.Generator().manual_seed(seed + 1)
    cal = [torch.randn(8, 3, size, size, generator=g) for _ in range(2)]
    x = torch.randn(16, 3, size, size, generator=g)
    with torch.no_grad():
        ref = m(x)
    return m, cal, x, ref


@pytest.mark.parametrize("arch,blocks,cls", [("resnet18", 8, fuse_add.FusedAddBasicBlock), ("resnet50", 16, fuse_add.FusedAddBottleneck)])
def test_every_block_ends_in_one_fused_convolution(arch, blocks, cls):
    m, cal, x, ref = _setup(arch)
    q = rq.quantize_ptq(m, cal, backend="onednn", progress=False)
    plain = rq.QuantizedRunner(q, engine="onednn")
    fused = rq.fuse_residual_adds(q)
    assert isinstance(fused, rq.QuantizedRunner) and fused.engine == "onednn"
    assert sum(isinstance(b, cls) for b in fused.model.modules()) == blocks
    assert sum(isinstance(c, ConvAddReLU2d) for c in fused.model.modules()) == blocks
    assert not any(isinstance(c, torch.ao.nn.quantized.QFunctional) for c in fused.model.modules())  # no add left
    assert sum(isinstance(c, torch.ao.nn.quantized.QFunctional) for c in q.modules()) == blocks  # the input is untouched
    a, b = plain(x), fused(x)
    # one rounding fewer per block: not the same integers, but as close to FP32 as the unfused model (within 1 dB)
    assert not torch.equal(a, b)
    assert rq.sqnr_db(ref, b) >= rq.sqnr_db(ref, a) - 1.0, (rq.sqnr_db(ref, b), rq.sqnr_db(ref, a))
    assert torch.equal(fused(x), b)  # no state is consumed: the sum goes into each block's own identity tensor


def test_the_sum_is_written_into_the_identity_tensor():
    """What fuse_add's docstring says: oneDNN's sum post-op writes the result into the identity's memory."""
    m, cal, x, _ = _setup("resnet18")
    fused = rq.fuse_residual_adds(rq.quantize_ptq(m, cal, backend="onednn", progress=False))
    block = fused.model.layer1[0]  # no downsample: the identity is the block's input
    torch.backends.quantized.engine = "onednn"
    inp = torch.quantize_per_tensor(torch.rand(2, 64, 8, 8), 0.02, 0, torch.quint8).contiguous(memory_format=torch.channels_last)
    before = inp.int_repr().clone()
    with torch.no_grad():
        out = block(inp)
    assert out.data_ptr() == inp.data_ptr() and not torch.equal(inp.int_repr(), before)


def test_a_model_converted_for_x86_is_packed_again_for_onednn():
    m, cal, x, ref = _setup("resnet18")
    engine = "x86" if "x86" in kernels.quantized_engines() else "fbgemm"
    q = rq.quantize_ptq(m, cal, backend=engine, progress=False)
    fused = rq.fuse_residual_adds(rq.QuantizedRunner(q, engine=engine))
    torch.backends.quantized.engine = engine  # the runner pins onednn, whatever was set
    out = fused(x)
    assert torch.backends.quantized.engine == "onednn"
    assert rq.sqnr_db(ref, out) >= rq.sqnr_db(ref, rq.QuantizedRunner(q, engine=engine)(x)) - 1.0


def test_traced_and_frozen_it_gives_the_same_numbers():
    from resnet_edu import deploy

    m, cal, x, _ = _setup("resnet18")
    fused = rq.fuse_residual_adds(rq.quantize_ptq(m, cal, backend="onednn", progress=False))
    traced = deploy.trace_frozen(fused, x[:1])
    assert traced.engine == "onednn" and torch.equal(traced(x), fused(x))
    assert "quantized::conv2d_add_relu" in str(traced.model.graph) and "quantized::add_relu" not in str(traced.model.graph)


def test_bad_input_is_named():
    m, cal, _, _ = _setup("resnet18")
    with pytest.raises(ValueError, match="needs an eager INT8 ResNet after convert .* got ResNet with 0 quantizable blocks"):
        rq.fuse_residual_adds(m)
    prepared = rq.to_quantizable(m)
    with pytest.raises(ValueError, match="got QuantizableResNet with 8 quantizable blocks, 0 of them converted"):
        rq.fuse_residual_adds(prepared)
    with pytest.raises(ValueError, match="needs an eager INT8 ResNet after convert"):
        rq.fuse_residual_adds("model")


def test_without_onednn_it_says_which_engines_there_are(monkeypatch):
    monkeypatch.setenv("RESNET_EDU_SIMULATE_ARM", "1")
    with pytest.raises(ValueError, match=r"needs PyTorch's 'onednn' quantized engine .* this machine's engines are \['qnnpack'\]"):
        rq.fuse_residual_adds(torch.nn.Identity())
