"""Grade a folder of student notebooks: ``python -m resnet_edu.grade SUBMISSIONS_DIR --out scores.csv``.

Every ``*.ipynb`` in the folder is graded with otter-grader's tests (public and hidden), without Docker,
and gets one CSV row: ``file, exercise, q1 ... qN, total, max, note``.

How a submission is graded (and why not with one ``otter run``): ``otter run`` executes the whole
notebook and then runs the tests, so one cell that never ends costs the student every question. Here
each submission gets a fresh Jupyter kernel; its code cells run one at a time, each with a time limit
(``--cell-timeout``). When a cell runs out of time the kernel is interrupted (or, if it ignores the
interrupt, restarted and the cells that had worked are replayed), the cell's names stay undefined, and
grading goes on. Where the notebook calls ``grader.check("qN")`` the question is graded on the spot
with otter's test file for ``qN`` (every test case, hidden ones included), again under the time limit;
questions whose check cell was deleted are graded at the end. Student code that raises, prints
garbage or never terminates therefore scores 0 on that question only. A whole submission gets at
most ``--timeout`` seconds, counted after the kernel has started and imported the libraries the
notebook imports (torch, resnet_edu, ...: a cold ``import torch`` on a busy machine is not the
student's time). Nothing is installed: cells' ``!pip`` / ``%pip`` lines are skipped.

The hidden tests are not shipped with the package: they are rebuilt from the master notebooks
(``exercises/`` in a clone of the repository, or ``--masters DIR``) with ``otter assign``. With
``--public-only`` the shipped public tests are used instead (no masters needed; weaker grading).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["GradingError", "ExerciseTests", "Result", "load_tests", "grade_notebook", "grade_folder", "write_csv", "main"]

DEFAULT_TIMEOUT = 300.0  # seconds per submission
DEFAULT_CELL_TIMEOUT = 60.0  # seconds per cell, and per question's tests
STARTUP_TIMEOUT = 300.0  # seconds for a kernel to start and import the libraries (not the student's time)
INTERRUPT_GRACE = 5.0  # seconds a kernel gets to honour an interrupt before it is restarted
# Libraries imported before the student's cells run (those the notebook imports, from this list), so a
# cell's time limit measures the student's code, not a cold `import torch` on a busy machine.
WARM_LIBRARIES = ("torch", "torchvision", "torchao", "resnet_edu", "numpy", "matplotlib", "sklearn", "otter")
_IMPORT_RE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)

_CHECK_RE = re.compile(r"""grader\s*\.\s*check\s*\(\s*["']([^"']+)["']""")
_GRADER_RE = re.compile(r"grader\s*\.\s*(check_all|export)\s*\(|grader_for\s*\(|otter\s*\.\s*Notebook\s*\(")
_INSTALL_RE = re.compile(r"^\s*(!|%pip\b|%conda\b|%%bash|%%sh|%%script)")


class GradingError(ValueError):
    """A problem with the grading request itself (folder, options, masters), not with a submission."""


def _qkey(q: str) -> Tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", q))


@dataclass
class ExerciseTests:
    """The tests of one exercise set: question name -> test file and its maximum score."""

    name: str
    tests: Dict[str, Path]
    points: Dict[str, float]

    @property
    def questions(self) -> List[str]:
        return sorted(self.tests, key=_qkey)

    @property
    def max(self) -> float:
        return float(sum(self.points.values()))


@dataclass
class Result:
    """One submission's grade: one CSV row."""

    file: str
    exercise: Optional[str]
    scores: Dict[str, float] = field(default_factory=dict)
    max: float = 0.0
    notes: List[str] = field(default_factory=list)
    details: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(self.scores.values()))


# --------------------------------------------------------------------------------------------------
# Tests: public ones from the package, or all of them rebuilt from the masters
# --------------------------------------------------------------------------------------------------
def _test_points(path: Path) -> float:
    from otter.test_files.exception_test import ExceptionTestFile

    return float(sum(tc.points or 0 for tc in ExceptionTestFile.from_file(str(path)).test_cases))


def _exercise_tests(name: str, folder: Path) -> ExerciseTests:
    tests = {p.stem: p for p in sorted(folder.glob("*.py"))}
    if not tests:
        raise GradingError(f"no test files in {folder}")
    return ExerciseTests(name, tests, {q: _test_points(p) for q, p in tests.items()})


def default_masters_dir() -> Path:
    from .exercises import MASTERS_DIR, PACKAGE_DIR

    return PACKAGE_DIR.parent / MASTERS_DIR


