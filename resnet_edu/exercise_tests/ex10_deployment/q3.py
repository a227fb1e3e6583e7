from otter.test_files import test_case

OK_FORMAT = False

name = "q3"
points = 3

@test_case(points=None, hidden=False)
def test_q3_clean_rows(summarize, speedup):
    from resnet_edu.exercises import expect_callable, expect_close, expect_equal
    expect_callable(summarize, 'summarize')
    expect_callable(speedup, 'speedup')
    s = summarize([10.0, 12.0, 11.0, 30.0, 11.5])
    expect_equal(s, {'min_ms': 10.0, 'median_ms': 11.5, 'noisy': False}, 'summarize([10, 12, 11, 30, 11.5])', hint='the median, not the mean: one slow call must not move it')
    expect_equal(speedup({'median_ms': 5.0, 'noisy': False}, {'median_ms': 20.0, 'noisy': False}), 4.0, 'speedup(row 5 ms, base 20 ms)', hint='base median / row median')
    b = summarize([40.0, 41.0, 42.0])
    expect_close(speedup(s, b), 41.0 / 11.5, 'speedup(row 11.5 ms, base 41 ms)', hint='base median / row median')

