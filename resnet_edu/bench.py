"""The performance report: ``python -m resnet_edu.bench --json PATH [--quick]``.

Writes a JSON report to ``PATH`` and the same numbers as a markdown table to ``PATH`` with the
suffix ``.md`` (and prints the table). Two parts:

* ``digits``: the book's trained digits model (:func:`resnet_edu.training.get_digits_model`, trained
  once and cached) with its FP32 test accuracy, its training time, and the test accuracy of every
  other flow applied to it (``int8_accuracy``: INT8 flow name -> fraction; ``accuracy``: every flow;
  ``agreement``: top-1 agreement with FP32 and logit SQNR);
* ``results``: latency of resnet18 and resnet50 at 224x224, batch 1 and 8, random weights and
  seeded random inputs (nothing is downloaded), for every flow: ``fp32-eager``, ``fp32-compile``
  (``torch.compile``), the INT8 flows that :mod:`resnet_edu.quantization` offers, and the deployment
  flows of :mod:`resnet_edu.deploy` (ONNX Runtime, OpenVINO, BF16, frozen inductor; chapter 10).
  Each row has min, median and interquartile spread, the kernel that ran its convolutions, its
  agreement with FP32 on the timed input, and ``noisy`` (median more than 1.5x the minimum: the
  machine was busy; such a row gets no speed-up, since its ratio would not be a result).

The INT8 flows come through a small contract: ``quantization.BENCH_FLOWS`` maps a flow name to
``build(fp32_model, calibration_batches) -> callable model``, and ``quantization.model_size_mb(obj)``
(optional) measures a model's size. Without that module only the FP32 flows run; the deployment
flows follow the same contract (``deploy.DEPLOY_FLOWS``) and need the extra ``resnet-edu[deploy]``
for ONNX Runtime and OpenVINO.

Method: a fixed number of torch threads; every flow is built and warmed up first; then all flows of
one (model, input) pair are timed *interleaved*, round-robin, one call each per round, with the
starting flow rotating from round to round, so that a slow minute of a shared machine hits every
flow alike; each timed call follows untimed calls of the same flow lasting at least
``deploy.SETTLE_MS``, so no flow is timed while another runtime's worker threads still spin
(``deploy.timing`` has the measurements that made this necessary). Each (model, input) pair gets at
least ``--repeats`` rounds (20) and as many more as fit in ``--budget`` seconds (60) at the pace of an
untimed first round, at most ``deploy.MAX_ROUNDS``: cheap pairs get many rounds, so their medians move
less from run to run. Timings belong in this report, never in a test.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import io
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "fp32_flows", "int8_flows", "deploy_flows", "state_size_mb", "accuracy", "time_interleaved", "summarize", "kernel_of",
    "cpu_env", "run", "to_markdown", "main", "TARGETS", "check_targets", "NOISE_LIMIT", "speedup",
]

Builder = Callable[[nn.Module, List[Tensor]], Callable[[Tensor], Tensor]]


# --------------------------------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------------------------------
def _fp32_eager(model: nn.Module, calibration_batches: List[Tensor]) -> nn.Module:
    return model


def _fp32_compile(model: nn.Module, calibration_batches: List[Tensor]) -> Callable[[Tensor], Tensor]:
    return torch.compile(model)


def fp32_flows() -> Dict[str, Builder]:
    """The baseline flows: the eager model, and the same model through ``torch.compile`` (inductor)."""
    return {"fp32-eager": _fp32_eager, "fp32-compile": _fp32_compile}


def _quantization_module():
    try:
        from . import quantization
    except ImportError:
        return None
    return quantization


def int8_flows() -> Dict[str, Builder]:
    """``quantization.BENCH_FLOWS`` when the quantization module is present, else ``{}``."""
    q = _quantization_module()
    flows = dict(getattr(q, "BENCH_FLOWS", {}) or {}) if q is not None else {}
    return flows


def _deploy_module():
    try:
        from . import deploy
    except ImportError:
        return None
    return deploy


def deploy_flows() -> Dict[str, Builder]:
    """``deploy.DEPLOY_FLOWS`` (ONNX Runtime, OpenVINO, BF16, frozen inductor; chapter 10), else ``{}``.

    The ONNX Runtime and OpenVINO flows are there only when the extra ``resnet-edu[deploy]`` is installed.
    """
    d = _deploy_module()
    return dict(getattr(d, "DEPLOY_FLOWS", {}) or {}) if d is not None else {}


def state_size_mb(obj: Any) -> float:
    """Size in MB (2**20 bytes) of ``obj``'s state dict saved with ``torch.save``.

    Uses ``quantization.model_size_mb`` when that exists (it knows the quantized wrappers), else
    saves ``obj.state_dict()`` to a buffer. A ``torch.compile`` wrapper is measured through its
    original module; a runner with a ``size_mb`` attribute (the deployment flows: an ONNX or
    OpenVINO file on disk) reports that.
    """
    if isinstance(getattr(obj, "size_mb", None), (int, float)):
        return float(obj.size_mb)
    obj = getattr(obj, "_orig_mod", obj)
    q = _quantization_module()
    size_fn = getattr(q, "model_size_mb", None) if q is not None else None
    if size_fn is not None:
        return float(size_fn(obj))
    if not isinstance(obj, nn.Module):
        raise ValueError(f"cannot measure the size of a {type(obj).__name__}; expected an nn.Module")
    buffer = io.BytesIO()
    torch.save(obj.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


def _silence():
    """The quantization module's deliberate, narrow warning filters (if it has them)."""
    q = _quantization_module()
    fn = getattr(q, "silence_known_warnings", None) if q is not None else None
    if fn is not None:
        fn()


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 500 else text[:500] + " ..."


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------
from .deploy.timing import MAX_ROUNDS, NOISE_LIMIT, SETTLE_MS, speedup, summarize, time_interleaved  # noqa: E402  (the one harness the book uses)


