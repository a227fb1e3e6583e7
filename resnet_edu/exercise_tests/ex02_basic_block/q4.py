from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_layer1_block(basic_block_params):
    from resnet_edu.exercises import expect_callable, expect_int, forbid
    expect_callable(basic_block_params, 'basic_block_params')
    with forbid('resnet_edu.models:BasicBlock.__init__', 'torchvision.models.resnet:BasicBlock.__init__', 'resnet_edu.analysis:count_parameters', task='Question 4 (use the formula)'):
        got = basic_block_params(64, 64)
    expect_int(got, 73984, 'basic_block_params(64, 64)', 'two 3x3 convs (9 * in * out each) plus two BatchNorms (2 * channels each)')

