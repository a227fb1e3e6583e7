from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_stage_entry(my_conv3x3):
    import torch
    from resnet_edu.exercises import expect_callable, expect_conv, expect_equal, forbid
    expect_callable(my_conv3x3, 'my_conv3x3')
    with forbid('resnet_edu.models:conv3x3', 'torchvision.models.resnet:conv3x3', task='Question 2'):
        conv = my_conv3x3(64, 128, stride=2)
    expect_conv(conv, 'my_conv3x3(64, 128, stride=2)', 'kernel 3, padding=dilation, bias=False', in_channels=64, out_channels=128, kernel_size=3, stride=2, padding=1, bias=False)
    expect_equal(tuple(conv(torch.zeros(1, 64, 56, 56)).shape), (1, 128, 28, 28), 'output shape for a 1x64x56x56 input')

