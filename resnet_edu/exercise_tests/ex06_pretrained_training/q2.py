from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_imagenet_head(compare_state_dicts):
    import torchvision
    import resnet_edu as rn
    from resnet_edu.exercises import expect, expect_callable, expect_equal, forbid
    expect_callable(compare_state_dicts, 'compare_state_dicts')
    model = rn.resnet18(num_classes=10)
    imagenet_style = torchvision.models.resnet18().state_dict()
    with forbid('torch.nn.modules.module:Module.load_state_dict', task='Question 2 (compare the keys yourself)', answers=[compare_state_dicts]):
        got = compare_state_dicts(model, imagenet_style)
    expect(isinstance(got, dict), f'compare_state_dicts must return a dict, got {got!r}')
    expect_equal(got.get('mismatched'), ['fc.bias', 'fc.weight'], 'mismatched keys (1000-class file, 10-class model)', 'compare the .shape of each key both sides have')
    expect_equal(got.get('missing'), [], 'missing keys (1000-class file, 10-class model)')
    expect_equal(got.get('unexpected'), [], 'unexpected keys (1000-class file, 10-class model)')

