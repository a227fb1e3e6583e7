from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 2

@test_case(points=None, hidden=False)
def test_q5_conv3x3(same_padding):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(same_padding, 'same_padding')
    expect_int(same_padding(3), 1, 'same_padding(3)', 'a 3x3 kernel reaches one pixel past each side')
    expect_int(same_padding(3, dilation=2), 2, 'same_padding(3, dilation=2)', 'the dilated kernel spans dilation*(k-1)+1 pixels')