def kernel_of(name: str, runner: Any) -> Dict[str, Any]:
    """What runs the convolutions of a flow's ``runner``: ``{"engine", "library", "isa", "label"}``.

    A runner's own ``kernel`` attribute wins (the deployment flows read it from their runtime); an
    eager INT8 runner asks ``quantization.kernels.conv_kernel(engine)`` when that exists; the PyTorch
    FP32 flows name oneDNN and ATen's CPU capability.
    """
    own = getattr(runner, "kernel", None)
    if isinstance(own, dict):
        return dict(own)
    cap = str(torch.backends.cpu.get_cpu_capability())
    engine = getattr(runner, "engine", None)
    if engine is not None:
        q = _quantization_module()
        kernels = getattr(q, "kernels", None) if q is not None else None
        if kernels is not None and hasattr(kernels, "conv_kernel"):
            try:
                return dict(kernels.conv_kernel(engine))
            except Exception as exc:  # noqa: BLE001 - a label is a nicety
                return {"engine": engine, "library": "unknown", "isa": "unknown", "label": f"unknown ({type(exc).__name__})"}
        return {"engine": engine, "library": "unknown", "isa": "unknown", "label": f"quantized engine {engine}"}
    if name.startswith("int8-pt2e"):
        return {"engine": "inductor", "library": "onednn", "isa": cap, "label": f"inductor + oneDNN int8 qconv; ATen capability {cap}"}
    if name == "fp32-compile":
        return {"engine": "inductor", "library": "onednn", "isa": cap, "label": f"inductor (no freezing); ATen capability {cap}"}
    return {"engine": "aten", "library": "onednn", "isa": cap, "label": f"ATen conv via oneDNN (mkldnn); ATen capability {cap}"}


def _agreement(reference: Tensor, out: Tensor) -> Dict[str, Any]:
    """Top-1 agreement (fraction) and SQNR in dB of ``out`` against ``reference`` logits."""
    from .deploy.timing import agreement

    return agreement(reference, out)


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------
_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "neon", "asimd")


