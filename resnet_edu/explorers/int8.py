"""The explorers of the trained digits model (chapter 6) and its INT8 versions (chapters 7-9)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .widgets import Control, Part, explorer


# --------------------------------------------------------------------------- chapter 6
def digit_image(model, x, y, indices: Optional[Sequence[int]] = None, **kw):
    """Chapter 6: one test image and the model's three most likely digits.

    ``indices``: the images the book precomputes (default: the misclassified ones and the first
    few others, at most 16); the live panel offers every index of ``x``."""
    import torch
    from ..visualization import html_bars, png_img

    n = len(y)
    if indices is None:
        with torch.no_grad():
            pred = torch.cat([model(x[i:i + 64]).argmax(1) for i in range(0, n, 64)])
        wrong = (pred != y).nonzero().flatten().tolist()[:8]
        indices = sorted(set(wrong) | set(range(16 - len(wrong))))
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices {bad} are outside the {n} test images")

    @torch.no_grad()
    def show(index: int) -> str:
        p = model(x[index:index + 1]).softmax(1)[0]
        top = p.topk(3)
        img = x[index, 0]
        return (f"<div style='display:flex;gap:1.5em;align-items:center;flex-wrap:wrap'>"
                f"<div>{png_img(img, width=112)}<br>test image {index}: a <b>{int(y[index])}</b></div>"
                f"<div style='min-width:14em'>"
                + html_bars([(f"digit {int(c)}", float(v)) for c, v in zip(top.indices, top.values)], scale=1.0,
                            fmt="{:.1%}") + "</div></div>")

    controls = {"index": Control(indices, indices[0], live=(0, n - 1))}
    return explorer(controls, [Part(show, ["index"])], **kw)



# --------------------------------------------------------------------------- chapter 7
def quant_error(tensors: Mapping[str, Any], **kw):
    """Chapter 7: fake-quantize a tensor at a number of bits and a scheme; histogram of ``x - x_hat`` and SQNR.

    ``tensors`` maps a label to a tensor; a label ending in ``activation`` is treated as an
    activation (per-channel schemes along axis 1)."""
    from .. import quantization as rq
    from ..visualization import svg_histogram

    if not isinstance(tensors, Mapping) or not tensors:
        raise ValueError("tensors must be a non-empty dict of label -> tensor")

    def show(tensor: str, bits: int, scheme: str) -> str:
        t = tensors[tensor]
        if scheme.startswith("per_channel") and t.dim() == 4 and tensor.endswith("activation"):
            t_hat = rq.fake_quantize(t, bits, scheme, axis=1)
        else:
            t_hat = rq.fake_quantize(t, bits, scheme)
        err = (t - t_hat).flatten()
        return svg_histogram(err.tolist(), bins=40,
                             title=f"{tensor}, {bits} bits, {scheme}: SQNR {rq.sqnr_db(t, t_hat):.1f} dB",
                             xlabel="error x - x_hat")

    names = list(tensors)
    controls = {"tensor": Control(names, names[0]), "bits": Control([2, 3, 4, 6, 8], 8, live=(2, 8, 1)),
                "scheme": Control(list(rq.SCHEMES), "per_channel_symmetric")}
    return explorer(controls, [Part(show, list(controls))], **kw)


# --------------------------------------------------------------------------- chapter 8
def ptq_settings(rows: Sequence[Mapping[str, Any]], **kw):
    """Chapter 8: accuracy and logit SQNR of the digits model for each quantization setting.

    ``rows``: one dict per setting with the keys ``bits``, ``scheme``, ``observer`` (the controls)
    and ``accuracy`` (0..1) and ``sqnr_db`` (what was measured), e.g. from
    :func:`ptq_settings_rows`. Every combination of the controls must have a row."""
    from ..visualization import html_bars

    if not rows:
        raise ValueError("rows is empty; pass ptq_settings_rows(...)")
    table = {}
    for r in rows:
        try:
            table[(int(r["bits"]), str(r["scheme"]), str(r["observer"]))] = (float(r["accuracy"]), float(r["sqnr_db"]))
        except KeyError as err:
            raise ValueError(f"each row needs bits, scheme, observer, accuracy and sqnr_db; missing {err}") from None
    bits = sorted({k[0] for k in table})
    schemes = sorted({k[1] for k in table})
    observers = sorted({k[2] for k in table})
    missing = [(b, s, o) for b in bits for s in schemes for o in observers if (b, s, o) not in table]
    if missing:
        raise ValueError(f"no row for {missing[:3]}")
    best_sqnr = max(v[1] for v in table.values())

    def show(bits: int, scheme: str, observer: str) -> str:
        acc, sq = table[(bits, scheme, observer)]
        return (f"<p>{bits}-bit weights, {scheme}, {observer} activation observer: accuracy <b>{100 * acc:.2f}%</b>, "
                f"logit SQNR <b>{sq:.1f} dB</b></p>"
                + html_bars([("accuracy (%)", 100 * acc), ("logit SQNR (dB)", max(sq, 0.0))],
                            scale=max(100.0, best_sqnr), fmt="{:.1f}"))

    controls = {"bits": Control(bits, bits[-1], live=bits), "scheme": Control(schemes, schemes[-1]),
                "observer": Control(observers, observers[0])}
    return explorer(controls, [Part(show, list(controls))], **kw)


def ptq_settings_rows(model, calibration, x_test, y_test, bits: Sequence[int] = (2, 4, 8),
                      schemes: Sequence[str] = ("per_tensor_symmetric", "per_channel_symmetric"),
                      observers: Sequence[str] = ("minmax", "histogram"),
                      backend: Optional[str] = None) -> List[Dict[str, Any]]:
    """Measure the rows :func:`ptq_settings` shows: eager PTQ of ``model`` for every
    combination of weight bits, weight scheme and activation observer; accuracy on ``(x_test, y_test)``
    and SQNR of the logits against the float model. ``calibration``: a list of input batches;
    ``backend``: the quantized engine (default ``quantization.default_engine()``: x86, or qnnpack on
    ARM); activations use 7 bits only where the engine's kernel here sums int16 pairs (no VNNI)."""
    import torch
    from torch.ao.quantization import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver, QConfig
    from .. import quantization as rq

    obs = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
    unknown = [o for o in observers if o not in obs]
    if unknown:
        raise ValueError(f"observers must be among {list(obs)}, got {unknown}")
    for b in bits:
        if not 2 <= int(b) <= 8:
            raise ValueError(f"bits must be between 2 and 8, got {b}")
    with torch.no_grad():
        ref = model.eval()(x_test)
    backend = backend or rq.default_engine()
    reduce = rq.activation_bits_for(backend) == 7  # 7-bit where the kernel sums int16 pairs
    rows = []
    for b in bits:
        qmax = 2 ** (int(b) - 1) - 1
        for s in schemes:
            if s == "per_channel_symmetric":
                w = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                       quant_min=-qmax, quant_max=qmax)
            elif s == "per_tensor_symmetric":
                w = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                             quant_min=-qmax, quant_max=qmax)
            else:
                raise ValueError(f"schemes must be per_tensor_symmetric or per_channel_symmetric, got {s!r}")
            for o in observers:
                qconfig = QConfig(activation=obs[o].with_args(reduce_range=reduce), weight=w)
                qm = rq.quantize_ptq(model, calibration, backend=backend, qconfig=qconfig, progress=False)
                with torch.no_grad():
                    logits = qm(x_test)
                rows.append({"bits": int(b), "scheme": s, "observer": o,
                             "accuracy": (logits.argmax(1) == y_test).float().mean().item(),
                             "sqnr_db": rq.sqnr_db(ref, logits)})
    return rows


