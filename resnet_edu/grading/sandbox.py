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
this sandbox's own, so the count is too), file size; wall time is the grader's. At the end the whole
tree is killed (the PID namespace dies with its first process) and the grader checks that no process
of that uid is left.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
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
        problem = "bubblewrap (bwrap) is not installed: apt-get install bubblewrap (Debian/Ubuntu) or dnf install bubblewrap"
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
    env = {"HOME": "/scratch", "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "MPLBACKEND": "Agg",
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "TORCHINDUCTOR_CACHE_DIR": "/scratch/.inductor",
           "MPLCONFIGDIR": "/scratch/.matplotlib", "LANG": "C.UTF-8"}
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


class SandboxSession(Session):
    """A worker in a fresh sandbox, and the requests to it (timeouts: interrupt, then kill)."""

    def __init__(self, limits: Optional[Limits] = None, uid: Optional[int] = None, scratch_parent: Optional[Path] = None, unsafe: bool = False) -> None:
        super().__init__()
        self.unsafe = unsafe  # --unsafe: no sandbox (a plain child process with the limits), same protocol
        self.limits = limits or Limits()
        self.uid = uid if uid is not None else (UID_BASE + os.getpid() % UID_SPAN if os.geteuid() == 0 else os.getuid())
        # named after this process: a later grader removes it if this one was killed (remove_stale_temp)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}scratch_{os.getpid()}_", dir=scratch_parent))
        self.proc: Optional[subprocess.Popen] = None
        self.limit_text = ""
        self.restarts = 0
        self.start()

    def _limits(self) -> None:  # in the child, before exec (inherited by everything inside)
        lim = self.limits
        for what, value in ((resource.RLIMIT_AS, lim.memory_mb << 20), (resource.RLIMIT_CPU, lim.cpu_s),
                            (resource.RLIMIT_NPROC, lim.processes), (resource.RLIMIT_FSIZE, lim.file_mb << 20), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(what, (value, value))

    def start(self) -> None:
        os.chmod(self.scratch, 0o700)  # the sandbox's own /scratch is a tmpfs inside it; this is only its cwd (and --unsafe's)
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()
        argv = [sys.executable, "-m", "resnet_edu.grading.worker", str(req_r), str(rep_w), str(ctl_r)]
        cmd = argv if self.unsafe else _command(self.scratch, self.uid, argv, limits=self.limits)
        self.proc = subprocess.Popen(cmd, cwd=self.scratch, pass_fds=(req_r, rep_w, ctl_r), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self._limits, start_new_session=True)
        for fd in (req_r, rep_w, ctl_r):
            os.close(fd)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for fd in ("req_w", "rep_r", "ctl_w"):
            try:
                os.close(getattr(self, fd))
            except (OSError, AttributeError):
                pass
        if os.geteuid() == 0 and not self.unsafe:  # anything of this uid still running (it should not be): kill it
            for _ in range(20):
                left = processes_of(self.uid)
                if not left:
                    break
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.seq = 0
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _roundtrip(self, payload: bytes, seq: int) -> bytes:
        if not self.alive():
            raise SandboxDied("the sandbox is not running")
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
            self.restart()
            raise SandboxDied(f"{detail}; sandbox restarted") from None
        if state["interrupted"]:
            raise TimeLimit(f"stopped after {self.limit_text} (time limit)", restarted=False)
        return raw
