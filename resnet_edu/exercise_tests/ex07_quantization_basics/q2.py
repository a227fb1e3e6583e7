from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 2

@test_case(points=None, hidden=False)
def test_q2_basic(dequantize):
    import torch
    from resnet_edu.exercises import expect_callable, expect_close, forbid
    expect_callable(dequantize, 'dequantize')
    q = torch.tensor([0, 50, 100, 255], dtype=torch.int64)
    with forbid('torch:dequantize', 'torch:Tensor.dequantize', task='Question 2', answers=[dequantize]):
        got = dequantize(q, 0.02, 50)
    expect_close(got, torch.tensor([-1.0, 0.0, 1.0, 4.1]), 'dequantize([0, 50, 100, 255], scale=0.02, zero_point=50)', atol=1e-06, hint='(q - zero_point) * scale')

