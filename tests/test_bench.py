"""The benchmark harness: end to end in a tiny mode, checking the report's schema (never a timing).

The INT8 flows normally come from ``resnet_edu.quantization.BENCH_FLOWS``; here a stand-in module
supplies flows whose results are known (an identity "quantization", a flow that fails), so these
tests check the harness's side of the contract without paying for real quantization. The digits
model comes from the shared cache (see tests/test_training.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from resnet_edu import bench

ROOT = Path(__file__).resolve().parent.parent


def _identity_flow(calls):
    def build(fp32_model, calibration_batches):
        assert not fp32_model.training
        assert all(isinstance(b, torch.Tensor) and b.dim() == 4 for b in calibration_batches)
        calls.append(len(calibration_batches))
        return _RefusesEval(fp32_model)

    return build


class _RefusesEval(torch.nn.Module):
    """Like an exported PT2E model: runs, but refuses .train()/.eval()."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def train(self, mode=True):
        raise NotImplementedError("Calling train() or eval() is not supported for exported models.")


def _broken_flow(fp32_model, calibration_batches):
    raise RuntimeError("this flow is broken on purpose")


@pytest.fixture
def fake_quantization(monkeypatch):
    calls = []
    sizes = []

    def model_size_mb(obj):
        sizes.append(type(obj).__name__)
        return 1.5

    mod = types.SimpleNamespace(
        BENCH_FLOWS={"int8-identity": _identity_flow(calls), "int8-broken": _broken_flow},
        model_size_mb=model_size_mb,
    )
    monkeypatch.setattr(bench, "_quantization_module", lambda: mod)
    return calls, sizes


def test_quick_report_schema(tmp_path, fake_quantization, capsys):
    calls, sizes = fake_quantization
    out = tmp_path / "report.json"
    rc = bench.main(["--json", str(out), "--quick", "--size", "64", "--threads", "1",
                     "--flows", "fp32-eager,int8-identity,int8-broken"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"digits", "results", "env", "errors", "settings"}

    d = report["digits"]
    assert d["model"] == "resnet18"
    assert 0.97 <= d["fp32_accuracy"] <= 1.0
    assert d["train_seconds"] > 0
    # the identity "quantization" must give exactly the FP32 accuracy; the broken flow is reported
    assert d["int8_accuracy"] == {"int8-identity": d["fp32_accuracy"]}
    assert "this flow is broken on purpose" in d["errors"]["int8-broken"]
    assert d["int8_size_mb"] == {"int8-identity": 1.5} and "_RefusesEval" in sizes
    assert calls[0] == 2  # quick mode calibrates the digits flows with 2 batches

    rows = report["results"]
    assert {r["flow"] for r in rows} == {"fp32-eager", "int8-identity"}
    for r in rows:
        assert set(r) >= {"model", "input", "flow", "median_ms", "speedup_vs_fp32", "size_mb"}
        assert r["model"] == "resnet18" and r["input"] == [1, 3, 64, 64]
        assert r["median_ms"] > 0 and r["repeats"] == 3
        assert r["size_mb"] == 1.5  # measured by quantization.model_size_mb when it exists
    eager = next(r for r in rows if r["flow"] == "fp32-eager")
    assert eager["speedup_vs_fp32"] == 1.0
    assert [e["flow"] for e in report["errors"]] == ["int8-broken"]

    env = report["env"]
    for key in ("torch", "torchvision", "threads", "cpu", "cpu_flags", "cpu_capability", "quantized_engines"):
        assert key in env, key
    assert env["threads"] == 1 and env["torch"] == torch.__version__

    md = out.with_suffix(".md").read_text()
    assert "| model | input | flow | median ms | speedup vs fp32-eager | size MB |" in md
    assert "| resnet18 | 1x3x64x64 | fp32-eager |" in md
    assert "int8-identity" in md and "failed" in md
    assert md in capsys.readouterr().out  # printed too


def test_without_quantization_only_fp32_flows(monkeypatch):
    monkeypatch.setattr(bench, "_quantization_module", lambda: None)
    assert bench.int8_flows() == {}
    assert list({**bench.fp32_flows(), **bench.int8_flows()}) == ["fp32-eager", "fp32-compile"]
    m = torch.nn.Linear(1000, 1000)
    assert 3.8 < bench.state_size_mb(m) < 3.9  # 1,001,000 float32 numbers, about 3.82 MB
    assert bench.state_size_mb(torch.compile(m)) == bench.state_size_mb(m)


def test_quantization_contract_is_read_with_getattr(monkeypatch):
    monkeypatch.setattr(bench, "_quantization_module", lambda: types.SimpleNamespace())  # no BENCH_FLOWS
    assert bench.int8_flows() == {}


def test_interleaved_timing_round_robin():
    order = []
    runners = {name: (lambda x, name=name: order.append(name)) for name in "abc"}
    times = bench.time_interleaved(runners, torch.zeros(1), repeats=3, warmup=1)
    assert order[:3] == ["a", "b", "c"]  # warm-up
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one later
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.time_interleaved(runners, torch.zeros(1), repeats=0)


def test_unknown_flow_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_quantization_module", lambda: None)
    with pytest.raises(SystemExit):
        bench.main(["--json", str(tmp_path / "r.json"), "--quick", "--flows", "int8-nope"])
    assert "unknown flows ['int8-nope']; available: ['fp32-eager', 'fp32-compile']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--json", str(tmp_path / "r.json"), "--models", "resnet19"])
    assert "unknown models ['resnet19']" in capsys.readouterr().err


