"""The grader's parts: the wire (plain data only), references, the gradebook after a crash."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_edu.grading import wire
from resnet_edu.grading.gradebook import IN_PROGRESS, PENDING
from resnet_edu.grading.remote import LoopbackSession, Remote, StudentNamespace
from resnet_edu.grading.sandbox import UID_BASE, UID_SPAN, sandbox_problem

ROOT = Path(__file__).resolve().parent.parent


def _roundtrip(value):
    tree, buffers = wire.encode(value, lambda obj: {"ref": 1, "mro": ["x:Y"], "callable": False})
    data = wire.pack_reply(tree, buffers)
    return wire.decode(*wire.unpack_reply(data), make_remote=lambda node: ("ref", node["ref"]))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_wire_plain_data_round_trip():
    q = torch.quantize_per_tensor(torch.tensor([0.5, -1.0]), 0.1, 3, torch.quint8)
    value = {"a": (1, 2.5, float("nan"), None, True), 3: [torch.arange(6).reshape(2, 3), torch.ones(2, dtype=torch.bool)], "q": q,
             "size": torch.Size([1, 2]), "dt": torch.float16, "big": 2**70, "e": ...}
    got = _roundtrip(value)
    assert got["a"][:2] == (1, 2.5) and got["a"][2] != got["a"][2] and got["a"][3:] == (None, True)
    assert torch.equal(got[3][0], value[3][0]) and got[3][1].dtype == torch.bool
    assert got["q"].is_quantized and torch.equal(got["q"].int_repr(), q.int_repr()) and got["q"].q_scale() == pytest.approx(0.1)
    assert type(got["size"]) is torch.Size and got["dt"] is torch.float16 and got["big"] == 2**70 and got["e"] is Ellipsis


def test_wire_non_plain_values_become_references():
    class Sneaky(int):
        def __eq__(self, other):
            return True

    assert _roundtrip([Sneaky(3), object()]) == [("ref", 1), ("ref", 1)]


@pytest.mark.parametrize("tree,buffers,match", [
    ({"pickle": "x"}, [], "unknown tag"),
    ({"tensor": 0, "dtype": "float32", "shape": [3]}, [b"\0" * 8], "do not match"),
    ({"tensor": 0, "dtype": "object", "shape": [1]}, [b"\0"], "bad tensor"),
    ({"tensor": 5, "dtype": "float32", "shape": [1]}, [], "index"),
    ({"torch": "load"}, [], "unknown torch name"),
])
def test_wire_refuses_what_is_not_plain_data(tree, buffers, match):
    with pytest.raises(wire.ProtocolError, match=match):
        wire.decode(*wire.unpack_reply(wire.pack_reply(tree, buffers)), make_remote=lambda n: None)


def test_wire_refuses_oversized_and_broken_frames():
    with pytest.raises(wire.ProtocolError):
        wire.unpack_reply(b"\0\0\0\0\0\0\0\x05{}")
    with pytest.raises(wire.ProtocolError, match="buffers do not add up"):
        wire.unpack_reply(wire.pack_reply(1, [b"ab"])[:-1])


def test_references_compare_by_identity_and_look_like_their_class():
    import torch.nn as nn

    class Liar:
        def __eq__(self, other):
            return True

    ns = {"conv": nn.Conv2d(3, 4, 3, padding=1, bias=False), "liar": Liar(), "f": lambda t: t.add_(1)}
    env = StudentNamespace(LoopbackSession(ns))
    conv, liar = env.get("conv"), env.get("liar")
    assert type(conv) is Remote and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.bias is None
    assert tuple(conv(torch.zeros(1, 3, 5, 5)).shape) == (1, 4, 5, 5)
    assert not (liar == 1) and liar != 1 and not isinstance(liar, int)
    x = torch.zeros(2)
    env.get("f")(x)
    assert x.tolist() == [1.0, 1.0], "a tensor changed in place comes back changed"


@pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")
def test_killed_grader_leaves_finished_rows_and_names_the_file(tmp_path):
    from resnet_edu import exercises

    name = "ex01_conv_templates"
    solution = json.loads(exercises.assign(ROOT / "exercises" / f"{name}.ipynb", tmp_path / "assign")["autograder"].read_text())
    blank = json.loads((ROOT / "notebooks" / "exercises" / f"{name}.ipynb").read_text())
    slow = json.loads(json.dumps(blank))
    slow["cells"].append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": "import time\ntime.sleep(300)"})
    subs = tmp_path / "subs"
    subs.mkdir()
    for f, nb in (("a.ipynb", solution), ("b.ipynb", slow), ("c.ipynb", blank)):
        (subs / f).write_text(json.dumps(nb))
    out = tmp_path / "scores.csv"
    cmd = [sys.executable, "-m", "resnet_edu.grade", str(subs), "--out", str(out), "--cell-timeout", "400", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rows: dict = {}
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if out.exists():
                rows = {r["file"]: r for r in csv.DictReader(out.open(newline=""))}
                if rows.get("a.ipynb", {}).get("total"):
                    break
            time.sleep(0.5)
        time.sleep(8)  # b's sandbox is up and sleeping
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = {r["file"]: r for r in csv.DictReader(out.open(newline=""))}
    assert rows["a.ipynb"]["total"] == "11" and rows["a.ipynb"]["note"] == ""
    assert rows["b.ipynb"]["total"] == "" and rows["b.ipynb"]["note"] == IN_PROGRESS
    assert rows["c.ipynb"]["total"] == "" and rows["c.ipynb"]["note"] == PENDING
    time.sleep(2)  # --die-with-parent: b's sandbox went with the grader
    left = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) is not None and UID_BASE <= _uid(p) < UID_BASE + UID_SPAN]
    assert left == []
    before = out.read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr and out.read_bytes() == before


def _uid(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_unsafe_grades_without_a_sandbox(tmp_path, monkeypatch):
    """--unsafe: same protocol and verdicts, the worker a plain child process (where bwrap cannot run)."""
    from resnet_edu import exercises
    from resnet_edu.grading import core, sandbox

    name = "ex01_conv_templates"
    (tmp_path / "subs").mkdir()
    sol = exercises.assign(ROOT / "exercises" / f"{name}.ipynb", tmp_path / "assign")["autograder"]
    (tmp_path / "subs" / "a.ipynb").write_text(sol.read_text())
    monkeypatch.setitem(sandbox._PROBLEM, "v", "bubblewrap (bwrap) is not installed")
    (r,) = core.grade_folder(tmp_path / "subs", unsafe=True, progress=False)
    assert (r.total, r.max, r.notes) == (11.0, 11.0, [])
