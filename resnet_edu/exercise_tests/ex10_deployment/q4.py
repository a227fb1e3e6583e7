from otter.test_files import test_case

OK_FORMAT = False

name = "q4"
points = 2

@test_case(points=None, hidden=False)
def test_q4_resnet18(overhead_share, batch_for_share):
    from resnet_edu.exercises import expect_callable, expect_close, expect_equal
    expect_callable(overhead_share, 'overhead_share')
    expect_callable(batch_for_share, 'batch_for_share')
    expect_close(overhead_share(20, 25.0, 5.0, 1), 0.5 / 5.5, 'overhead_share(20, 25.0, 5.0, 1): ResNet-18 at batch 1', hint='20 calls x 25 us = 0.5 ms fixed, plus 5 ms of computation for one image')
    expect_equal(batch_for_share(20, 25.0, 5.0, 0.01), 10, 'batch_for_share(20, 25.0, 5.0, 0.01)', hint='0.5 / (0.5 + 5 b) <= 0.01 first holds at b = 10')

