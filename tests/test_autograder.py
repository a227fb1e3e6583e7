"""The otter autograder zip that ``make exercises`` writes per set (for Gradescope / ``otter grade``).

The zip for ex01 is built as ``make exercises`` builds it, its contents are checked (all tests, public
and hidden; no solutions; PyPI-only requirements; the resnet_edu package as a support file), and it
grades three submissions with otter's own runner (``otter.api.grade_submission``, what ``otter run``
does: the zip's layout replicated in a temporary folder and run in this environment, no Docker, no
pip install): the solution (11/11), the blank student notebook (0/11) and a wrong answer that passes
q5's public test and fails its hidden one (10/11: q5 gets the public test's point only).
"""
from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from resnet_edu import exercises

pytestmark = [
    pytest.mark.filterwarnings("ignore:Traits should be given as instances:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),  # otter's own pandas calls
]

ROOT = Path(__file__).resolve().parent.parent
SET = "ex01_conv_templates"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("autograder")
    (zip_path,) = exercises.autograder_zips(ROOT, out, names=[SET])
    assigned = exercises.assign(ROOT / "exercises" / f"{SET}.ipynb", out / "assign")
    return zip_path, assigned


def test_zip_contents(built):
    zip_path, assigned = built
    assert zip_path.name == f"{SET}-autograder.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        texts = {n: zf.read(n).decode("utf-8", "replace") for n in names}
    assert {"run_autograder", "run_otter.py", "setup.sh", "environment.yml", "otter_config.json"} <= names
    # every test file, with its hidden cases, exactly as the grader's own copy
    want = {f"tests/{p.name}": p.read_text() for p in assigned["autograder_tests"].glob("*.py")}
    assert {n: texts[n] for n in names if n.startswith("tests/")} == want
    assert len(want) == 5 and all("hidden=True" in t for t in want.values()), "the zip must carry every question's hidden tests"
    # the support files: the package, with the public tests only; no solution anywhere
    assert "files/resnet_edu/exercises.py" in names and f"files/resnet_edu/exercise_tests/{SET}/q1.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.endswith(".ipynb")]
    assert not [n for n in names if n.startswith("files/resnet_edu/exercise_tests/") and "hidden=True" in texts[n]]
    assert not [n for n, t in texts.items() if "BEGIN SOLUTION" in t and not n.startswith("files/resnet_edu/")]
    assert json.loads(texts["otter_config.json"]) == {"assignment_name": SET}
    # requirements: otter's own pin plus resnet_edu's dependencies, all PyPI names (no URL, no resnet-edu)
    env = yaml.safe_load(texts["environment.yml"])
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0].startswith("otter-grader[grading,plugins]==")
    assert {re.split(r"[<>=\[ ]", r)[0] for r in pip[1:]} >= {"torch", "torchvision", "numpy"}
    assert not [r for r in pip if "://" in r or "@" in r or r.startswith(("-", ".", "/")) or "resnet" in r]


def _with_wrong_q5(nb: dict) -> dict:
    nb = json.loads(json.dumps(nb))
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "def same_padding" in "".join(c["source"]))
    src = "".join(cell["source"])
    cell["source"] = src + "\n\ndef same_padding(kernel_size, dilation=1):\n    return dilation  # right for k=3 only\n"
    return nb


def test_otter_runner_grades_with_the_zip(built, tmp_path):
    from otter.api import grade_submission
    from otter.test_files.exception_test import ExceptionTestFile

    zip_path, assigned = built
    solution = json.loads(assigned["autograder"].read_text())
    blank = json.loads((ROOT / "notebooks" / "exercises" / f"{SET}.ipynb").read_text())
    q5_public = sum(tc.points for tc in ExceptionTestFile.from_file(str(assigned["autograder_tests"] / "q5.py")).test_cases if not tc.hidden)
    assert q5_public == 1.0
    got, seconds = {}, {}
    for name, nb in (("solution", solution), ("blank", blank), ("wrong_q5", _with_wrong_q5(solution))):
        path = tmp_path / f"{name}.ipynb"
        path.write_text(json.dumps(nb))
        start = time.monotonic()
        res = grade_submission(str(path), str(zip_path), quiet=True)
        seconds[name] = time.monotonic() - start
        got[name] = (res.total, res.possible, {q: res.get_score(q) for q in sorted(res.results)})
    full = {"q1": 2.0, "q2": 3.0, "q3": 2.0, "q4": 2.0, "q5": 2.0}
    assert got["solution"] == (11.0, 11.0, full), got
    assert got["blank"] == (0, 11.0, {q: 0 for q in full}), got
    assert got["wrong_q5"] == (10.0, 11.0, {**full, "q5": 1.0}), got
    print("otter run per submission: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
