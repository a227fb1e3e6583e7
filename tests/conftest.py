"""Shared fixtures. The book is built once per test session, by the first test that asks for it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
HTML = BUILD / "html"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Run `jupyter-book build . -W --keep-going` once; fail with its log if it fails or warns.

    Notebook execution is cached in _build/.jupyter_cache (execute_notebooks: cache), so a second
    run of the test suite re-executes only notebooks that changed.
    """
    jb = Path(sys.executable).parent / "jupyter-book"
    start = time.time()
    proc = subprocess.run(
        [str(jb), "build", ".", "-W", "--keep-going"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    log = proc.stdout + proc.stderr
    (BUILD).mkdir(exist_ok=True)
    (BUILD / "build.log").write_text(log)
    print(f"book build: {time.time() - start:.0f} s, exit {proc.returncode}")
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}); last lines:\n{log[-6000:]}", pytrace=False)
    return HTML
