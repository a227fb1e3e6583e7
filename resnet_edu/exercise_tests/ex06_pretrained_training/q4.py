from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_linear_model(accuracy):
    import torch
    import torch.nn as nn
    from resnet_edu.exercises import expect_callable, expect_close, forbid
    expect_callable(accuracy, 'accuracy')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(20, 3, 2, 2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:5] = (y[:5] + 1) % 3
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    with forbid('resnet_edu.training:evaluate', 'resnet_edu.training:predict', task='Question 4', answers=[accuracy]):
        got = accuracy(model, loader)
    expect_close(got, 0.75, 'accuracy with 15 of 20 right', hint='a fraction: correct / total over all batches')

