from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_conv3x3(conv_params):
    from resnet_edu.exercises import expect_callable, expect_int, forbid
    expect_callable(conv_params, 'conv_params')
    with forbid('torch.nn:Conv2d', 'torch.nn.modules.conv:Conv2d', task='Question 4 (use the formula)', answers=[conv_params]):
        got = conv_params(64, 64, 3)
    expect_int(got, 36864, 'conv_params(64, 64, 3)', 'kernel_size * kernel_size * in_channels * out_channels')

