"""The gradebook: one CSV row per submission, rewritten atomically after every row.

While a batch runs, the CSV already lists every submission: finished rows with their scores, the
row being graded with the note "grader stopped while grading this file" and the rest with "not
graded: the grader stopped before this file". Each rewrite goes to a temporary file that replaces
the CSV in one ``os.replace``: a crash (or a kill) leaves the last complete version, which says
which file it died on. An existing gradebook is never replaced unless ``force``. Text cells that a
spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage return) get a
leading ``'``. The ``sha256`` column is the hash of the submitted file, as in the details JSON.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

IN_PROGRESS = "grader stopped while grading this file"
PENDING = "not graded: the grader stopped before this file"


def neutralise(text: Any) -> str:
    """A CSV cell that no spreadsheet runs as a formula."""
    s = "" if text is None else str(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def fmt(x: Optional[float]) -> str:
    if x is None:
        return ""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _qkey(q: str) -> Any:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", q))


def header(questions: Sequence[str]) -> List[str]:
    return ["file", "exercise", *questions, "total", "max", "sha256", "note"]


def render(results: Sequence[Any], questions: Optional[Sequence[str]] = None, placeholders: Sequence[Any] = ()) -> str:
    """The CSV text: ``results`` (Result objects) and placeholder rows ``(file, exercise, sha256, note)``."""
    qs = sorted({q for r in results for q in r.scores}, key=_qkey) if questions is None else list(questions)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header(qs))
    rows = [(r.file, [neutralise(r.file), neutralise(r.exercise or ""), *[fmt(r.scores.get(q)) for q in qs], fmt(r.total), fmt(r.max), r.sha256, neutralise("; ".join(r.notes))]) for r in results]
    for file, exercise, sha, note in placeholders:
        rows.append((file, [neutralise(file), neutralise(exercise or ""), *["" for _ in qs], "", "", sha, neutralise(note)]))
    for _, row in sorted(rows, key=lambda r: r[0]):
        w.writerow(row)
    return buf.getvalue()


def details_json(results: Sequence[Any]) -> str:
    return json.dumps([{"file": r.file, "exercise": r.exercise, "sha256": r.sha256, "seconds": round(r.seconds, 1), "peak_memory_mb": getattr(r, "peak_memory_mb", 0.0), "total": r.total,
                        "max": r.max, "notes": r.notes, "questions": r.details} for r in sorted(results, key=lambda r: r.file)], indent=1)


def check_outputs(out: Path, details: Optional[Path], force: bool) -> None:
    """Refuse, before any grading, a gradebook (or details file) that would replace an existing file."""
    from .core import GradingError

    for flag, p in (("--out", out), ("--details", details)):
        if p is None:
            continue
        p = Path(p)
        if p.is_dir():
            raise GradingError(f"{flag} {p} is a folder; give a file name")
        if (p.exists() or p.is_symlink()) and not force:
            raise GradingError(f"{flag} {p} already exists: it may be an earlier gradebook. Give another file name, or --force to replace it")


class Gradebook:
    """The CSV (and details JSON) of one batch, kept up to date row by row."""

    def __init__(self, out: Path, files: Sequence[Any], questions: Sequence[str], details: Optional[Path] = None, force: bool = False) -> None:
        self.out, self.details = Path(out), (Path(details) if details else None)
        check_outputs(self.out, self.details, force)
        self.files = list(files)  # (file name, exercise, sha256)
        self.questions = list(questions)
        self.results: Dict[str, Any] = {}
        self.running: set = set()

    def _write(self) -> None:
        placeholders = [(f, ex, sha, IN_PROGRESS if f in self.running else PENDING) for f, ex, sha in self.files if f not in self.results]
        _atomic_write(self.out, render(list(self.results.values()), self.questions, placeholders))
        if self.details is not None:
            _atomic_write(self.details, details_json(list(self.results.values())))

    def start(self, file: Optional[str] = None) -> None:
        if file is not None:
            self.running.add(file)
        self._write()

    def done(self, result: Any) -> None:
        self.running.discard(result.file)
        self.results[result.file] = result
        self._write()
