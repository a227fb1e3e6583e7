"""Book plumbing: Colab-ready notebooks from one source of truth, and ``glue`` for computed prose.

The repository URL is written once, in ``_config.yml``'s ``repository.url``.

Each chapter notebook starts with two generated cells:

1. a Colab badge (markdown, removed from the HTML book, which has its own launch button);
2. a setup cell that installs ``resnet_edu`` from the repository when it is missing (Colab) and does
   nothing where it is installed (a local checkout, the book build).

``python -m resnet_edu.book sync`` rewrites those two cells from ``_config.yml``;
``python -m resnet_edu.book check`` lists notebooks that disagree (a test runs it). The extras a
chapter needs (e.g. ``pt2e`` for torchao) come from the notebook's metadata ``resnet_edu.extras``.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["glue", "show_source", "source_of", "docstring_section", "repository", "badge_cell_source", "setup_cell_source", "sync", "check", "notebook_paths"]

BADGE_TAG = "colab-badge"
SETUP_TAG = "colab-setup"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` so the page's prose can show it (``{glue:text}`name```).

    Inside the book build this is ``myst_nb.glue``; on Colab or plain Jupyter, where myst_nb is
    usually absent, it does nothing, so the notebook still runs top to bottom. It returns None, so
    a ``glue(...)`` on a cell's last line does not echo the value under the cell.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return None
    _glue(name, value, display=display)
    return None


def _stmt_names(stmt: ast.stmt) -> List[str]:
    """The names a statement is found by: what it assigns (``width``, ``self.conv1``), the name it
    defines (``def``/``class``), or for an ``if`` the name it tests (``if zero_init_residual:``)."""

    def dotted(node: ast.AST) -> Optional[str]:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    targets: List[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    elif isinstance(stmt, ast.If):
        name = dotted(stmt.test)
        return [name] if name else []
    names = []
    for t in targets:
        for node in ([t] if not isinstance(t, (ast.Tuple, ast.List)) else t.elts):
            name = dotted(node)
            if name:
                names.append(name)
    return names


def source_of(obj: Any, start: Optional[str] = None, end: Optional[str] = None, *, after: Optional[str] = None,
              before: Optional[str] = None, last: Optional[int] = None, comments: bool = True) -> str:
    """Source of a function, method or class, or of a run of statements of its body selected by name.

    ``start``/``end``: the first/last statement to show (inclusive); ``after``/``before``: start after /
    stop before that statement (exclusive). A statement is named by what it assigns (``"width"``,
    ``"self.conv1"``), the function or class it defines, or the name an ``if`` tests
    (``"zero_init_residual"``). ``last=n``: the body's last ``n`` statements (e.g. the end of a
    ``forward``). Without any of them the whole source is returned. Comment lines
    right above the first statement are kept; ``comments=False`` drops every full-line comment.
    Selecting by name keeps working when lines are added or reworded, unlike slicing by index.
    """
    import inspect
    import textwrap

    if start is not None and after is not None:
        raise ValueError("give start or after, not both")
    if end is not None and before is not None:
        raise ValueError("give end or before, not both")
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as err:
        raise TypeError(f"show_source needs a function, method or class with source code, got {obj!r}: {err}") from None
    lines = src.splitlines()
    if last is not None and (start or after or end or before):
        raise ValueError("give last alone, without start/after/end/before")
    if last is not None and (not isinstance(last, int) or last < 1):
        raise ValueError(f"last must be a positive number of statements, got {last!r}")
    if start is after is end is before is last is None:
        text = src.rstrip("\n")
    else:
        tree = ast.parse(src)
        node = tree.body[0]
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            raise TypeError(f"show_source selects statements of a function or class body, got {type(node).__name__}")
        body = list(node.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]                                 # the docstring
        known = [n for s in body for n in _stmt_names(s)]

        def find(name: str) -> int:
            for i, s in enumerate(body):
                if name in _stmt_names(s):
                    return i
            raise ValueError(f"{getattr(obj, '__qualname__', obj)} has no statement named {name!r}; "
                             f"named statements: {', '.join(known)}")

        first = find(start) if start else (find(after) + 1 if after else (max(len(body) - last, 0) if last else 0))
        last = find(end) if end else (find(before) - 1 if before else len(body) - 1)
        if first > last or first >= len(body):
            raise ValueError(f"nothing to show between {start or after!r} and {end or before!r}")
        lo = body[first].lineno - 1
        lo_dec = min([lo] + [d.lineno - 1 for d in getattr(body[first], "decorator_list", [])])
        lo = lo_dec
        while lo > 0 and lines[lo - 1].strip().startswith("#"):
            lo -= 1
        hi = body[last].end_lineno
        text = textwrap.dedent("\n".join(lines[lo:hi]))
    if not comments:
        text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("#"))
    return text


def show_source(obj: Any, start: Optional[str] = None, end: Optional[str] = None, *, after: Optional[str] = None,
                before: Optional[str] = None, last: Optional[int] = None, comments: bool = True) -> None:
    """Print :func:`source_of` ``(obj, ...)``: a function, a method, or statements of one chosen by name.

    ``show_source(rn.Bottleneck.__init__, "width", before="self.relu")`` prints the lines from
    ``width = ...`` up to (not including) ``self.relu = ...``.
    """
    print(source_of(obj, start, end, after=after, before=before, last=last, comments=comments))
    return None


def docstring_section(obj: Any, directive: str) -> str:
    """The text of one reST directive (``.. note::``, ``.. warning::``) of ``obj``'s docstring,
    with reST links ``text <url>`_`` written as ``text (url)`` and whitespace joined into one paragraph."""
    import inspect

    doc = inspect.getdoc(obj) or ""
    m = re.search(rf"^(\s*)\.\. {re.escape(directive)}::[ \t]*\n((?:\1[ \t]+.*\n?|[ \t]*\n)+)", doc, re.M)
    if not m:
        found = sorted(set(re.findall(r"^\s*\.\. (\w+)::", doc, re.M)))
        raise ValueError(f"the docstring of {getattr(obj, '__qualname__', obj)} has no '.. {directive}::'; it has {found}")
    text = re.sub(r"`([^`<]+?)\s*<([^>]+)>`_+", r"\1 (\2)", m.group(2))
    return re.sub(r"\s+", " ", text).strip()


def _root(root: Optional[Path] = None) -> Path:
    return Path(root) if root is not None else Path(__file__).resolve().parent.parent


def repository(root: Optional[Path] = None) -> Dict[str, str]:
    """``{"url", "branch"}`` from ``_config.yml`` (read without a YAML dependency: two plain keys)."""
    text = (_root(root) / "_config.yml").read_text(encoding="utf-8")
    block = re.search(r"^repository:\s*\n((?:[ \t]+.*\n?)+)", text, re.M)
    if not block:
        raise ValueError("_config.yml has no 'repository:' section with url and branch")
    found = dict(re.findall(r"^[ \t]+(url|branch):\s*(\S+)", block.group(1), re.M))
    if "url" not in found:
        raise ValueError("_config.yml's repository section has no url")
    return {"url": found["url"].rstrip("/"), "branch": found.get("branch", "main")}


def _github_path(url: str) -> str:
    m = re.match(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?$", url)
    if not m:
        raise ValueError(f"repository.url must be a https://github.com/OWNER/NAME URL, got {url!r}")
    return m.group(1)


def badge_cell_source(notebook: str, repo: Dict[str, str]) -> str:
    """Markdown for the "Open in Colab" badge of ``notebook`` (a path relative to the repo root)."""
    target = f"https://colab.research.google.com/github/{_github_path(repo['url'])}/blob/{repo['branch']}/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def setup_cell_source(repo: Dict[str, str], extras: Sequence[str] = ("book",)) -> str:
    """The first code cell: install ``resnet_edu`` (with ``extras``) when it is not importable."""
    spec = f"resnet-edu[{','.join(extras)}] @ git+{repo['url']}@{repo['branch']}" if extras else (
        f"resnet-edu @ git+{repo['url']}@{repo['branch']}"
    )
    return (
        "# Setup: on Colab this installs resnet_edu from the book's repository; locally it does nothing.\n"
        "import importlib.util, subprocess, sys\n"
        'if importlib.util.find_spec("resnet_edu") is None:\n'
        f'    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "{spec}"])'
    )


def notebook_paths(root: Optional[Path] = None) -> List[Path]:
    """Chapter notebooks: ``notebooks/*.ipynb`` (exercise notebooks have their own first cell)."""
    return sorted((_root(root) / "notebooks").glob("*.ipynb"))


def _cell(kind: str, source: str, tags: List[str]) -> dict:
    cell = {"cell_type": kind, "id": tags[0], "metadata": {"tags": tags}, "source": source}
    if kind == "code":
        cell.update({"execution_count": None, "outputs": []})
    return cell


def _expected(nb: dict, rel: str, repo: Dict[str, str]) -> List[dict]:
    extras = nb.get("metadata", {}).get("resnet_edu", {}).get("extras", ["book"])
    return [
        _cell("markdown", badge_cell_source(rel, repo), [BADGE_TAG, "remove-cell"]),
        _cell("code", setup_cell_source(repo, extras), [SETUP_TAG, "hide-cell"]),
    ]


def _strip_generated(cells: List[dict]) -> List[dict]:
    return [c for c in cells if not {BADGE_TAG, SETUP_TAG} & set(c.get("metadata", {}).get("tags", []))]


def _source(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def sync(root: Optional[Path] = None) -> List[Path]:
    """Rewrite the badge and setup cells of every chapter notebook; return the files changed."""
    root = _root(root)
    repo = repository(root)
    changed = []
    for path in notebook_paths(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        new_cells = _expected(nb, rel, repo) + _strip_generated(nb["cells"])
        if new_cells != nb["cells"]:
            nb["cells"] = new_cells
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            changed.append(path)
    return changed


def check(root: Optional[Path] = None) -> List[str]:
    """Problems found: a notebook whose first two cells differ from what ``sync`` would write."""
    root = _root(root)
    repo = repository(root)
    problems = []
    for path in notebook_paths(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        want = _expected(nb, rel, repo)
        have = nb["cells"][:2]
        if [(c["cell_type"], _source(c)) for c in have] != [(c["cell_type"], c["source"]) for c in want]:
            problems.append(f"{rel}: badge/setup cells out of date (run: python -m resnet_edu.book sync)")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["sync"], ["check"]):
        print("usage: python -m resnet_edu.book sync|check", file=sys.stderr)
        return 2
    if args == ["sync"]:
        for p in sync():
            print(f"updated {p}")
        return 0
    problems = check()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
