from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_eval_graph(export_for_quantization):
    import torch
    import torch.nn as nn
    from resnet_edu.exercises import expect_callable, expect_close, expect_instance, randomize_bn
    expect_callable(export_for_quantization, 'export_for_quantization')
    net = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), seed=11).train()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    ep = export_for_quantization(net, (x,))
    expect_instance(ep, torch.export.ExportedProgram, 'export_for_quantization(net, (x,))', 'return what torch.export.export returns')
    net.eval()
    with torch.no_grad():
        expect_close(ep.module()(x), net(x), "the exported program's output vs the model in eval mode", atol=1e-05, hint='call model.eval() before exporting: a graph captured in training mode normalizes with batch statistics')

