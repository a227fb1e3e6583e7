from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 1

@test_case(points=None, hidden=False)
def test_q3_resnet18_50(depth):
    import resnet_edu as rn
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(depth, 'depth')
    expect_int(depth(rn.BasicBlock, [2, 2, 2, 2]), 18, 'depth(rn.BasicBlock, [2, 2, 2, 2])', '2 convs per BasicBlock, plus the stem conv and fc')
    expect_int(depth(rn.Bottleneck, [3, 4, 6, 3]), 50, 'depth(rn.Bottleneck, [3, 4, 6, 3])', '3 convs per Bottleneck')

