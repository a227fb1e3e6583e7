from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_layer1(needs_downsample):
    from resnet_edu.exercises import expect_callable, expect_equal
    expect_callable(needs_downsample, 'needs_downsample')
    expect_equal(needs_downsample(64, 64, 1, 1), False, 'needs_downsample(64, 64, 1, 1) (resnet18, layer1)')
    expect_equal(needs_downsample(64, 64, 1, 4), True, 'needs_downsample(64, 64, 1, 4) (resnet50, layer1)', 'the block outputs planes * expansion channels')

