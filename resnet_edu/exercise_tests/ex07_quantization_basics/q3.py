from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 3

@test_case(points=None, hidden=False)
def test_q3_symmetric_range(qparams_from_minmax):
    from resnet_edu.exercises import expect, expect_callable, expect_close, expect_int, forbid
    expect_callable(qparams_from_minmax, 'qparams_from_minmax')
    with forbid('torch.ao.quantization.observer:UniformQuantizationObserverBase._calculate_qparams', 'torchao.quantization.pt2e.observer:UniformQuantizationObserverBase._calculate_qparams', 'torch:_choose_qparams_per_tensor', 'torch.ao.quantization.utils:determine_qparams', task='Question 3', answers=[qparams_from_minmax]):
        got = qparams_from_minmax(-1.0, 3.0)
    expect(isinstance(got, tuple) and len(got) == 2, f'qparams_from_minmax must return (scale, zero_point), got {got!r}')
    expect_close(got[0], 4 / 255, 'scale for [-1, 3] in uint8', rtol=1e-05, hint='(max - min) / (qmax - qmin)')
    expect_int(got[1], 64, 'zero_point for [-1, 3] in uint8', 'qmin - round(min / scale)')

