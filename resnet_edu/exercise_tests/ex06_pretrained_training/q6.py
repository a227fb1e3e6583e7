from otter.test_files import test_case

OK_FORMAT = False

name = "q6"
points = 1

@test_case(points=None, hidden=False)
def test_q6_round_trip(safe_load):
    from resnet_edu.exercises import expect, expect_callable, in_sandbox
    expect_callable(safe_load, 'safe_load')

    def round_trip(safe_load):
        import os
        import tempfile
        import torch
        state = {'weight': torch.arange(6.0).reshape(2, 3), 'meta': {'epochs': 4}}
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'ok.pt')
            torch.save(state, path)
            got = safe_load(path)
        return (isinstance(got, dict) and torch.equal(got.get('weight'), state['weight']) and (got.get('meta') == {'epochs': 4}), repr(got)[:300])
    ok, shown = in_sandbox(round_trip, safe_load)
    expect(ok is True, f"safe_load must return what was saved (a dict with 'weight' and 'meta'), got {shown}")

