from otter.test_files import test_case

OK_FORMAT = False

name = "q6"
points = 1

@test_case(points=None, hidden=False)
def test_q6_small(sqnr_db):
    import math
    import torch
    from resnet_edu.exercises import expect_callable, expect_close
    expect_callable(sqnr_db, 'sqnr_db')
    got = sqnr_db(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.1]))
    expect_close(got, 10 * math.log10(14 / 0.01), 'sqnr_db([1, 2, 3], [1, 2, 3.1])', rtol=0.0001, hint='signal power 14, noise power 0.01')

