from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 3

@test_case(points=None, hidden=False)
def test_q4_converts(ptq):
    import torch
    import torch.nn as nn
    from torch.ao.quantization import DeQuantStub, QuantStub
    from resnet_edu.exercises import expect, expect_callable, forbid, quiet
    expect_callable(ptq, 'ptq')
    torch.manual_seed(0)
    net = nn.Sequential(QuantStub(), nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), DeQuantStub())
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(4, 3, 12, 12, generator=g) for _ in range(3)]
    try:
        with quiet(), forbid('torch.ao.quantization:quantize', 'torch.ao.quantization.quantize:quantize', task='Question 4 (write the steps)'):
            q = ptq(net, batches)
        expect(q is not None and any((isinstance(m, torch.ao.nn.quantized.Conv2d) for m in q.modules())), 'ptq must return the converted model, whose convs are torch.ao.nn.quantized.Conv2d')
        out = q(batches[0])
        expect(isinstance(out, torch.Tensor) and (not out.is_quantized) and (out.shape == (4, 4, 10, 10)), f"the converted model should return a float 4x4x10x10 tensor, got {getattr(out, 'shape', out)}")
    finally:
        torch.backends.quantized.engine = 'x86'

