"""Hostile submissions, graded in ONE batch through the sandboxed grader (ex01, 11 points).

Each attack below worked against the previous grader (issue 15) or is one of our own. The test
asserts each submission's exact score, that the honest solution next to them keeps full marks,
that no file outside the sandboxes' scratch folders changed (repository, submissions, gradebook)
and that no sandboxed process is left running.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from resnet_edu import exercises
from resnet_edu.grading import core
from resnet_edu.grading.sandbox import UID_BASE, UID_SPAN, sandbox_problem

ROOT = Path(__file__).resolve().parent.parent
SET = "ex01_conv_templates"

pytestmark = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}")

# name -> (code cell inserted after the imports of the BLANK notebook, or of the SOLUTION with "sol:", expected total)
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
found = glob.glob("/work/main/exercises/*") + glob.glob("/tmp/resnet_edu_tests_*/**", recursive=True) + glob.glob("/tmp/tmp*/**/*.ipynb", recursive=True)
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
for path in glob.glob("/**/*.ipynb", recursive=True) + glob.glob("/**/*.csv", recursive=True):
    try:
        open(path, "w").write("gone")
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
    "daemon_after_grading": ("""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time, glob\\ntime.sleep(20)\\nfor p in glob.glob('/**/*.csv', recursive=True):\\n    open(p, 'w').write('file,total\\\\nme,11\\\\n')"], start_new_session=True)
""", 0),
    "network": ("""
import socket
try:
    socket.create_connection(("pypi.org", 443), timeout=3)
    conv_out_size = lambda *a, **k: 0
except OSError:
    pass
""", 0),
    # the limits must stop both; if either got through, the cell breaks nn.Conv2d (q2, q3 fail: 11 -> 6)
    "memory_and_processes": ("sol:" + """
import os, signal
try:
    hog = bytearray(64 * 1024 ** 3)
    nn.Conv2d = None
except MemoryError:
    pass
kids = []
for _ in range(400):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        import time
        time.sleep(600)
        os._exit(0)
    kids.append(pid)
if len(kids) >= 400:
    nn.Conv2d = None
for pid in kids:  # give the threads back, so the rest of the notebook can run
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
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
    "kill_the_grader": ("sol:" + """
import os, signal
for sig in (signal.SIGKILL, signal.SIGTERM):
    for pid in (os.getppid(), 1, int(os.environ.get("JPY_PARENT_PID", "1"))):
        try:
            os.kill(pid, sig)
        except Exception:
            pass
""", 11),
}


def _insert(nb: dict, code: str) -> dict:
    nb = json.loads(json.dumps(nb))
    at = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "import torch" in "".join(c["source"])) + 1
    nb["cells"].insert(at, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": code})
    return nb


def _snapshot(*folders: Path) -> dict:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts and ".git" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
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
    paths = exercises.assign(ROOT / "exercises" / f"{SET}.ipynb", tmp_path / "assign")
    solution = json.loads(paths["autograder"].read_text())
    blank = json.loads((ROOT / "notebooks" / "exercises" / f"{SET}.ipynb").read_text())
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "victim_solution.ipynb").write_text(json.dumps(solution))
    (subs / "blank.ipynb").write_text(json.dumps(blank))
    bad_meta = json.loads(json.dumps(blank))
    bad_meta["metadata"]["resnet_edu"] = SET  # a string where a dict belongs
    (subs / "bad_metadata.ipynb").write_text(json.dumps(bad_meta))
    (subs / "=HYPERLINK(1).ipynb").write_text(json.dumps(blank))
    for name, (code, _) in ATTACKS.items():
        base, code = (solution, code[4:]) if code.startswith("sol:") else (blank, code)
        (subs / f"{name}.ipynb").write_text(json.dumps(_insert(base, code)))
    out, details = tmp_path / "book" / "scores.csv", tmp_path / "book" / "details.json"
    out.parent.mkdir()
    before = _snapshot(ROOT / "exercises", ROOT / "resnet_edu", ROOT / "notebooks", subs)

    start = time.monotonic()
    assert core.main([str(subs), "--out", str(out), "--details", str(details), "--jobs", "2", "--cell-timeout", "30", "--timeout", "120", "--quiet"]) == 0
    seconds = time.monotonic() - start
    rows = {r["file"]: r for r in csv.DictReader(out.open(newline=""))}

    want = {f"{n}.ipynb": total for n, (_, total) in ATTACKS.items()}
    want.update({"victim_solution.ipynb": 11, "blank.ipynb": 0, "bad_metadata.ipynb": 0, "'=HYPERLINK(1).ipynb": 0})
    got = {f: float(r["total"]) for f, r in rows.items()}
    assert got == {f: float(t) for f, t in want.items()}, {f: (rows[f]["total"], rows[f]["note"]) for f in rows}
    assert all(r["max"] == "11" and r["exercise"] == SET for r in rows.values())
    assert rows["victim_solution.ipynb"]["note"] == ""
    recorded = {d["file"]: d["sha256"] for d in json.loads(details.read_text())}
    for f, r in rows.items():
        real = f[1:] if f.startswith("'") else f
        assert r["sha256"] == hashlib.sha256((subs / real).read_bytes()).hexdigest() == recorded[real]

    time.sleep(25)  # the daemon would rewrite the gradebook after 20 s, if it had survived
    assert _sandbox_processes() == [], "a sandboxed process survived its submission"
    assert _snapshot(ROOT / "exercises", ROOT / "resnet_edu", ROOT / "notebooks", subs) == before
    assert {r["file"]: r["total"] for r in csv.DictReader(out.open(newline=""))} == {f: r["total"] for f, r in rows.items()}
    print(f"graded {len(rows)} hostile submissions in {seconds:.0f} s with --jobs 2")


def test_gradebook_rules(tmp_path):
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
    from resnet_edu.grading import sandbox

    shutil.copy(ROOT / "notebooks" / "exercises" / f"{SET}.ipynb", tmp_path / "a.ipynb")
    monkeypatch.setitem(sandbox._PROBLEM, "v", "bubblewrap (bwrap) is not installed")
    with pytest.raises(core.GradingError, match="cannot sandbox the submissions: bubblewrap .* --unsafe"):
        core.grade_folder(tmp_path, progress=False)
