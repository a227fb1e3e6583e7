from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 2

@test_case(points=None, hidden=False)
def test_q3_resnet_stages(block_output_shape):
    from resnet_edu.exercises import expect_callable, expect_equal, forbid
    expect_callable(block_output_shape, 'block_output_shape')
    with forbid('resnet_edu.models:BasicBlock.forward', 'torchvision.models.resnet:BasicBlock.forward', task='Question 3'):
        a = block_output_shape((1, 64, 56, 56), 128, 2)
        b = block_output_shape((8, 64, 56, 56), 64, 1)
    expect_equal(tuple(a) if a is not None else a, (1, 128, 28, 28), 'block_output_shape((1, 64, 56, 56), 128, 2)', 'stride 2 halves H and W; the block outputs planes channels')
    expect_equal(tuple(b) if b is not None else b, (8, 64, 56, 56), 'block_output_shape((8, 64, 56, 56), 64, 1)')