def available_exercises(masters: Optional[Path] = None, public_only: bool = False) -> List[str]:
    from .exercises import exercise_names

    if public_only:
        return exercise_names()
    folder = Path(masters) if masters is not None else default_masters_dir()
    return sorted(p.stem for p in folder.glob("ex*.ipynb")) if folder.is_dir() else []


def load_tests(names: Sequence[str], workdir: Path, masters: Optional[Path] = None, public_only: bool = False) -> Dict[str, ExerciseTests]:
    """Test files for each exercise set in ``names``: public (shipped) or public + hidden (from masters)."""
    from .exercises import assign, tests_dir

    out: Dict[str, ExerciseTests] = {}
    for name in names:
        if public_only:
            out[name] = _exercise_tests(name, tests_dir(name))
            continue
        folder = Path(masters) if masters is not None else default_masters_dir()
        master = folder / f"{name}.ipynb"
        if not master.is_file():
            raise GradingError(
                f"the hidden tests of {name} are built from its master notebook, but {master} does not exist. "
                "Run from a clone of the repository, pass --masters DIR (the folder with the ex*.ipynb masters), "
                "or grade with the public tests only (--public-only)."
            )
        paths = assign(master, Path(workdir) / "assign" / name)
        out[name] = _exercise_tests(name, paths["autograder_tests"])
    return out


# --------------------------------------------------------------------------------------------------
# Inside the student's kernel: run one question's test file against the notebook's globals
# --------------------------------------------------------------------------------------------------
def run_question(test_path: str, env: Dict[str, Any], out_path: str) -> None:
    """Run every test case of ``test_path`` against ``env``; write the results to ``out_path`` (JSON).

    Called in the student's kernel. Results are rewritten after each test case, so a case that hangs
    still leaves the earlier cases' results behind. Any exception (even SystemExit) fails only its case;
    KeyboardInterrupt (the time limit) stops the question.
    """
    from otter.test_files.exception_test import ExceptionTestFile

    tf = ExceptionTestFile.from_file(test_path)
    results: List[Dict[str, Any]] = []

    def dump() -> None:
        tmp = out_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f)
        os.replace(tmp, out_path)

    for tc in tf.test_cases:
        entry = {"name": tc.name, "points": tc.points or 0, "hidden": tc.hidden, "passed": False, "message": "did not finish"}
        results.append(entry)
        dump()
        try:
            tc.body.call_func(env)
        except KeyboardInterrupt:
            entry["message"] = "stopped: time limit"
            dump()
            raise
        except BaseException as exc:  # noqa: BLE001 - student code may raise anything, SystemExit included
            entry["message"] = f"{type(exc).__name__}: {str(exc)[:800]}"
        else:
            entry["passed"], entry["message"] = True, ""
        dump()


