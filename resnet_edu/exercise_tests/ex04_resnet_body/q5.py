from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 2

@test_case(points=None, hidden=False)
def test_q5_stem(kaiming_std):
    import torch.nn as nn
    from resnet_edu.exercises import expect_callable, expect_close
    expect_callable(kaiming_std, 'kaiming_std')
    conv = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    expect_close(kaiming_std(conv), (2 / (64 * 49)) ** 0.5, 'kaiming_std(stem conv 3 -> 64, 7x7)', rtol=1e-06, hint='gain sqrt(2) for ReLU, divided by sqrt(fan_out); fan_out = out_channels * kh * kw')

