from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_architecture(resnext50_row):
    from resnet_edu.exercises import expect, expect_equal
    expect(isinstance(resnext50_row, dict), f'resnext50_row must be the dict from the cell, got {resnext50_row!r}')
    expect_equal(resnext50_row.get('block'), 'Bottleneck', "resnext50_row['block']", 'which block class do the 50-layer models use?')
    layers = resnext50_row.get('layers')
    expect_equal(list(layers) if isinstance(layers, (list, tuple)) else layers, [3, 4, 6, 3], "resnext50_row['layers']")
    expect_equal(resnext50_row.get('groups'), 32, "resnext50_row['groups']", 'the 32 in 32x4d')
    expect_equal(resnext50_row.get('width_per_group'), 4, "resnext50_row['width_per_group']", 'the 4 in 32x4d')

