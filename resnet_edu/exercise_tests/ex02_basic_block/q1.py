from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 4

@test_case(points=None, hidden=False)
def test_q1_same_as_basicblock(StudentBasicBlock):
    import torch
    import resnet_edu as rn
    from resnet_edu.exercises import expect, expect_callable, expect_close, forbid, randomize_bn
    expect_callable(StudentBasicBlock, 'StudentBasicBlock')
    ref = randomize_bn(rn.BasicBlock(16, 16), seed=1)
    mine = StudentBasicBlock(16, 16)
    mine.load_state_dict(ref.state_dict())
    mine.eval()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    want = ref(x)
    with forbid('resnet_edu.models:BasicBlock.forward', 'torchvision.models.resnet:BasicBlock.forward', task='Question 1'):
        got = mine(x)
    expect_close(got, want, 'StudentBasicBlock(16, 16) output (eval mode, same weights as rn.BasicBlock)', atol=1e-05, hint='order: conv1, bn1, relu, conv2, bn2, then add the identity, then relu')

