from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_like_pytorch(quantize):
    import torch
    from resnet_edu.exercises import expect, expect_callable, expect_equal, forbid, quiet
    expect_callable(quantize, 'quantize')
    x = torch.tensor([-1.0, -0.3, 0.0, 0.5, 1.0, 2.0])
    with quiet():
        want = torch.quantize_per_tensor(x, 0.0625, 50, torch.quint8).int_repr().long()
    with forbid('torch:quantize_per_tensor', 'torch:quantize_per_channel', 'torch:fake_quantize_per_tensor_affine', 'torch:fake_quantize_per_channel_affine', 'torch:quantize_per_tensor_dynamic', task='Question 1', answers=[quantize]):
        got = quantize(x, 0.0625, 50)
    expect(isinstance(got, torch.Tensor) and (not got.is_floating_point()) and (not got.is_complex()), f'quantize must return an integer tensor, got {got!r}')
    expect_equal(got.long().tolist(), want.tolist(), 'quantize([-1, -0.3, 0, 0.5, 1, 2], scale=0.0625, zero_point=50)', 'round(x / scale) + zero_point, then clamp')

