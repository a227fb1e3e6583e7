from otter.test_files import test_case

OK_FORMAT = False

name = "q5"
points = 1

@test_case(points=None, hidden=False)
def test_q5_linear(state_dict_bytes):
    import io
    import torch
    from resnet_edu.exercises import expect, expect_callable
    expect_callable(state_dict_bytes, 'state_dict_bytes')
    m = torch.nn.Linear(100, 100)
    f = io.BytesIO()
    torch.save(m.state_dict(), f)
    want = f.getbuffer().nbytes
    got = state_dict_bytes(m)
    expect(isinstance(got, int) and abs(got - want) <= 0.02 * want, f'state_dict_bytes(nn.Linear(100, 100)): expected about {want} bytes, got {got!r}. Hint: torch.save into io.BytesIO(), then its size')

