"""Classroom exercises: the student-side grader, the checks the tests use, and generation from masters.

Three audiences use this module.

* **Students** call :func:`grader_for` in the third cell of every exercise notebook. It returns an
  ``otter.Notebook`` whose ``grader.check("q1")`` runs the *public* tests of question 1. Those tests
  ship inside the installed package (``resnet_edu/exercise_tests/<set>/qN.py``), so the checks work on
  Colab without cloning the repository.
* **Tests** (the ``qN.py`` files, written in the masters) import the checks below: :func:`expect_equal`
  and friends raise an ``AssertionError`` that says what was expected, what came back and a hint, and
  :func:`forbid` turns the reference implementations (``resnet_edu``'s and torchvision's) into traps
  while a student's answer runs, so an answer cannot pass by calling the code it is asked to write.
* **Maintainers** run ``python -m resnet_edu.exercises build`` (``make exercises``): it runs
  ``otter assign`` on every master ``exercises/exNN_*.ipynb`` and writes the student notebooks to
  ``notebooks/exercises/`` and the public tests to ``resnet_edu/exercise_tests/``.
  ``python -m resnet_edu.exercises check`` lists generated files that are out of date (a test runs it).
  ``build`` also writes one otter autograder zip per set to ``_build/autograder/<set>-autograder.zip``
  (git-ignored; :func:`autograder_zip`), for Gradescope or ``otter grade`` (one Docker container per
  submission) when a course outgrows ``python -m resnet_edu.grade``.

The hidden tests are not shipped: ``python -m resnet_edu.grade`` rebuilds them from the masters.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "exercise_names",
    "tests_dir",
    "grader_for",
    "expect",
    "expect_equal",
    "expect_int",
    "expect_close",
    "expect_callable",
    "expect_instance",
    "expect_conv",
    "randomize_bn",
    "forbid",
    "in_sandbox",
    "quiet",
    "masters",
    "assign",
    "autograder_requirements",
    "autograder_zip",
    "build",
    "check",
]

PACKAGE_DIR = Path(__file__).resolve().parent
TESTS_ROOT = PACKAGE_DIR / "exercise_tests"
MASTERS_DIR = "exercises"  # relative to the repository root
STUDENT_DIR = "notebooks/exercises"
GRADER_TAG = "exercise-grader"
AUTOGRADER_DIR = "_build/autograder"  # relative to the repository root; git-ignored (make clean removes it)
DEFAULT_EXTRAS = ("exercises",)


# --------------------------------------------------------------------------------------------------
# 1. Students: where the public tests live, and the grader object
# --------------------------------------------------------------------------------------------------
def exercise_names(tests_root: Optional[Path] = None) -> List[str]:
    """The exercise sets whose public tests ship with this package, e.g. ``"ex01_conv_templates"``."""
    root = Path(tests_root) if tests_root is not None else TESTS_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list(p.glob("q*.py")))


def tests_dir(name: str, tests_root: Optional[Path] = None) -> Path:
    """The folder of public tests of exercise set ``name`` (inside the installed package)."""
    names = exercise_names(tests_root)
    if name not in names:
        raise ValueError(f"unknown exercise set {name!r}; this resnet_edu ships tests for: {', '.join(names) or 'none'}")
    root = Path(tests_root) if tests_root is not None else TESTS_ROOT
    return root / name


def _extra_requirements(extra: str = "exercises") -> List[str]:
    """The requirements of one of resnet-edu's pip extras, read from the installed metadata."""
    from importlib import metadata

    try:
        reqs = metadata.requires("resnet-edu") or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for req in reqs:
        spec, _, marker = req.partition(";")
        if re.search(r"extra\s*==\s*['\"]%s['\"]" % re.escape(extra), marker):
            out.append(spec.strip())
    return out


def grader_for(name: str):
    """``otter.Notebook`` for exercise set ``name``, reading the public tests shipped in resnet_edu.

    If otter-grader is missing (resnet_edu was installed without the ``[exercises]`` extra, e.g. by a
    chapter notebook earlier in the same Colab session), the extra's requirements are installed first.
    """
    folder = tests_dir(name)
    try:
        import otter
    except ImportError:
        reqs = _extra_requirements("exercises") or ["otter-grader"]
        print(f"installing {' '.join(reqs)} (needed by grader.check) ...")
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *reqs])
        importlib.invalidate_caches()
        import otter
    return otter.Notebook(tests_dir=str(folder))


