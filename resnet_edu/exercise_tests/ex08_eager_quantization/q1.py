from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 4

@test_case(points=None, hidden=False)
def test_q1_float_behaviour(QuantBasicBlock):
    import torch
    import resnet_edu as rn
    from resnet_edu.exercises import expect, expect_callable, expect_close, forbid, randomize_bn
    expect_callable(QuantBasicBlock, 'QuantBasicBlock')
    ref = randomize_bn(rn.BasicBlock(8, 8), seed=5)
    mine = QuantBasicBlock(8, 8)
    mine.load_state_dict(ref.state_dict())
    mine.eval()
    expect(any((isinstance(m, torch.ao.nn.quantized.FloatFunctional) for m in mine.modules())), 'QuantBasicBlock needs a FloatFunctional submodule (self.add_relu = torch.ao.nn.quantized.FloatFunctional())')
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    with forbid('resnet_edu.models:BasicBlock.forward', 'torchvision.models.resnet:BasicBlock.forward', 'torchvision.models.quantization.resnet:QuantizableBasicBlock.forward', 'resnet_edu.quantization:QuantizableBasicBlock.forward', task='Question 1'):
        got = mine(x)
    expect_close(got, ref(x), 'QuantBasicBlock in float vs rn.BasicBlock (same weights)', atol=1e-05, hint='same computation as BasicBlock; only the final add + relu changes form')

