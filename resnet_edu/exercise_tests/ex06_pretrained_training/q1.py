from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 1

@test_case(points=None, hidden=False)
def test_q1_torchvision_files(hash_prefix):
    from resnet_edu.exercises import expect_callable, expect_equal
    expect_callable(hash_prefix, 'hash_prefix')
    expect_equal(hash_prefix('https://download.pytorch.org/models/resnet18-f37072fd.pth'), 'f37072fd', "hash_prefix('.../resnet18-f37072fd.pth')", "the hex digits between the '-' and the '.'")
    expect_equal(hash_prefix('https://download.pytorch.org/models/resnet50-11ad3fa6.pth'), '11ad3fa6', "hash_prefix('.../resnet50-11ad3fa6.pth')")