# --------------------------------------------------------------------------------------------------
# 2. Checks used by the tests: messages that say what was expected, what came back, and a hint
# --------------------------------------------------------------------------------------------------
def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    if value is Ellipsis:
        return "... (the placeholder: this answer is not written yet)"
    if value is None:
        return "None (nothing returned: is the body still the ... placeholder, or is a return missing?)"
    return text if len(text) <= limit else text[:limit] + " ..."


def _message(what: str, want: Any, got: Any, hint: Optional[str]) -> str:
    msg = f"{what}: expected {_short(want)}, got {_short(got)}."
    return msg + (f" Hint: {hint}" if hint else "")


def expect(condition: Any, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` is true."""
    if not condition:
        raise AssertionError(message)


def expect_callable(obj: Any, name: str) -> None:
    """Fail with a clear message when the answer ``name`` is missing or not a function/class."""
    if obj is None:
        raise AssertionError(f"{name} is not defined: run the cell where you define it, then check again.")
    if not callable(obj):
        raise AssertionError(f"{name} must be a function (or class), got {_short(obj)}.")


def expect_instance(obj: Any, cls: Any, what: str, hint: Optional[str] = None) -> None:
    """``obj`` is an instance of ``cls`` (a class or tuple of classes)."""
    if not isinstance(obj, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        article = "an" if names[:1].lower() in "aeiou" else "a"
        raise AssertionError(f"{what} must be {article} {names}, got {_short(obj)}." + (f" Hint: {hint}" if hint else ""))


def expect_equal(got: Any, want: Any, what: str, hint: Optional[str] = None) -> None:
    """``got == want`` (tuples and lists compare by content), else a message with both and a hint."""
    same = got == want
    if isinstance(same, bool) and same:
        if isinstance(want, bool) and not isinstance(got, bool):
            raise AssertionError(_message(what, want, got, "return True or False (a bool). " + (hint or "")))
        return
    if not isinstance(same, bool):  # e.g. a tensor compared with a number
        try:
            if bool(same):
                return
        except Exception:
            pass
    raise AssertionError(_message(what, want, got, hint))


def expect_int(got: Any, want: int, what: str, hint: Optional[str] = None) -> None:
    """A Python ``int`` equal to ``want`` (a float such as ``56.0`` is refused: sizes are integers)."""
    if got is Ellipsis or got is None:
        raise AssertionError(_message(what, want, got, hint))
    if isinstance(got, bool) or not isinstance(got, int):
        try:
            import numpy as np

            if isinstance(got, np.integer):
                got = int(got)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(got, bool) or not isinstance(got, int):
        raise AssertionError(
            f"{what}: expected the int {want}, got {_short(got)} of type {type(got).__name__}. "
            "Hint: return an int (use // for floor division; int(...) around a float)."
            + (f" {hint}" if hint else "")
        )
    if got != want:
        raise AssertionError(_message(what, want, got, hint))


def expect_close(got: Any, want: Any, what: str, atol: float = 1e-5, rtol: float = 1e-5, hint: Optional[str] = None) -> None:
    """Tensors (or numbers) equal up to a tolerance; the message shows shapes or the largest gap."""
    import torch

    if got is Ellipsis or got is None:
        raise AssertionError(_message(what, want if not isinstance(want, torch.Tensor) else f"a tensor of shape {tuple(want.shape)}", got, hint))
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"{what}: expected a torch.Tensor of shape {tuple(want.shape)}, got {type(got).__name__}." + (f" Hint: {hint}" if hint else ""))
        if got.is_quantized:
            got = got.dequantize()
        if tuple(got.shape) != tuple(want.shape):
            raise AssertionError(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}." + (f" Hint: {hint}" if hint else ""))
        g, w = got.detach().double(), want.detach().double()
        if not torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
            gap = (g - w).abs()
            i = int(gap.flatten().argmax())
            raise AssertionError(
                f"{what}: values differ (largest gap {float(gap.max()):.3g} at flat index {i}: expected "
                f"{float(w.flatten()[i]):.6g}, got {float(g.flatten()[i]):.6g})." + (f" Hint: {hint}" if hint else "")
            )
        return
    try:
        ok = math.isclose(float(got), float(want), rel_tol=rtol, abs_tol=atol) or (math.isinf(float(want)) and float(got) == float(want))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise AssertionError(_message(what, want, got, hint))


_CONV_FIELDS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")


def expect_conv(conv: Any, what: str, hint: Optional[str] = None, **want: Any) -> None:
    """``conv`` is an ``nn.Conv2d`` with the given settings (``bias=False`` means no bias).

    Integers given for kernel_size/stride/padding/dilation are compared as pairs, like PyTorch stores them.
    """
    import torch.nn as nn

    if not isinstance(conv, nn.Conv2d):
        raise AssertionError(f"{what}: expected an nn.Conv2d, got {_short(conv)}." + (f" Hint: {hint}" if hint else ""))
    wrong = []
    for field in _CONV_FIELDS:
        if field not in want:
            continue
        expected = want[field]
        if field == "bias":
            got: Any = conv.bias is not None
        else:
            got = getattr(conv, field)
            if field in ("kernel_size", "stride", "padding", "dilation") and isinstance(expected, int):
                expected = (expected, expected)
        if got != expected:
            wrong.append(f"{field}={got!r} (expected {expected!r})")
    if wrong:
        raise AssertionError(f"{what}: wrong settings: " + ", ".join(wrong) + "." + (f" Hint: {hint}" if hint else ""))


def randomize_bn(module: Any, seed: int = 0) -> Any:
    """Give every BatchNorm random running statistics and affine parameters, then ``eval()``.

    With the identity-like defaults (mean 0, var 1, weight 1, bias 0) an answer that applies a BatchNorm
    in the wrong place can still produce the right numbers; random statistics make the order matter.
    """
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1.0)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return module.eval()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings (e.g. torch.ao's deprecation notices) while a test computes its reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---- forbid: the reference implementations become traps while a student's answer runs -------------
def _resolve(target: str) -> List[Tuple[Any, str, Any]]:
    """``"pkg.module:Attr.path"`` -> [(owner, attribute name, object)], or [] if it does not import."""
    modname, _, path = target.partition(":")
    if modname.split(".")[0] not in ("torch", "torchvision", "resnet_edu") and modname not in sys.modules:
        return []  # e.g. torchao: not imported, so the answer has not used it (and importing it is slow and noisy)
    try:
        owner: Any = importlib.import_module(modname)
    except ImportError:
        return []
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return []
    if not hasattr(owner, parts[-1]):
        return []
    return [(owner, parts[-1], getattr(owner, parts[-1]))]


def _trap(label: str, task: str) -> types.FunctionType:
    message = (
        f"{task} asks you to write this yourself, but your code called {label}, the reference "
        "implementation. Write it with torch / torch.nn building blocks instead."
    )
    ns: Dict[str, Any] = {}
    exec(f"def trap(*args, **kwargs):\n    raise AssertionError({message!r})\n", ns)
    return ns["trap"]


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions_of(obj: Any) -> List[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        out = []
        for klass in obj.__mro__:
            if klass.__module__.split(".")[0] in ("builtins", "torch", "torchvision", "resnet_edu"):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    out.append(value)
        return out
    return []


def _referenced(fn: types.FunctionType) -> Iterator[Any]:
    """Objects a function's code names: globals (``alias(...)`` or ``module.attr``) and closure cells."""
    for cell in fn.__closure__ or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            pass
    g = fn.__globals__
    for code in _code_objects(fn.__code__):
        names = set(code.co_names)
        for name in names:
            if name in g:
                obj = g[name]
                yield obj
                if isinstance(obj, types.ModuleType):
                    for attr in names:
                        if hasattr(obj, attr):
                            yield getattr(obj, attr)


def _active_session() -> Any:
    """The grader's session with a sandbox while ``python -m resnet_edu.grade`` runs a test, else None."""
    remote = sys.modules.get("resnet_edu.grading.remote")
    return getattr(remote, "ACTIVE", None)


def forbid(*targets: str, task: str = "This question", answers: Sequence[Any] = ()) -> Any:
    """While the block runs, calling any of ``targets`` raises an ``AssertionError`` that explains why.

    In a notebook the traps are set in this process; when the grader runs the test, they are set in
    the sandbox where the student's code runs (see :func:`_local_forbid` for how they work).
    """
    session = _active_session()
    if session is None:
        return _local_forbid(*targets, task=task, answers=answers)
    return session.forbid(targets, task, tuple(answers))


def in_sandbox(probe: Any, *args: Any, **kwargs: Any) -> Any:
    """``probe(*args, **kwargs)``, run where the student's code runs; returns plain data.

    In a notebook this is simply the call. When the grader runs the test, ``probe``'s source is sent
    to the submission's sandbox and run there on ``args`` (the test's inputs, the student's answers),
    and what it returns comes back as plain data. Use it for the steps that need the student's objects
    and this process's objects together (a forward hook that records into a list, a file the answer
    must read, a torch API applied to the answer's module). ``probe`` must be self-contained: imports
    inside its body, no closures, and it must never hold a test's expected values.
    """
    session = _active_session()
    if session is None:
        return probe(*args, **kwargs)
    return session.probe(probe, args, kwargs)


@contextlib.contextmanager
def _local_forbid(*targets: str, task: str = "This question", answers: Sequence[Any] = ()) -> Iterator[None]:
    """While the block runs, calling any of ``targets`` raises an ``AssertionError`` that explains why.

    ``targets`` are ``"module:attribute.path"`` strings, e.g. ``"resnet_edu.models:conv3x3"`` or
    ``"torchvision.models.resnet:BasicBlock.forward"``; those that do not import are skipped.
    Python functions get their code swapped (so aliases and ``super()`` calls are caught too); other
    callables (C functions such as ``torch.quantize_per_tensor``) are replaced on their module, and
    ``answers`` (the student's functions/classes) are also inspected for direct references to them.
    """
    resolved = [(t, item) for t in targets for item in _resolve(t)]
    undo: List[Any] = []
    try:
        for target, (owner, attr, obj) in resolved:
            label = target.replace(":", ".")
            trap = _trap(label, task)
            func = getattr(obj, "__func__", obj)
            if isinstance(func, types.FunctionType) and not func.__closure__:
                undo.append(("code", func, func.__code__))
                func.__code__ = trap.__code__
            else:
                own = attr in vars(owner)
                undo.append(("attr", owner, attr, vars(owner)[attr] if own else None, own))
                setattr(owner, attr, trap)
                for answer in answers:
                    for fn in _functions_of(answer):
                        for ref in _referenced(fn):
                            if ref is obj:
                                trap()
        yield
    finally:
        for item in reversed(undo):
            if item[0] == "code":
                item[1].__code__ = item[2]
            elif item[4]:
                setattr(item[1], item[2], item[3])
            else:
                delattr(item[1], item[2])


# --------------------------------------------------------------------------------------------------
# 3. Maintainers: masters -> student notebooks + public tests
# --------------------------------------------------------------------------------------------------
def _repo_root(root: Optional[Path] = None) -> Path:
    return Path(root) if root is not None else PACKAGE_DIR.parent


def masters(root: Optional[Path] = None) -> List[Path]:
    """The master notebooks (otter-assign format): ``exercises/ex*.ipynb`` at the repository root."""
    return sorted((_repo_root(root) / MASTERS_DIR).glob("ex*.ipynb"))


def assign(master: Path, out_dir: Path) -> Dict[str, Path]:
    """Run ``otter assign`` on ``master`` into ``out_dir``; return the paths it produced.

    Keys: ``student`` (the student notebook), ``student_tests`` (public tests), ``autograder``
    (the notebook with solutions) and ``autograder_tests`` (public and hidden tests).
    """
    from otter.assign import main as otter_assign

    master = Path(master).resolve()
    if not master.is_file():
        raise FileNotFoundError(f"master notebook not found: {master}")
    out_dir = Path(out_dir).resolve()
    import logging

    quiet_loggers = [logging.getLogger(n) for n in ("otter", "otter.assign")]
    levels = [lg.level for lg in quiet_loggers]
    for lg in quiet_loggers:
        lg.setLevel(logging.WARNING)
    cwd = os.getcwd()
    # otter assign writes a second copy of every test (hidden ones included) to a tempfile.mkdtemp()
    # folder it never removes: make that folder ours, inside out_dir, and remove it afterwards
    private = out_dir / ".otter_tmp"
    private.mkdir(parents=True, exist_ok=True)
    tempdir_before = tempfile.tempdir
    try:
        tempfile.tempdir = str(private)
        with contextlib.redirect_stdout(sys.stderr):
            otter_assign(str(master), str(out_dir), no_pdfs=True, no_run_tests=True)
    finally:
        tempfile.tempdir = tempdir_before
        shutil.rmtree(private, ignore_errors=True)
        os.chdir(cwd)
        for lg, level in zip(quiet_loggers, levels):
            lg.setLevel(level)
    name = master.name
    paths = {
        "student": out_dir / "student" / name,
        "student_tests": out_dir / "student" / "tests",
        "autograder": out_dir / "autograder" / name,
        "autograder_tests": out_dir / "autograder" / "tests",
    }
    missing = [k for k, p in paths.items() if not p.exists()]
    if missing:
        raise RuntimeError(f"otter assign did not produce {missing} for {master}; is the ASSIGNMENT CONFIG set to tests: files: true?")
    return paths


def _source(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _grader_cell_source(name: str) -> str:
    return (
        '# grader.check("qN") runs the public tests of question N (they ship inside resnet_edu).\n'
        "from resnet_edu.exercises import grader_for\n"
        f'grader = grader_for("{name}")'
    )


def student_notebook(assigned: dict, name: str, repo: Dict[str, str], extras: Sequence[str]) -> dict:
    """The committed student notebook: Colab badge and setup cells, otter's student view with the grader
    cell after the title, outputs stripped, deterministic cell ids."""
    from .book import BADGE_TAG, SETUP_TAG, badge_cell_source, setup_cell_source

    rel = f"{STUDENT_DIR}/{name}.ipynb"
    body = list(assigned["cells"])
    first_md = next((i for i, c in enumerate(body) if c["cell_type"] == "markdown"), -1)
    body.insert(first_md + 1, {"cell_type": "code", "metadata": {"tags": [GRADER_TAG]}, "source": _grader_cell_source(name)})
    head = [
        {"cell_type": "markdown", "metadata": {"tags": [BADGE_TAG, "remove-cell"]}, "source": badge_cell_source(rel, repo)},
        {"cell_type": "code", "metadata": {"tags": [SETUP_TAG, "hide-cell"]}, "source": setup_cell_source(repo, list(extras))},
    ]
    cells = []
    for i, cell in enumerate(head + body):
        new = {"cell_type": cell["cell_type"], "id": f"c{i:03d}", "metadata": dict(cell.get("metadata", {})), "source": _source(cell)}
        if new["cell_type"] == "code":
            new["execution_count"] = None
            new["outputs"] = []
        cells.append(new)
    meta = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "otter": assigned.get("metadata", {}).get("otter", {"assignment_name": name}),
        "resnet_edu": {"exercise": name, "extras": list(extras)},
    }
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _extras_of(master: Path) -> List[str]:
    mnb = json.loads(Path(master).read_text(encoding="utf-8"))
    return list(mnb.get("metadata", {}).get("resnet_edu", {}).get("extras", list(DEFAULT_EXTRAS)))


def _generated(root: Path, work: Path, assigned: Optional[Dict[str, Dict[str, Path]]] = None) -> Dict[str, str]:
    """Every generated file (path relative to the repository root -> its text), built from the masters.
    ``assigned`` (when given) receives each set's ``assign`` paths (the hidden tests among them)."""
    from .book import repository

    repo = repository(root)
    out: Dict[str, str] = {}
    found = masters(root)
    if not found:
        raise FileNotFoundError(f"no master notebooks (ex*.ipynb) in {root / MASTERS_DIR}")
    for master in found:
        name = master.stem
        extras = _extras_of(master)
        paths = assign(master, work / name)
        if assigned is not None:
            assigned[name] = paths
        assigned_nb = json.loads(paths["student"].read_text(encoding="utf-8"))
        out[f"{STUDENT_DIR}/{name}.ipynb"] = _dump(student_notebook(assigned_nb, name, repo, extras))
        for test in sorted(paths["student_tests"].glob("*.py")):
            out[f"resnet_edu/exercise_tests/{name}/{test.name}"] = test.read_text(encoding="utf-8")
    return out


# ---- otter autograder zips: for Gradescope / `otter grade` (one Docker container per submission) --------
def _requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def autograder_requirements(extras: Sequence[str] = DEFAULT_EXTRAS) -> List[str]:
    """What an otter autograder container must pip-install for a set: resnet_edu's own dependencies
    and those of ``extras``, all from PyPI. Not otter-grader (otter's environment pins its own) and
    not resnet_edu itself (it is not on PyPI: the zip carries the package as a support file)."""
    from importlib import metadata

    try:
        reqs = metadata.requires("resnet-edu") or []
    except metadata.PackageNotFoundError:  # pragma: no cover - a checkout that was never pip-installed
        reqs = []
    out: List[str] = []
    for req in reqs:
        spec, _, marker = req.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if (extra is None or extra.group(1) in extras) and _requirement_name(spec) not in ("otter-grader", "resnet-edu"):
            if spec.strip() not in out:
                out.append(spec.strip())
    if not any(_requirement_name(r) == "torch" for r in out):
        raise RuntimeError("resnet-edu's metadata lists no torch: install the package (pip install -e .) before building autograder zips")
    return out


def autograder_zip(name: str, tests: Path, out: Path, extras: Sequence[str] = DEFAULT_EXTRAS, public_tests: Optional[Path] = None) -> Path:
    """Write otter's autograder zip for set ``name`` to ``out`` (``otter generate``) and return it.

    ``tests`` is the folder of *all* its tests (public and hidden: ``assign(...)["autograder_tests"]``).
    The zip holds those tests, otter's ``setup.sh``/``run_autograder``, an ``environment.yml`` whose pip
    list is otter-grader plus :func:`autograder_requirements` (PyPI only, no git URL), and a copy of the
    ``resnet_edu`` package as a support file (``files/resnet_edu``: otter copies it next to the
    submission, where the notebook's ``import resnet_edu`` finds it, so its setup cell installs
    nothing). No solutions: the tests compute their expected values from the reference implementations.
    ``public_tests`` replaces the copy's ``exercise_tests`` folder (``build`` passes the one it just wrote).
    """
    from otter.generate import main as otter_generate

    tests = Path(tests).resolve()
    out = Path(out).resolve()
    if not list(tests.glob("q*.py")):
        raise FileNotFoundError(f"no test files (q*.py) in {tests}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resnet_edu_autograder_") as tmp:
        stage = Path(tmp)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
        shutil.copytree(PACKAGE_DIR, stage / "resnet_edu", ignore=skip)
        if public_tests is not None and Path(public_tests).resolve() != TESTS_ROOT:
            shutil.rmtree(stage / "resnet_edu" / "exercise_tests", ignore_errors=True)
            shutil.copytree(public_tests, stage / "resnet_edu" / "exercise_tests", ignore=skip)
        (stage / "requirements.txt").write_text("\n".join(autograder_requirements(extras)) + "\n", encoding="utf-8")
        # otter refuses a notebook of another set (its metadata's assignment_name) instead of scoring it 0
        (stage / "otter_config.json").write_text(json.dumps({"assignment_name": name}, indent=2) + "\n", encoding="utf-8")
        partial = out.with_name(out.name + ".part")
        cwd = os.getcwd()
        try:
            os.chdir(stage)  # otter generate takes support files relative to the working directory
            with contextlib.redirect_stdout(sys.stderr):
                otter_generate(
                    tests_dir=str(tests), output_path=str(partial), requirements="requirements.txt", config="otter_config.json",
                    no_environment=True, files=["resnet_edu"], python_version=f"{sys.version_info[0]}.{sys.version_info[1]}",
                )
        finally:
            os.chdir(cwd)
        os.replace(partial, out)
    return out


def autograder_zips(root: Optional[Path] = None, out_dir: Optional[Path] = None, names: Optional[Sequence[str]] = None) -> List[Path]:
    """One autograder zip per master (or per set in ``names``) in ``out_dir`` (default ``_build/autograder``)."""
    root = _repo_root(root)
    out_dir = Path(out_dir) if out_dir is not None else root / AUTOGRADER_DIR
    found = [m for m in masters(root) if names is None or m.stem in names]
    if names is not None and len(found) != len(set(names)):
        raise ValueError(f"unknown exercise set(s): {sorted(set(names) - {m.stem for m in found})}")
    written = []
    with tempfile.TemporaryDirectory(prefix="resnet_edu_assign_") as tmp:
        for master in found:
            paths = assign(master, Path(tmp) / master.stem)
            written.append(autograder_zip(master.stem, paths["autograder_tests"], out_dir / f"{master.stem}-autograder.zip", _extras_of(master)))
    return written


def _existing(root: Path) -> Dict[str, str]:
    files = list((root / STUDENT_DIR).glob("*.ipynb")) + list((root / "resnet_edu" / "exercise_tests").glob("*/*.py"))
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}


def build(root: Optional[Path] = None, zips: bool = True) -> List[str]:
    """Regenerate student notebooks and public tests from the masters; return the files changed.
    With ``zips`` also (re)write every set's otter autograder zip in ``_build/autograder/``."""
    root = _repo_root(root)
    with tempfile.TemporaryDirectory(prefix="resnet_edu_assign_") as tmp:
        assigned: Dict[str, Dict[str, Path]] = {}
        want = _generated(root, Path(tmp), assigned)
        have = _existing(root)
        changed = []
        for rel in sorted(set(have) - set(want)):
            (root / rel).unlink()
            changed.append(rel)
        for rel, text in sorted(want.items()):
            if have.get(rel) != text:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                changed.append(rel)
        for folder in (root / "resnet_edu" / "exercise_tests").glob("*"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if zips:  # after the public tests are written: the zip's copy of resnet_edu carries them
            out_dir = root / AUTOGRADER_DIR
            for stale in out_dir.glob("*-autograder.zip"):
                if stale.name[: -len("-autograder.zip")] not in assigned:
                    stale.unlink()
            for master in masters(root):
                autograder_zip(master.stem, assigned[master.stem]["autograder_tests"], out_dir / f"{master.stem}-autograder.zip",
                               _extras_of(master), public_tests=root / "resnet_edu" / "exercise_tests")
    return changed


def _normalized(rel: str, text: str) -> Any:
    if rel.endswith(".ipynb"):
        try:
            nb = json.loads(text)
        except json.JSONDecodeError:
            return text
        for cell in nb.get("cells", []):
            cell.pop("id", None)
            if "source" in cell:
                cell["source"] = _source(cell)
        return nb
    return text


def check(root: Optional[Path] = None) -> List[str]:
    """Problems: generated files missing, stale or different from what ``build`` would write now."""
    root = _repo_root(root)
    with tempfile.TemporaryDirectory(prefix="resnet_edu_assign_") as tmp:
        want = _generated(root, Path(tmp))
    have = _existing(root)
    problems = []
    for rel in sorted(set(want) | set(have)):
        if rel not in have:
            problems.append(f"{rel}: missing (run: make exercises)")
        elif rel not in want:
            problems.append(f"{rel}: no master produces it any more (run: make exercises)")
        elif _normalized(rel, have[rel]) != _normalized(rel, want[rel]):
            problems.append(f"{rel}: out of date with its master (run: make exercises)")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("build", "check", "autograder") or (args[0] != "autograder" and len(args) > 1):
        print("usage: python -m resnet_edu.exercises build|check|autograder [SET ...]", file=sys.stderr)
        return 2
    if args[0] == "build":
        changed = build()
        for rel in changed:
            print(f"updated {rel}")
        print(f"{len(changed)} file(s) changed; autograder zips in {AUTOGRADER_DIR}/")
        return 0
    if args[0] == "autograder":
        for path in autograder_zips(names=args[1:] or None):
            print(f"wrote {path}")
        return 0
    problems = check()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
