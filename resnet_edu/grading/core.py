"""Grade a folder of student notebooks: ``python -m resnet_edu.grade SUBMISSIONS_DIR --out scores.csv``.

Every ``*.ipynb`` in the folder gets one gradebook row: ``file, exercise, q1 ... qN, total, max,
sha256, note``. How (see ``book/teachers.md``, "Threat model"):

* **One sandbox per submission** (:mod:`resnet_edu.grading.sandbox`): bubblewrap, its own uid, no
  network, a private scratch folder, limits (per process, and on the memory of all its processes);
  the cells run there, one at a time, each with a time limit (interrupt, then kill and replay the
  cells that had worked). With ``--jobs N`` a notebook that met a time limit is graded again alone.
* **Verdicts outside it** (:mod:`resnet_edu.grading.remote`): the teacher's test files (public and
  hidden, rebuilt from the masters with ``otter assign``) run in the grader's own process. The names
  a test checks are fetched from the sandbox as plain data, or as references whose calls are sent to
  the sandbox with the test's inputs; the expected values, the hidden tests and the solutions never
  enter the sandbox. Points and the maximum come from the teacher's test files.
* **The gradebook** (:mod:`resnet_edu.grading.gradebook`): rewritten atomically after each row, never
  overwritten without ``--force``, spreadsheet formulas neutralised, a sha256 per submission; a
  submission that is a symbolic link is reported, never read.

Where no sandbox can be made the grader refuses to grade unless ``--unsafe`` is given.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["GradingError", "ExerciseTests", "Result", "load_tests", "run_question", "grade_notebook", "grade_folder", "write_csv", "main"]

DEFAULT_TIMEOUT = 300.0  # seconds per submission
DEFAULT_CELL_TIMEOUT = 60.0  # seconds per cell, and per question's tests
STARTUP_TIMEOUT = 300.0  # seconds for a sandbox to start and import the libraries (not the student's time)
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

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self.__dict__)


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
    sha256: str = ""
    peak_memory_mb: float = 0.0  # the most its sandbox's processes held together (the watchdog's view)
    time_limited: bool = False  # a time limit stopped something (with --jobs, such a notebook is graded again alone)

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
    from ..exercises import MASTERS_DIR, PACKAGE_DIR

    return PACKAGE_DIR.parent / MASTERS_DIR


def available_exercises(masters: Optional[Path] = None, public_only: bool = False) -> List[str]:
    from ..exercises import exercise_names

    if public_only:
        return exercise_names()
    folder = Path(masters) if masters is not None else default_masters_dir()
    return sorted(p.stem for p in folder.glob("ex*.ipynb")) if folder.is_dir() else []


def load_tests(names: Sequence[str], workdir: Path, masters: Optional[Path] = None, public_only: bool = False) -> Dict[str, ExerciseTests]:
    """Test files for each exercise set in ``names``: public (shipped) or public + hidden (from masters)."""
    from ..exercises import assign, tests_dir

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
# One question: the teacher's test file runs HERE, the answers are asked of the sandbox
# --------------------------------------------------------------------------------------------------
def run_question(test_path: str, session: Any) -> List[Dict[str, Any]]:
    """Run every test case of ``test_path`` (the teacher's copy) in this process against the student's
    names in ``session``; return one entry per case (name, points, hidden, passed, message).

    A time limit or a dead sandbox stops the question: the entry says so and the exception
    (``TimeLimit`` / ``SandboxDied``) is raised again after the entries are recorded, with
    ``.cases`` holding them.
    """
    from otter.test_files.exception_test import ExceptionTestFile

    from .remote import SandboxDied, StudentNamespace, TimeLimit, active

    tf = ExceptionTestFile.from_file(test_path)
    results: List[Dict[str, Any]] = []
    env = StudentNamespace(session)
    try:
        with active(session):
            for tc in tf.test_cases:
                entry = {"name": tc.name, "points": float(tc.points or 0), "hidden": bool(tc.hidden), "passed": False, "message": "did not finish"}
                results.append(entry)
                try:
                    tc.body.call_func(env)
                except TimeLimit as exc:
                    entry["message"] = f"stopped: {exc.detail}"
                    raise
                except SandboxDied as exc:
                    entry["message"] = f"stopped: {exc}"
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed check, or the student's code raised
                    entry["message"] = f"{type(exc).__name__}: {str(exc)[:800]}"
                else:
                    entry["passed"], entry["message"] = True, ""
    except (TimeLimit, SandboxDied) as exc:
        exc.cases = results  # type: ignore[attr-defined]
        raise
    finally:
        try:
            if getattr(session, "alive", lambda: True)():
                session.deadline = max(session.deadline, time.monotonic() + 30)
                session.request("reset")
        except (Exception, TimeLimit, SandboxDied):  # noqa: BLE001 - the teacher's Ctrl-C still stops the grader
            pass
    return results


# --------------------------------------------------------------------------------------------------
# One submission
# --------------------------------------------------------------------------------------------------
def _source(cell: Dict[str, Any]) -> str:
    s = cell.get("source", "") if isinstance(cell, dict) else ""
    return "".join(str(x) for x in s) if isinstance(s, list) else str(s)


def _read_notebook(path: Path) -> Dict[str, Any]:
    import warnings

    import nbformat

    with warnings.catch_warnings():  # e.g. "cell is missing an id field": nbformat adds the ids, nothing to tell the teacher
        warnings.simplefilter("ignore")
        nb = nbformat.read(str(path), as_version=4)
    if not isinstance(nb.get("cells"), list):
        raise ValueError("no cells")
    if not all(isinstance(c, dict) for c in nb["cells"]):
        raise ValueError("a cell that is not a JSON object")
    return nb


def detect_exercise(nb: Optional[Dict[str, Any]], filename: str, known: Sequence[str]) -> Optional[str]:
    """Which exercise set a submission belongs to: notebook metadata, then the file name."""
    if isinstance(nb, dict):
        meta = nb.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        for key, field_name in (("resnet_edu", "exercise"), ("otter", "assignment_name")):
            section = meta.get(key)
            name = section.get(field_name) if isinstance(section, dict) else None
            if isinstance(name, str) and name in known:
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


def _warm_names(nb: Dict[str, Any]) -> List[str]:
    """The libraries the notebook imports (from WARM_LIBRARIES), imported before its time starts."""
    names = {"torch", "resnet_edu", "resnet_edu.exercises", "IPython.core.interactiveshell"}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            for m in _IMPORT_RE.finditer(_source(cell)):
                name = m.group(1) or m.group(2)
                if name.split(".")[0] in WARM_LIBRARIES:
                    names.add(name)
    return sorted(names)


def _strip_installs(code: str) -> str:
    return "\n".join(("pass  # skipped by the grader: " + line.strip()) if _INSTALL_RE.match(line) else line for line in code.split("\n"))


def _sha256(path: Path) -> str:
    if Path(path).is_symlink():  # never followed: see SYMLINK_NOTE
        return ""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return ""
    return h.hexdigest()


MAX_NOTEBOOK_MB = 100  # a submission larger than this is not parsed (the grader would hold it in memory)


# A submission that is a symbolic link (e.g. unpacked from a student's archive) could point at a master
# notebook or at a classmate's file: it is never read, only reported.
SYMLINK_NOTE = "a symbolic link, not a file: not graded (put the submitted file itself in the folder)"


def grade_notebook(
    path: Path,
    tests: Optional[ExerciseTests],
    timeout: float = DEFAULT_TIMEOUT,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    exercise: Optional[str] = None,
    note: Optional[str] = None,
    unsafe: bool = False,
    limits: Any = None,
) -> Result:
    """Grade one notebook against ``tests``; never raises for a bad submission (the row says why)."""
    from .remote import SandboxDied, TimeLimit
    from .sandbox import SandboxSession

    path = Path(path)
    start = time.monotonic()
    result = Result(file=path.name, exercise=exercise or (tests.name if tests else None), sha256=_sha256(path))
    if tests is not None:
        result.scores = {q: 0.0 for q in tests.questions}
        result.max = tests.max
    if note:
        result.notes.append(note)
    if path.is_symlink():
        result.notes.append(SYMLINK_NOTE)
        result.seconds = time.monotonic() - start
        return result
    try:
        if path.stat().st_size > MAX_NOTEBOOK_MB << 20:
            raise ValueError(f"{path.stat().st_size:,} bytes, over the limit of {MAX_NOTEBOOK_MB} MiB")
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
    session: Optional[SandboxSession] = None
    warm = _warm_names(nb)

    def left(limit: float) -> float:
        return min(limit, deadline - time.monotonic())

    def run(code: str, limit: float) -> Tuple[str, str]:
        """Run a cell: ok | error | timeout | restarted."""
        assert session is not None
        if limit <= 0:
            return "timeout", "no time left"
        session.deadline, session.limit_text = time.monotonic() + limit, f"{limit:.0f} s"
        try:
            reply = session.request("exec", code)[0]
        except TimeLimit as exc:
            result.time_limited = True
            return ("restarted" if exc.restarted else "timeout"), exc.detail
        except SandboxDied as exc:
            return "restarted", str(exc)
        except Exception as exc:  # noqa: BLE001
            return "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        err = reply.get("error") if isinstance(reply, dict) else "no reply"
        return ("ok", "") if err is None else ("error", str(err)[:300])

    def after_restart() -> None:
        assert session is not None
        session.deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            session.request("warm", warm)
        except (Exception, TimeLimit, SandboxDied):  # noqa: BLE001
            pass
        for code in ok_cells:  # the state the later cells expect
            if left(cell_timeout) <= 0:
                return
            run(code, left(cell_timeout))

    def grade_question(q: str) -> None:
        assert session is not None
        if q not in tests.tests or graded.get(q):
            return
        graded[q] = True
        limit = left(cell_timeout)
        session.deadline, session.limit_text = time.monotonic() + limit, f"{limit:.0f} s"
        try:
            cases = run_question(str(tests.tests[q]), session)
        except (TimeLimit, SandboxDied) as exc:
            cases = getattr(exc, "cases", [])
            detail = exc.detail if isinstance(exc, TimeLimit) else str(exc)
            result.notes.append(f"{q}: tests {detail}")
            result.time_limited |= isinstance(exc, TimeLimit)
            if not isinstance(exc, TimeLimit) or exc.restarted:
                after_restart()
        except Exception as exc:  # noqa: BLE001 - e.g. the teacher's test file itself is broken
            cases = []
            result.notes.append(f"{q}: tests could not run ({type(exc).__name__}: {str(exc)[:200]})")
        points = tests.points.get(q, 0.0)
        got = sum(c["points"] for c in cases if c.get("passed"))
        result.scores[q] = round(min(got, points), 6)
        result.details[q] = cases

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
        session = SandboxSession(limits=limits, unsafe=unsafe)
        session.deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            session.request("warm", warm)
        except (Exception, TimeLimit, SandboxDied) as exc:  # noqa: BLE001
            result.notes.append(f"the sandbox did not start ({type(exc).__name__}: {str(exc)[:200]}); grading went on")
        deadline = time.monotonic() + timeout  # the student's time starts now
        for index, cell in enumerate(nb["cells"]):
            if cell.get("cell_type") != "code":
                continue
            code = _source(cell)
            meta = cell.get("metadata")
            tags = set(meta.get("tags") or []) if isinstance(meta, dict) and isinstance(meta.get("tags") or [], list) else set()
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
            status, detail = run(_strip_installs(code), left(cell_timeout))
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
            result.time_limited = True
            result.notes.append(f"submission time limit ({timeout:.0f} s) reached; not graded: {', '.join(missed)}")
    except (Exception, TimeLimit, SandboxDied) as exc:  # noqa: BLE001 - the sandbox itself failed: report, keep the scores so far
        result.notes.append(f"grading stopped: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001
                pass
    if session is not None and session.restarts:
        result.notes.append(f"sandbox restarted {session.restarts} time(s)")
    if session is not None:
        result.peak_memory_mb = round(session.peak_mb, 1)
        if session.left_running:
            result.notes.append(f"{session.left_running} process(es) of its sandbox could not be killed")
    result.seconds = time.monotonic() - start
    return result


# --------------------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------------------
def _memory_total_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) // 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


def _grade_job(args: Tuple[Any, ...]) -> Result:
    return grade_notebook(*args)


def _safe_read(f: Path) -> Optional[Dict[str, Any]]:
    try:
        if f.is_symlink() or f.stat().st_size > MAX_NOTEBOOK_MB << 20:
            return None
        return _read_notebook(f)
    except Exception:  # noqa: BLE001 - graded (as 0, with a note) later
        return None


def grade_folder(
    folder: Path,
    timeout: float = DEFAULT_TIMEOUT,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    masters: Optional[Path] = None,
    public_only: bool = False,
    exercise: Optional[str] = None,
    jobs: int = 1,
    progress: bool = True,
    unsafe: bool = False,
    out: Optional[Path] = None,
    details: Optional[Path] = None,
    force: bool = False,
    limits: Any = None,
) -> List[Result]:
    """Grade every ``*.ipynb`` directly inside ``folder``; one Result per file, in file-name order.
    With ``out`` the gradebook CSV (and ``details`` JSON) is written as each row is graded."""
    from tqdm.auto import tqdm

    from .gradebook import Gradebook, check_outputs
    from .sandbox import TEMP_PREFIX, Limits, die_with_parent, remove_stale_temp, sandbox_problem

    remove_stale_temp()  # what a killed grader left behind (its hidden tests, its scratch folders)
    folder = Path(folder)
    if not folder.exists():
        raise GradingError(f"submissions folder {folder} does not exist")
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder; give the folder that holds the submitted .ipynb files")
    files = sorted(p for p in folder.glob("*.ipynb") if p.is_symlink() or p.is_file())
    if not files:
        raise GradingError(f"no .ipynb files in {folder} (the grader reads the notebooks directly inside it, not subfolders)")
    if timeout <= 0 or cell_timeout <= 0:
        raise GradingError(f"time limits must be positive, got timeout={timeout}, cell_timeout={cell_timeout}")
    if jobs < 1:
        raise GradingError(f"jobs must be at least 1, got {jobs}")
    if out is not None:
        check_outputs(Path(out), Path(details) if details else None, force)
    ram = _memory_total_mb()
    per = (limits or Limits()).sandbox_memory_mb
    if ram and jobs * per > ram:
        print(f"warning: --jobs {jobs} sandboxes may hold {per} MiB each ({jobs * per} MiB), more than this machine's "
              f"{ram} MiB: lower --jobs or --sandbox-memory-mb, or an out-of-memory kill may cost a notebook points", file=sys.stderr)
    if not unsafe:
        problem = sandbox_problem()
        if problem:
            raise GradingError(
                f"cannot sandbox the submissions: {problem}. Without a sandbox, student code runs with your rights: it can read "
                "the hidden tests and solutions and change other students' grades. Pass --unsafe only if you accept that."
            )

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

    assigned: Dict[Path, Optional[str]] = {}
    readable: Dict[Path, bool] = {}
    for f in files:  # one at a time: a class's notebooks are not all held in memory
        nb = _safe_read(f)
        readable[f] = nb is not None
        try:
            assigned[f] = exercise or detect_exercise(nb, f.name, known)
        except Exception:  # noqa: BLE001
            assigned[f] = None
    found = sorted({a for a in assigned.values() if a})
    notes: Dict[Path, Optional[str]] = {}
    for f, a in assigned.items():
        if a is None and len(found) == 1:
            assigned[f] = found[0]
            if readable[f]:
                notes[f] = f"exercise set not recorded in the notebook; assumed {found[0]}"
        elif a is None and readable[f]:
            notes[f] = "cannot tell which exercise set this is (no metadata, no exNN in the file name); use --exercise"

    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}tests_{os.getpid()}_") as tmp:
        needed = sorted({a for a in assigned.values() if a})
        tests = load_tests(needed, Path(tmp), masters=masters, public_only=public_only)
        questions = sorted({q for t in tests.values() for q in t.questions}, key=_qkey)
        book = Gradebook(out, [(f.name, assigned[f], _sha256(f)) for f in files], questions, details, force) if out is not None else None
        jobs_args = [(f, tests.get(assigned[f]) if assigned[f] else None, timeout, cell_timeout, assigned[f], notes.get(f), unsafe, limits) for f in files]
        results: Dict[Path, Result] = {}

        def finished(f: Path, r: Result) -> None:
            results[f] = r
            if book is not None:
                book.done(r)

        def crashed(f: Path, exc: BaseException) -> Result:
            r = Result(file=f.name, exercise=assigned[f], sha256=_sha256(f))
            t = tests.get(assigned[f]) if assigned[f] else None
            if t is not None:
                r.scores, r.max = {q: 0.0 for q in t.questions}, t.max
            r.notes.append(f"the grader failed on this file ({type(exc).__name__}: {str(exc)[:200]}); scored 0, grade it again")
            return r

        bar = tqdm(total=len(files), desc="grading", unit="notebook", disable=not progress, file=sys.stderr)
        try:
            if jobs == 1:
                for args in jobs_args:
                    bar.set_postfix_str(args[0].name, refresh=True)
                    if book is not None:
                        book.start(args[0].name)
                    try:
                        r = _grade_job(args)
                    except Exception as exc:  # noqa: BLE001
                        r = crashed(args[0], exc)
                    finished(args[0], r)
                    bar.update(1)
            else:
                import multiprocessing

                # each worker dies with this process (PDEATHSIG), and its sandbox with it (bwrap --die-with-parent)
                with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent) as pool:
                    futures = {pool.submit(_grade_job, args): args[0] for args in jobs_args}
                    if book is not None:
                        book.start()
                    for fut in as_completed(futures):
                        f = futures[fut]
                        try:
                            r = fut.result()
                        except Exception as exc:  # noqa: BLE001 - a grading process died
                            r = crashed(f, exc)
                        finished(f, r)
                        bar.set_postfix_str(f.name, refresh=False)
                        bar.update(1)
                # Sandboxes share the CPUs: a notebook that keeps every core busy can slow its neighbour past a
                # time limit. Each notebook that met a time limit is graded again, alone; that grade stands.
                for args in jobs_args:
                    first = results[args[0]]
                    if not first.time_limited:
                        continue
                    bar.set_postfix_str(f"again, alone: {args[0].name}", refresh=True)
                    if book is not None:
                        book.start(args[0].name)
                    try:
                        r = _grade_job(args)
                    except Exception as exc:  # noqa: BLE001
                        r = crashed(args[0], exc)
                    r.notes.append(f"graded again alone: a time limit was met while {jobs} notebooks were graded in parallel")
                    r.seconds += first.seconds
                    finished(args[0], r)
        finally:
            bar.close()
    return [results[f] for f in files]


def write_csv(results: Sequence[Result], out: Path) -> List[str]:
    """Write (atomically) one row per result; return the header."""
    from .gradebook import _atomic_write, header, render

    _atomic_write(Path(out), render(results))
    return header(sorted({q for r in results for q in r.scores}, key=_qkey))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .sandbox import Limits

    d = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m resnet_edu.grade",
        description="Grade every .ipynb in a folder with the exercise tests (public and hidden), each notebook in its own "
                    "sandbox (bubblewrap); write one CSV row per notebook as it is graded.",
        epilog="Needs bubblewrap (apt-get install bubblewrap). What a student's code can and cannot do: book/teachers.md, "
               "'Threat model'. Exit status: 0 graded, 2 a problem with the request (nothing graded), 130 interrupted (finished rows kept).",
    )
    parser.add_argument("submissions", type=Path, help="folder holding the submitted .ipynb files")
    parser.add_argument("--out", type=Path, default=Path("scores.csv"), help="CSV file to write (default: scores.csv); never replaced without --force")
    parser.add_argument("--force", action="store_true", help="replace an existing --out / --details file")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds per submission (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, help=f"seconds per cell and per question's tests (default {DEFAULT_CELL_TIMEOUT:.0f})")
    parser.add_argument("--exercise", help="grade every notebook as this set (e.g. ex01_conv_templates) instead of detecting it")
    parser.add_argument("--masters", type=Path, help="folder of master notebooks (default: exercises/ of this repository)")
    parser.add_argument("--public-only", action="store_true", help="grade with the public tests shipped in the package (no masters needed)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded in parallel (default 1)")
    parser.add_argument("--details", type=Path, help="also write every test case's result and message to this JSON file")
    parser.add_argument("--memory-mb", type=int, default=d.memory_mb, help=f"address space of each process in a sandbox, MiB (default {d.memory_mb})")
    parser.add_argument("--sandbox-memory-mb", type=int, default=d.sandbox_memory_mb,
                        help=f"memory all processes of one sandbox may hold together, MiB; over it the sandbox is killed (default {d.sandbox_memory_mb})")
    parser.add_argument("--max-processes", type=int, default=d.processes, help=f"processes and threads per sandbox (default {d.processes})")
    parser.add_argument("--unsafe", action="store_true", help="grade without a sandbox (when bubblewrap cannot run): student code runs with your rights")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for flag, value in (("--memory-mb", args.memory_mb), ("--sandbox-memory-mb", args.sandbox_memory_mb), ("--max-processes", args.max_processes), ("--jobs", args.jobs)):
        if value < 1:
            print(f"error: {flag} must be a positive whole number, got {value}", file=sys.stderr)
            return 2
    limits = Limits(memory_mb=args.memory_mb, sandbox_memory_mb=args.sandbox_memory_mb, processes=args.max_processes)
    try:
        results = grade_folder(
            args.submissions, args.timeout, args.cell_timeout, args.masters, args.public_only, args.exercise, args.jobs, not args.quiet,
            unsafe=args.unsafe, out=args.out, details=args.details, force=args.force, limits=limits,
        )
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out} keeps every row graded so far; the file being graded and those after it say so in their note", file=sys.stderr)
        return 130
    full = sum(1 for r in results if r.max and r.total == r.max)
    print(f"graded {len(results)} notebook(s) into {args.out} ({full} with full marks)", file=sys.stderr)
    return 0
