from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 3

@test_case(points=None, hidden=False)
def test_q5_resnet18(model_macs, conv_macs):
    import resnet_edu as rn
    from resnet_edu.exercises import expect_callable, expect_int, forbid
    expect_callable(model_macs, 'model_macs')
    model = rn.resnet18()
    want = rn.count_macs(model, (1, 3, 128, 128))
    with forbid('resnet_edu.analysis:count_macs', 'torch.utils.flop_counter:FlopCounterMode', task='Question 5', answers=[model_macs, conv_macs]):
        got = model_macs(model, (1, 3, 128, 128))
    expect_int(got, want, 'model_macs(resnet18, (1, 3, 128, 128))', 'hook every nn.Conv2d and nn.Linear; the downsample convs count too')