def cpu_env(threads: int) -> Dict[str, Any]:
    """Versions, threads and the CPU features that decide which INT8 kernels are fast."""
    import torchvision

    model_name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model_name:
                    model_name = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: fall back to what platform knows
        pass
    model_name = model_name or platform.processor() or platform.machine()
    try:
        # torchao's import makes torch's pytree log a deprecation line (torch 2.14); it is not ours to show
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        import torchao  # noqa: F401

        torchao_version = getattr(torchao, "__version__", "unknown")
    except Exception:  # torchao absent (or broken): the PT2E flow is then absent too
        torchao_version = None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:
        capability = None
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torchao": torchao_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": model_name,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cpu_capability": capability,
        "cpu_flags": sorted(f for f in _FLAGS if f in flags),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@torch.no_grad()
def accuracy(model: Callable[[Tensor], Tensor], loader) -> float:
    """Top-1 accuracy (a fraction) of any callable that maps a batch to logits.

    Unlike :func:`resnet_edu.training.evaluate` it never calls ``model.eval()``: a flow's builder
    returns a model ready to run, and some (exported PT2E graphs) refuse ``.eval()``.
    """
    correct = count = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        count += len(y)
    return correct / count


# --------------------------------------------------------------------------------------------------
# the two parts of the report
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def _logits(model: Callable[[Tensor], Tensor], loader) -> Tensor:
    return torch.cat([model(x).float() for x, _ in loader])


def digits_block(flows: Dict[str, Builder], calibration: int, cache_dir: Optional[str], log=print) -> Dict[str, Any]:
    """FP32 accuracy of the book's digits model, and the test accuracy of every other flow applied to it.

    ``int8_accuracy`` holds the INT8 flows (names containing ``int8``), ``accuracy`` every flow;
    ``agreement`` gives, for every flow, the fraction of test images whose top-1 class equals FP32's
    and the SQNR of its logits against FP32's (dB).
    """
    from .data import calibration_batches
    from .training import digits_loaders_for, get_digits_model

    model, meta = get_digits_model(cache_dir=cache_dir, progress=False)
    train_loader, test_loader = digits_loaders_for(meta)
    labels = torch.cat([y for _, y in test_loader])
    reference = _logits(model.eval(), test_loader)
    fp32 = (reference.argmax(1) == labels).float().mean().item()
    block: Dict[str, Any] = {
        "model": meta["arch"],
        "input_size": meta["size"],
        "fp32_accuracy": fp32,
        "train_seconds": meta["train_seconds"],
        "train_threads": meta.get("torch_threads"),
        "checkpoint": meta["path"],
        "n_test": len(test_loader.dataset),
        "calibration_batches": calibration,
        "int8_accuracy": {},
        "int8_size_mb": {},
        "accuracy": {},
        "size_mb": {},
        "agreement": {},
        "fp32_size_mb": state_size_mb(model),
        "errors": {},
    }
    log(f"digits: {meta['arch']} FP32 test accuracy {fp32:.4f} (trained in {meta['train_seconds']:.0f} s)")
    batches = calibration_batches(train_loader, calibration)
    for name, build in flows.items():
        try:
            qmodel = build(copy.deepcopy(model).eval(), batches)
            logits = _logits(qmodel, test_loader)
            acc = (logits.argmax(1) == labels).float().mean().item()
            block["accuracy"][name] = acc
            block["agreement"][name] = _agreement(reference, logits)
            if "int8" in name:
                block["int8_accuracy"][name] = acc
            try:
                block["size_mb"][name] = state_size_mb(qmodel)
                if "int8" in name:
                    block["int8_size_mb"][name] = block["size_mb"][name]
            except Exception as exc:  # size is a nicety; the accuracy still counts
                block["errors"][name] = "size: " + _short_error(exc)
            log(f"digits: {name} test accuracy {acc:.4f}")
        except Exception as exc:  # a broken flow is reported, not hidden and not fatal
            block["errors"][name] = _short_error(exc)
            log(f"digits: {name} FAILED: {_short_error(exc)}")
    return block


