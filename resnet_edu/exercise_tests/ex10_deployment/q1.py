from otter.test_files import test_case

OK_FORMAT = False

name = "q1"
points = 2

@test_case(points=None, hidden=False)
def test_q1_resnet18(limit_ms):
    from resnet_edu.exercises import expect_callable, expect_close
    expect_callable(limit_ms, 'limit_ms')
    got = limit_ms(1814073344, 1, 128, 2, 2.5)
    expect_close(got, 1000.0 * 1814073344 / (128 * 2 * 2500000000.0), 'limit_ms(1814073344, 1, 128, 2, 2.5): ResNet-18, AVX512-VNNI INT8, 2 cores', rtol=1e-06, atol=0, hint='MACs / (MACs per cycle x cores x cycles per second), in milliseconds (x 1000); GHz is 1e9 cycles per second')

