from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_seed_number(bottleneck_conv_params):
    from resnet_edu.exercises import expect_callable, expect_int, forbid
    expect_callable(bottleneck_conv_params, 'bottleneck_conv_params')
    with forbid('resnet_edu.models:Bottleneck.__init__', 'torchvision.models.resnet:Bottleneck.__init__', 'resnet_edu.analysis:count_parameters', task='Question 2 (use the formula)'):
        got = bottleneck_conv_params(256, 64)
    expect_int(got, 69632, 'bottleneck_conv_params(256, 64)', '1x1: 256 -> 64, 3x3: 64 -> 64, 1x1: 64 -> 64 * expansion')

