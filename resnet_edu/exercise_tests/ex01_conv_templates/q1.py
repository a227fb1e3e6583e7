from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_resnet_convs(conv_out_size):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(conv_out_size, 'conv_out_size')
    hint = 'floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1'
    expect_int(conv_out_size(224, 7, stride=2, padding=3), 112, "conv_out_size(224, 7, stride=2, padding=3), ResNet's stem conv", hint)
    expect_int(conv_out_size(56, 3, stride=1, padding=1), 56, 'conv_out_size(56, 3, stride=1, padding=1), a conv3x3', hint)
    expect_int(conv_out_size(56, 3, stride=2, padding=1), 28, 'conv_out_size(56, 3, stride=2, padding=1), a conv3x3 with stride 2', hint)

