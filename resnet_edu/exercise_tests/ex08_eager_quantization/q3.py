from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 2

@test_case(points=None, hidden=False)
def test_q3_float(Int8Wrapper):
    import torch
    import torch.nn as nn
    from torch.ao.quantization import DeQuantStub, QuantStub
    from resnet_edu.exercises import expect, expect_callable, expect_close, forbid
    expect_callable(Int8Wrapper, 'Int8Wrapper')
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with forbid('torch.ao.quantization:QuantWrapper', 'torch.ao.quantization.stubs:QuantWrapper', task='Question 3'):
        w = Int8Wrapper(net).eval()
    kinds = [m.__class__ for m in w.children()]
    expect(QuantStub in kinds and DeQuantStub in kinds, f'Int8Wrapper needs a QuantStub and a DeQuantStub as submodules, has {[k.__name__ for k in kinds]}')
    x = torch.randn(1, 3, 8, 8)
    expect_close(w(x), net(x), 'Int8Wrapper(net)(x) before quantization vs net(x)', atol=1e-06, hint='in float the stubs are identities')

