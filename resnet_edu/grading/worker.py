"""The process inside a sandbox: runs a submission's cells and answers the grader's requests.

Started by :class:`resnet_edu.grading.sandbox.Sandbox` as ``python -m resnet_edu.grading.worker`` with
three pipes, their descriptors given on the command line: requests in (pickled by the grader),
replies out (JSON + raw buffers, see :mod:`resnet_edu.grading.wire`) and interrupts in (each byte
raises KeyboardInterrupt in the running code). It holds the student's namespace and the objects the grader refers to; it never sees
a test's expected values, the hidden tests' files or the solutions. Everything here runs next to the
student's code, so nothing it says is trusted: the grader reads its replies as the student's answers.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from typing import Any, Dict, List

from . import wire

REQ_FD, REP_FD, CTL_FD = 3, 4, 5
MAX_REQUEST = 1 << 30
_REFS: Dict[int, Any] = {}
_NEXT = [1]


def _ref(n: int) -> Any:
    """Unpickling a grader-side reference gives back the object it refers to."""
    return _REFS[n]


def _make_ref(obj: Any) -> Dict[str, Any]:
    n = _NEXT[0]
    _NEXT[0] += 1
    _REFS[n] = obj
    mro: List[str] = []
    try:
        for c in type(obj).__mro__:
            mro.append(f"{str(type.__getattribute__(c, '__module__'))[:200]}:{str(type.__getattribute__(c, '__qualname__'))[:200]}")
    except Exception:  # noqa: BLE001
        pass
    try:
        is_callable = bool(callable(obj))
    except Exception:  # noqa: BLE001
        is_callable = False
    return {"ref": n, "mro": mro[:50], "callable": is_callable}


def _text(x: Any, limit: int = 4000) -> str:
    try:
        s = str(x)
    except BaseException:  # noqa: BLE001
        s = "<unprintable>"
    return s if type(s) is str and len(s) <= limit else str(s)[:limit] + " ..."


class Worker:
    """Handles requests against a namespace; used in the sandbox and, in-process, by the tests."""

    def __init__(self, user_ns: Dict[str, Any] | None = None) -> None:
        self.shell = None
        self.ns = user_ns if user_ns is not None else {"__name__": "__main__"}
        self.forbids: Dict[int, Any] = {}

    # ---- cells -------------------------------------------------------------------------------
    def _shell(self) -> Any:
        if self.shell is None:
            from IPython.core.interactiveshell import InteractiveShell
            from traitlets.config import Config

            cfg = Config()
            cfg.HistoryManager.enabled = False
            self.shell = InteractiveShell.instance(config=cfg)
            self.shell.user_ns.update(self.ns)
            self.ns = self.shell.user_ns
        return self.shell

    def op_exec(self, code: str) -> Any:
        result = self._shell().run_cell(code, store_history=False, silent=False)
        err = result.error_before_exec or result.error_in_exec
        if err is not None:
            if isinstance(err, KeyboardInterrupt):
                raise KeyboardInterrupt
            return {"error": f"{type(err).__name__}: {_text(err, 300)}"}
        return {"error": None}

    def op_exec_plain(self, code: str) -> Any:
        exec(compile(code, "<cell>", "exec"), self.ns)
        return None

    def op_warm(self, names: List[str]) -> Any:
        import importlib

        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001
                pass
        return None

    # ---- objects -----------------------------------------------------------------------------
    def op_get(self, name: str) -> Any:
        return self.ns.get(name, None)

    def op_getattr(self, obj: Any, name: str) -> Any:
        return getattr(obj, name)

    def op_setattr(self, obj: Any, name: str, value: Any) -> Any:
        setattr(obj, name, value)
        return None

    def op_call(self, fn: Any, args: tuple, kwargs: dict) -> Any:
        return fn(*args, **kwargs)

    def op_repr(self, obj: Any) -> Any:
        return _text(repr(obj), 20000)

    def op_str(self, obj: Any) -> Any:
        return _text(obj, 20000)

    def op_len(self, obj: Any) -> Any:
        return int(len(obj))

    def op_bool(self, obj: Any) -> Any:
        return bool(obj)

    def op_getitem(self, obj: Any, key: Any) -> Any:
        return obj[key]

    def op_list(self, obj: Any) -> Any:
        out = []
        for i, x in enumerate(obj):
            if i >= 1_000_000:
                raise ValueError("more than a million items")
            out.append(x)
        return out

    def op_reset(self) -> Any:
        for token in list(self.forbids):
            self.op_forbid_exit(token)
        _REFS.clear()
        return None

    # ---- forbid and probes: the traps live where the student's code runs ----------------------
    def op_forbid_enter(self, targets: tuple, task: str, answers: tuple) -> Any:
        from ..exercises import _local_forbid

        cm = _local_forbid(*targets, task=task, answers=answers)
        cm.__enter__()
        token = max(self.forbids, default=0) + 1
        self.forbids[token] = cm
        return token

    def op_forbid_exit(self, token: int) -> Any:
        cm = self.forbids.pop(token, None)
        if cm is not None:
            cm.__exit__(None, None, None)
        return None

    def op_probe(self, source: str, name: str, args: tuple, kwargs: dict) -> Any:
        ns: Dict[str, Any] = {"__name__": "__probe__"}
        exec(compile(source, f"<probe {name}>", "exec"), ns)
        return ns[name](*args, **kwargs)

    # ---- one request -> one reply ------------------------------------------------------------
    def handle(self, request: bytes) -> bytes:
        seq, op, args = -1, "?", ()
        remote = sys.modules.get("resnet_edu.grading.remote")
        session, remote_active = None, remote is not None
        if remote_active:  # in-process (tests): the student's side never sees the grader's session
            session, remote.ACTIVE = remote.ACTIVE, None
        try:
            seq, op, args = pickle.loads(request)
            value = getattr(self, f"op_{op}")(*args)
            tree, buffers = wire.encode((value, None), _make_ref)
            return wire.pack_reply({"seq": seq, "ok": True, "value": tree}, buffers)
        except BaseException as exc:  # noqa: BLE001 - the student's code may raise anything
            name = type(exc).__name__
            return wire.pack_reply({"seq": seq, "ok": False, "etype": str(name)[:100], "emsg": _text(exc, 2000)}, [])
        finally:
            if remote_active:
                remote.ACTIVE = session


def _control(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 1)
        except OSError:
            return
        if not data:
            return
        os.kill(os.getpid(), signal.SIGINT)


def main(argv: List[str] | None = None) -> int:
    global REQ_FD, REP_FD, CTL_FD
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3:
        REQ_FD, REP_FD, CTL_FD = (int(a) for a in argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_control, args=(CTL_FD,), daemon=True).start()
    worker = Worker()
    while True:
        try:
            request = wire.read_frame(REQ_FD, MAX_REQUEST)
        except KeyboardInterrupt:  # an interrupt that came between two requests
            continue
        except EOFError:
            return 0
        while True:
            try:
                reply = worker.handle(request)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    wire.write_frame(REP_FD, reply)
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
                break
            except KeyboardInterrupt:  # arrived while replying: reply again
                continue


if __name__ == "__main__":  # run as the module itself (not __main__), so pickled references resolve here
    from resnet_edu.grading import worker as _worker

    sys.exit(_worker.main())
