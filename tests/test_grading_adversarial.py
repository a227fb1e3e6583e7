"""Hostile submissions, graded in ONE batch through the sandboxed grader (ex01, 11 points).

Each attack below worked against the previous grader (issue 15) or is one of our own. The grader
runs as a teacher runs it (``python -m resnet_edu.grade``), on a private copy of the parts of the
repository it reads (package, masters, student notebooks), so the check that nothing changed does
not depend on what else edits the working tree. The test asserts each submission's exact score,
that the honest solution next to them keeps full marks with an empty note, that no file outside the
sandboxes' scratch folders changed (repository copy, virtual environment, submissions, gradebook)
and that no sandboxed process is left running.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_edu import exercises
from resnet_edu.grading.core import MAX_NOTEBOOK_MB, SYMLINK_NOTE
from resnet_edu.grading.sandbox import UID_BASE, UID_SPAN, sandbox_problem

ROOT = Path(__file__).resolve().parent.parent
SET = "ex01_conv_templates"  # q1 2, q2 3, q3 2, q4 2, q5 2 points

pytestmark = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")

# name -> (code, expected total). The code is a cell inserted after the imports of the BLANK notebook,
# or of the SOLUTION with "sol:", or replaces the SOLUTION's answer to question N with "solqN:".
# An attack on a solution that gets through makes the honest answers lose points (nn.Conv2d = None
# breaks q2 and q3: 11 -> 6), so "exactly 11" means "stopped, and nothing else was disturbed".
ATTACKS = {
    "patch_grader": ("""
import resnet_edu.grade as g, resnet_edu.grading.core as c
from otter.test_files.exception_test import test_case
g.run_question = c.run_question = lambda *a, **k: [{"name": "x", "points": 5000, "passed": True}]
test_case.call_func = lambda self, env: None
""", 0),
    "patch_checks_and_eq": ("""
import torch, numpy.testing, resnet_edu.exercises as E
torch.equal = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
for n in dir(E):
    if n.startswith("expect"):
        setattr(E, n, lambda *a, **k: None)
class Yes(int):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = int.__hash__
class AnyConv:
    def __eq__(self, other): return True
    def __getattr__(self, name): return Yes(1)
conv_out_size = same_padding = conv_params = lambda *a, **k: Yes(3)
my_conv3x3 = my_conv1x1 = lambda *a, **k: AnyConv()
""", 0),
    "read_solutions": ("""
import glob, os, json
from pathlib import Path
import resnet_edu
repo = Path(resnet_edu.__file__).resolve().parent.parent  # where the grader's masters live, outside
found = glob.glob(f"{repo}/exercises/*") + glob.glob("/tmp/resnet_edu_tests_*/**", recursive=True) + glob.glob("/tmp/tmp*/**/*", recursive=True)
for path in found:
    if path.endswith(".ipynb"):
        for cell in json.load(open(path))["cells"]:
            if cell["cell_type"] == "code" and "BEGIN SOLUTION" in "".join(cell["source"]):
                exec("".join(cell["source"]))
""", 0),
    "snoop_and_sabotage": ("""
import os, glob, signal
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            cmd = open(f"/proc/{pid}/cmdline").read()
            os.kill(int(pid), signal.SIGKILL)
        except Exception:
            pass
import resnet_edu, sys
pkg = os.path.dirname(resnet_edu.__file__)
for top, dirs, files in os.walk("/"):  # every folder it can see, but the system's (read-only binds)
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/usr", sys.prefix, sys.base_prefix)]
    for path in [os.path.join(top, f) for f in files if f.endswith((".ipynb", ".csv", ".py", ".json"))]:
        try:
            open(path, "a").write("gone")
        except Exception:
            pass
""", 0),
    "background_writer": ("""
import threading, time, json, os
def rewrite():
    while True:
        for d in (".", "/tmp", os.path.expanduser("~")):
            for q in range(1, 6):
                try:
                    json.dump([{"name": "x", "points": 100, "hidden": False, "passed": True}], open(f"{d}/q{q}.json", "w"))
                except Exception:
                    pass
        time.sleep(0.01)
threading.Thread(target=rewrite, daemon=True).start()
print("All tests passed!")
""", 0),
    # a daemon in a session of its own, and a double-forked one that ignores SIGTERM/SIGHUP: both
    # would rewrite every CSV after 20 s (the test waits 25 s and checks the gradebook)
    "daemons_after_grading": ("""
