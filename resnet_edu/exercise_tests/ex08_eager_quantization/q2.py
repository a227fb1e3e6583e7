from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 2

@test_case(points=None, hidden=False)
def test_q2_no_downsample(fuse_basic_block):
    import copy
    import torch
    import torch.nn as nn
    from torchvision.models.quantization.resnet import QuantizableBasicBlock
    from resnet_edu.exercises import expect, expect_callable, expect_close, expect_instance, forbid, randomize_bn
    expect_callable(fuse_basic_block, 'fuse_basic_block')
    block = randomize_bn(QuantizableBasicBlock(8, 8), seed=9)
    before = copy.deepcopy(block)
    with forbid('torchvision.models.quantization.resnet:QuantizableBasicBlock.fuse_model', 'resnet_edu.quantization:QuantizableBasicBlock.fuse_model', task='Question 2'):
        fused = fuse_basic_block(block)
    expect_instance(fused, QuantizableBasicBlock, 'fuse_basic_block(block)', 'return the (fused) block')
    expect(fused.conv1.__class__.__name__ == 'ConvReLU2d', f'conv1 should be fused with bn1 and relu into a ConvReLU2d, got {fused.conv1.__class__.__name__}')
    expect(isinstance(fused.bn1, nn.Identity) and isinstance(fused.bn2, nn.Identity), 'after fusion bn1 and bn2 are nn.Identity (folded into the convs)')
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expect_close(fused(x), before(x), 'fused block vs the original (float)', atol=1e-05, hint='fusion in eval mode must not change the float output')

