from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 2

@test_case(points=None, hidden=False)
def test_q5_small(confusion):
    import torch
    from resnet_edu.exercises import expect_callable, expect_close, forbid
    expect_callable(confusion, 'confusion')
    true = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    want = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with forbid('resnet_edu.training:confusion_matrix', 'sklearn.metrics:confusion_matrix', task='Question 5', answers=[confusion]):
        got = confusion(predicted, true, 3)
    expect_close(got, want, 'confusion(predicted, true, 3)', hint='row = true class, column = predicted class')

