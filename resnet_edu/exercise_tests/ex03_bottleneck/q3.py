from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 1

@test_case(points=None, hidden=False)
def test_q3_256(two_conv3x3_params):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(two_conv3x3_params, 'two_conv3x3_params')
    expect_int(two_conv3x3_params(256), 1179648, 'two_conv3x3_params(256)', 'each 3x3 conv has 3 * 3 * channels * channels weights')

