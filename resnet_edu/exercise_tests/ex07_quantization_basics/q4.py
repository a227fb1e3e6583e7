from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_basic(symmetric_qparams):
    from resnet_edu.exercises import expect, expect_callable, expect_close, forbid
    expect_callable(symmetric_qparams, 'symmetric_qparams')
    with forbid('torch.ao.quantization.observer:UniformQuantizationObserverBase._calculate_qparams', 'torchao.quantization.pt2e.observer:UniformQuantizationObserverBase._calculate_qparams', 'torch:_choose_qparams_per_tensor', 'torch.ao.quantization.utils:determine_qparams', task='Question 4', answers=[symmetric_qparams]):
        got = symmetric_qparams(-0.5, 1.0)
    expect(isinstance(got, tuple) and len(got) == 2 and (got[1] == 0), f'symmetric_qparams must return (scale, 0), got {got!r}')
    expect_close(got[0], 1 / 127.5, 'scale of symmetric_qparams(-0.5, 1.0)', rtol=1e-05, hint='max(|min|, |max|) / 127.5')

