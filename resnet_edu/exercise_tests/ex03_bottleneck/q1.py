from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_resnet_and_resnext(bottleneck_width):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(bottleneck_width, 'bottleneck_width')
    expect_int(bottleneck_width(64), 64, 'bottleneck_width(64) (resnet50, layer1)')
    expect_int(bottleneck_width(64, base_width=4, groups=32), 128, 'bottleneck_width(64, base_width=4, groups=32) (resnext50_32x4d, layer1)', 'width = int(planes * base_width / 64) * groups')

