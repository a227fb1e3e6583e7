"""Shared fixtures. The book is built once per test session, by the first test that asks for it."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# TorchInductor's cache inside the checkout, one folder per kind of CPU, as `make test` sets it (see the
# Makefile and .ci/cpu_key.py), also when pytest is run directly: the shared /tmp/torchinductor_$USER is
# never pruned, and the cache is not keyed on the CPU's instruction set.
_CPU = runpy.run_path(str(ROOT / ".ci" / "cpu_key.py"))
CPU_KEY = _CPU["cpu_key"]()
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor" / CPU_KEY))

import pytest  # noqa: E402
import torch  # noqa: E402

BUILD = ROOT / "_build"
HTML = BUILD / "html"


@pytest.fixture
def quiet_warnings():
    """The known third-party warnings (``rq.silence_known_warnings``) silenced for one test; others still show."""
    import warnings

    from resnet_edu import quantization as rq

    with warnings.catch_warnings():
        rq.silence_known_warnings()
        yield


@pytest.fixture(scope="module")
def small_resnet18() -> torch.nn.Module:
    """resnet18 with 10 classes, in eval mode, BN statistics randomized so its logits are not degenerate
    (one per test module; callers that change it must copy it)."""
    import resnet_edu as rn

    torch.manual_seed(0)
    m = rn.resnet18(num_classes=10).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def playwright_driver():
    """One Playwright driver for the whole session, shared by every browser test.

    Playwright's sync API runs its own asyncio loop while a driver is open, so a second
    ``sync_playwright()`` started while another module's is still open fails with "using Playwright
    Sync API inside the asyncio loop". Every module launches its browsers from this one instead.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the machine
        pytest.skip("the Python package 'playwright' is not installed; browser tests skipped")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Run `jupyter-book build . -W --keep-going` once; fail with its log if it fails or warns.

    Notebook execution is cached in _build/.jupyter_cache (execute_notebooks: cache), so a second
    run of the test suite re-executes only notebooks that changed. That cache is this CPU's (as in
    `make book`, ``.ci/cpu_key.py``): a checkout built on another CPU is read and executed again here.
    Under ``.ci/emulate-avx2`` the book is not built: executing it would take hours there.
    """
    if os.environ.get("RESNET_EDU_EMULATED_CPU"):
        pytest.skip("the book is built natively (make test); under .ci/emulate-avx2 its execution would take hours")
    print(f"_build: {_CPU['use_cpu_build'](str(BUILD), CPU_KEY)} to this CPU's notebooks ({CPU_KEY})")
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
    if "Executing notebook" in log:  # a rebuild from the cache runs no kernel: keep the log of the last build that did
        (BUILD / "build-executed.log").write_text(log)
    print(f"book build: {time.time() - start:.0f} s, exit {proc.returncode}")
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}); last lines:\n{log[-6000:]}", pytrace=False)
    return HTML
