from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_shape(layer2_first):
    import torch
    import resnet_edu as rn
    from resnet_edu.exercises import expect_equal, expect_instance
    expect_instance(layer2_first, rn.Bottleneck, 'layer2_first')
    layer2_first.eval()
    with torch.no_grad():
        out = layer2_first(torch.zeros(1, 256, 56, 56))
    expect_equal(tuple(out.shape), (1, 512, 28, 28), 'layer2_first output shape for a 1x256x56x56 input', 'planes is the inner width: the block outputs planes * 4 channels')

