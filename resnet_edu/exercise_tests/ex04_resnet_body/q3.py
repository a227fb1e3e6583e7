from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 2

@test_case(points=None, hidden=False)
def test_q3_resnet18(inplanes_sequence):
    from resnet_edu.exercises import expect_callable, expect_equal
    expect_callable(inplanes_sequence, 'inplanes_sequence')
    got = inplanes_sequence(1, [2, 2, 2, 2])
    expect_equal(list(got) if isinstance(got, (list, tuple)) else got, [64, 64, 64, 128, 128, 256, 256, 512], 'inplanes_sequence(1, [2, 2, 2, 2]) (resnet18)', "after a stage's first block, inplanes becomes planes * expansion")

