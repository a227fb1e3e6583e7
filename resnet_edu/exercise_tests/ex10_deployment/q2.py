from otter.test_files import test_case

OK_FORMAT = False

name = "q2"
points = 3

@test_case(points=None, hidden=False)
def test_q2_vnni_x86(ort_settings):
    from resnet_edu.exercises import expect_callable, expect_equal
    expect_callable(ort_settings, 'ort_settings')
    cpu = {'arch': 'x86_64', 'avx2': True, 'avx512': True, 'avx512_vnni': True, 'avx_vnni': False}
    expect_equal(ort_settings(cpu), {'activations': 'u8', 'reduce_range': False}, 'ort_settings on an AVX512-VNNI x86 CPU', hint='vpdpbusd multiplies unsigned bytes by signed bytes and accumulates in int32: U8S8, nothing saturates')

