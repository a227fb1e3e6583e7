"""One sandboxed process tree per submission: bubblewrap, an unprivileged uid, limits, a scratch folder.

The grader (often run as root) starts ``bwrap`` with new PID, network, IPC, UTS and cgroup namespaces,
``--die-with-parent`` and ``--new-session``; inside, ``setpriv`` drops to a uid of its own (no
capabilities, no groups, ``no_new_privs``) before Python starts. The filesystem the student's code
sees is, read-only: ``/usr`` (and the ``/lib*``/``/bin`` links), the Python installation, the
virtual environment's packages and the ``resnet_edu`` package (which holds no hidden test and no
solution); read-write: a private scratch folder (``/scratch``, also ``$HOME``) and a private
``/tmp`` (a tmpfs of at most ``TMP_MB`` MiB). Not there: the repository (``exercises/`` masters), the hidden tests, the submissions
folder, the gradebook, other sandboxes' scratch folders, the grader's ``/proc``. No network. Limits
(``setrlimit``, inherited by every process inside): address space, CPU time, processes (the uid is
this sandbox's own, so the count is too), file size; wall time is the grader's. At the end the whole
tree is killed (the PID namespace dies with its first process) and the grader checks that no process
of that uid is left.
"""

from __future__ import annotations

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


@dataclass
class Limits:
    memory_mb: int = 6144  # address space per process (RLIMIT_AS)
    cpu_s: int = 1200  # CPU seconds per process (RLIMIT_CPU)
    processes: int = 256  # processes + threads of the sandbox's uid (RLIMIT_NPROC)
    file_mb: int = 1024  # largest file it may write (RLIMIT_FSIZE)


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


def _command(scratch: Path, uid: int, argv: List[str], probe: bool = False) -> List[str]:
    cmd = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        cmd += ["--unshare-user"]
    # the private /tmp first: the read-only binds below go on top of it, so a checkout or a venv that
    # lives under /tmp (a CI clone, say) stays visible inside the sandbox
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp"]
    for link in ("lib", "lib64", "bin", "sbin"):
        if os.path.islink(f"/{link}"):
            cmd += ["--symlink", os.readlink(f"/{link}").lstrip("/") if not os.readlink(f"/{link}").startswith("/") else os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            cmd += ["--ro-bind", f"/{link}", f"/{link}"]
    made = set()
    for p in _readonly_paths():
        parents = [str(q) for q in reversed(Path(p).parents) if str(q) not in ("/", "/usr")]
        for q in parents:  # parents bwrap would otherwise create 0700 (untraversable for the uid)
            if q not in made:
                cmd += ["--perms", "0755", "--dir", q]
                made.add(q)
        cmd += ["--ro-bind", p, p]
    for etc in ("/etc/ld.so.cache", "/etc/localtime", "/etc/fonts"):
        if os.path.exists(etc):
            cmd += ["--ro-bind", etc, etc]
    if not probe:
        cmd += ["--bind", str(scratch), "/scratch"]
    else:
        cmd += ["--dir", "/scratch"]
    cmd += ["--chdir", "/scratch", "--clearenv"]
    env = {"HOME": "/scratch", "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "MPLBACKEND": "Agg",
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "TORCHINDUCTOR_CACHE_DIR": "/scratch/.inductor",
           "MPLCONFIGDIR": "/scratch/.matplotlib", "LANG": "C.UTF-8"}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        if key in os.environ:
            env[key] = os.environ[key]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    if os.geteuid() == 0:
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    else:
        cmd += ["--"]
    return cmd + argv


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
        self.scratch = Path(tempfile.mkdtemp(prefix="resnet_edu_scratch_", dir=scratch_parent))
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
        if os.geteuid() == 0 and not self.unsafe:
            os.chown(self.scratch, self.uid, self.uid)
        os.chmod(self.scratch, 0o700)
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()
        argv = [sys.executable, "-m", "resnet_edu.grading.worker", str(req_r), str(rep_w), str(ctl_r)]
        cmd = argv if self.unsafe else _command(self.scratch, self.uid, argv)
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
