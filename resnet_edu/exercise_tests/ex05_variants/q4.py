from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_stem(conv_macs):
    import torch.nn as nn
    from resnet_edu.exercises import expect_callable, expect_int
    expect_callable(conv_macs, 'conv_macs')
    conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    expect_int(conv_macs(conv, 112, 112), 118013952, 'conv_macs(stem conv, 112, 112)', 'k*k*C_in*C_out multiply-adds per output pixel')