def test_command_line(tmp_path):
    """``python -m resnet_edu.bench`` as a user runs it (FP32 eager only, tiny input)."""
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_edu.bench", "--json", str(out), "--quick", "--size", "32", "--flows", "fp32-eager"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["flow"] for r in report["results"]] == ["fp32-eager"]
    assert report["digits"]["int8_accuracy"] == {}
    assert "| fp32-eager |" in proc.stdout and out.with_suffix(".md").is_file()


def _synthetic_report(eager_ms: float, pt2e_ms: float, tv_ms: float, int8_acc: float) -> dict:
    def row(flow, ms):
        return {"model": "resnet18", "input": [1, 3, 224, 224], "flow": flow, "median_ms": ms,
                "speedup_vs_fp32": 40.0 / ms, "size_mb": 1.0}
    return {
        "results": [row("fp32-eager", 40.0), row("int8-eager-x86", eager_ms), row("int8-pt2e-inductor", pt2e_ms),
                    row("int8-eager-x86-torchvision", tv_ms)],
        "digits": {"fp32_accuracy": 0.99, "int8_accuracy": {"int8-eager-x86": int8_acc, "int8-pt2e-inductor": 0.99}},
    }


def test_targets_are_computed_from_the_report():
    met = {t["target"]: t for t in bench.check_targets(_synthetic_report(16.0, 13.0, 16.0, 0.988))}
    assert [t["met"] for t in met.values()] == [True, True, True, True]
    assert met["int8-eager-x86 speedup, resnet18 batch 1"]["value"] == 2.5
    assert abs(met["digits accuracy drop in points (worst INT8 flow)"]["value"] - 0.2) < 1e-9

    missed = bench.check_targets(_synthetic_report(20.0, 20.0, 18.0, 0.98))
    assert [t["met"] for t in missed] == [False, False, False, False]
    assert abs(missed[2]["value"] - 20.0 / 18.0) < 1e-12 and abs(missed[3]["value"] - 1.0) < 1e-9

    partial = bench.check_targets({"results": [], "digits": {}})
    assert all(t["value"] is None and t["met"] is None for t in partial)
    md = bench.to_markdown({
        "env": {k: "x" for k in ("torch", "torchvision", "torchao", "cpu", "cpu_count", "threads", "cpu_capability", "date")}
        | {"cpu_flags": []},
        "digits": {"model": "resnet18", "input_size": 32, "n_test": 450, "train_seconds": 1.0, "fp32_accuracy": 0.99,
                   "fp32_size_mb": 42.7, "int8_accuracy": {}, "int8_size_mb": {}, "errors": {}},
        "results": _synthetic_report(20.0, 20.0, 18.0, 0.98)["results"],
    })
    assert "## Targets" in md and "| int8-eager-x86 speedup, resnet18 batch 1 | 2.00 | >= 2.4 | NO |" in md
