"""Classroom exercises: masters -> student notebooks + tests, the tests themselves, and the grader.

Fast checks run the exercise tests in this process (every master's solutions get full marks, every
blank student notebook gets 0, plausible wrong answers fail the hidden tests). The end-to-end test
grades real notebooks with ``resnet_edu.grade`` (a sandbox per submission, time limits) for three
sets and a gallery of broken submissions. Set RESNET_EDU_GRADE_ALL=1 to grade every set end to end.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from resnet_edu import exercises, grade

pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances:DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
MASTERS = exercises.masters(ROOT)
SETS = [m.stem for m in MASTERS]


# --------------------------------------------------------------------------------------------------
# helpers: run a notebook's code cells in this process, then a question's tests against them
# --------------------------------------------------------------------------------------------------
def _cells(path: Path) -> List[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def _src(cell: dict) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def run_notebook(path: Path) -> dict:
    """Execute the code cells the grader would execute (not the grader/check/setup cells)."""
    ns: dict = {"__name__": "__main__"}
    for cell in _cells(path):
        src = _src(cell)
        if cell["cell_type"] != "code" or grade._CHECK_RE.search(src) or grade._GRADER_RE.search(src):
            continue
        if "colab-setup" in cell.get("metadata", {}).get("tags", []):
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(src, f"<{path.name}>", "exec"), ns)
    return ns


def run_tests(ns: dict, test_file: Path, tmp_path: Path) -> List[dict]:
    """The grader's verdict path: the test file runs here, the answers are reached through the same
    requests and plain-data replies as with a sandbox (handled in-process: no isolation, same code)."""
    from resnet_edu.grading.remote import LoopbackSession

    return grade.run_question(str(test_file), LoopbackSession(ns))


@pytest.fixture(scope="module")
def assigned(tmp_path_factory) -> Dict[str, Dict[str, Path]]:
    base = tmp_path_factory.mktemp("assign")
    return {m.stem: exercises.assign(m, base / m.stem) for m in MASTERS}


@pytest.fixture(scope="module")
def solved(assigned) -> Dict[str, dict]:
    """Namespaces of the solution notebooks, built once per set on demand."""
    cache: Dict[str, dict] = {}

    class Lazy(dict):
        def __missing__(self, name):
            cache[name] = run_notebook(assigned[name]["autograder"])
            self[name] = cache[name]
            return cache[name]

    return Lazy()


# --------------------------------------------------------------------------------------------------
# the sets: enough of them, each question with public and hidden tests
# --------------------------------------------------------------------------------------------------
def test_sets_and_questions(assigned):
    assert len(SETS) >= 7, SETS
    total = 0
    for name, paths in assigned.items():
        assert re.fullmatch(r"ex\d\d_[a-z0-9_]+", name), name
        full = sorted(p.stem for p in paths["autograder_tests"].glob("*.py"))
        public = sorted(p.name for p in (ROOT / "resnet_edu" / "exercise_tests" / name).glob("*.py"))
        assert public == [f"{q}.py" for q in full], f"{name}: shipped public tests {public} vs questions {full}"
        for q in full:
            from otter.test_files.exception_test import ExceptionTestFile

            cases = ExceptionTestFile.from_file(str(paths["autograder_tests"] / f"{q}.py")).test_cases
            assert any(not c.hidden for c in cases), f"{name} {q}: no public test"
            assert any(c.hidden for c in cases), f"{name} {q}: no hidden test"
            shipped = (ROOT / "resnet_edu" / "exercise_tests" / name / f"{q}.py").read_text()
            assert "hidden=True" not in shipped, f"{name} {q}: a hidden test is shipped to students"
        total += len(full)
    assert total >= 30, total


def test_generated_files_are_up_to_date():
    assert exercises.check(ROOT) == []


def test_out_of_date_files_are_detected(tmp_path):
    """Edit a master, a shipped test, delete and add generated files: check() names each one."""
    name = SETS[0]
    for rel in ["_config.yml", f"exercises/{name}.ipynb", f"notebooks/exercises/{name}.ipynb"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "resnet_edu" / "exercise_tests" / name, tmp_path / "resnet_edu" / "exercise_tests" / name)
    assert exercises.check(tmp_path) == []

    master = tmp_path / "exercises" / f"{name}.ipynb"
    nb = json.loads(master.read_text())
    prompt = next(c for c in nb["cells"] if c["cell_type"] == "markdown" and "Question 1" in _src(c))
    prompt["source"] = _src(prompt) + "\nOne more sentence."
    master.write_text(json.dumps(nb, indent=1))
    (tmp_path / "resnet_edu" / "exercise_tests" / name / "q1.py").write_text("# edited by hand\n")
    (tmp_path / "resnet_edu" / "exercise_tests" / name / "q2.py").unlink()
    (tmp_path / "resnet_edu" / "exercise_tests" / name / "q99.py").write_text("OK_FORMAT = False\n")
    problems = "\n".join(exercises.check(tmp_path))
    assert f"notebooks/exercises/{name}.ipynb: out of date" in problems
    assert f"exercise_tests/{name}/q1.py: out of date" in problems
    assert f"exercise_tests/{name}/q2.py: missing" in problems
    assert f"exercise_tests/{name}/q99.py: no master produces it" in problems

    # a changed repository URL makes the Colab cells out of date too
    cfg = tmp_path / "_config.yml"
    exercises.build(tmp_path)
    assert exercises.check(tmp_path) == []
    # make exercises also writes the set's otter autograder zip (tests/test_autograder.py grades with one)
    assert [p.name for p in (tmp_path / exercises.AUTOGRADER_DIR).iterdir()] == [f"{name}-autograder.zip"]
    cfg.write_text(re.sub(r"(repository:\s*\n\s+url:\s*)\S+", r"\1https://github.com/someone/fork", cfg.read_text()))
    assert any("out of date" in p for p in exercises.check(tmp_path))
    exercises.build(tmp_path)
    text = (tmp_path / "notebooks" / "exercises" / f"{name}.ipynb").read_text()
    assert f"colab.research.google.com/github/someone/fork/blob/main/notebooks/exercises/{name}.ipynb" in text


@pytest.mark.parametrize("name", SETS)
def test_student_notebook_layout(name):
    path = ROOT / "notebooks" / "exercises" / f"{name}.ipynb"
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert "colab-badge" in cells[0]["metadata"]["tags"] and f"notebooks/exercises/{name}.ipynb" in _src(cells[0])
    assert "colab-setup" in cells[1]["metadata"]["tags"]
    extras = nb["metadata"]["resnet_edu"]["extras"]
    assert "exercises" in extras and f"resnet-edu[{','.join(extras)}]" in _src(cells[1])
    assert _src(cells[2]).startswith("# Exercises"), "the title comes right after the setup cell"
    assert f'grader = grader_for("{name}")' in _src(cells[3])
    assert nb["metadata"]["otter"]["assignment_name"] == name
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            assert "# BEGIN SOLUTION" not in _src(cell) and "# SOLUTION" not in _src(cell)
    headings = [line for c in cells if c["cell_type"] == "markdown" for line in _src(c).splitlines() if line.startswith("#")]
    assert headings[0].startswith("# ") and all(h.startswith("## ") for h in headings[1:]), headings


def test_grader_for_reads_the_shipped_public_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # otter's Notebook looks for a notebook in the working directory
    g = exercises.grader_for(SETS[0])
    assert Path(g._tests_dir) == ROOT / "resnet_edu" / "exercise_tests" / SETS[0]
    with pytest.raises(ValueError, match="unknown exercise set 'ex00_nothing'"):
        exercises.grader_for("ex00_nothing")


# --------------------------------------------------------------------------------------------------
# the tests: solutions get full marks, blanks get 0, wrong answers fail
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SETS)
def test_solutions_full_marks_blank_zero(name, assigned, solved, tmp_path):
    tests = sorted(assigned[name]["autograder_tests"].glob("*.py"))
    blank = run_notebook(ROOT / "notebooks" / "exercises" / f"{name}.ipynb")
    for test in tests:
        cases = run_tests(solved[name], test, tmp_path)
        failed = [(c["name"], c["message"]) for c in cases if not c["passed"]]
        assert not failed, f"{name} {test.stem}: the solution fails {failed}"
        cases = run_tests(blank, test, tmp_path)
        passed = [c["name"] for c in cases if c["passed"]]
        assert not passed, f"{name} {test.stem}: the blank notebook passes {passed}"
        public = [c for c in cases if not c["hidden"]]
        assert all("expected" in c["message"] or "must" in c["message"] or "needs" in c["message"] for c in public), (
            f"{name} {test.stem}: a public test fails without saying what was expected: {[c['message'] for c in public]}"
        )


# (set, answer code that replaces the solution's, True if the public tests still pass)
WRONG_ANSWERS = [
    ("ex01_conv_templates", "q1", "def conv_out_size(size, kernel_size, stride=1, padding=0, dilation=1):\n    return (size + 2 * padding - kernel_size) // stride + 1", True),
    ("ex01_conv_templates", "q2", "def my_conv3x3(i, o, stride=1, groups=1, dilation=1):\n    return nn.Conv2d(i, o, 3, stride, padding=1, groups=groups, bias=False, dilation=dilation)", True),
    ("ex01_conv_templates", "q2", "def my_conv3x3(i, o, stride=1, groups=1, dilation=1):\n    return nn.Conv2d(i, o, 3, stride, padding=dilation, bias=False, dilation=dilation)", True),
    ("ex01_conv_templates", "q2", "def my_conv3x3(*args, **kwargs):\n    return rn.conv3x3(*args, **kwargs)", False),
    ("ex01_conv_templates", "q2", "from torchvision.models.resnet import conv3x3 as c3\ndef my_conv3x3(*args, **kwargs):\n    return c3(*args, **kwargs)", False),
    ("ex01_conv_templates", "q4", "def conv_params(i, o, k, groups=1, bias=False):\n    return k * k * i * o + (o if bias else 0)", True),
    ("ex01_conv_templates", "q4", "def conv_params(i, o, k, groups=1, bias=False):\n    return sum(p.numel() for p in nn.Conv2d(i, o, k, groups=groups, bias=bias).parameters())", False),
    ("ex01_conv_templates", "q5", "def same_padding(kernel_size, dilation=1):\n    return dilation", True),
    ("ex02_basic_block", "q1", (
        "class StudentBasicBlock(rn.BasicBlock):\n    def forward(self, x):\n        identity = x\n"
        "        out = self.relu(self.bn1(self.conv1(x)))\n        out = self.conv2(out) + identity\n"
        "        return self.relu(self.bn2(out))"), False),
    ("ex02_basic_block", "q1", (
        "class StudentBasicBlock(rn.BasicBlock):\n    def forward(self, x):\n"
        "        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))\n        return self.relu(out + x)"), True),
    ("ex02_basic_block", "q1", "class StudentBasicBlock(rn.BasicBlock):\n    def forward(self, x):\n        return super().forward(x)", False),
    ("ex02_basic_block", "q3", "def block_output_shape(s, planes, stride):\n    return (s[0], planes, s[2] // stride, s[3] // stride)", True),
    ("ex02_basic_block", "q4", "def basic_block_params(i, p, stride=1):\n    return 9 * i * p + 9 * p * p + 4 * p", True),
    ("ex03_bottleneck", "q2", (
        "def bottleneck_conv_params(inplanes, planes, base_width=64, groups=1):\n"
        "    w = int(planes * base_width / 64) * groups\n    return inplanes * w + 9 * w * w + w * planes * 4"), True),
    ("ex03_bottleneck", "q5", (
        "def bottleneck_macs(inplanes, planes, size, stride=1, stride_on='conv2'):\n    out = (size - 1) // stride + 1\n"
        "    return inplanes * planes * size ** 2 + 9 * planes * planes * out ** 2 + planes * planes * 4 * out ** 2"), True),
    ("ex04_resnet_body", "q1", "def needs_downsample(inplanes, planes, stride, expansion):\n    return inplanes != planes * expansion", True),
    ("ex04_resnet_body", "q2", (
        "def stage_shapes(expansion, height, width, batch=1):\n"
        "    return [(batch, 64, height // 4, width // 4)] + [(batch, 64 * 2 ** i * expansion, height // (4 * 2 ** i), width // (4 * 2 ** i)) for i in range(4)]"), True),
    ("ex04_resnet_body", "q5", "def kaiming_std(conv):\n    return math.sqrt(2 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] / conv.groups))", True),
    ("ex05_variants", "q4", "def conv_macs(conv, h, w):\n    return conv.out_channels * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * h * w", True),
    ("ex05_variants", "q5", (
        "def model_macs(model, input_size):\n    total = 0\n    def hook(m, i, o):\n        nonlocal total\n"
        "        total += conv_macs(m, o.shape[-2], o.shape[-1]) if isinstance(m, nn.Conv2d) else m.in_features * m.out_features\n"
        "    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]\n"
        "    model.eval()\n    with torch.no_grad():\n        model(torch.zeros(input_size))\n    [h.remove() for h in hs]\n    return total"), True),
    ("ex06_pretrained_training", "q1", "def hash_prefix(url):\n    return url.rsplit('/', 1)[-1].split('-')[1].split('.')[0]", True),
    ("ex06_pretrained_training", "q2", (
        "def compare_state_dicts(model, sd):\n    own = model.state_dict()\n"
        "    return {'missing': sorted(k for k in sd if k not in own), 'unexpected': sorted(k for k in own if k not in sd),\n"
        "            'mismatched': sorted(k for k in own if k in sd and own[k].shape != sd[k].shape)}"), True),
    ("ex06_pretrained_training", "q2", (
        "def compare_state_dicts(model, sd):\n    r = model.load_state_dict(sd, strict=False)\n"
        "    return {'missing': sorted(r.missing_keys), 'unexpected': sorted(r.unexpected_keys), 'mismatched': []}"), False),
    ("ex06_pretrained_training", "q3", "def normalize(a, b):\n    return (a - a.mean()) / a.std(), (b - b.mean()) / b.std()", True),
    ("ex06_pretrained_training", "q4", (
        "def accuracy(model, loader):\n    right = n = 0\n    for x, y in loader:\n"
        "        right += (model(x).argmax(1) == y).sum().item()\n        n += len(y)\n    return right / n"), True),
    ("ex06_pretrained_training", "q4", (
        "def accuracy(model, loader):\n    model.eval()\n    right = n = 0\n    for x, y in loader:\n"
        "        right += (model(x).argmax(1) == y).sum().item()\n        n += len(y)\n    return right / n"), True),
    ("ex06_pretrained_training", "q5", (
        "def confusion(p, t, k):\n    cm = torch.zeros(k, k, dtype=torch.long)\n"
        "    for a, b in zip(t.tolist(), p.tolist()):\n        cm[b, a] += 1\n    return cm"), False),
    ("ex06_pretrained_training", "q5", (
        "def confusion(p, t, k):\n    k = int(max(p.max(), t.max())) + 1\n    cm = torch.zeros(k, k, dtype=torch.long)\n"
        "    for a, b in zip(t.tolist(), p.tolist()):\n        cm[a, b] += 1\n    return cm"), True),
    ("ex06_pretrained_training", "q6", "def safe_load(path):\n    return torch.load(path, weights_only=False)", True),
    ("ex06_pretrained_training", "q7", (
        "def prepare_transfer(model, k):\n    for p in model.parameters():\n        p.requires_grad = False\n"
        "    model.fc = nn.Linear(512, k)\n    return model"), True),
    ("ex06_pretrained_training", "q7", (
        "def prepare_transfer(model, k):\n    model.fc = nn.Linear(model.fc.in_features, k)\n"
        "    for p in model.parameters():\n        p.requires_grad = False\n    return model"), False),
    ("ex07_quantization_basics", "q1", "def quantize(x, scale, zero_point, qmin=0, qmax=255):\n    return torch.clamp(torch.floor(x / scale + 0.5) + zero_point, qmin, qmax).long()", True),
    ("ex07_quantization_basics", "q1", "def quantize(x, scale, zero_point, qmin=0, qmax=255):\n    return (torch.round(x / scale) + zero_point).long()", True),
    ("ex07_quantization_basics", "q1", "def quantize(x, scale, zero_point, qmin=0, qmax=255):\n    return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()", False),
    ("ex07_quantization_basics", "q2", "def dequantize(q, scale, zero_point):\n    return (q - zero_point).float() * scale", True),
    ("ex07_quantization_basics", "q3", (
        "def qparams_from_minmax(xmin, xmax, qmin=0, qmax=255):\n    scale = (xmax - xmin) / (qmax - qmin)\n"
        "    return scale, int(qmin - round(xmin / scale))"), True),
    ("ex07_quantization_basics", "q4", "def symmetric_qparams(xmin, xmax):\n    return abs(xmax) / 127.5, 0", True),
    ("ex07_quantization_basics", "q5", "def per_channel_scales(w):\n    return torch.full((w.shape[0],), float(w.abs().max()) / 127.5)", False),
    ("ex07_quantization_basics", "q5", "def per_channel_scales(w):\n    return w.abs().reshape(w.shape[0], -1).max(dim=1).values / 127.5", True),
    ("ex08_eager_quantization", "q1", (
        "class QuantBasicBlock(rn.BasicBlock):\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n"
        "        self.add_relu = torch.ao.nn.quantized.FloatFunctional()\n    def forward(self, x):\n        identity = x\n"
        "        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))\n"
        "        if self.downsample is not None:\n            identity = self.downsample(x)\n        out += identity\n        return self.relu(out)"), True),
    ("ex08_eager_quantization", "q1", (
        "class QuantBasicBlock(rn.BasicBlock):\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n"
        "        self.add_relu = torch.ao.nn.quantized.FloatFunctional()\n    def forward(self, x):\n        identity = x\n"
        "        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))\n"
        "        if self.downsample is not None:\n            identity = self.downsample(x)\n        return self.relu(self.add_relu.add(out, identity))"), True),
    ("ex08_eager_quantization", "q2", "def fuse_basic_block(block):\n    fuse_modules(block, [['conv1', 'bn1', 'relu'], ['conv2', 'bn2']], inplace=True)\n    return block", True),
    ("ex08_eager_quantization", "q4", (
        "def ptq(model, batches, backend='x86'):\n    model.qconfig = torch.ao.quantization.default_qconfig\n    prepare(model, inplace=True)\n"
        "    with torch.no_grad():\n        for b in batches:\n            model(b)\n    return convert(model, inplace=True)"), True),
    ("ex09_pt2e", "q1", "def export_for_quantization(model, example_inputs):\n    return torch.export.export(model.eval(), example_inputs, strict=False)", True),
    # ex10: the batch forgotten; one setting for every CPU; the mean for the median; microseconds as milliseconds; "<" for "at most"
    ("ex10_deployment", "q1", "def limit_ms(macs, batch, macs_per_cycle, cores, ghz):\n    return 1e3 * macs / (macs_per_cycle * cores * ghz * 1e9)", True),
    ("ex10_deployment", "q2", "def ort_settings(cpu):\n    return {'activations': 'u8', 'reduce_range': False}", True),
    ("ex10_deployment", "q3", "def summarize(times_ms, noise_limit=1.5):\n    m = sum(times_ms) / len(times_ms)\n"
     "    return {'min_ms': min(times_ms), 'median_ms': m, 'noisy': m > noise_limit * min(times_ms)}", False),
    ("ex10_deployment", "q4", "def overhead_share(n_convs, overhead_us, image_ms, batch):\n    fixed = n_convs * overhead_us\n"
     "    return fixed / (fixed + batch * image_ms)", False),
    ("ex10_deployment", "q4", "def batch_for_share(n_convs, overhead_us, image_ms, share):\n    b = 1\n"
     "    while overhead_share(n_convs, overhead_us, image_ms, b) >= share:\n        b += 1\n    return b", True),
]


@pytest.mark.parametrize("name,question,code,public_passes", WRONG_ANSWERS, ids=[f"{w[0][:4]}-{w[1]}-{i}" for i, w in enumerate(WRONG_ANSWERS)])
def test_wrong_answers_lose_points(name, question, code, public_passes, assigned, solved, tmp_path):
    ns = dict(solved[name])
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "<wrong answer>", "exec"), ns)
    cases = run_tests(ns, assigned[name]["autograder_tests"] / f"{question}.py", tmp_path)
    hidden = [c for c in cases if c["hidden"]]
    public = [c for c in cases if not c["hidden"]]
    assert any(not c["passed"] for c in hidden), f"no hidden test of {name} {question} catches:\n{code}"
    if public_passes:
        assert all(c["passed"] for c in public), f"expected the public tests to pass (the hidden ones must do the catching): {public}"
    else:
        assert not all(c["passed"] for c in public)


# --------------------------------------------------------------------------------------------------
# forbid: reference implementations become traps, and are restored afterwards
# --------------------------------------------------------------------------------------------------
def test_forbid_traps_and_restores():
    import torch
    import torchvision

    import resnet_edu as rn
    from resnet_edu.models import conv3x3 as alias

    x = torch.zeros(3)
    with exercises.forbid("resnet_edu.models:conv3x3", "torch:quantize_per_tensor", "resnet_edu.models:BasicBlock.__init__", "nosuchmodule:thing", task="Q"):
        for call in (lambda: rn.conv3x3(1, 1), lambda: alias(1, 1), lambda: torch.quantize_per_tensor(x, 1.0, 0, torch.quint8), lambda: rn.BasicBlock(4, 4)):
            with pytest.raises(AssertionError, match="Q asks you to write this yourself"):
                call()
        torchvision.models.resnet.conv3x3(1, 1)  # not in the list: still works
    assert isinstance(rn.conv3x3(1, 1), torch.nn.Conv2d) and isinstance(alias(1, 1), torch.nn.Conv2d)
    assert isinstance(rn.BasicBlock(4, 4), torch.nn.Module) and "__init__" in vars(rn.BasicBlock)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.quantize_per_tensor(x, 1.0, 0, torch.quint8).is_quantized

    qpt = torch.quantize_per_tensor

    def answer(t):
        return qpt(t, 1.0, 0, torch.quint8)

    with pytest.raises(AssertionError, match="torch.quantize_per_tensor"):
        with exercises.forbid("torch:quantize_per_tensor", task="Q", answers=[answer]):
            pass
    assert torch.quantize_per_tensor is qpt


def test_expect_messages():
    with pytest.raises(AssertionError, match=r"f\(1\): expected 2, got 3\. Hint: add one"):
        exercises.expect_equal(3, 2, "f(1)", "add one")
    with pytest.raises(AssertionError, match="expected the int 56, got 56.0 of type float"):
        exercises.expect_int(56.0, 56, "size")
    with pytest.raises(AssertionError, match=r"placeholder"):
        exercises.expect_int(Ellipsis, 1, "x")
    with pytest.raises(AssertionError, match=r"wrong settings: padding=\(1, 1\) \(expected \(2, 2\)\)"):
        import torch.nn as nn

        exercises.expect_conv(nn.Conv2d(1, 1, 3, padding=1), "c", padding=2)
    exercises.expect_equal(True, True, "b")
    with pytest.raises(AssertionError, match="a bool"):
        exercises.expect_equal(1, True, "b")


# --------------------------------------------------------------------------------------------------
# the grader: real kernels, time limits, broken submissions, the CSV
# --------------------------------------------------------------------------------------------------
def _replace_answer(nb: dict, question: str, code: str) -> dict:
    """Replace the answer cell of ``question`` (the code cell before its grader.check cell)."""
    nb = json.loads(json.dumps(nb))
    cells = nb["cells"]
    check = next(i for i, c in enumerate(cells) if f'grader.check("{question}")' in _src(c))
    answer = max(i for i in range(check) if cells[i]["cell_type"] == "code")
    cells[answer]["source"] = code
    return nb


def _write(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1))


def _rows(path: Path) -> Dict[str, dict]:
    with open(path, newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_grade_end_to_end(assigned, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    e1, e6, e7 = "ex01_conv_templates", "ex06_pretrained_training", "ex07_quantization_basics"
    names = SETS if os.environ.get("RESNET_EDU_GRADE_ALL") else [e1, e6, e7]  # ex06: files written in the sandbox
    for name in names:
        shutil.copy(assigned[name]["autograder"], subs / f"solution_{name}.ipynb")
        shutil.copy(ROOT / "notebooks" / "exercises" / f"{name}.ipynb", subs / f"blank_{name}.ipynb")
    sol = json.loads(assigned[e1]["autograder"].read_text())
    # q1's cell raises; q2's answer is right but prints garbage; q5's answer returns garbage
    nb = _replace_answer(sol, "q1", "raise RuntimeError('student bug')")
    q2 = "import sys\nprint('\\x00\\xff garbage ' * 20000)\nsys.stderr.write('\\x1b[31m' * 5000)\n" + _src(next(
        c for c in sol["cells"] if _src(c).startswith("def my_conv3x3")))
    nb = _replace_answer(nb, "q2", q2)
    nb = _replace_answer(nb, "q5", "def same_padding(*a, **k):\n    print('noise')\n    return 'garbage'")
    _write(subs / "raises_and_garbage.ipynb", nb)
    # q2's cell never ends; q3's function never returns when the tests call it; q4's cell kills the kernel
    nb = _replace_answer(sol, "q2", "while True:\n    pass")
    nb = _replace_answer(nb, "q3", "def my_conv1x1(*args, **kwargs):\n    while True:\n        pass")
    nb = _replace_answer(nb, "q4", "import os\nos._exit(3)")
    _write(subs / "loops_and_exits.ipynb", nb)
    # q4's cell ignores the interrupt: the kernel is restarted and the earlier cells are run again
    _write(subs / "ignores_interrupt.ipynb", _replace_answer(sol, "q4", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"))
    (subs / "corrupt.ipynb").write_text('{"cells": [ {"cell_type": "code", "source": "x = 1"')
    _write(subs / "empty_ex01.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    (subs / "notes.txt").write_text("not a notebook: ignored")

    out = tmp_path / "scores.csv"
    timeout = 200.0
    args = [str(subs), "--out", str(out), "--timeout", str(timeout), "--cell-timeout", "15", "--jobs", "2", "--quiet", "--details", str(tmp_path / "d.json")]
    assert grade.main(args) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header == ["file", "exercise", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "total", "max", "sha256", "note"]
    rows = _rows(out)
    assert len(rows) == len(list(subs.glob("*.ipynb")))
    details = {d["file"]: d for d in json.loads((tmp_path / "d.json").read_text())}
    for r in rows.values():
        assert details[r["file"]]["seconds"] < timeout + grade.STARTUP_TIMEOUT, f"{r['file']} was not stopped by its time limit"

    for name in names:
        s, b = rows[f"solution_{name}.ipynb"], rows[f"blank_{name}.ipynb"]
        assert s["total"] == s["max"] and float(s["max"]) > 0 and s["note"] == "", s
        assert float(b["total"]) == 0 and b["max"] == s["max"] and b["note"] == "", b
        assert s["sha256"] == hashlib.sha256((subs / s["file"]).read_bytes()).hexdigest() == details[s["file"]]["sha256"]
        assert s["exercise"] == b["exercise"] == name
    full = {q: rows[f"solution_{e1}.ipynb"][q] for q in ["q1", "q2", "q3", "q4", "q5"]}
    assert rows[f"solution_{e1}.ipynb"]["q6"] == ""  # ex01 has no q6: blank, not 0

    def expect_row(file, zero, notes):
        r = rows[file]
        for q, v in full.items():
            assert r[q] == ("0" if q in zero else v), (file, q, r)
        assert float(r["total"]) == sum(float(r[q]) for q in full), r
        for note in notes:
            assert re.search(note, r["note"]), (file, note, r["note"])

    expect_row("raises_and_garbage.ipynb", {"q1", "q5"}, [r"^$"])
    expect_row("loops_and_exits.ipynb", {"q2", "q3", "q4"}, [r"stopped after 15 s", r"q3: tests stopped after 15 s", r"sandbox died"])
    expect_row("ignores_interrupt.ipynb", {"q4"}, [r"cell \d+ \(q4\): did not stop after 15 s, even when interrupted; sandbox restarted"])
    assert rows["corrupt.ipynb"]["total"] == "0" and "not a readable notebook" in rows["corrupt.ipynb"]["note"]
    assert rows["empty_ex01.ipynb"]["total"] == "0" and rows["empty_ex01.ipynb"]["exercise"] == e1


def test_grade_request_errors(tmp_path, capsys):
    assert grade.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert grade.main([str(tmp_path)]) == 2
    assert "no .ipynb files" in capsys.readouterr().err
    shutil.copy(ROOT / "notebooks" / "exercises" / f"{SETS[0]}.ipynb", tmp_path / "a.ipynb")
    old_book = tmp_path / "last_week.csv"
    old_book.write_text("file,total\nx.ipynb,7\n")
    assert grade.main([str(tmp_path), "--out", str(old_book), "--quiet"]) == 2  # refused before any grading
    assert f"--out {old_book} already exists" in capsys.readouterr().err and old_book.read_text() == "file,total\nx.ipynb,7\n"
    assert grade.main([str(tmp_path), "--out", str(tmp_path / "new.csv"), "--details", str(old_book)]) == 2
    assert "--details" in capsys.readouterr().err and not (tmp_path / "new.csv").exists()
    assert grade.main([str(tmp_path), "--out", str(tmp_path), "--quiet"]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    for flag in ("--jobs", "--sandbox-memory-mb"):
        assert grade.main([str(tmp_path), flag, "0"]) == 2
        assert f"{flag} must be a positive whole number, got 0" in capsys.readouterr().err
    with pytest.raises(grade.GradingError, match="unknown exercise set 'ex77'"):
        grade.grade_folder(tmp_path, exercise="ex77")
    with pytest.raises(grade.GradingError, match="pass --masters DIR, or use --public-only"):
        grade.grade_folder(tmp_path, masters=tmp_path / "no_masters")
    with pytest.raises(grade.GradingError, match="time limits must be positive"):
        grade.grade_folder(tmp_path, timeout=0)
    empty_masters = tmp_path / "m"
    empty_masters.mkdir()
    shutil.copy(ROOT / "notebooks" / "exercises" / f"{SETS[0]}.ipynb", empty_masters / "ex99_other.ipynb")
    with pytest.raises(grade.GradingError, match=f"{SETS[0]}.ipynb does not exist"):
        grade.load_tests([SETS[0]], tmp_path, masters=empty_masters)


def test_detect_exercise():
    known = ["ex01_conv_templates", "ex07_quantization_basics"]
    assert grade.detect_exercise({"metadata": {"otter": {"assignment_name": "ex07_quantization_basics"}}}, "x.ipynb", known) == known[1]
    assert grade.detect_exercise({"metadata": {}}, "Alice Smith - ex01_conv_templates (1).ipynb", known) == known[0]
    assert grade.detect_exercise({"metadata": {}}, "bob_ex07.ipynb", known) == known[1]
    assert grade.detect_exercise({"metadata": {}}, "bob_ex077.ipynb", known) is None
    assert grade.detect_exercise(None, "homework.ipynb", known) is None


def test_public_only_tests_are_the_shipped_ones(tmp_path):
    tests = grade.load_tests([SETS[0]], tmp_path, public_only=True)[SETS[0]]
    assert tests.tests["q1"].parent == ROOT / "resnet_edu" / "exercise_tests" / SETS[0]
    full = grade.load_tests([SETS[0]], tmp_path)[SETS[0]]
    assert tests.questions == full.questions and tests.max == full.max


def test_teachers_page_table_matches_the_tests(assigned):
    """book/teachers.md lists each set with its questions and points: it must match the tests."""
    text = (ROOT / "book" / "teachers.md").read_text()
    rows = re.findall(r"^\|\s*`(ex\d\d_\w+)`\s*\|[^|]*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", text, re.M)
    listed = {name: (int(q), int(p)) for name, q, p in rows}
    want = {}
    for name, paths in assigned.items():
        t = grade._exercise_tests(name, paths["autograder_tests"])
        want[name] = (len(t.questions), int(round(t.max)))
    assert listed == want
    m = re.search(r"(\d+) sets, (\d+) questions", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (len(want), sum(q for q, _ in want.values()))
    for name in want:
        assert f"notebooks/exercises/{name}" in (ROOT / "_toc.yml").read_text()
    assert f"| `--timeout S` | {grade.DEFAULT_TIMEOUT:.0f} |" in text
    assert f"| `--cell-timeout S` | {grade.DEFAULT_CELL_TIMEOUT:.0f} |" in text


@pytest.mark.skipif(not os.environ.get("RESNET_EDU_GRADE_ALL"), reason="set RESNET_EDU_GRADE_ALL=1: grades every wrong answer in a real sandbox (about 5 min on 2 cores)")
def test_wrong_answers_lose_points_in_sandboxes(assigned, tmp_path):
    """The same wrong answers as above, each in a solution notebook, graded in one batch by the sandboxed grader."""
    subs = tmp_path / "subs"
    subs.mkdir()
    for i, (name, question, code, _) in enumerate(WRONG_ANSWERS):
        nb = json.loads(assigned[name]["autograder"].read_text())
        cells = nb["cells"]
        check = next(j for j, c in enumerate(cells) if f'grader.check("{question}")' in _src(c))
        answer = max(j for j in range(check) if cells[j]["cell_type"] == "code")
        cells[answer]["source"] = _src(cells[answer]) + "\n" + code  # the solution's names, then the wrong answer
        _write(subs / f"w{i:02d}_{question}_{name}.ipynb", nb)
    details = tmp_path / "d.json"
    assert grade.main([str(subs), "--out", str(tmp_path / "s.csv"), "--details", str(details), "--jobs", "2", "--quiet"]) == 0
    graded = {d["file"]: d for d in json.loads(details.read_text())}
    for i, (name, question, code, public_passes) in enumerate(WRONG_ANSWERS):
        cases = graded[f"w{i:02d}_{question}_{name}.ipynb"]["questions"][question]
        assert any(c["hidden"] and not c["passed"] for c in cases), f"no hidden test of {name} {question} catches, in a sandbox:\n{code}"
        assert all(c["passed"] for c in cases if not c["hidden"]) == public_passes, (name, question, cases)