import os, signal, subprocess, sys
rewrite = "import glob, time\\ntime.sleep(20)\\nfor p in glob.glob('/**/*.csv', recursive=True):\\n    open(p, 'w').write('file,total\\\\nme,11\\\\n')"
subprocess.Popen([sys.executable, "-c", rewrite], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.execv(sys.executable, [sys.executable, "-c", rewrite])
    os._exit(0)
os.wait()
""", 0),
    # the network: a listener the test opens on the host's loopback (port filled in by the test), the
    # internet, and any interface besides lo. Reaching any of them breaks the honest answers: 11 -> 6
    "network": ("sol:" + """
import socket
reached = []
for host, port in (("127.0.0.1", __PORT__), ("pypi.org", 443)):
    try:
        socket.create_connection((host, port), timeout=3).close()
        reached.append(host)
    except OSError:
        pass
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
if reached or [i for i in interfaces if i != "lo"]:
    nn.Conv2d = None
print(reached, interfaces)
""", 11),
    # per-process limits: a 64 GiB allocation; 400 processes (forked by a small helper: forking the
    # notebook's own 400 MB process 256 times is slow) and 400 threads, the limit being 256 for both together
    "memory_and_processes": ("sol:" + """
import subprocess, sys, threading
try:
    hog = bytearray(64 * 1024 ** 3)
    nn.Conv2d = None
except MemoryError:
    pass
forker = "\\n".join([
    "import os, signal, time",
    "kids = []",
    "for _ in range(400):",
    "    try:",
    "        pid = os.fork()",
    "    except OSError:",
    "        break",
    "    if pid == 0:",
    "        time.sleep(600)",
    "        os._exit(0)",
    "    kids.append(pid)",
    "for pid in kids:",
    "    os.kill(pid, signal.SIGKILL)",
    "    os.waitpid(pid, 0)",
    "print(len(kids))",
])
if int(subprocess.run([sys.executable, "-c", forker], capture_output=True, text=True).stdout) >= 400:
    nn.Conv2d = None
stop = threading.Event()
threads = []
for _ in range(400):
    try:
        t = threading.Thread(target=stop.wait)
        t.start()
    except RuntimeError:
        break
    threads.append(t)
if len(threads) >= 400:
    nn.Conv2d = None
stop.set()
for t in threads:
    t.join()
""", 11),
    # a memory bomb spread over processes, each under the per-process limit: the watchdog kills the
    # whole sandbox (here at 2 GiB: the batch runs with --sandbox-memory-mb 2048), the cell is not
    # replayed, and the honest answers after it still score
    "memory_bomb_processes": ("sol:" + """
import os, time
for _ in range(6):
    if os.fork() == 0:
        block = bytearray(500 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(120)
        os._exit(0)
time.sleep(120)
nn.Conv2d = None  # reached only if the sandbox survived
""", 11),
    # tmpfs caps: bytes AND files (inodes) in /scratch, $HOME and /tmp; no remount, no capability left.
    # The folders stay full for the rest of the notebook: the honest answers still score.
    "fill_scratch": ("sol:" + """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
escaped = any(libc.mount(b"tmpfs", d.encode(), b"tmpfs", 32, b"size=8g,nr_inodes=0") == 0 for d in ("/scratch", "/tmp"))
escaped |= any(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith(("CapEff", "CapPrm", "CapAmb", "CapBnd")))
made = {}
for d in ("/scratch", "/tmp", "/dev/shm", os.path.expanduser("~")):
    os.makedirs(f"{d}/many", exist_ok=True)
    n = 0
    while n < 100000:
        try:
            open(f"{d}/many/{n}", "w").close()
        except OSError:
            break
        n += 1
    made[d] = n
try:
    open("/scratch/big", "wb").write(b"x" * (2 << 30))
except (OSError, MemoryError):
    pass
if escaped or max(made.values()) >= 100000:
    nn.Conv2d = None
print(made)
""", 11),
    # ctypes: become root, regain capabilities in a new user namespace and remount the read-only view
    # writable, ptrace the sandbox's first process, signal every process it can see
    "ctypes_escape": ("sol:" + """
import ctypes, os, signal
from pathlib import Path
import resnet_edu
libc = ctypes.CDLL(None, use_errno=True)
pkg = str(Path(resnet_edu.__file__).resolve().parent).encode()
escaped = libc.setuid(0) == 0 or libc.setgid(0) == 0
pid = os.fork()
if pid == 0:  # a new user namespace needs a single-threaded process: all capabilities there, then remount rw
    CLONE_NEWUSER, CLONE_NEWNS, MS_REMOUNT, MS_BIND = 0x10000000, 0x00020000, 32, 4096
    ok = libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 and libc.mount(None, pkg, None, MS_REMOUNT | MS_BIND, None) == 0
    try:
        open(Path(resnet_edu.__file__), "a").write("# changed")
        ok = True
    except OSError:
        pass
    os._exit(1 if ok else 0)
escaped |= os.waitpid(pid, 0)[1] != 0
try:
    open(Path(resnet_edu.__file__), "a").write("# changed")
    escaped = True
except OSError:
    pass
escaped |= libc.ptrace(16, 1, None, None) == 0  # PTRACE_ATTACH to the sandbox's init
try:
    os.kill(-1, signal.SIGKILL)  # every other process this uid can see (none outside the sandbox)
except OSError:
    pass
if escaped:
    nn.Conv2d = None
""", 11),
    "kill_the_grader": ("sol:" + """
import os, signal
for sig in (signal.SIGKILL, signal.SIGTERM):
    for pid in (os.getppid(), 1, int(os.environ.get("JPY_PARENT_PID", "1"))):
        try:
            os.kill(pid, sig)
        except Exception:
            pass
""", 11),
    # the student's code raises KeyboardInterrupt when a test calls it: once that stopped the batch
    "keyboard_interrupt_answer": ("solq1:" + """
def conv_out_size(size, kernel_size, stride=1, padding=0, dilation=1):
    raise KeyboardInterrupt("stop the grader")
""", 9),
    # the worker is the student's too: patch the wire module and the request handler so that every
    # reply is forged (claims of a passing check, malformed data, a KeyboardInterrupt, a reply to another request)
    "forge_replies": ("""
import sys
from resnet_edu.grading import wire
W = sys.modules["resnet_edu.grading.worker"].Worker
forged = [
    {"ok": True, "value": [{"ref": 1, "mro": ["torch.nn.modules.conv:Conv2d", "builtins:int"], "callable": True}, None]},
    {"ok": True, "value": [{"tensor": 0, "dtype": "float32", "shape": [2 ** 39, 2 ** 39]}, None]},
    {"ok": True, "value": [{"bigint": "9" * 5000}, None]},
    {"ok": True, "value": [{"ndarray": 0, "dtype": "O", "shape": [1]}, None]},
    {"ok": True, "value": [{"dict": [[[1], 2]]}, None]},
    {"ok": True, "value": [{"torch": "load"}, None]},
    {"ok": True, "value": [{"pickle": "gASVAAAAAAAAAAA="}, None]},
    {"ok": True, "value": ["All tests passed!", None]},
    {"ok": False, "etype": "KeyboardInterrupt", "emsg": ""},
    {"ok": False, "etype": "SystemExit", "emsg": "0"},
    {"ok": True, "value": [True, None]},
]
count = [0]
def handle(self, request):
    import pickle
    seq = pickle.loads(request)[0]
    tree = dict(forged[count[0] % len(forged)])
    count[0] += 1
    tree["seq"] = seq
    return wire.pack_reply(tree, [b"\\0" * 8])
wire.encode = lambda value, make_ref: ({"ref": 1, "mro": ["torch:Tensor"], "callable": True}, [])
W.handle = handle
""", 0),
    # fd 1 and 2 flooded (print, os.write, a C-level write), then a frame header of 2**62 bytes written
    # on the reply channel: the grader restarts the sandbox, the cell is not run again
    "write_to_protocol_fds": ("sol:" + """
import os, sys, struct
chunk = b"All tests passed! " * 4096
for _ in range(2000):
    os.write(1, chunk)
    os.write(2, chunk)
print("\\x1b[2J" + "q1 passed " * 100000)
sys.stderr.write("\\x00\\xff" * 100000)
from resnet_edu.grading import worker
os.write(worker.REP_FD, struct.pack("!Q", 2 ** 62) + b"{}")
""", 11),
    # a cell that blocks the interrupt and sleeps past the cell time limit: killed, sandbox restarted,
    # the cells that had worked run again, the answers after it still score
    "sleep_past_the_limit": ("sol:" + """
import signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.SIG_IGN)
time.sleep(10 ** 6)
""", 11),
}


def _insert(nb: dict, code: str) -> dict:
    nb = json.loads(json.dumps(nb))
    at = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "import torch" in "".join(c["source"])) + 1
    nb["cells"].insert(at, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": code})
    return nb


def _replace_answer(nb: dict, question: str, code: str) -> dict:
    nb = json.loads(json.dumps(nb))
    cells = nb["cells"]
    check = next(i for i, c in enumerate(cells) if f'grader.check("{question}")' in "".join(c["source"]))
    answer = max(i for i in range(check) if cells[i]["cell_type"] == "code")
    cells[answer]["source"] = code
    return nb


def _snapshot(*folders: Path) -> dict:
    """sha256 of every file (without __pycache__, which the grader's own Python writes)."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts:
                out[str(p)] = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _stat_snapshot(folder: Path) -> dict:
    """(size, mtime) of every file: the virtual environment is too big to hash on every run."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _sandbox_processes() -> list:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if UID_BASE <= uid < UID_BASE + UID_SPAN:
                out.append(int(entry))
    return out


def test_attacks_in_one_batch(tmp_path):
    repo = tmp_path / "repo"  # what the grader reads, copied: nothing else edits it while the batch runs
    shutil.copytree(ROOT / "resnet_edu", repo / "resnet_edu", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "exercises", repo / "exercises")
    shutil.copytree(ROOT / "notebooks" / "exercises", repo / "notebooks" / "exercises")
    paths = exercises.assign(repo / "exercises" / f"{SET}.ipynb", tmp_path / "assign")
    solution = json.loads(paths["autograder"].read_text())
    blank = json.loads((repo / "notebooks" / "exercises" / f"{SET}.ipynb").read_text())
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "victim_solution.ipynb").write_text(json.dumps(solution))
    (subs / "blank.ipynb").write_text(json.dumps(blank))
    bad_meta = json.loads(json.dumps(blank))
    bad_meta["metadata"]["resnet_edu"] = SET  # a string where a dict belongs
    (subs / "bad_metadata.ipynb").write_text(json.dumps(bad_meta))
    (subs / "=HYPERLINK(1).ipynb").write_text(json.dumps(blank))
    (subs / "master_link_ex01.ipynb").symlink_to(repo / "exercises" / f"{SET}.ipynb")  # from an unpacked archive, say
    # malformed notebooks, and a file name full of shell syntax (what held before must keep holding)
    (subs / "truncated_ex01.ipynb").write_text('{"cells": [ {"cell_type": "code", "source": "x = 1"')
    (subs / "nbformat3_ex01.ipynb").write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}))
    (subs / "nbformat99_ex01.ipynb").write_text(json.dumps({**blank, "nbformat": 99}))
    with open(subs / "huge_ex01.ipynb", "wb") as f:  # never parsed: the grader would hold it in memory
        f.truncate((MAX_NOTEBOOK_MB << 20) + 1)
    traversal = json.loads(json.dumps(blank))
    traversal["metadata"]["resnet_edu"] = {"exercise": f"../../exercises/{SET}"}
    shell_name = "a;$(touch PWNED)`touch PWNED2`'\"\n|| rm -rf x ex01.ipynb"
    (subs / shell_name).write_text(json.dumps(traversal))
    listener = socket.create_server(("127.0.0.1", 0))  # reachable from a process that shares the host's network
    code_port = str(listener.getsockname()[1])
    for name, (code, _) in ATTACKS.items():
        code = code.replace("__PORT__", code_port)
        if code.startswith("solq"):
            question, code = code[3:].split(":", 1)
            nb = _replace_answer(solution, question, code)
        elif code.startswith("sol:"):
            nb = _insert(solution, code[4:])
        else:
            nb = _insert(blank, code)
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    book = tmp_path / "book"
    book.mkdir()
    out, details = book / "scores.csv", book / "details.json"
    before = _snapshot(repo, subs)
    venv_before = _stat_snapshot(Path(sys.prefix))

    start = time.monotonic()
    cmd = [sys.executable, "-m", "resnet_edu.grade", str(subs), "--out", str(out), "--details", str(details), "--jobs", "2",
           "--cell-timeout", "20", "--timeout", "120", "--sandbox-memory-mb", "2048", "--quiet"]
    run = subprocess.run(cmd, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - start
    listener.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"graded {len(ATTACKS) + 10} notebook(s)" in run.stderr
    rows = {r["file"]: r for r in csv.DictReader(out.open(newline=""))}

    want = {f"{n}.ipynb": total for n, (_, total) in ATTACKS.items()}
    want.update({"victim_solution.ipynb": 11, "blank.ipynb": 0, "bad_metadata.ipynb": 0, "'=HYPERLINK(1).ipynb": 0, "master_link_ex01.ipynb": 0,
                 "truncated_ex01.ipynb": 0, "nbformat3_ex01.ipynb": 0, "nbformat99_ex01.ipynb": 0, shell_name: 0, "huge_ex01.ipynb": 0})
    got = {f: float(r["total"]) for f, r in rows.items()}
    assert got == {f: float(t) for f, t in want.items()}, {f: (rows[f]["total"], rows[f]["note"]) for f in rows}
    assert all(r["max"] == "11" and r["exercise"] == SET for r in rows.values())
    assert rows["victim_solution.ipynb"]["note"] == ""
    assert rows["master_link_ex01.ipynb"]["note"] == SYMLINK_NOTE and rows["master_link_ex01.ipynb"]["sha256"] == ""
    for f in ("truncated_ex01.ipynb", "nbformat99_ex01.ipynb", "huge_ex01.ipynb"):
        assert rows[f]["note"].startswith("not a readable notebook"), rows[f]
    assert f"over the limit of {MAX_NOTEBOOK_MB} MiB" in rows["huge_ex01.ipynb"]["note"]
    assert not list(tmp_path.rglob("PWNED*")) and not (repo / "x").exists()
    assert "over the limit of 2048 MiB" in rows["memory_bomb_processes.ipynb"]["note"]
    assert "replies stopped making sense" in rows["write_to_protocol_fds.ipynb"]["note"]
    assert "did not stop after 20 s, even when interrupted; sandbox restarted" in rows["sleep_past_the_limit.ipynb"]["note"]
    assert "graded again alone" in rows["sleep_past_the_limit.ipynb"]["note"]  # --jobs 2: a time limit means a second, lone try
    recorded = {d["file"]: d for d in json.loads(details.read_text())}
    assert [c["message"] for c in recorded["keyboard_interrupt_answer.ipynb"]["questions"]["q1"]][0].startswith("RemoteError: KeyboardInterrupt")
    for f, r in rows.items():
        real = f[1:] if f.startswith("'") else f
        if (subs / real).is_symlink():
            continue
        assert r["sha256"] == hashlib.sha256((subs / real).read_bytes()).hexdigest() == recorded[real]["sha256"]

    time.sleep(25)  # the daemons would rewrite the gradebook after 20 s, if they had survived
    assert _sandbox_processes() == [], "a sandboxed process survived its submission"
    assert _snapshot(repo, subs) == before
    assert _stat_snapshot(Path(sys.prefix)) == venv_before
    assert {r["file"]: r["total"] for r in csv.DictReader(out.open(newline=""))} == {f: r["total"] for f, r in rows.items()}
    assert sorted(p.name for p in book.iterdir()) == ["details.json", "scores.csv"]
    print(f"graded {len(rows)} hostile submissions in {seconds:.0f} s with --jobs 2")


def test_gradebook_rules(tmp_path):
    from resnet_edu.grading import core
    from resnet_edu.grading.gradebook import Gradebook, neutralise

    assert [neutralise(s) for s in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "ok")] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "ok"]
    out = tmp_path / "scores.csv"
    book = Gradebook(out, [("a.ipynb", SET, "aa"), ("b.ipynb", SET, "bb")], ["q1"])
    book.start("a.ipynb")
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert "grader stopped while grading this file" in rows["a.ipynb"]["note"] and "before this file" in rows["b.ipynb"]["note"]
    r = core.Result(file="a.ipynb", exercise=SET, scores={"q1": 2.0}, max=2.0, sha256="aa")
    book.done(r)
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert rows["a.ipynb"]["total"] == "2" and rows["a.ipynb"]["note"] == ""
    with pytest.raises(core.GradingError, match="already exists.*--force"):
        Gradebook(out, [], ["q1"])
    Gradebook(out, [], ["q1"], force=True)


def test_refuses_without_sandbox(tmp_path, monkeypatch):
    from resnet_edu.grading import core, sandbox

    shutil.copy(ROOT / "notebooks" / "exercises" / f"{SET}.ipynb", tmp_path / "a.ipynb")
    monkeypatch.setitem(sandbox._PROBLEM, "v", "bubblewrap (bwrap) is not installed")
    with pytest.raises(core.GradingError, match="cannot sandbox the submissions: bubblewrap .* --unsafe"):
        core.grade_folder(tmp_path, progress=False)