# --------------------------------------------------------------------------------------------------
# The kernel: run code with a time limit, interrupt or restart when it does not come back
# --------------------------------------------------------------------------------------------------
class _Kernel:
    def __init__(self, cwd: Path, startup_timeout: float = 120.0) -> None:
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import KernelManager

        class ThisPython(KernelSpecManager):
            """The kernel runs on the grader's own interpreter, whatever "python3" means elsewhere."""

            def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
                argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
                return KernelSpec(argv=argv, display_name="resnet_edu grader", language="python", name=kernel_name)

        env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        env.pop("PYTEST_CURRENT_TEST", None)
        self.km = KernelManager(kernel_name="resnet_edu_grader", kernel_spec_manager=ThisPython())
        self.km.start_kernel(cwd=str(cwd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.startup_timeout = startup_timeout
        self._connect()
        self.restarts = 0

    def _connect(self) -> None:
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=self.startup_timeout)

    def _drain(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0)
            except Empty:
                return

    def restart(self) -> None:
        self.kc.stop_channels()
        self.km.restart_kernel(now=True)
        self._connect()
        self.restarts += 1

    def run(self, code: str, timeout: float) -> Tuple[str, str]:
        """Run ``code``; return (status, detail): ok | error (with 'Name: value') | timeout | restarted."""
        if timeout <= 0:
            return "timeout", "no time left"
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        interrupted_at: Optional[float] = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                self.km.interrupt_kernel()
                interrupted_at = now
            if interrupted_at is not None and now >= interrupted_at + INTERRUPT_GRACE:
                self.restart()
                return "restarted", f"did not stop after {timeout:.0f} s, even when interrupted; kernel restarted"
            try:
                msg = self.kc.get_shell_msg(timeout=0.2)
            except Empty:
                self._drain()
                if not self.km.is_alive():
                    self.restart()
                    return "restarted", "the kernel died (e.g. os._exit or a crash); kernel restarted"
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            self._drain()
            content = msg.get("content", {})
            if interrupted_at is not None:
                return "timeout", f"stopped after {timeout:.0f} s (time limit)"
            if content.get("status") == "ok":
                return "ok", ""
            return "error", f"{content.get('ename', 'Error')}: {str(content.get('evalue', ''))[:300]}"

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


# --------------------------------------------------------------------------------------------------
# One submission
# --------------------------------------------------------------------------------------------------
def _source(cell: Dict[str, Any]) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else str(s)


def _read_notebook(path: Path) -> Dict[str, Any]:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if not isinstance(nb.get("cells"), list):
        raise ValueError("no cells")
    return nb


def detect_exercise(nb: Optional[Dict[str, Any]], filename: str, known: Sequence[str]) -> Optional[str]:
    """Which exercise set a submission belongs to: notebook metadata, then the file name."""
    if nb is not None:
        meta = nb.get("metadata", {}) or {}
        for name in ((meta.get("resnet_edu") or {}).get("exercise"), (meta.get("otter") or {}).get("assignment_name")):
            if name in known:
                return name
    stem = Path(filename).stem.lower()
    for name in known:
        if name.lower() in stem:
            return name
    for name in known:
        prefix = name.split("_")[0].lower()  # "ex01"
        if re.search(rf"(^|[^a-z0-9]){re.escape(prefix)}([^0-9]|$)", stem):
            return name
    return None


def _warmup_code(nb: Dict[str, Any]) -> str:
    """Code that imports the libraries the notebook imports (never the student's own code)."""
    names = {"torch", "resnet_edu", "resnet_edu.grade", "resnet_edu.exercises", "otter.test_files.exception_test"}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            for m in _IMPORT_RE.finditer(_source(cell)):
                name = m.group(1) or m.group(2)
                if name.split(".")[0] in WARM_LIBRARIES:
                    names.add(name)
    return (
        "def __resnet_edu_warm__(names):\n"
        "    import importlib\n"
        "    for name in names:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except Exception:\n"
        "            pass\n"
        f"__resnet_edu_warm__({sorted(names)!r})\n"
        "del __resnet_edu_warm__"
    )


def _strip_installs(code: str) -> str:
    return "\n".join(("pass  # skipped by the grader: " + line.strip()) if _INSTALL_RE.match(line) else line for line in code.split("\n"))


def grade_notebook(
    path: Path,
    tests: Optional[ExerciseTests],
    timeout: float = DEFAULT_TIMEOUT,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    exercise: Optional[str] = None,
    note: Optional[str] = None,
) -> Result:
    """Grade one notebook against ``tests``; never raises for a bad submission (the row says why)."""
    path = Path(path)
    start = time.monotonic()
    result = Result(file=path.name, exercise=exercise or (tests.name if tests else None))
    if tests is not None:
        result.scores = {q: 0.0 for q in tests.questions}
        result.max = tests.max
    if note:
        result.notes.append(note)
    try:
        nb = _read_notebook(path)
    except Exception as exc:  # noqa: BLE001
        result.notes.append(f"not a readable notebook ({type(exc).__name__}: {str(exc)[:200]}); scored 0")
        result.seconds = time.monotonic() - start
        return result
    if tests is None:
        result.seconds = time.monotonic() - start
        return result

    deadline = start + timeout
    graded: Dict[str, bool] = {}
    ok_cells: List[str] = []
    work = Path(tempfile.mkdtemp(prefix="resnet_edu_grade_"))
    kernel: Optional[_Kernel] = None
    warmup = _warmup_code(nb)

    def left(limit: float) -> float:
        return min(limit, deadline - time.monotonic())

    def after_restart() -> None:
        kernel.run(warmup, STARTUP_TIMEOUT)  # type: ignore[union-attr]
        for code in ok_cells:  # the state the later cells expect
            if left(cell_timeout) <= 0:
                return
            kernel.run(code, left(cell_timeout))  # type: ignore[union-attr]

    def grade_question(q: str) -> None:
        if q not in tests.tests or graded.get(q):
            return
        graded[q] = True
        out = work / f"{q}.json"
        code = (
            "import resnet_edu.grade as __resnet_edu_grade__\n"
            f"__resnet_edu_grade__.run_question({str(tests.tests[q])!r}, globals(), {str(out)!r})\n"
            "del __resnet_edu_grade__"
        )
        status, detail = kernel.run(code, left(cell_timeout))  # type: ignore[union-attr]
        cases: List[Dict[str, Any]] = []
        if out.exists():
            try:
                cases = json.loads(out.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cases = []
        result.scores[q] = round(sum(c["points"] for c in cases if c.get("passed")), 6)
        result.details[q] = cases
        if status in ("timeout", "restarted"):
            result.notes.append(f"{q}: tests {detail}")
            if status == "restarted":
                after_restart()
        elif status == "error" and not cases:
            result.notes.append(f"{q}: tests could not run ({detail})")

    question_of: Dict[int, str] = {}  # cell index -> the question whose check cell comes next
    upcoming = None
    for i in range(len(nb["cells"]) - 1, -1, -1):
        found = _CHECK_RE.findall(_source(nb["cells"][i])) if nb["cells"][i].get("cell_type") == "code" else []
        upcoming = found[0] if found else upcoming
        if upcoming:
            question_of[i] = upcoming

    def where(index: int) -> str:
        return f"cell {index} ({question_of[index]})" if index in question_of else f"cell {index}"

    try:
        kernel = _Kernel(work, startup_timeout=STARTUP_TIMEOUT)
        status, detail = kernel.run(warmup, STARTUP_TIMEOUT)
        if status != "ok":
            result.notes.append(f"importing the libraries failed ({detail}); grading went on")
        deadline = time.monotonic() + timeout  # the student's time starts now
        for index, cell in enumerate(nb["cells"]):
            if cell.get("cell_type") != "code":
                continue
            code = _source(cell)
            tags = set((cell.get("metadata") or {}).get("tags") or [])
            checks = _CHECK_RE.findall(code)
            if checks or _GRADER_RE.search(code) or "colab-setup" in tags:
                for q in checks:
                    if time.monotonic() < deadline:
                        grade_question(q)
                continue
            if not code.strip():
                continue
            if time.monotonic() >= deadline:
                break
            status, detail = kernel.run(_strip_installs(code), left(cell_timeout))
            if status == "ok":
                ok_cells.append(_strip_installs(code))
            elif status in ("timeout", "restarted"):
                result.notes.append(f"{where(index)}: {detail}")
                if status == "restarted":
                    after_restart()
        for q in tests.questions:
            if time.monotonic() >= deadline:
                break
            grade_question(q)
        missed = [q for q in tests.questions if not graded.get(q)]
        if missed:
            result.notes.append(f"submission time limit ({timeout:.0f} s) reached; not graded: {', '.join(missed)}")
    except Exception as exc:  # noqa: BLE001 - the kernel itself failed: report, keep the scores so far
        result.notes.append(f"grading stopped: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        if kernel is not None:
            try:
                kernel.shutdown()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(work, ignore_errors=True)
    if kernel is not None and kernel.restarts:
        result.notes.append(f"kernel restarted {kernel.restarts} time(s)")
    result.seconds = time.monotonic() - start
    return result


# --------------------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------------------
def _grade_job(args: Tuple[Any, ...]) -> Result:
    return grade_notebook(*args)


def grade_folder(
    folder: Path,
    timeout: float = DEFAULT_TIMEOUT,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    masters: Optional[Path] = None,
    public_only: bool = False,
    exercise: Optional[str] = None,
    jobs: int = 1,
    progress: bool = True,
) -> List[Result]:
    """Grade every ``*.ipynb`` directly inside ``folder``; one Result per file, in file-name order."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.exists():
        raise GradingError(f"submissions folder {folder} does not exist")
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder; give the folder that holds the submitted .ipynb files")
    files = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not files:
        raise GradingError(f"no .ipynb files in {folder} (the grader reads the notebooks directly inside it, not subfolders)")
    if timeout <= 0 or cell_timeout <= 0:
        raise GradingError(f"time limits must be positive, got timeout={timeout}, cell_timeout={cell_timeout}")
    if jobs < 1:
        raise GradingError(f"jobs must be at least 1, got {jobs}")

    known = available_exercises(masters, public_only)
    if not known:
        if public_only:
            raise GradingError("this resnet_edu ships no exercise tests (resnet_edu/exercise_tests is empty)")
        where = Path(masters) if masters else default_masters_dir()
        raise GradingError(
            f"no master notebooks (ex*.ipynb) in {where}: the hidden tests are built from the masters, which live in "
            "exercises/ of a clone of the book's repository. Grade from a clone, pass --masters DIR, "
            "or use --public-only (the public tests shipped in the package)"
        )
    if exercise is not None and exercise not in known:
        raise GradingError(f"unknown exercise set {exercise!r}; known: {', '.join(known)}")

    notebooks: Dict[Path, Optional[Dict[str, Any]]] = {}
    for f in files:
        try:
            notebooks[f] = _read_notebook(f)
        except Exception:  # noqa: BLE001 - graded (as 0, with a note) below
            notebooks[f] = None
    assigned: Dict[Path, Optional[str]] = {f: exercise or detect_exercise(nb, f.name, known) for f, nb in notebooks.items()}
    found = sorted({a for a in assigned.values() if a})
    notes: Dict[Path, Optional[str]] = {}
    for f, a in assigned.items():
        if a is None and len(found) == 1:
            assigned[f] = found[0]
            if notebooks[f] is not None:
                notes[f] = f"exercise set not recorded in the notebook; assumed {found[0]}"
        elif a is None and notebooks[f] is not None:
            notes[f] = "cannot tell which exercise set this is (no metadata, no exNN in the file name); use --exercise"

    with tempfile.TemporaryDirectory(prefix="resnet_edu_tests_") as tmp:
        needed = sorted({a for a in assigned.values() if a})
        tests = load_tests(needed, Path(tmp), masters=masters, public_only=public_only)
        jobs_args = [(f, tests.get(assigned[f]) if assigned[f] else None, timeout, cell_timeout, assigned[f], notes.get(f)) for f in files]
        results: Dict[Path, Result] = {}
        bar = tqdm(total=len(files), desc="grading", unit="notebook", disable=not progress, file=sys.stderr)
        try:
            if jobs == 1:
                for args in jobs_args:
                    bar.set_postfix_str(args[0].name, refresh=True)
                    results[args[0]] = _grade_job(args)
                    bar.update(1)
            else:
                import multiprocessing

                with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                    futures = {pool.submit(_grade_job, args): args[0] for args in jobs_args}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.set_postfix_str(futures[fut].name, refresh=False)
                        bar.update(1)
        finally:
            bar.close()
    return [results[f] for f in files]


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return ""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def write_csv(results: Sequence[Result], out: Path) -> List[str]:
    """Write one row per result; return the header. Question columns are the union over the sets
    graded (blank where a set has no such question)."""
    questions = sorted({q for r in results for q in r.scores}, key=_qkey)
    header = ["file", "exercise", *questions, "total", "max", "note"]
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in results:
            w.writerow([r.file, r.exercise or "", *[_fmt(r.scores.get(q)) for q in questions], _fmt(r.total), _fmt(r.max), "; ".join(r.notes)])
    return header


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_edu.grade",
        description="Grade every .ipynb in a folder with the exercise tests (public and hidden); write one CSV row per notebook.",
    )
    parser.add_argument("submissions", type=Path, help="folder holding the submitted .ipynb files")
    parser.add_argument("--out", type=Path, default=Path("scores.csv"), help="CSV file to write (default: scores.csv)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds per submission (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, help=f"seconds per cell and per question's tests (default {DEFAULT_CELL_TIMEOUT:.0f})")
    parser.add_argument("--exercise", help="grade every notebook as this set (e.g. ex01_conv_templates) instead of detecting it")
    parser.add_argument("--masters", type=Path, help="folder of master notebooks (default: exercises/ of this repository)")
    parser.add_argument("--public-only", action="store_true", help="grade with the public tests shipped in the package (no masters needed)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded in parallel (default 1)")
    parser.add_argument("--details", type=Path, help="also write every test case's result and message to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        results = grade_folder(
            args.submissions, args.timeout, args.cell_timeout, args.masters, args.public_only, args.exercise, args.jobs, not args.quiet
        )
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(results, args.out)
    if args.details:
        args.details.write_text(
            json.dumps([{"file": r.file, "exercise": r.exercise, "seconds": round(r.seconds, 1), "questions": r.details} for r in results], indent=1),
            encoding="utf-8",
        )
    full = sum(1 for r in results if r.max and r.total == r.max)
    print(f"graded {len(results)} notebook(s) into {args.out} ({full} with full marks)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