def latency_block(
    flows: Dict[str, Builder],
    models: Sequence[str],
    batches: Sequence[int],
    size: int,
    repeats: int,
    warmup: int,
    calibration: int,
    seed: int,
    log=print,
    budget_s: float = 0.0,
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Median latency of every flow for every (model, batch); random weights, seeded random inputs.
    ``budget_s``: seconds of timed rounds per (model, batch), at least ``repeats`` rounds (see
    :func:`time_interleaved`)."""
    from .models import VARIANTS

    results: List[Dict[str, Any]] = []
    errors: List[Dict[str, Any]] = []
    for arch in models:
        torch.manual_seed(seed)
        fp32 = VARIANTS[arch]().eval()  # random weights: nothing to download
        for n in batches:
            g = torch.Generator().manual_seed(seed + n)
            x = torch.randn(n, 3, size, size, generator=g)
            calib = [torch.randn(n, 3, size, size, generator=g) for _ in range(calibration)]
            runners: Dict[str, Callable[[Tensor], Any]] = {}
            sizes: Dict[str, float] = {}
            for name, build in flows.items():
                t0 = time.perf_counter()
                try:
                    runner = build(fp32 if name.startswith("fp32") else copy.deepcopy(fp32), calib)
                    sizes[name] = state_size_mb(runner)
                    runners[name] = runner
                    log(f"{arch} batch {n}: built {name} in {time.perf_counter() - t0:.1f} s")
                except Exception as exc:
                    errors.append({"model": arch, "batch": n, "flow": name, "stage": "build", "error": _short_error(exc)})
                    log(f"{arch} batch {n}: {name} FAILED to build: {_short_error(exc)}")
            # warm up one by one (the first call's output is the row's agreement with FP32), so a flow
            # that fails on its first call is dropped, not fatal
            outputs: Dict[str, Tensor] = {}
            for name in list(runners):
                try:
                    with torch.no_grad():
                        outputs[name] = runners[name](x).float()
                except Exception as exc:
                    errors.append({"model": arch, "batch": n, "flow": name, "stage": "run", "error": _short_error(exc)})
                    log(f"{arch} batch {n}: {name} FAILED to run: {_short_error(exc)}")
                    del runners[name]
            times = time_interleaved(runners, x, repeats=repeats, warmup=max(warmup - 1, 0), budget_s=budget_s)
            stats = {name: summarize(ts) for name, ts in times.items()}
            base = stats.get("fp32-eager")
            reference = outputs.get("fp32-eager")
            for name, st in stats.items():
                row = {"model": arch, "input": [n, 3, size, size], "flow": name, **st}
                row["speedup_vs_fp32"] = None if base is None or st["noisy"] or base["noisy"] else base["median_ms"] / st["median_ms"]
                row["size_mb"] = sizes[name]
                row["kernel"] = kernel_of(name, runners[name])
                if reference is not None:
                    row.update(_agreement(reference, outputs[name]))
                results.append(row)
                flag = "  NOISY (median > %.1fx min)" % NOISE_LIMIT if st["noisy"] else ""
                log(f"{arch} batch {n}: {name:28s} {st['median_ms']:9.2f} ms (min {st['min_ms']:.2f}){flag}")
    return results, errors


def run(
    quick: bool = False,
    threads: Optional[int] = None,
    repeats: Optional[int] = None,
    budget_s: Optional[float] = None,
    flows: Optional[Sequence[str]] = None,
    models: Optional[Sequence[str]] = None,
    batches: Optional[Sequence[int]] = None,
    size: int = 224,
    cache_dir: Optional[str] = None,
    seed: int = 0,
    log=print,
) -> Dict[str, Any]:
    """Build the whole report (a dict). ``quick``: resnet18, batch 1, few repeats (for tests and smoke runs).
    ``repeats``: the fewest timed rounds per (model, batch); ``budget_s``: the seconds of rounds each may
    take, so cheap ones get more (default 60; 0 in quick runs: exactly ``repeats``)."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    _silence()
    available = {**fp32_flows(), **int8_flows(), **deploy_flows()}
    if flows:
        unknown = [f for f in flows if f not in available]
        if unknown:
            raise ValueError(f"unknown flows {unknown}; available: {list(available)}")
        selected = {f: available[f] for f in available if f in flows}
    else:
        selected = available
    int8 = {k: v for k, v in selected.items() if not k.startswith("fp32")}
    models = list(models or (["resnet18"] if quick else ["resnet18", "resnet50"]))
    batches = list(batches or ([1] if quick else [1, 8]))
    repeats = repeats or (3 if quick else 20)
    budget_s = (0.0 if quick else 60.0) if budget_s is None else budget_s
    start = time.perf_counter()
    report: Dict[str, Any] = {"env": cpu_env(threads)}
    report["digits"] = digits_block(int8, calibration=2 if quick else 8, cache_dir=cache_dir, log=log)
    results, errors = latency_block(
        selected, models, batches, size, repeats=repeats, warmup=2 if quick else 3,
        calibration=1 if quick else 4, seed=seed, log=log, budget_s=budget_s,
    )
    report["results"] = results
    report["errors"] = errors
    report["settings"] = {
        "quick": quick, "repeats": repeats, "budget_s": budget_s, "max_rounds": MAX_ROUNDS, "models": models, "batches": batches, "size": size,
        "flows": list(selected), "seed": seed, "noise_limit": NOISE_LIMIT,
        "timing": f"interleaved round-robin in one process, fixed threads, untimed settle calls (>= {SETTLE_MS:.0f} ms) before each timed call; min, median, interquartile spread",
        "seconds": time.perf_counter() - start,
    }
    report["targets"] = check_targets(report)
    return report


# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------
TARGETS = {
    "int8_eager_speedup": 2.4,  # int8-eager-x86 over fp32-eager, resnet18 batch 1
    "pt2e_speedup": 3.0,  # int8-pt2e-inductor over fp32-eager, resnet18 batch 1
    "vs_torchvision": 1.05,  # our int8-eager-x86 time / torchvision's, worst (model, input)
    "digits_drop_points": 0.5,  # fp32 minus int8 test accuracy in points, worst INT8 flow
    "pytorch_vs_fastest": 1.05,  # fastest PyTorch path / fastest path of any runtime, resnet18 (batch 1 and 8)
    "pytorch_int8_vs_fastest": 1.2,  # fastest PyTorch INT8 path / fastest path of any runtime, resnet18 batch 1
}
"""The project's performance goals; :func:`check_targets` compares a report with them."""


def _is_pytorch(flow: str) -> bool:
    return not flow.startswith(("ort-", "ov-"))


def _fastest_ratio(report: Dict[str, Any], batch: int, keep: Callable[[str], bool]) -> Optional[float]:
    """Median of the fastest PyTorch flow passing ``keep`` / median of the fastest flow, from clean rows.

    None when a number is missing, or when a noisy row might change the answer: a noisy row counts
    only through its minimum (a time it really reached), so it is harmless when that minimum is
    slower than the clean median it could replace (the fastest of its side, or the fastest of all).
    """
    rows = [r for r in report.get("results", []) if r["model"] == "resnet18" and r["input"][0] == batch]
    clean = [r for r in rows if not r.get("noisy")]
    ours = [r["median_ms"] for r in clean if _is_pytorch(r["flow"]) and keep(r["flow"])]
    others = [r["median_ms"] for r in clean if not _is_pytorch(r["flow"])]
    if not ours or not others:
        return None
    best_ours, best_all = min(ours), min(ours + others)
    for r in rows:
        if r.get("noisy"):
            bound = best_ours if _is_pytorch(r["flow"]) and keep(r["flow"]) else best_all
            if r.get("min_ms") is None or r["min_ms"] < bound:  # it might be the fastest: not known
                return None
    return best_ours / best_all


def check_targets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each goal of :data:`TARGETS` with the value this report measured and whether it is met.

    ``value`` and ``met`` are None when the report lacks the numbers (a ``--quick`` run has no
    batch 8, a missing flow failed or was not selected, or a row needed was noisy). "PyTorch paths"
    are the flows not run by another runtime (names not starting with ``ort-`` or ``ov-``); a row
    flagged noisy makes the "fastest" comparisons of its batch unknown (None) when its minimum is
    faster than the clean median it would compete with: then it might be the fastest.
    """
    res = {(r["model"], r["input"][0], r["flow"]): r for r in report.get("results", [])}

    def speedup(flow: str) -> Optional[float]:
        r = res.get(("resnet18", 1, flow))
        return None if r is None else r["speedup_vs_fp32"]

    ratios = [
        r["median_ms"] / res[(m, n, "int8-eager-x86-torchvision")]["median_ms"]
        for (m, n, flow), r in res.items()
        if flow == "int8-eager-x86" and (m, n, "int8-eager-x86-torchvision") in res
        and not r.get("noisy") and not res[(m, n, "int8-eager-x86-torchvision")].get("noisy")  # a noisy ratio is no result
    ]
    d = report.get("digits", {})
    drops = [100 * (d["fp32_accuracy"] - a) for a in d.get("int8_accuracy", {}).values()] if "fp32_accuracy" in d else []
    rows = [
        ("int8-eager-x86 speedup, resnet18 batch 1", speedup("int8-eager-x86"), ">=", TARGETS["int8_eager_speedup"]),
        ("int8-pt2e-inductor speedup, resnet18 batch 1", speedup("int8-pt2e-inductor"), ">=", TARGETS["pt2e_speedup"]),
        ("int8-eager-x86 time / torchvision's (worst case)", max(ratios) if ratios else None, "<=", TARGETS["vs_torchvision"]),
        ("digits accuracy drop in points (worst INT8 flow)", max(drops) if drops else None, "<=", TARGETS["digits_drop_points"]),
    ]
    for n in (1, 8):
        rows.append((f"fastest PyTorch path / fastest of any runtime, resnet18 batch {n}",
                     _fastest_ratio(report, n, lambda f: True), "<=", TARGETS["pytorch_vs_fastest"]))
    rows.append(("fastest PyTorch INT8 path / fastest of any runtime, resnet18 batch 1",
                 _fastest_ratio(report, 1, lambda f: "int8" in f), "<=", TARGETS["pytorch_int8_vs_fastest"]))
    out = []
    for name, value, op, goal in rows:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out.append({"target": name, "value": value, "goal": f"{op} {goal}", "met": met})
    return out


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit] + " ..."


def to_markdown(report: Dict[str, Any]) -> str:
    """The report as markdown: the digits accuracies, then one latency table."""
    env, d, settings = report["env"], report["digits"], report.get("settings", {})
    lines = [
        "# resnet_edu benchmark",
        "",
        f"torch {env['torch']}, torchvision {env['torchvision']}, torchao {env['torchao']}; "
        f"{env['cpu']} ({env['cpu_count']} CPUs, {env['threads']} torch threads, capability {env['cpu_capability']}, "
        f"flags {' '.join(env['cpu_flags']) or '-'}); {env['date']}",
        "",
        f"## Digits ({d['model']} at {d['input_size']}x{d['input_size']}, {d['n_test']} test images)",
        "",
        "| flow | test accuracy | top-1 same as FP32 | logit SQNR dB | size MB |",
        "|---|---|---|---|---|",
        f"| fp32 (trained in {d['train_seconds']:.0f} s) | {d['fp32_accuracy']:.4f} | | | {d['fp32_size_mb']:.2f} |",
    ]
    accs = d.get("accuracy") or d["int8_accuracy"]
    for name, acc in accs.items():
        size = d.get("size_mb", {}).get(name, d["int8_size_mb"].get(name))
        agree = d.get("agreement", {}).get(name, {})
        same = "" if "top1_agree" not in agree else f"{agree['top1_agree']:.4f}"
        sqnr = "" if "sqnr_db" not in agree else f"{agree['sqnr_db']:.1f}"
        lines.append(f"| {name} | {acc:.4f} | {same} | {sqnr} | {'' if size is None else f'{size:.2f}'} |")
    for name, err in d["errors"].items():
        lines.append(f"| {name} | failed: {_one_line(err)} | | | |")
    lines += [
        "",
        f"## Latency (random weights and inputs; interleaved rounds: at least {settings.get('repeats', '?')}, more where a round is cheap, "
        f"within {settings.get('budget_s', 0):.0f} s per model and batch; noisy: median > {NOISE_LIMIT}x min)",
        "",
        "| model | input | flow | rounds | min ms | median ms | spread % | speedup vs fp32-eager | size MB | top-1 same | SQNR dB | kernel |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if r.get("noisy"):
            sp = f"noisy (median {r['median_ms'] / r['min_ms']:.1f}x min)"
        else:
            sp = "" if r["speedup_vs_fp32"] is None else f"{r['speedup_vs_fp32']:.2f}x"
        mn = f"{r['min_ms']:.2f}" if "min_ms" in r else ""
        spread = f"{r['spread_pct']:.0f}" if "spread_pct" in r else ""
        same = f"{r['top1_agree']:.2f}" if "top1_agree" in r else ""
        sqnr = f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else ""
        kernel = _one_line(r.get("kernel", {}).get("label", ""), 90)
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['flow']} | {r.get('repeats', '')} | {mn} | {r['median_ms']:.2f} | {spread} | {sp} | "
            f"{r['size_mb']:.2f} | {same} | {sqnr} | {kernel} |"
        )
    for e in report.get("errors", []):
        lines.append(f"| {e['model']} | batch {e['batch']} | {e['flow']} | failed ({e['stage']}): {_one_line(e['error'])} | | | | | | | | |")
    targets = report.get("targets") or check_targets(report)
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['target']} | {value} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_edu.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the JSON report (the .md goes beside it)")
    parser.add_argument("--quick", action="store_true", help="resnet18, batch 1, 3 repeats: a smoke test")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPUs)")
    parser.add_argument("--repeats", type=int, default=None, help="the fewest timed rounds (default 20; quick 3)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed rounds per model and batch: cheap ones get more rounds (default 60; quick 0)")
    parser.add_argument("--flows", default=None, help="comma-separated flow names (default: all available)")
    parser.add_argument("--models", default=None, help="comma-separated, e.g. resnet18,resnet50")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes, e.g. 1,8")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--cache-dir", default=None, help="digits model cache (default $RESNET_EDU_CACHE or ~/.cache/resnet_edu)")
    args = parser.parse_args(argv)

    def split(s: Optional[str]) -> Optional[List[str]]:
        return [p.strip() for p in s.split(",") if p.strip()] if s else None

    from .models import VARIANTS

    models = split(args.models)
    if models and any(m not in VARIANTS for m in models):
        parser.error(f"unknown models {[m for m in models if m not in VARIANTS]}; choose from {list(VARIANTS)}")
    try:
        batches = [int(b) for b in split(args.batches)] if args.batches else None
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.budget is not None and not 0 <= args.budget <= 3600:
        parser.error("--budget must be between 0 and 3600 seconds")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  (progress to stderr, table to stdout)
    try:
        report = run(
            quick=args.quick, threads=args.threads, repeats=args.repeats, budget_s=args.budget, flows=split(args.flows), models=models,
            batches=batches, size=args.size, cache_dir=args.cache_dir, log=log,
        )
    except ValueError as exc:
        parser.error(str(exc))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    md = to_markdown(report)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
