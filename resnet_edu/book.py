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

import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["glue", "repository", "badge_cell_source", "setup_cell_source", "sync", "check", "notebook_paths"]

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
