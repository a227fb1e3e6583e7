from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 2

@test_case(points=None, hidden=False)
def test_q5_identity(block):
    import torch
    import resnet_edu as rn
    from resnet_edu.exercises import expect_close, expect_instance
    expect_instance(block, rn.BasicBlock, 'block (the rn.BasicBlock(16, 16) from the cell)')
    x = torch.randn(4, 16, 5, 5, generator=torch.Generator().manual_seed(0))
    was = block.training
    block.train()
    out = block(x.clone())
    block.train(was)
    expect_close(out, torch.relu(x), 'block(x) in training mode vs relu(x)', atol=1e-06, hint='the last BatchNorm of the branch decides what the branch adds')

