from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_int8_graph(pt2e_int8):
    import math
    import torch
    import torch.nn as nn
    from resnet_edu.exercises import expect, expect_callable, forbid
    expect_callable(pt2e_int8, 'pt2e_int8')
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 3, 12, 12, generator=g) for _ in range(3)]
    with forbid('resnet_edu.quantization:pt2e_quantize', 'resnet_edu.quantization:quantize_pt2e', 'resnet_edu.quantization:ptq_pt2e', task='Question 2'):
        q = pt2e_int8(net, (batches[0],), batches)
    targets = [str(n.target) for n in q.graph.nodes if n.op == 'call_function'] if hasattr(q, 'graph') else []
    expect(any(('quantize_per_tensor' in t for t in targets)), 'the returned module must be the converted graph: it should contain quantized_decomposed.quantize_per_tensor nodes (did you call convert_pt2e?)')
    x = batches[1]
    with torch.no_grad():
        want, got = (net(x), q(x))
    sqnr = 10 * math.log10(float((want ** 2).sum()) / max(float(((want - got) ** 2).sum()), 1e-30))
    expect(sqnr > 20, f'int8 output too far from float (SQNR {sqnr:.1f} dB): calibrate with every batch before convert_pt2e')

