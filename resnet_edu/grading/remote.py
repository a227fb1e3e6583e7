"""The grader's end of a sandbox: requests, replies, and references to the student's objects.

A test case runs in the grader's own process. The names it checks (``conv_out_size``, ``block``) are
fetched from the sandbox: plain data (numbers, strings, containers, tensors, arrays) arrives as the
grader's own values; anything else arrives as a :class:`Remote`, whose attribute reads, calls,
``repr``, ``len``, indexing and iteration are requests to the sandbox. Arguments go in pickled (the
grader's data); results come back decoded by :mod:`resnet_edu.grading.wire` (never unpickled).
Nothing the sandbox sends is written into the grader's objects: a tensor a test passes in stays as
the test made it, whatever the answer does to its own copy (``in_sandbox`` observes such effects).
An exception the student's code raises arrives as an ``Exception`` (``RemoteError`` unless it is a
builtin one), never as ``KeyboardInterrupt`` or ``SystemExit``: a reply cannot stop the grader.
Equality is never asked of the student's objects (a ``Remote`` equals only itself), so an answer whose
``__eq__`` always says True compares unequal. ``forbid(...)`` and ``in_sandbox(...)`` in
:mod:`resnet_edu.exercises` go through the active session: the traps are set, and probes run, where
the student's code runs.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import math
import pickle
import sys
import textwrap
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import wire

ACTIVE: Optional["Session"] = None  # the session the running test case talks to (None: local, in a notebook)
ALLOWED_CLASS_ROOTS = ("torch", "torchvision", "torchao", "resnet_edu")
_EXCEPTIONS = {
    n: c for n, c in vars(builtins).items()
    if isinstance(c, type) and issubclass(c, Exception) and n not in ("StopIteration", "StopAsyncIteration")
}


class TimeLimit(BaseException):
    """The time limit ran out during a request (BaseException: a test's ``except Exception`` cannot eat it)."""

    def __init__(self, detail: str, restarted: bool) -> None:
        super().__init__(detail)
        self.detail, self.restarted = detail, restarted


class SandboxDied(BaseException):
    """The sandbox ended (os._exit, a crash, a memory limit) or its replies stopped making sense."""


class RemoteError(Exception):
    """An exception raised by the student's code whose type is not a builtin one (message: 'Type: text')."""


def _exception(tree: Dict[str, Any]) -> BaseException:
    etype, emsg = tree.get("etype"), tree.get("emsg")
    etype = etype if type(etype) is str else "Error"
    emsg = emsg[:2000] if type(emsg) is str else ""
    cls = _EXCEPTIONS.get(etype)
    if cls is not None:
        try:
            return cls(emsg)
        except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs five arguments
            pass
    return RemoteError(f"{etype}: {emsg}")


def resolve_class(mro: Any) -> Optional[type]:
    """The first class of a reference's MRO that is a class of torch/torchvision/torchao/resnet_edu
    (so ``isinstance(ref, nn.Conv2d)`` works); never imports a module that is not imported already."""
    if type(mro) is not list:
        return None
    for entry in mro[:50]:
        if type(entry) is not str or ":" not in entry:
            continue
        mod, _, qual = entry.partition(":")
        if mod.split(".")[0] not in ALLOWED_CLASS_ROOTS or "<" in qual or mod not in sys.modules:
            continue
        obj: Any = sys.modules[mod]
        for part in qual.split("."):
            obj = getattr(obj, part, None) if isinstance(obj, type) or inspect.ismodule(obj) else None
        if isinstance(obj, type):
            return obj
    return None


class Remote:
    """A reference to an object that lives in the sandbox."""

    __slots__ = ("_session", "_id", "_mro", "_callable", "_cls")

    def __init__(self, session: "Session", node: Dict[str, Any]) -> None:
        ref = node.get("ref")
        if type(ref) is not int:
            raise wire.ProtocolError("bad reference")
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_id", ref)
        object.__setattr__(self, "_mro", node.get("mro") if type(node.get("mro")) is list else [])
        object.__setattr__(self, "_callable", node.get("callable") is True)
        object.__setattr__(self, "_cls", resolve_class(self._mro) or Remote)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(ref, nn.Module) asks this
        return object.__getattribute__(self, "_cls")

    def _ask(self, op: str, *args: Any) -> Any:
        return self._session.request(op, self, *args)[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.request("call", self, args, kwargs)[0]

    def __repr__(self) -> str:
        text = self._ask("repr")
        return text if type(text) is str else "<remote object>"

    def __str__(self) -> str:
        text = self._ask("str")
        return text if type(text) is str else "<remote object>"

    def __len__(self) -> int:
        n = self._ask("len")
        if type(n) is not int or n < 0:
            raise TypeError("len() of the answer is not an int")
        return n

    def __bool__(self) -> bool:
        b = self._ask("bool")
        if type(b) is not bool:
            raise TypeError("bool() of the answer is not a bool")
        return b

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key)

    def __iter__(self) -> Iterator[Any]:
        items = self._ask("list")
        if type(items) is not list:
            raise TypeError("iterating over the answer did not give a list")
        return iter(items)

    def __contains__(self, item: Any) -> bool:
        return any(x is item or (type(x) is not Remote and x == item) for x in self)

    def __reduce_ex__(self, protocol: Any) -> Tuple[Any, ...]:
        from . import worker

        return (worker._ref, (self._id,))

    def __dir__(self) -> List[str]:
        return []


class StudentNamespace:
    """What ``test_case.call_func`` reads the answers from: ``get(name)`` asks the sandbox."""

    def __init__(self, session: "Session") -> None:
        self.session = session

    def get(self, name: str, default: Any = None) -> Any:
        value = self.session.request("get", name)[0]
        return default if value is None else value

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


class Session:
    """Requests to one sandbox (or, in the tests, to an in-process :class:`worker.Worker`)."""

    def __init__(self) -> None:
        self.seq = 0
        self.deadline = math.inf

    # transport: send a pickled request, return the raw reply of that request
    def _roundtrip(self, payload: bytes, seq: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def request(self, op: str, *args: Any) -> Tuple[Any, Any]:
        self.seq += 1
        seq = self.seq
        payload = pickle.dumps((seq, op, args), protocol=pickle.HIGHEST_PROTOCOL)
        raw = self._roundtrip(payload, seq)
        tree, buffers = wire.unpack_reply(raw)
        if type(tree) is not dict or tree.get("seq") != seq:
            raise wire.ProtocolError("a reply to another request")
        if tree.get("ok") is not True:  # the student's exception (KeyboardInterrupt too: a RemoteError here)
            raise _exception(tree)
        value = wire.decode(tree.get("value"), buffers, lambda node: Remote(self, node))
        if type(value) is not tuple or len(value) != 2:
            raise wire.ProtocolError("a reply without (value, after)")
        return value

    @contextlib.contextmanager
    def forbid(self, targets: tuple, task: str, answers: tuple) -> Iterator[None]:
        token = self.request("forbid_enter", tuple(targets), task, tuple(answers))[0]
        try:
            yield
        finally:
            with contextlib.suppress(Exception, TimeLimit, SandboxDied):
                deadline, self.deadline = self.deadline, max(self.deadline, time.monotonic() + 5)
                try:
                    self.request("forbid_exit", token)
                finally:
                    self.deadline = deadline

    def probe(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError) as exc:
            raise RuntimeError(f"in_sandbox needs a function whose source can be read ({exc})") from None
        return self.request("probe", source, fn.__name__, tuple(args), dict(kwargs))[0]


class LoopbackSession(Session):
    """The same requests and replies, handled by a worker in this process (fast tests; no isolation)."""

    def __init__(self, user_ns: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        from .worker import Worker

        self.worker = Worker(user_ns)

    def _roundtrip(self, payload: bytes, seq: int) -> bytes:
        return self.worker.handle(payload)


@contextlib.contextmanager
def active(session: Optional[Session]) -> Iterator[None]:
    global ACTIVE
    before, ACTIVE = ACTIVE, session
    try:
        yield
    finally:
        ACTIVE = before
