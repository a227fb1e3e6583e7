from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 4

@test_case(points=None, hidden=False)
def test_q2_resnet18(resnet_params):
    import resnet_edu as rn
    from resnet_edu.exercises import expect_callable, expect_int, forbid
    expect_callable(resnet_params, 'resnet_params')
    with forbid('resnet_edu.models:ResNet.__init__', 'torchvision.models.resnet:ResNet.__init__', 'resnet_edu.models:BasicBlock.__init__', 'resnet_edu.models:Bottleneck.__init__', 'torchvision.models.resnet:BasicBlock.__init__', 'torchvision.models.resnet:Bottleneck.__init__', 'resnet_edu.analysis:count_parameters', task='Question 2 (use the formula)'):
        got = resnet_params(rn.BasicBlock, [2, 2, 2, 2])
    expect_int(got, 11689512, 'resnet_params(rn.BasicBlock, [2, 2, 2, 2]) (resnet18)', 'stem conv 3*64*7*7 + BN 2*64; per block 2 convs + 2 BNs; 3 downsample branches; fc 512*1000 + 1000')

