from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 3

@test_case(points=None, hidden=False)
def test_q5_one_scale_per_channel(per_channel_scales):
    import torch
    from resnet_edu.exercises import expect, expect_callable, expect_close, forbid
    expect_callable(per_channel_scales, 'per_channel_scales')
    w = torch.zeros(3, 2, 3, 3)
    w[0, 0, 0, 0], w[1, 1, 2, 2], w[2, 0, 1, 1] = (1.0, -10.0, 100.0)
    with forbid('torch.ao.quantization.observer:UniformQuantizationObserverBase._calculate_qparams', 'torchao.quantization.pt2e.observer:UniformQuantizationObserverBase._calculate_qparams', 'torch:_choose_qparams_per_tensor', 'torch.ao.quantization.utils:determine_qparams', task='Question 5', answers=[per_channel_scales]):
        got = per_channel_scales(w)
    expect(isinstance(got, torch.Tensor), f'per_channel_scales must return a tensor, got {got!r}')
    expect_close(got, torch.tensor([1.0, 10.0, 100.0]) / 127.5, 'per_channel_scales for channels with ranges 1, 10, 100', rtol=1e-05, hint='one scale per output channel (axis 0): reduce over every other axis; not one scale for the whole tensor')

