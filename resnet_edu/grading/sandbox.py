"""One sandboxed process tree per submission: bubblewrap, an unprivileged uid, limits, a scratch folder.

The grader (often run as root) starts ``bwrap`` with new PID, network, IPC, UTS and cgroup namespaces,
``--die-with-parent`` and ``--new-session``; inside, ``setpriv`` drops to a uid of its own (no
capabilities, no groups, ``no_new_privs``) before Python starts. The filesystem the student's code
sees is, read-only: ``/usr`` (and the ``/lib*``/``/bin`` links), the Python installation, the
virtual environment's packages and the ``resnet_edu`` package (which holds no hidden test and no
solution); read-write: a private scratch folder (``/scratch``, also ``$HOME``) and a private
``/tmp`` (and ``/dev/shm``), each a tmpfs capped in size *and* in number of files (``Limits.scratch_mb``/``tmp_mb`` and
``Limits.files``: tmpfs ``size=`` and ``nr_inodes=``). bwrap's own ``--size`` caps only bytes, so a
small shim (:data:`_SHIM`, run inside the sandbox with ``CAP_SYS_ADMIN`` in its namespaces only,
before anything of the student's) mounts the two capped tmpfs, moves the read-only binds that live
under ``/tmp`` (a CI checkout) onto the new one, and execs ``setpriv``, which drops every capability
(permitted, inheritable, ambient, bounding set) and sets ``no_new_privs`` before Python starts. Not there: the repository (``exercises/`` masters), the hidden tests, the submissions
folder, the gradebook, other sandboxes' scratch folders, the grader's ``/proc``. No network. Limits
(``setrlimit``, inherited by every process inside): address space, CPU time, processes (the uid is
this sandbox's own, so the count is too), file size; wall time is the grader's; the memory of all
its processes together is the watchdog's (:class:`SandboxSession`), and their out-of-memory score is
raised so that the kernel, if memory runs out all the same, kills one of them and not the grader. At
the end the whole tree is killed (the PID namespace dies with its first process) and the grader
checks that no process of it is left (of its uid as root, of its PID namespace otherwise).
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import wire
from .remote import SandboxDied, Session, TimeLimit

INTERRUPT_GRACE = 5.0  # seconds a sandbox gets to honour an interrupt before it is killed and restarted
UID_BASE = 62000  # sandboxes run as uid UID_BASE + (grader pid % UID_SPAN): one uid per grading process
UID_SPAN = 3000
TMP_MB = 512  # the sandbox's private /tmp (a tmpfs: memory), at most this size
STAGE = "/.resnet_edu_tmp"  # where the shim builds the capped /tmp before moving it over bwrap's
SANDBOX_THREADS = 8  # OMP_NUM_THREADS in a sandbox, unless set in the grader's environment
WATCH_PERIOD = 0.2  # seconds between two looks at a sandbox's memory
PRECISE_PERIOD = 1.0  # seconds between two proportional (PSS) counts, needed only when the quick count is over the limit

# Runs inside the sandbox as its first process (python -I -S: no site, nothing of the student's yet):
# mounts the capped tmpfs folders, then execs the rest of its argv (setpriv ... worker).
_SHIM = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, fs, flags, opts):
    if libc.mount(src.encode() if src else None, dst.encode(), fs.encode() if fs else None, flags, opts.encode() if opts else None):
        e = ctypes.get_errno()
        sys.stderr.write("sandbox shim: mount %s on %s: %s\n" % (src, dst, os.strerror(e)))
        os._exit(111)
MS_NOSUID, MS_NODEV, MS_MOVE = 2, 4, 8192
spec = json.loads(sys.argv[1])
for path, size, inodes, mode, uid in spec["mounts"]:
    target = spec["stage"] if path == "/tmp" else path
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,nr_inodes=%d,mode=%s,uid=%d,gid=%d" % (size, inodes, mode, uid, uid))
    if path == "/tmp":
        for inner in spec["under_tmp"]:  # read-only binds under bwrap's /tmp: onto the capped one
            dest = spec["stage"] + inner[len("/tmp"):]
            os.makedirs(dest, mode=0o755, exist_ok=True)
            mount(inner, dest, None, MS_MOVE, None)
        for parent in spec["under_tmp_parents"]:
            d = spec["stage"] + parent[len("/tmp"):]
            if os.path.isdir(d):
                os.chmod(d, 0o755)
        mount(spec["stage"], "/tmp", None, MS_MOVE, None)
os.chdir("/scratch")
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclass
class Limits:
    memory_mb: int = 6144  # address space per process (RLIMIT_AS)
    sandbox_memory_mb: int = 8192  # resident memory of all the sandbox's processes together (the grader's watchdog)
    cpu_s: int = 1200  # CPU seconds per process (RLIMIT_CPU)
    processes: int = 256  # processes + threads of the sandbox's uid (RLIMIT_NPROC)
    file_mb: int = 1024  # largest file it may write (RLIMIT_FSIZE)
    scratch_mb: int = 1024  # /scratch (= $HOME): a tmpfs of at most this size ...
    tmp_mb: int = TMP_MB  # ... and /tmp, of at most this size ...
    files: int = 20000  # ... each holding at most this many files and folders (tmpfs nr_inodes)


_PROBLEM: Dict[str, Optional[str]] = {}


def sandbox_problem() -> Optional[str]:
    """None when sandboxes work here; else why not (no bwrap, no namespaces, ...). Checked once."""
    if "v" in _PROBLEM:
        return _PROBLEM["v"]
    problem: Optional[str] = None
    if not sys.platform.startswith("linux"):
        problem = "the sandbox needs Linux (bubblewrap and namespaces)"
    elif shutil.which("bwrap") is None:
        problem = "bubblewrap (bwrap) is not installed (apt-get install bubblewrap on Debian/Ubuntu, dnf install bubblewrap on Fedora)"
    elif os.geteuid() != 0 and shutil.which("setpriv") is None:
        problem = "setpriv (util-linux) is missing"
    else:
        try:
            cmd = _command(Path("/nonexistent-scratch"), uid=UID_BASE + UID_SPAN, argv=["/bin/true"], probe=True)
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                problem = f"bubblewrap cannot start a sandbox here ({(out.stderr or out.stdout).strip()[:300]})"
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"bubblewrap cannot start a sandbox here ({exc})"
    _PROBLEM["v"] = problem
    return problem


def _readonly_paths() -> List[str]:
    import resnet_edu

    paths = {"/usr", sys.base_prefix, sys.prefix, str(Path(resnet_edu.__file__).resolve().parent)}
    for p in sys.path:  # packages installed outside the venv (e.g. --user, or the venv's own lib)
        if p and os.path.isdir(p) and ("site-packages" in p or "dist-packages" in p):
            paths.add(os.path.realpath(p))
    exe = os.path.realpath(sys.executable)
    paths.add(str(Path(exe).parent.parent))
    out = sorted(paths)
    # drop paths inside another one of the list
    return [p for p in out if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in out)]


def _command(scratch: Path, uid: int, argv: List[str], probe: bool = False, limits: Optional["Limits"] = None) -> List[str]:
    lim = limits or Limits()
    cmd = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        cmd += ["--unshare-user"]
    # the private /tmp first: the read-only binds below go on top of it, so a checkout or a venv that
    # lives under /tmp (a CI clone, say) stays visible inside the sandbox
    if os.geteuid() == 0:
        cmd += ["--proc", "/proc", "--dev", "/dev"]
    else:  # bwrap's --dev, unprivileged, leaves the shim unable to mount (EPERM): a read-only /dev of our own
        cmd += ["--proc", "/proc", "--perms", "0755", "--size", str(1 << 20), "--tmpfs", "/dev"]
        for dev in ("null", "zero", "full", "random", "urandom", "tty"):
            cmd += ["--dev-bind-try", f"/dev/{dev}", f"/dev/{dev}"]
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            cmd += ["--symlink", target, f"/dev/{name}"]
        cmd += ["--dir", "/dev/shm", "--remount-ro", "/dev"]
    cmd += ["--perms", "1777", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp"]  # the capped one goes over it
    for link in ("lib", "lib64", "bin", "sbin"):
        if os.path.islink(f"/{link}"):
            cmd += ["--symlink", os.readlink(f"/{link}").lstrip("/") if not os.readlink(f"/{link}").startswith("/") else os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            cmd += ["--ro-bind", f"/{link}", f"/{link}"]
    made = set()
    readonly = _readonly_paths()
    for p in readonly:
        parents = [str(q) for q in reversed(Path(p).parents) if str(q) not in ("/", "/usr")]
        for q in parents:  # parents bwrap would otherwise create 0700 (untraversable for the uid)
            if q not in made:
                cmd += ["--perms", "0755", "--dir", q]
                made.add(q)
        cmd += ["--ro-bind", p, p]
    for etc in ("/etc/ld.so.cache", "/etc/localtime", "/etc/fonts"):
        if os.path.exists(etc):
            cmd += ["--ro-bind", etc, etc]
    cmd += ["--dir", "/scratch", "--dir", STAGE, "--chdir", "/", "--clearenv"]
    import resnet_edu

    env = {"HOME": "/scratch", "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(Path(resnet_edu.__file__).resolve().parent.parent),  # the grader's own resnet_edu (mounted there)
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "TORCHINDUCTOR_CACHE_DIR": "/scratch/.inductor",
           "MPLCONFIGDIR": "/scratch/.matplotlib", "LANG": "C.UTF-8"}
    # torch starts one thread per core, and threads count against the sandbox's process limit: at most
    # SANDBOX_THREADS unless the teacher chose (exercises are small; a 128-core server would hit the limit)
    env["OMP_NUM_THREADS"] = str(max(1, min(SANDBOX_THREADS, os.cpu_count() or 1)))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        if key in os.environ:
            env[key] = os.environ[key]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    # the shim needs CAP_SYS_ADMIN (in the sandbox's own namespaces) to mount; setpriv then drops all
    cmd += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]
    drop = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    if os.geteuid() == 0:
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        drop = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + drop
    owner = uid if os.geteuid() == 0 else os.getuid()
    under_tmp = [p for p in readonly if p.startswith("/tmp/")]
    spec = {"stage": STAGE, "under_tmp": under_tmp, "under_tmp_parents": sorted(made & {q for q in made if q.startswith("/tmp/")}),
            "mounts": [["/scratch", lim.scratch_mb << 20, lim.files, "0700", owner], ["/tmp", lim.tmp_mb << 20, lim.files, "1777", 0 if os.geteuid() == 0 else owner],
                       ["/dev/shm", lim.tmp_mb << 20, lim.files, "1777", 0 if os.geteuid() == 0 else owner]]}
    cmd += ["--", sys.executable, "-I", "-S", "-c", _SHIM, json.dumps(spec), shutil.which("setpriv") or "/usr/bin/setpriv", *drop, "--"]
    return cmd + argv


TEMP_PREFIX = "resnet_edu_"  # temp folders of a grading run: resnet_edu_{tests,scratch}_<pid of their owner>_XXXX
_STALE_RE = __import__("re").compile(r"^resnet_edu_(?:tests|scratch)_(\d+)_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp(parent: Optional[Path] = None) -> List[Path]:
    """Remove the temp folders of graders that were killed (SIGKILL, a crash, a power cut): those named
    ``resnet_edu_tests_<pid>_*`` / ``resnet_edu_scratch_<pid>_*``, owned by this user, whose pid is not
    running. (A pid reused by an unrelated process keeps its folder until that process ends.)"""
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _STALE_RE.match(entry.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.geteuid() or _alive(int(m.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL): this process dies when its parent does (the grader's worker processes)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - not Linux: nothing to do
        return
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before the signal was armed
        os._exit(1)


def processes_of(uid: int) -> List[int]:
    """PIDs (as the grader sees them) of processes running as ``uid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _stat_fields(pid: int) -> List[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pid_namespace(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _resident_kib(pid: int, precise: bool = False) -> int:
    """Memory a process holds: anonymous + shared-memory pages, KiB. ``precise``: proportional shares
    (PSS, from smaps_rollup), so pages that forked processes still share are counted once."""
    keys = ("Pss_Anon:", "Pss_Shmem:") if precise else ("RssAnon:", "RssShmem:")
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup" if precise else f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(keys):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return total


class SandboxSession(Session):
    """A worker in a fresh sandbox, and the requests to it (timeouts: interrupt, then kill).

    A watchdog thread looks at the sandbox every WATCH_PERIOD seconds: when all its processes together
    hold more than ``Limits.sandbox_memory_mb`` (a fork bomb of processes each under the per-process
    limit, say), it kills the whole sandbox; the request in flight then fails with that reason.
    ``peak_mb`` is the most it saw (anonymous + shared memory, summed over processes)."""

    def __init__(self, limits: Optional[Limits] = None, uid: Optional[int] = None, scratch_parent: Optional[Path] = None, unsafe: bool = False) -> None:
        super().__init__()
        self.unsafe = unsafe  # --unsafe: no sandbox (a plain child process with the limits), same protocol
        self.limits = limits or Limits()
        if uid is None and os.geteuid() == 0 and not unsafe:
            uid = self._free_uid(UID_BASE + os.getpid() % UID_SPAN)
        self.uid = uid if uid is not None else os.getuid()
        # named after this process: a later grader removes it if this one was killed (remove_stale_temp)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}scratch_{os.getpid()}_", dir=scratch_parent))
        self.proc: Optional[subprocess.Popen] = None
        self.limit_text = ""
        self.restarts = 0
        self.peak_mb = 0.0
        self.left_running = 0  # processes still there after a kill (should stay 0)
        self._stop = threading.Event()
        self.start()

    @staticmethod
    def _free_uid(first: int) -> int:
        """``first``, or the next sandbox uid no process runs as (another grader's sandbox, say)."""
        for k in range(UID_SPAN):
            uid = UID_BASE + (first - UID_BASE + k) % UID_SPAN
            if not processes_of(uid):
                return uid
        return first

    def _limits(self) -> None:  # in the child, before exec (inherited by everything inside)
        lim = self.limits
        for what, value in ((resource.RLIMIT_AS, lim.memory_mb << 20), (resource.RLIMIT_CPU, lim.cpu_s),
                            (resource.RLIMIT_NPROC, self._nproc), (resource.RLIMIT_FSIZE, lim.file_mb << 20), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(what, (value, value))
        try:  # if memory runs out all the same, the kernel's OOM killer takes a sandboxed process first
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass

    def start(self) -> None:
        os.chmod(self.scratch, 0o700)  # the sandbox's own /scratch is a tmpfs inside it; this is only its cwd (and --unsafe's)
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()
        argv = [sys.executable, "-m", "resnet_edu.grading.worker", str(req_r), str(rep_w), str(ctl_r)]
        cmd = argv if self.unsafe else _command(self.scratch, self.uid, argv, limits=self.limits)
        # RLIMIT_NPROC counts every process of the real uid. As root the sandbox's uid is its own; otherwise it is
        # yours, so the limit is what already runs under it plus the sandbox's share (else a desktop user with
        # more processes than the limit could not start a sandbox at all)
        own_uid = os.geteuid() == 0 and not self.unsafe
        self._nproc = self.limits.processes + (0 if own_uid else len(processes_of(os.getuid())))
        self.proc = subprocess.Popen(cmd, cwd=self.scratch, pass_fds=(req_r, rep_w, ctl_r), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self._limits, start_new_session=True)
        for fd in (req_r, rep_w, ctl_r):
            os.close(fd)
        # what belongs to this one sandbox lives on its Popen: a watchdog still finishing its last look at
        # the previous sandbox (after a restart) cannot mix the two up
        self.proc.sandbox_ns = None  # type: ignore[attr-defined]  # its PID namespace, once seen
        self.proc.killed_for = None  # type: ignore[attr-defined]  # why the watchdog killed it
        self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(self.proc, self._stop), daemon=True, name="sandbox-watchdog").start()

    # ---- the sandbox's processes, and the watchdog ------------------------------------------------
    def _members(self, proc: subprocess.Popen) -> List[int]:
        """PIDs of the sandbox's processes: those in its PID namespace (bwrap), or in the session of the
        worker (--unsafe: a process that starts a session of its own escapes this)."""
        if self.unsafe:
            return [int(e) for e in os.listdir("/proc") if e.isdigit() and (f := _stat_fields(int(e))) and len(f) > 3 and f[3] == str(proc.pid)]
        if proc.sandbox_ns is None:  # type: ignore[attr-defined]  # the namespace of bwrap's child (bwrap stays outside)
            mine = _pid_namespace(os.getpid())
            for e in os.listdir("/proc"):
                if e.isdigit() and (f := _stat_fields(int(e))) and len(f) > 1 and f[1] == str(proc.pid):
                    ns = _pid_namespace(int(e))
                    if ns is not None and ns != mine:
                        proc.sandbox_ns = ns  # type: ignore[attr-defined]
                        break
            if proc.sandbox_ns is None:  # type: ignore[attr-defined]
                return []
        return [int(e) for e in os.listdir("/proc") if e.isdigit() and _pid_namespace(int(e)) == proc.sandbox_ns]  # type: ignore[attr-defined]

    def _watch(self, proc: subprocess.Popen, stop: threading.Event) -> None:
        limit_kib = self.limits.sandbox_memory_mb << 10
        precise_at = -math.inf
        while not stop.wait(WATCH_PERIOD):
            if proc.returncode is not None:
                return
            try:
                pids = self._members(proc)
                used = sum(_resident_kib(p) for p in pids)
                if used > limit_kib:  # forked processes share pages: count them once before judging
                    if time.monotonic() - precise_at < PRECISE_PERIOD:
                        continue  # proportional counts walk every page table: at most once per PRECISE_PERIOD
                    precise_at = time.monotonic()
                    used = sum(_resident_kib(p, precise=True) for p in pids)
                self.peak_mb = max(self.peak_mb, used / 1024)
                if used > limit_kib:
                    proc.killed_for = (f"the sandbox's processes held {used / 1024:.0f} MiB of memory together, over the limit of "
                                       f"{self.limits.sandbox_memory_mb} MiB (--sandbox-memory-mb): all of them were killed")
                    self._kill_all(proc, pids)
                    return
            except Exception:  # noqa: BLE001 - a process that ended while being read
                continue

    def _kill_all(self, proc: subprocess.Popen, pids: List[int]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # bwrap; its PID namespace dies with it (--die-with-parent)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _leftovers(self, proc: subprocess.Popen) -> List[int]:
        if os.geteuid() == 0 and not self.unsafe:
            return processes_of(self.uid)  # the uid is this sandbox's own: every process it started, wherever
        return self._members(proc) if (self.unsafe or proc.sandbox_ns is not None) else []  # type: ignore[attr-defined]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None:
            pids = self._members(proc) if (self.unsafe or proc.sandbox_ns is not None) else []  # type: ignore[attr-defined]
            self._kill_all(proc, pids)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for fd in ("req_w", "rep_r", "ctl_w"):
            try:
                os.close(getattr(self, fd))
            except (OSError, AttributeError):
                pass
        if proc is not None:  # checked: nothing of the sandbox may outlive it
            left: List[int] = []
            for _ in range(40):
                left = self._leftovers(proc)
                if not left:
                    break
                self._kill_all(proc, left)
                time.sleep(0.05)
            self.left_running = max(self.left_running, len(left))

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.seq = 0
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _died(self, default: str) -> str:
        return getattr(self.proc, "killed_for", None) or default

    def _roundtrip(self, payload: bytes, seq: int) -> bytes:
        if not self.alive():
            detail = self._died("the sandbox is not running")
            self.restart()
            raise SandboxDied(f"{detail}; sandbox restarted")
        state = {"interrupted": False, "grace": 0.0}

        def wait() -> None:
            while True:
                now = time.monotonic()
                until = state["grace"] if state["interrupted"] else self.deadline
                ready, _, _ = select.select([self.rep_r], [], [], max(0.0, min(until - now, 3600.0)))
                if ready:
                    return
                if time.monotonic() < until:
                    continue
                if not state["interrupted"]:
                    state["interrupted"], state["grace"] = True, time.monotonic() + INTERRUPT_GRACE
                    try:
                        os.write(self.ctl_w, b"i")
                    except OSError:
                        pass
                else:
                    self.restart()
                    raise TimeLimit(f"did not stop after {self.limit_text}, even when interrupted; sandbox restarted", restarted=True)

        try:
            wire.write_frame(self.req_w, payload)
            while True:
                raw = wire.read_frame(self.rep_r, wire.MAX_REPLY, wait)
                if len(raw) >= 8:
                    try:
                        tree, _ = wire.unpack_reply(raw)
                    except wire.ProtocolError:
                        tree = None
                    if isinstance(tree, dict) and tree.get("seq") == seq:
                        break
        except (EOFError, BrokenPipeError, OSError, wire.ProtocolError) as exc:
            detail = "the sandbox died (os._exit, a crash or a memory limit)" if isinstance(exc, (EOFError, BrokenPipeError)) else f"its replies stopped making sense ({exc})"
            detail = self._died(detail)
            self.restart()
            raise SandboxDied(f"{detail}; sandbox restarted") from None
        if state["interrupted"]:
            raise TimeLimit(f"stopped after {self.limit_text} (time limit)", restarted=False)
        return raw
