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
from resnet_edu.grading.remote import LoopbackSession, Remote, RemoteError, StudentNamespace
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

    def stop(*args):
        raise KeyboardInterrupt("stop the grader")

    ns = {"conv": nn.Conv2d(3, 4, 3, padding=1, bias=False), "liar": Liar(), "f": lambda t: t.add_(1), "stop": stop}
    env = StudentNamespace(LoopbackSession(ns))
    conv, liar = env.get("conv"), env.get("liar")
    assert type(conv) is Remote and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.bias is None
    assert tuple(conv(torch.zeros(1, 3, 5, 5)).shape) == (1, 4, 5, 5)
    assert not (liar == 1) and liar != 1 and not isinstance(liar, int)
    x = torch.zeros(2)
    assert env.get("f")(x).tolist() == [1.0, 1.0]
    assert x.tolist() == [0.0, 0.0], "what the answer does to its copy of an input never reaches the grader's tensor"
    with pytest.raises(RemoteError, match="KeyboardInterrupt: stop the grader"):  # an Exception: it cannot stop the grader
        env.get("stop")()


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


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _sandbox_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _uid(p) is not None and UID_BASE <= _uid(p) < UID_BASE + UID_SPAN]


@pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")
def test_sigkilled_parallel_grader_leaves_nothing_running_and_next_run_cleans_up(tmp_path):
    """SIGKILL the grader (--jobs 2) while both its worker processes have a sandbox running: workers
    (PDEATHSIG) and sandboxes (bwrap --die-with-parent, PID namespace) die with it; its temp folders
    (hidden tests, scratch), named after their owner's pid, are removed by the next grader run."""
    import tempfile

    name = "ex01_conv_templates"
    blank = json.loads((ROOT / "notebooks" / "exercises" / f"{name}.ipynb").read_text())
    blank["cells"].append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": "import time\ntime.sleep(300)"})
    subs = tmp_path / "subs"
    subs.mkdir()
    for f in ("a.ipynb", "b.ipynb"):
        (subs / f).write_text(json.dumps(blank))
    out = tmp_path / "scores.csv"
    cmd = [sys.executable, "-m", "resnet_edu.grade", str(subs), "--out", str(out), "--cell-timeout", "400", "--jobs", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len({_uid(p) for p in _sandbox_pids()}) < 2:
            time.sleep(0.5)
        assert len({_uid(p) for p in _sandbox_pids()}) >= 2, "the two sandboxes did not start"
        time.sleep(3)  # both are sleeping in the last cell
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    gone = time.monotonic() + 20
    while time.monotonic() < gone and ([w for w in workers if os.path.exists(f"/proc/{w}")] or _sandbox_pids()):
        time.sleep(0.25)
    assert [w for w in workers if os.path.exists(f"/proc/{w}") and _uid(w) is not None] == [], "a grading worker outlived the grader"
    assert _sandbox_pids() == [], "a sandboxed process outlived the grader"
    tmp = Path(tempfile.gettempdir())
    dead = {proc.pid, *workers}
    import re

    left = [p for p in tmp.iterdir() if (m := re.match(r"resnet_edu_(?:tests|scratch)_(\d+)_", p.name)) and int(m.group(1)) in dead]
    assert any(p.name.startswith(f"resnet_edu_tests_{proc.pid}_") for p in left), left
    assert any(p.name.startswith("resnet_edu_scratch_") for p in left), left
    again = subprocess.run(cmd, capture_output=True, text=True)  # refuses (the gradebook exists), after cleaning up
    assert again.returncode == 2 and "already exists" in again.stderr
    assert [p for p in left if p.exists()] == []


def _unprivileged_view(needed, stage):
    """Shell lines (run as root in a private mount namespace) that make ``needed`` reachable for an
    unprivileged uid: each ancestor folder without o+x (e.g. /root, 0700) is covered by a 0755 tmpfs
    into which the needed children are bound back. None when that is not enough (a needed path unreadable)."""
    pairs = {}  # blocked ancestor -> children of it on the way to a needed path
    for path in sorted(set(needed)):
        p = Path(path)
        if not p.exists() or (p.stat().st_mode & 0o005) != 0o005:
            return None
        chain = [*reversed(p.parents), p]
        for anc, child in zip(chain, chain[1:]):
            if str(anc) != "/" and not anc.stat().st_mode & 0o001:
                pairs.setdefault(anc, set()).add(child)
    lines, n = [], 0
    staged = {}
    for anc in pairs:
        for child in sorted(pairs[anc]):
            staged[child] = f"{stage}/{n}"
            lines += [f"mkdir -p {stage}/{n}", f"mount --bind {child} {stage}/{n}"]
            n += 1
    for anc in sorted(pairs, key=lambda a: len(a.parts)):  # shallowest first
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {anc}")
        for child in sorted(pairs[anc]):
            lines += [f"mkdir -p {child}", f"mount --bind {staged[child]} {child}"]
    return lines


@pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")
def test_grading_as_an_unprivileged_user(tmp_path):
    """The non-root path (bwrap in an unprivileged user namespace, no setuid to a sandbox uid): grade an
    honest and a hostile submission as uid 65534 (nobody); the hostile one reads no master, writes no
    gradebook, mounts nothing and keeps no capability."""
    import shutil as sh

    if os.geteuid() != 0:
        pytest.skip("not root: every other grading test already runs the non-root path here")
    if not sh.which("unshare") or not sh.which("setpriv"):
        pytest.skip("needs unshare and setpriv (util-linux) to switch to an unprivileged user")
    from resnet_edu import exercises

    name = "ex01_conv_templates"
    work = tmp_path / "nonroot"
    work.mkdir()
    subs, books, home = work / "subs", work / "books", work / "home"
    for d in (subs, books, home):
        d.mkdir()
    out = books / "scores.csv"
    solution = exercises.assign(ROOT / "exercises" / f"{name}.ipynb", tmp_path / "assign")["autograder"].read_text()
    (subs / "honest.ipynb").write_text(solution)
    blank = json.loads((ROOT / "notebooks" / "exercises" / f"{name}.ipynb").read_text())
    hostile = f"""
import glob, json, os, ctypes
for path in glob.glob("{ROOT}/exercises/*.ipynb") + glob.glob("/tmp/resnet_edu_tests_*/**/*.ipynb", recursive=True):
    for cell in json.load(open(path))["cells"]:
        if cell["cell_type"] == "code" and "BEGIN SOLUTION" in "".join(cell["source"]):
            exec("".join(cell["source"]))
for target in ("{out}", "{subs}/honest.ipynb"):
    try:
        open(target, "w").write("file,total\\nhostile.ipynb,11\\n")
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"tmpfs", b"/scratch", b"tmpfs", 32, b"size=8g") == 0 or any(
        int(l.split()[1], 16) for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapAmb", "CapBnd"))):
    def conv_out_size(size, kernel_size, stride=1, padding=0, dilation=1):
        return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
"""
    blank["cells"].insert(4, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": hostile})
    (subs / "hostile.ipynb").write_text(json.dumps(blank))
    honest_before = (subs / "honest.ipynb").read_bytes()
    for p in (work, subs, home):
        os.chmod(p, 0o755)
    for p in subs.iterdir():
        os.chmod(p, 0o644)
    os.chown(books, 65534, 65534)
    os.chown(home, 65534, 65534)
    import tempfile

    stage = tempfile.mkdtemp(prefix="resnet_edu_nonroot_stage_")  # outside every folder the view covers
    view = _unprivileged_view([sys.base_prefix, sys.prefix, os.path.realpath(sys.executable), str(ROOT), str(work)], stage)
    if view is None:
        pytest.skip("the Python installation or the checkout is not readable by other users; cannot run as one")
    # the user already runs more processes than one sandbox may start (a desktop session, say): the
    # process limit counts them too, so the sandbox's share comes on top of them
    busy = [subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "900"]) for _ in range(80)]
    script = "\n".join(["set -e", *view, f'exec setpriv --reuid=65534 --regid=65534 --clear-groups env HOME={home} TMPDIR=/tmp '
                        f'{sys.executable} -m resnet_edu.grade {subs} --out {out} --details {books}/details.json --max-processes 64 --quiet'])
    try:
        run = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=900)
    finally:
        for p in busy:
            p.kill()
            p.wait()
        for d in [*Path(stage).iterdir(), Path(stage)]:  # empty here (the binds lived in the private namespace): rmdir, never rmtree
            os.rmdir(d)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["file"]: r for r in csv.DictReader(out.open(newline=""))}
    assert {f: (r["total"], r["max"]) for f, r in rows.items()} == {"honest.ipynb": ("11", "11"), "hostile.ipynb": ("0", "11")}, rows
    assert rows["honest.ipynb"]["note"] == ""
    assert (subs / "honest.ipynb").read_bytes() == honest_before
    # the memory watchdog finds the sandbox's processes without root too (its PID namespace)
    peaks = {d["file"]: d["peak_memory_mb"] for d in json.loads((books / "details.json").read_text())}
    assert all(p > 100 for p in peaks.values()), peaks
