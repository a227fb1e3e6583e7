from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_resnet50_224(stage_shapes):
    from resnet_edu.exercises import expect_callable, expect_equal, forbid
    expect_callable(stage_shapes, 'stage_shapes')
    with forbid('resnet_edu.analysis:trace_shapes', 'resnet_edu.models:ResNet._forward_impl', 'torchvision.models.resnet:ResNet._forward_impl', task='Question 2'):
        got = stage_shapes(4, 224, 224)
    want = [(1, 64, 56, 56), (1, 256, 56, 56), (1, 512, 28, 28), (1, 1024, 14, 14), (1, 2048, 7, 7)]
    expect_equal([tuple(s) for s in got] if isinstance(got, (list, tuple)) else got, want, 'stage_shapes(4, 224, 224) (resnet50)', 'the stem divides H and W by 4; layer2-4 halve them; channels are 64 * 2**i * expansion')