# --------------------------------------------------------------------------- chapter 9
def _count_words(items: Sequence[str]) -> str:
    counts: Dict[str, int] = {}
    for i in items:
        counts[i] = counts.get(i, 0) + 1
    return ", ".join(f"{k} &times;{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fusion_summary(setting: str, result: Mapping[str, Any]) -> str:
    from ..visualization import rows_to_html

    ops, kernels = list(result["converted"]), list(result["kernels"])
    n_conv = ops.count("conv2d")
    int8_conv = [k for k in kernels if k["label"].startswith("int8 conv")]
    with_add = sum("add" in k["post_ops"].split("+") for k in int8_conv)
    float_conv = sum(k["label"] == "float conv" for k in kernels)
    linear = [k["label"] for k in kernels if "linear" in k["label"] and not k["label"].startswith("C++")]
    loops = sum(k["call"].startswith("cpp_fused") for k in kernels)
    said = [f"{len(int8_conv)} of the graph's {n_conv} convolutions run as oneDNN int8 kernels"
            + (f" ({with_add} with the residual add and ReLU fused in)" if with_add else "")]
    if float_conv:
        said.append(f"{float_conv} as float convolutions")
    if linear:
        said.append("the classifier as " + " and ".join(sorted(set(linear))))
    if loops:
        said.append(f"{loops} calls go to C++ loops inductor generated (quantize, dequantize, pooling)")
    groups: Dict[Tuple[str, str, str], int] = {}
    for k in kernels:
        key = (k["label"], k["call"], k["output"])
        groups[key] = groups.get(key, 0) + 1
    rows = [{"kernel": label, "called as": f"<code>{call}</code>", "output": out, "calls": n}
            for (label, call, out), n in groups.items()]
    counters = result.get("counters") or {}
    matched = {k[: -len("_matcher_count")]: v for k, v in counters.items()
               if k.endswith("_matcher_count") and k != "pattern_matcher_count"}
    text = (f"<p><b>{setting}</b>: compiled with inductor (freezing on), the generated code makes "
            f"{len(kernels)} kernel calls: " + "; ".join(said) + ".</p>" + rows_to_html(rows))
    text += f"<p><code>convert_pt2e</code> had left {len(ops)} operators: {_count_words(ops)}.</p>"
    if matched:
        text += ("<p>Inductor's pattern matcher, this compilation: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(matched.items())) + ".</p>")
    return text


def pt2e_fusion(results: Mapping[str, Mapping[str, Any]], **kw):
    """Chapter 9: for each quantizer setting, what inductor really makes of the converted PT2E graph:
    the kernels its generated code calls (oneDNN int8 convolutions with their fused post-ops, float
    ones, its own C++ loops), next to the operators ``convert_pt2e`` left.

    ``results`` maps a setting's label to ``{"converted": ops, "kernels": kernels, "counters": ...}``
    as :func:`pt2e_settings_ops` returns it (``ops`` from :func:`resnet_edu.visualization.pt2e_graph_ops`,
    ``kernels`` and ``counters`` from :func:`~resnet_edu.visualization.pt2e_inductor_kernels`)."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict of setting -> {'converted': ops, 'kernels': kernels}")
    for k, v in results.items():
        if not isinstance(v, Mapping) or not {"converted", "kernels"} <= set(v) or set(v) - {"converted", "kernels", "counters"}:
            raise ValueError(f"results[{k!r}] must be a dict with the keys 'converted', 'kernels' (and 'counters')")
    labels = list(results)

    def show(setting: str) -> str:
        return _fusion_summary(setting, results[setting])

    return explorer({"setting": Control(labels, labels[0])}, [Part(show, ["setting"])], **kw)


PT2E_SETTINGS = ("8-bit activations", "7-bit activations (reduce_range)", "fc left in float", "dynamic activations")


def pt2e_settings_ops(model, calibration, settings: Sequence[str] = PT2E_SETTINGS) -> Dict[str, Dict[str, Any]]:
    """Quantize ``model`` with PT2E (torchao's ``X86InductorQuantizer``) once per setting, compile each
    converted graph as the book's PT2E path does (``torch.compile``, inductor, freezing) and return
    ``{"converted": pt2e_graph_ops(gm), **pt2e_inductor_kernels(gm, calibration[0])}``: the converted
    graph's operators, the kernels inductor's generated code calls, and its pattern-matcher counters.

    Settings: ``"8-bit activations"`` and ``"7-bit activations (reduce_range)"`` (the default config
    with ``reduce_range`` off/on), ``"fc left in float"`` (``set_module_name_qconfig("fc", None)``),
    ``"dynamic activations"`` (``is_dynamic=True``: activation scales computed at run time).
    ``calibration``: a list of input batches. The model is exported once (``rq.export_for_pt2e``); each
    setting prepares a copy of that graph."""
    import copy

    import torch
    from .. import quantization as rq
    from ..visualization import pt2e_graph_ops, pt2e_inductor_kernels

    if not rq.pt2e_available():
        raise RuntimeError("pt2e_settings_ops needs torchao (pip install 'resnet-edu[pt2e]')")
    unknown = [x for x in settings if x not in PT2E_SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose from {list(PT2E_SETTINGS)}")
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration must hold at least one input batch")
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with torch.random.fork_rng(devices=[]):
        exported = rq.export_for_pt2e(copy.deepcopy(model).eval(), batches[0])
    out = {}
    for setting in settings:
        q = xiq.X86InductorQuantizer()
        q.set_global(xiq.get_default_x86_inductor_quantization_config(
            reduce_range=setting.startswith("7-bit"), is_dynamic=setting.startswith("dynamic")))
        if setting == "fc left in float":
            q.set_module_name_qconfig("fc", None)
        prepared = prepare_pt2e(copy.deepcopy(exported), q)
        with torch.no_grad():
            for x in batches:
                prepared(x)
        converted = convert_pt2e(prepared)
        rq.drop_unused_attributes(converted)
        out[setting] = {"converted": pt2e_graph_ops(converted), **pt2e_inductor_kernels(converted, batches[0])}
    return out
