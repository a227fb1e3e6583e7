from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_output_strides(layer4_size):
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(layer4_size, 'layer4_size')
    expect_int(layer4_size(224, [False, False, False]), 7, 'layer4_size(224, [False, False, False]) (output stride 32)')
    expect_int(layer4_size(224, [False, True, True]), 28, 'layer4_size(224, [False, True, True]) (output stride 8)', 'a dilated stage keeps its input resolution')

