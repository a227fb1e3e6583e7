from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 1

@test_case(points=None, hidden=False)
def test_q3_counts(count_qdq):
    from resnet_edu.exercises import expect_callable, expect_equal, in_sandbox
    expect_callable(count_qdq, 'count_qdq')

    def count(count_qdq):
        import torch
        import torch.nn as nn
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
        x = torch.randn(1, 3, 8, 8)
        p = prepare_pt2e(torch.export.export(net, (x,), strict=True).module(), X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
        p(x)
        gm = convert_pt2e(p)
        if count_qdq is not None:
            return count_qdq(gm)
        names = [str(n.target) for n in gm.graph.nodes if n.op == 'call_function']
        return {'quantize': sum((1 for t in names if 'quantize_per' in t and 'dequantize' not in t)), 'dequantize': sum((1 for t in names if 'dequantize' in t))}
    expect_equal(in_sandbox(count, count_qdq), count(None), 'count_qdq on a converted two-conv graph', "only call_function nodes; the weights' quantize ops were folded into get_attr constants")

