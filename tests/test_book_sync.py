"""The repository URL is written once (_config.yml) and every chapter notebook follows it."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from resnet_edu import book

ROOT = Path(__file__).resolve().parent.parent


def test_repository_comes_from_config():
    repo = book.repository(ROOT)
    assert repo["url"].startswith("https://github.com/")
    assert repo["branch"]


def test_every_chapter_notebook_is_in_sync():
    assert book.notebook_paths(ROOT), "no chapter notebooks found"
    assert book.check(ROOT) == []


def test_url_is_written_in_one_place_only():
    """Outside generated cells and docs, no file spells the repository URL."""
    url = book.repository(ROOT)["url"]
    allowed = {"_config.yml", "README.md"}
    offenders = []
    for path in [*ROOT.glob("resnet_edu/**/*.py"), *ROOT.glob("book/**/*.md"), ROOT / "_toc.yml"]:
        if path.name not in allowed and url in path.read_text(encoding="utf-8"):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_sync_follows_a_changed_url(tmp_path):
    (tmp_path / "notebooks").mkdir()
    first = sorted((ROOT / "notebooks").glob("*.ipynb"))[0]
    shutil.copy(first, tmp_path / "notebooks" / first.name)
    cfg = (ROOT / "_config.yml").read_text(encoding="utf-8")
    new = re.sub(r"(repository:\s*\n\s+url:\s*)\S+", r"\1https://github.com/someone/fork", cfg)
    (tmp_path / "_config.yml").write_text(new, encoding="utf-8")
    assert book.check(tmp_path), "a changed URL must make the notebooks out of date"
    book.sync(tmp_path)
    assert book.check(tmp_path) == []
    nb = json.loads((tmp_path / "notebooks" / first.name).read_text())
    text = "".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"][:2])
    assert "https://github.com/someone/fork" in text
    assert f"colab.research.google.com/github/someone/fork/blob/main/notebooks/{first.name}" in text


def test_setup_cell_is_a_noop_when_installed():
    src = book.setup_cell_source({"url": "https://github.com/a/b", "branch": "main"}, ["book", "pt2e"])
    assert 'find_spec("resnet_edu") is None' in src
    assert "resnet-edu[book,pt2e] @ git+https://github.com/a/b@main" in src
    exec(compile(src, "<setup>", "exec"), {})  # resnet_edu is importable here: nothing is installed


def test_bad_repository_url():
    with pytest.raises(ValueError, match="must be a https://github.com/OWNER/NAME URL"):
        book.badge_cell_source("notebooks/x.ipynb", {"url": "ftp://example.org/x", "branch": "main"})


def test_notebooks_have_no_outputs():
    for path in ROOT.glob("notebooks/**/*.ipynb"):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path
