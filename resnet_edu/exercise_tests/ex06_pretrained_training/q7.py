from otter.test_files import test_case

OK_FORMAT = False

name = "q7"
points = 2

@test_case(points=None, hidden=False)
def test_q7_resnet18(prepare_transfer):
    import torch.nn as nn
    import resnet_edu as rn
    from resnet_edu.exercises import expect, expect_callable, expect_int
    expect_callable(prepare_transfer, 'prepare_transfer')
    model = prepare_transfer(rn.resnet18(), 10)
    expect(isinstance(model, nn.Module), f'prepare_transfer must return the model, got {model!r}')
    trainable = sum((p.numel() for p in model.parameters() if p.requires_grad))
    expect_int(trainable, 512 * 10 + 10, 'trainable parameters of resnet18 prepared for 10 classes', 'freeze first, then put in the new fc (its weight and bias train)')

