from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 3

@test_case(points=None, hidden=False)
def test_q5_v15(bottleneck_macs):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(bottleneck_macs, 'bottleneck_macs')
    expect_int(bottleneck_macs(256, 128, 56, stride=2), 269746176, 'bottleneck_macs(256, 128, 56, stride=2) (resnet50 layer2[0], v1.5)', 'conv1 runs at 56x56, conv2 and conv3 at 28x28; conv3 outputs planes * 4 channels')

