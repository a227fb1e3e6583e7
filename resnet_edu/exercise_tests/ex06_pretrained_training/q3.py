from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 2

@test_case(points=None, hidden=False)
def test_q3_training_part(normalize):
    import torch
    from resnet_edu.exercises import expect, expect_callable, expect_close, expect_equal, expect_instance
    expect_callable(normalize, 'normalize')
    g = torch.Generator().manual_seed(3)
    x_train = 5 + 2 * torch.randn(64, 3, 8, 8, generator=g)
    x_test = 5 + 2 * torch.randn(16, 3, 8, 8, generator=g)
    out = normalize(x_train, x_test)
    expect(isinstance(out, tuple) and len(out) == 2, f'normalize must return a tuple (train, test), got {type(out).__name__}')
    train, test = out
    expect_instance(train, torch.Tensor, 'the normalized training set (first element)')
    expect_instance(test, torch.Tensor, 'the normalized test set (second element)')
    expect_equal(tuple(test.shape), tuple(x_test.shape), 'shape of the normalized test set')
    expect_close(train.mean(), 0.0, 'mean of the normalized training set', atol=0.0001)
    expect_close(train.std(), 1.0, 'standard deviation of the normalized training set', atol=0.001)

