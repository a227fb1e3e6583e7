from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 2

@test_case(points=None, hidden=False)
def test_q3_reduce(my_conv1x1):
    from resnet_edu.exercises import expect_callable, expect_conv, forbid
    expect_callable(my_conv1x1, 'my_conv1x1')
    with forbid('resnet_edu.models:conv1x1', 'torchvision.models.resnet:conv1x1', task='Question 3'):
        conv = my_conv1x1(256, 64)
    expect_conv(conv, 'my_conv1x1(256, 64)', 'a 1x1 kernel needs no padding; bias=False', in_channels=256, out_channels=64, kernel_size=1, stride=1, padding=0, bias=False)

