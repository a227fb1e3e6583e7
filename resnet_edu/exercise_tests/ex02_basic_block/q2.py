from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 2

@test_case(points=None, hidden=False)
def test_q2_structure(make_downsample):
    import torch.nn as nn
    from resnet_edu.exercises import expect, expect_callable, expect_conv, expect_equal, expect_instance
    expect_callable(make_downsample, 'make_downsample')
    d = make_downsample(64, 128, 2)
    expect_instance(d, nn.Sequential, 'make_downsample(64, 128, 2)', 'nn.Sequential(conv, BatchNorm)')
    expect(len(d) == 2, f'make_downsample(64, 128, 2) must hold 2 modules (conv, BN), got {len(d)}')
    expect_conv(d[0], 'make_downsample(64, 128, 2)[0]', 'a 1x1 conv carries the stride', in_channels=64, out_channels=128, kernel_size=1, stride=2, padding=0, bias=False)
    expect(isinstance(d[1], nn.BatchNorm2d) and d[1].num_features == 128, f'make_downsample(64, 128, 2)[1] must be nn.BatchNorm2d(128), got {d[1]!r}')
    expect_equal(sorted(d.state_dict()), ['0.weight', '1.bias', '1.num_batches_tracked', '1.running_mean', '1.running_var', '1.weight'], 'state_dict keys')

