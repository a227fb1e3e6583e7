"""Figures the chapters share, and the small HTML/SVG pictures the explorers use.

The explorers (:mod:`resnet_edu.explorers`) store every state of a panel in the book's page, so
their pictures are plain HTML or inline SVG of a few kilobytes (``html_bars``, ``data_flow_html``,
``svg_lines``, ``svg_histogram``, ``png_img``) rather than PNG figures of tens of kilobytes.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import matplotlib.pyplot as plt

__all__ = [
    "rows_to_html",
    "html_bars",
    "data_flow_html",
    "svg_lines",
    "svg_histogram",
    "png_img",
    "plot_stage_params",
    "plot_receptive_field",
    "plot_gradient_norms",
    "plot_training_curves",
    "plot_data_flow",
    "plot_params_vs_macs",
    "plot_stage_breakdown",
    "plot_vpmaddubsw_vs_vnni",
    "plot_quant_border",
    "plot_pt2e_graph",
    "pt2e_graph_ops",
    "pt2e_inductor_kernels",
    "inductor_kernels_in_code",
]

BLUE, ORANGE, GREY = "#2f6db5", "#e67e22", "#7f8c8d"


def html_bars(items: Sequence[Tuple[str, float]], scale: float | None = None, fmt: str = "{:,}", color: str = BLUE) -> str:
    """Horizontal bars as an HTML table: one ``(label, value)`` per bar, widths relative to ``scale``
    (default: the largest value); the value is printed after each bar with ``fmt``."""
    items = [(str(k), float(v)) for k, v in items]
    if not items:
        raise ValueError("html_bars needs at least one (label, value)")
    if any(v < 0 or math.isnan(v) for _, v in items):
        raise ValueError(f"html_bars draws non-negative values only, got {items}")
    top = float(scale) if scale else max(v for _, v in items) or 1.0
    rows = []
    for label, v in items:
        pct = max(0.0, min(100.0, 100.0 * v / top))
        shown = fmt.format(int(v) if fmt in ("{:,}", "{}") and float(v).is_integer() else v)
        bar = f"<div style='width:{pct:.2f}%'></div>" if color == BLUE else \
            f"<div style='width:{pct:.2f}%;background:{color}'></div>"
        rows.append(f"<tr><td>{_html.escape(label)}</td><td>{bar}</td><td>{shown}</td></tr>")
    return "<table class='rx-bars'>" + "".join(rows) + "</table>"


# The few style rules of the explorers' HTML pictures, shown once per explorer (a <style> element
# in the explorer's first child), so the thousands of stored states carry class names only.
EXPLORER_CSS = (
    ".rx-bars{border-collapse:collapse;width:100%;max-width:40em;table-layout:fixed}"
    ".rx-bars td{padding:1px 6px 1px 0;white-space:nowrap;border:0;overflow:hidden}"
    ".rx-bars td:first-child{width:8em}.rx-bars td:nth-child(3){width:7em}"
    f".rx-bars td div{{background:{BLUE};height:0.9em;min-width:1px}}"
    ".rx-flow{display:flex;align-items:center;gap:6px;overflow-x:auto;padding:4px 0}"
    ".rx-flow>div{display:flex;flex-direction:column;align-items:center;font-size:11px;line-height:1.2}"
    ".rx-flow>div>div{opacity:0.85;margin:2px 0}"
    ".rx-flow i{color:#555;font-style:normal}"
)


def data_flow_html(rows: Sequence[Dict[str, Any]], input_shape: Sequence[int]) -> str:
    """The data flow through a ResNet as a row of HTML boxes (like :func:`plot_data_flow`), from
    ``trace_shapes(model, depth=0)`` rows: box height grows with the side, width with log2 of the channels."""
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    keep = ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    by = {r.get("name"): r for r in rows}
    missing = [k for k in keep if k not in by]
    if missing:
        raise ValueError(f"rows must come from trace_shapes(resnet, depth=0); missing {missing}")
    steps = [("input", tuple(input_shape), 0)] + [(k, tuple(by[k]["shape"]), by[k].get("params", 0)) for k in keep]
    side0 = max(int(input_shape[2]), 1)
    colors = {"input": "#999999", "conv1": ORANGE, "maxpool": ORANGE, "avgpool": GREY, "fc": GREY}
    boxes = []
    for name, shape, params in steps:
        c = shape[1]
        h = shape[2] if len(shape) == 4 else 1
        w = shape[3] if len(shape) == 4 else 1
        height = 14 + 90 * math.sqrt(h / side0)
        width = 26 + 7 * math.log2(max(c, 1))
        label = f"{c}x{h}x{w}" if len(shape) == 4 else f"{c}"
        extra = f"<br><i>{params / 1e6:.2f}M</i>" if params else ""
        boxes.append(f"<div><span>{label}</span><div style='width:{width:.0f}px;height:{height:.0f}px;"
                     f"background:{colors.get(name, BLUE)}'></div><span><b>{name}</b>{extra}</span></div>")
    return "<div class='rx-flow'>" + "&rarr;".join(boxes) + "</div>"


def _ticks(lo: float, hi: float, n: int = 4) -> List[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def svg_lines(series: Mapping[str, Sequence[float]], log: bool = False, title: str = "", xlabel: str = "",
              ylabel: str = "", width: int = 560, height: int = 240) -> str:
    """A line chart as inline SVG: one polyline per entry of ``series`` (x = position in the list)."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must be a non-empty dict of label -> values")
    vals = {k: [float(v) for v in vs] for k, vs in series.items()}
    if any(not vs for vs in vals.values()):
        raise ValueError("every series needs at least one value")
    if log and any(v <= 0 for vs in vals.values() for v in vs):
        raise ValueError("log scale needs positive values")
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    ys = [f(v) for vs in vals.values() for v in vs]
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(vs) for vs in vals.values())
    L, R, T, B = 62, 12, 26, 38
    pw, ph = width - L - R, height - T - B
    px = lambda i: L + (pw * i / max(n - 1, 1))
    py = lambda y: T + ph * (1 - (y - lo) / (hi - lo))
    colors = [BLUE, ORANGE, "#27ae60", "#8e44ad"]
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' style='max-width:{width}px;width:100%' "
           f"font-family='sans-serif' font-size='11'>",
           f"<text x='{width / 2}' y='15' text-anchor='middle' font-size='12'>{_html.escape(title)}</text>",
           f"<line x1='{L}' y1='{T + ph}' x2='{L + pw}' y2='{T + ph}' stroke='#333'/>",
           f"<line x1='{L}' y1='{T}' x2='{L}' y2='{T + ph}' stroke='#333'/>"]
    for t in _ticks(lo, hi):
        label = f"{10 ** t:.2g}" if log else f"{t:.3g}"
        out.append(f"<text x='{L - 4}' y='{py(t) + 4:.1f}' text-anchor='end'>{label}</text>")
    for i in sorted({0, n - 1, (n - 1) // 2}):
        out.append(f"<text x='{px(i):.1f}' y='{T + ph + 14}' text-anchor='middle'>{i}</text>")
    out.append(f"<text x='{L + pw / 2}' y='{height - 6}' text-anchor='middle'>{_html.escape(xlabel)}</text>")
    out.append(f"<text transform='translate(12,{T + ph / 2}) rotate(-90)' text-anchor='middle'>{_html.escape(ylabel)}</text>")
    for k, (label, vs) in enumerate(vals.items()):
        color = colors[k % len(colors)]
        pts = " ".join(f"{px(i):.1f},{py(f(v)):.1f}" for i, v in enumerate(vs))
        out.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.6' points='{pts}'/>")
        out.append(f"<text x='{L + 8 + 90 * k}' y='{T + 10}' fill='{color}'>&#9632; {_html.escape(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def svg_histogram(values: Sequence[float], bins: int = 40, title: str = "", xlabel: str = "",
                  width: int = 560, height: int = 220) -> str:
    """A histogram of ``values`` as inline SVG (``bins`` equal bins between the smallest and largest value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("svg_histogram needs at least one value")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-30:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    top = max(counts)
    L, R, T, B = 50, 12, 26, 38
    pw, ph = width - L - R, height - T - B
    bw = pw / bins
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' style='max-width:{width}px;width:100%' "
           f"font-family='sans-serif' font-size='11'>",
           f"<text x='{width / 2}' y='15' text-anchor='middle' font-size='12'>{_html.escape(title)}</text>"]
    for i, c in enumerate(counts):
        if c:
            h = ph * c / top
            out.append(f"<rect x='{L + i * bw:.1f}' y='{T + ph - h:.1f}' width='{max(bw - 1, 0.5):.1f}' height='{h:.1f}' fill='{BLUE}'/>")
    out.append(f"<line x1='{L}' y1='{T + ph}' x2='{L + pw}' y2='{T + ph}' stroke='#333'/>")
    out.append(f"<text x='{L - 4}' y='{T + 4}' text-anchor='end'>{top}</text><text x='{L - 4}' y='{T + ph}' text-anchor='end'>0</text>")
    for x, label in ((L, f"{lo:.3g}"), (L + pw / 2, f"{(lo + hi) / 2:.3g}"), (L + pw, f"{hi:.3g}")):
        out.append(f"<text x='{x:.1f}' y='{T + ph + 14}' text-anchor='middle'>{label}</text>")
    out.append(f"<text x='{L + pw / 2}' y='{height - 6}' text-anchor='middle'>{_html.escape(xlabel)} (count per bin)</text>")
    out.append("</svg>")
    return "".join(out)


def png_img(image, width: int = 112) -> str:
    """A 2-D tensor/array as an ``<img>`` with an inline PNG (grey, dark = high), drawn ``width`` px wide, pixelated."""
    import numpy as np
    from PIL import Image

    a = np.asarray(image, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"png_img needs a 2-D image, got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    scaled = (255 * (1 - (a - lo) / (hi - lo if hi > lo else 1.0))).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(scaled, mode="L").save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<img src='data:image/png;base64,{data}' width='{width}' height='{width * a.shape[0] // a.shape[1]}' "
            f"style='image-rendering:pixelated;border:1px solid #ccc' alt='test image'>")


def rows_to_html(rows: Sequence[Dict[str, Any]], columns: Sequence[str] | None = None, formats: Dict[str, str] | None = None) -> str:
    """A plain HTML table from a list of dicts (no pandas needed); ``formats`` maps column -> format spec.

    Cells are HTML (chapters put ``<code>`` in them): a text that may hold ``<``, ``>`` or ``&`` of its
    own goes through ``html.escape`` first.
    """
    if not rows:
        return "<p><em>(no rows)</em></p>"
    columns = list(columns or rows[0].keys())
    formats = formats or {}

    def cell(col: str, value: Any) -> str:
        if col in formats and value is not None:
            return format(value, formats[col])
        return "" if value is None else str(value)

    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(c, r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table class='resnet-edu-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_stage_params(rows: Sequence[Dict[str, Any]], title: str = "", ax=None):
    """Bar chart of parameters per top-level part of a ResNet, from ``trace_shapes(model, depth=0)`` rows.

    Each bar is labelled with its output shape (channels x H x W).
    """
    parts: List[Dict[str, Any]] = [r for r in rows if r["params"] > 0 or r["name"] in ("maxpool", "avgpool")]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["name"] for r in parts]
    values = [r["params"] / 1e6 for r in parts]
    bars = ax.bar(names, values, color="#2f6db5")
    for bar, r in zip(bars, parts):
        shape = r["shape"]
        label = "x".join(str(s) for s in shape[1:]) if shape else ""
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("parameters (millions)")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def _need_mapping(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{name} must be a non-empty dict of label -> data, got {type(value).__name__} {value!r:.80}")


def plot_receptive_field(maps: Mapping[str, Any], axes=None):
    """One heat map per entry of ``maps`` (label -> 2-D tensor/array from ``analysis.receptive_field_map``).

    Coloured cells are input pixels that reach the centre output pixel (the number is how many paths);
    the centre is outlined.
    """
    import numpy as np

    _need_mapping("maps", maps)
    arrays = {k: np.asarray(v, dtype=float) for k, v in maps.items()}
    for k, a in arrays.items():
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"map {k!r} must be a square 2-D array, got shape {a.shape}")
    if axes is None:
        _, axes = plt.subplots(1, len(arrays), figsize=(3.2 * len(arrays), 3.4))
    axes = list(np.atleast_1d(axes))
    if len(axes) != len(arrays):
        raise ValueError(f"need one axis per map: {len(arrays)} maps, {len(axes)} axes")
    for ax, (label, a) in zip(axes, arrays.items()):
        n = a.shape[0]
        ax.imshow(np.where(a > 0, a, np.nan), cmap="Blues", vmin=0, vmax=max(a.max(), 1) * 1.6)
        for i in range(n):
            for j in range(n):
                if a[i, j] > 0:
                    ax.text(j, i, f"{a[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.add_patch(plt.Rectangle((n // 2 - 0.5, n // 2 - 0.5), 1, 1, fill=False, ec="#c0392b", lw=2))
        ax.set_xticks([x - 0.5 for x in range(n + 1)], minor=True)
        ax.set_yticks([x - 0.5 for x in range(n + 1)], minor=True)
        ax.grid(which="minor", color="#bbbbbb", lw=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        cols = np.flatnonzero(a.sum(axis=0) > 0)
        extent = int(cols.max() - cols.min() + 1) if cols.size else 0
        ax.set_title(f"{label}\n(spans {extent}x{extent} pixels)", fontsize=10)
    return axes


def plot_gradient_norms(norms: Mapping[str, Sequence[Tuple[str, float]]], ax=None):
    """Gradient norm per conv layer (input side on the left), one line per model, log scale.

    ``norms`` maps a label to the list that ``analysis.gradient_norms`` returns.
    """
    _need_mapping("norms", norms)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    for label, rows in norms.items():
        values = [float(v) for _, v in rows]
        if not values:
            raise ValueError(f"norms[{label!r}] is empty")
        ax.plot(range(len(values)), values, marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("conv layer (0 = first, next to the input)")
    ax.set_ylabel("gradient norm of the weights")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_training_curves(histories: Mapping[str, Sequence[Dict[str, float]]], axes=None):
    """Training loss and test accuracy per epoch, one line per model, from ``training.fit`` histories."""
    _need_mapping("histories", histories)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    if len(axes) != 2:
        raise ValueError(f"need 2 axes (loss, accuracy), got {len(axes)}")
    for label, history in histories.items():
        try:
            epochs = [h["epoch"] for h in history]
            loss = [h["train_loss"] for h in history]
            acc = [100 * h["test_accuracy"] for h in history]
        except (KeyError, TypeError):
            raise ValueError(
                f"histories[{label!r}] must be a list of dicts with epoch, train_loss, test_accuracy (what fit returns)"
            ) from None
        axes[0].plot(epochs, loss, marker="o", label=label)
        axes[1].plot(epochs, acc, marker="o", label=label)
    axes[0].set_ylabel("training loss")
    axes[1].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False)
    return axes


def plot_data_flow(rows: Sequence[Dict[str, Any]], input_shape: Sequence[int], title: str = "", ax=None):
    """The data flow through a ResNet as a row of boxes, one per tensor, from ``trace_shapes(model, depth=0)``.

    Box height grows with the spatial side (H), box width with log2 of the channels; the label gives
    C x H x W. Only the parts that change the shape are drawn (input, conv1, maxpool, layer1..4, avgpool, fc).
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    keep = ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    by = {r.get("name"): r for r in rows}
    missing = [k for k in keep if k not in by]
    if missing:
        raise ValueError(f"rows must come from trace_shapes(resnet, depth=0); missing {missing}")
    steps = [("input", tuple(input_shape))] + [(k, tuple(by[k]["shape"])) for k in keep]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.6))
    side0 = steps[0][1][2]
    x = 0.0
    colors = {"input": "#999999", "conv1": "#e67e22", "maxpool": "#e67e22", "avgpool": "#7f8c8d", "fc": "#7f8c8d"}
    centers = []
    for name, shape in steps:
        c = shape[1]
        h = shape[2] if len(shape) == 4 else 1
        w = len(shape) == 4 and shape[3] or 1
        height = 0.25 + 2.0 * math.sqrt(h / side0)
        width = 0.35 + 0.12 * math.log2(c)
        ax.add_patch(plt.Rectangle((x, -height / 2), width, height, color=colors.get(name, "#2f6db5"), alpha=0.85))
        label = f"{c}x{h}x{w}" if len(shape) == 4 else f"{c}"
        ax.text(x + width / 2, height / 2 + 0.08, label, ha="center", va="bottom", fontsize=8)
        ax.text(x + width / 2, -height / 2 - 0.08, name, ha="center", va="top", fontsize=9)
        centers.append((x, x + width))
        x += width + 0.45
    for (a0, a1), (b0, _) in zip(centers, centers[1:]):
        ax.annotate("", xy=(b0 - 0.03, 0), xytext=(a1 + 0.03, 0), arrowprops=dict(arrowstyle="->", color="#333333"))
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-1.8, 1.8)
    ax.axis("off")
    ax.set_title(title)
    return ax


def plot_params_vs_macs(rows: Sequence[Dict[str, Any]], ax=None):
    """Scatter of parameters (millions) against GMACs, one labelled point per ``variant_table`` row."""
    if not rows:
        raise ValueError("rows is empty; pass analysis.variant_table() rows")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    for r in rows:
        try:
            points.append((r["macs"] / 1e9, r["params"] / 1e6, r["name"], r.get("block")))
        except (KeyError, TypeError):
            raise ValueError("each row needs name, params and macs (what analysis.variant_table returns)") from None
    xspan = max(p[0] for p in points) - min(p[0] for p in points) or 1.0
    yspan = max(p[1] for p in points) - min(p[1] for p in points) or 1.0
    placed: List[Tuple[float, float]] = []
    for x, y, name, block in sorted(points, key=lambda p: (p[0], p[1])):
        ax.scatter([x], [y], color="#2f6db5" if block == "Bottleneck" else "#e67e22", s=30)
        near = sum(abs(x - px) / xspan < 0.06 and abs(y - py) / yspan < 0.06 for px, py in placed)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 3 - 11 * near), fontsize=8)
        placed.append((x, y))
    ax.set_xlabel("GMACs per 224x224 image")
    ax.set_ylabel("parameters (millions)")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_stage_breakdown(breakdown: Mapping[str, Mapping[str, int]], ax=None):
    """Stacked horizontal bars: each model's parameters split into stem, layer1..4 and fc
    (``analysis.stage_parameters`` per model)."""
    _need_mapping("breakdown", breakdown)
    parts = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    for name, b in breakdown.items():
        if not isinstance(b, Mapping) or set(b) != set(parts):
            raise ValueError(f"breakdown[{name!r}] must have exactly the keys {parts} (analysis.stage_parameters)")
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.45 * len(breakdown) + 1.2))
    names = list(breakdown)[::-1]
    left = [0.0] * len(names)
    cmap = plt.get_cmap("tab10")
    for i, part in enumerate(parts):
        vals = [breakdown[n][part] / 1e6 for n in names]
        ax.barh(names, vals, left=left, color=cmap(i), label=part)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("parameters (millions)")
    ax.legend(ncol=6, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def plot_vpmaddubsw_vs_vnni(weight: int = -128, ax=None):
    """Why fbgemm uses 7-bit activations without VNNI: one pair of ``uint8 x int8`` products, summed
    the way ``vpmaddubsw`` does (into an int16 that saturates at 32,767) and the way VNNI's
    ``vpdpbusd`` does (four products straight into an int32), for 8-bit and 7-bit activations.

    The bars are computed here: ``a * weight`` for the largest activation (255 or 127), two of them
    added in int16 with saturation, and the exact sum that int32 accumulation keeps."""
    import numpy as np

    if not -128 <= int(weight) <= 127:
        raise ValueError(f"weight must be an int8 value (-128..127), got {weight}")
    w = int(weight)
    int16_max, int16_min = 2 ** 15 - 1, -(2 ** 15)
    cases = []
    for bits, a in (("8-bit activations", 255), ("7-bit activations (reduce_range)", 127)):
        exact = 2 * a * w
        sat = int(np.clip(exact, int16_min, int16_max))
        cases.append((bits, a, exact, sat))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4))
    labels, exact_vals, sat_vals = [], [], []
    for bits, a, exact, sat in cases:
        labels.append(f"{bits}\n{a}x({w}) + {a}x({w})")
        exact_vals.append(abs(exact))
        sat_vals.append(abs(sat))
    x = np.arange(len(cases))
    ax.bar(x - 0.2, sat_vals, width=0.4, color=ORANGE, label="vpmaddubsw: pair summed in int16 (saturates)")
    ax.bar(x + 0.2, exact_vals, width=0.4, color=BLUE, label="VNNI vpdpbusd: summed in int32 (exact)")
    ax.axhline(abs(int16_min if w < 0 else int16_max), color="#c0392b", ls="--", lw=1)
    ax.text(len(cases) - 0.5, abs(int16_min if w < 0 else int16_max), " int16 limit", color="#c0392b", va="bottom", ha="right",
            fontsize=8)
    for i, (bits, a, exact, sat) in enumerate(cases):
        ax.annotate(f"{sat:,}", (i - 0.2, abs(sat)), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{exact:,}", (i + 0.2, abs(exact)), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("|sum of the pair|")
    ax.set_ylim(0, max(exact_vals) * 1.25)
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def _is_quantized_type(m) -> bool:
    mod = type(m).__module__
    return mod.startswith("torch.ao.nn.quantized") or mod.startswith("torch.ao.nn.intrinsic.quantized")


def _domain(module, converted: bool) -> str:
    """float / int8 / quantize / dequantize for one top-level part. Layers with weights are int8 only
    when they are quantized modules; weightless ones (pooling, ReLU, Identity) run on whatever they
    receive, so they are int8 between the stubs of a converted model."""
    import torch.ao.nn.quantized as nnq
    import torch.nn as nn
    from torch.ao.quantization import DeQuantStub, QuantStub

    if isinstance(module, (QuantStub, nnq.Quantize)):
        return "quantize"
    if isinstance(module, (DeQuantStub, nnq.DeQuantize)):
        return "dequantize"
    mods = list(module.modules())
    if any(isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and not _is_quantized_type(m) for m in mods):
        return "float"
    if any(_is_quantized_type(m) for m in mods):
        return "int8"
    return "int8" if converted else "float"


def plot_quant_border(model, ax=None):
    """The float/int8 border of an eager-mode quantized model: its top-level parts in forward order
    (``quant`` first, ``dequant`` last), coloured by the domain each works in, read from the modules'
    types (``torch.ao.nn.quantized`` = int8; weightless parts such as pooling follow their input).
    Works on the prepared model (all float, observers only) and the converted one."""
    children = list(model.named_children())
    if not children:
        raise ValueError("the model has no submodules to draw")
    names = [n for n, _ in children]
    if "quant" not in names or "dequant" not in names:
        raise ValueError(f"expected a quantizable model with 'quant' and 'dequant' stubs, got parts {names}")
    order = [c for c in children if c[0] == "quant"] + [c for c in children if c[0] not in ("quant", "dequant")] + \
        [c for c in children if c[0] == "dequant"]
    colors = {"float": GREY, "int8": BLUE, "quantize": ORANGE, "dequantize": ORANGE}
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 2.6))
    x = 0.0
    ax.add_patch(plt.Rectangle((x, -0.4), 0.9, 0.8, color="#bbbbbb"))
    ax.text(x + 0.45, 0, "input\nfloat", ha="center", va="center", fontsize=8)
    x += 1.1
    converted = any(_is_quantized_type(m) for m in model.modules())
    for name, m in order:
        dom = _domain(m, converted)
        ax.add_patch(plt.Rectangle((x, -0.4), 0.9, 0.8, color=colors[dom], alpha=0.9))
        ax.text(x + 0.45, 0.55, name, ha="center", va="bottom", fontsize=8, rotation=30)
        ax.text(x + 0.45, 0, type(m).__name__.replace("Quantizable", "Q")[:10], ha="center", va="center", fontsize=6,
                color="white")
        if dom in ("quantize", "dequantize"):
            edge = x + (0.9 if dom == "quantize" else 0.0)
            ax.axvline(edge + (0.1 if dom == "quantize" else -0.1), color="#c0392b", ls="--", lw=1.2)
        x += 1.1
    ax.add_patch(plt.Rectangle((x, -0.4), 0.9, 0.8, color="#bbbbbb"))
    ax.text(x + 0.45, 0, "logits\nfloat", ha="center", va="center", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in ("float", "quantize", "int8")]
    ax.legend(handles, ["float32", "border (QuantStub / DeQuantStub)", "int8 (quantized modules)"], frameon=False,
              fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=3)
    ax.set_xlim(-0.1, x + 1.0)
    ax.set_ylim(-0.7, 1.4)
    ax.axis("off")
    return ax


def _op_name(node) -> str:
    t = str(node.target)
    parts = t.split(".")
    if t.startswith("quantized_decomposed."):
        return parts[1]
    if t.startswith("aten.") and len(parts) >= 2:
        return parts[1]
    return getattr(node.target, "__name__", parts[-1])


def _graph(gm):
    import torch

    for attr in ("model", "compiled", "_orig_mod"):
        gm = getattr(gm, attr, gm)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValueError(f"expected an exported or converted torch.fx.GraphModule, got {type(gm).__name__}")
    return gm.graph


def _ordered_calls(gm) -> list:
    """``call_function`` nodes in graph order, except that a node fed only by constants (a weight's
    ``dequantize``) is moved to just before its first user, so the list reads along the data path."""
    nodes = [n for n in _graph(gm).nodes if n.op == "call_function"]
    calls = set(nodes)

    def constant(n) -> bool:
        return not any(a in calls or a.op == "placeholder" for a in n.all_input_nodes)

    floating = {n for n in nodes if constant(n)}
    out, placed = [], set()
    for n in nodes:
        if n in floating:
            continue
        for a in n.all_input_nodes:
            if a in floating and a not in placed:
                out.append(a)
                placed.add(a)
        out.append(n)
    out += [n for n in nodes if n in floating and n not in placed]
    return out


def pt2e_graph_ops(gm) -> List[str]:
    """The ``call_function`` operators of an exported or converted PT2E graph along the data path
    (a weight's ``dequantize`` just before its convolution), short names (``conv2d``,
    ``quantize_per_tensor``, ``dequantize_per_channel``, ``add_``, ...)."""
    return [_op_name(n) for n in _ordered_calls(gm)]


def _example_input(gm):
    """An input batch for a graph from its placeholder's recorded shape (a symbolic batch: its hint)."""
    import torch

    for n in gm.graph.nodes:
        if n.op == "placeholder" and hasattr(n.meta.get("val"), "shape"):
            shape = []
            for d in n.meta["val"].shape:
                hint = getattr(getattr(d, "node", None), "hint", d)
                shape.append(max(2, int(hint)) if isinstance(d, torch.SymInt) else int(d))
            return torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    raise ValueError("the graph has no placeholder with a recorded shape: pass example=")


def _fused_ops_of_cpp_kernel(name: str) -> str:
    """``cpp_fused_dequantize_per_tensor_mean_quantize_per_tensor_1`` -> the ops it fuses, from its name."""
    stem = re.sub(r"_\d+$", "", name[len("cpp_fused_"):])
    return stem


_DTYPE = re.compile(r"\btorch\.(uint8|int8|float32|bfloat16|float16)\b")


def _kernel_of_call(line: str):
    """One kernel call of inductor's generated ``call()`` (a line of its Python wrapper), or None."""
    m = re.search(r"\btorch\.ops\.(\w+)\.(\w+)\.(\w+)\((.*)\)\s*$", line)
    if m:
        ns, op, overload, args = m.groups()
        call = f"{ns}.{op}.{overload}"
        dtypes = _DTYPE.findall(args)
        output = dtypes[0] if dtypes else ""
        if ns == "onednn" and op.startswith(("qconv", "qlinear")):
            words = [w for w in re.findall(r"'(\w*)'", args) if w and w != "none"]
            post = ["add" if w == "sum" else w for w in words]
            kind = "int8 conv" if op.startswith("qconv") else "int8 linear"
            return {"call": call, "label": kind + "".join("+" + w for w in post), "int8": True,
                    "post_ops": "+".join(post), "output": output}
        if ns == "quantized":
            return {"call": call, "label": f"int8 {op}", "int8": True, "post_ops": "", "output": "uint8"}
        if ns == "mkl" and "linear" in op:
            return {"call": call, "label": "float linear", "int8": False, "post_ops": "", "output": "float32"}
        if ns == "inductor":          # inductor's own buffer helpers (_alloc_from_pool, ...): no computation
            return None
        return {"call": call, "label": op, "int8": False, "post_ops": "", "output": output}
    m = re.search(r"\bextern_kernels\.(\w+)\(", line)
    if m:
        op = m.group(1)
        label = {"convolution": "float conv", "mm": "float linear", "addmm": "float linear", "bmm": "float bmm"}.get(op, op)
        return {"call": f"extern_kernels.{op}", "label": label, "int8": False, "post_ops": "", "output": "float32"}
    m = re.match(r"\s*(?:\w+\s*=\s*)?(cpp_fused_\w+)\(", line)
    if m:
        ops = _fused_ops_of_cpp_kernel(m.group(1))
        return {"call": "cpp_fused_" + ops, "label": "C++ loop: " + ops.replace("_per_tensor", "").replace("_per_channel", ""),
                "int8": False, "post_ops": "", "output": ""}
    return None


def inductor_kernels_in_code(code: str) -> List[Dict[str, Any]]:
    """The kernels the ``call()`` function of inductor's generated Python wrapper calls, in order: each
    ``{"call", "label", "int8", "post_ops", "output"}``. oneDNN int8 kernels
    (``onednn.qconv_pointwise``, ``onednn.qconv2d_pointwise.binary``, ``onednn.qlinear_pointwise``) are
    labelled by what they fuse (``int8 conv+relu``, ``int8 conv+add+relu`` from their post-op arguments),
    float ones by what they compute (``float conv`` for ``extern_kernels.convolution``), inductor's
    generated C++ loops by the ops their name says they fuse."""
    body = re.search(r"\n(\s*)def call\(self, args\):\n(.*?)\n\1    return ", code, re.S) or \
        re.search(r"\n(\s*)def call\(args\):\n(.*?)\n\1    return ", code, re.S)
    if body is None:
        raise ValueError("no call() function in this code: is it inductor's generated Python wrapper?")
    out = []
    for line in body.group(2).splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "assert_", "del ")):
            continue
        k = _kernel_of_call(line)
        if k is not None:
            out.append(k)
    return out


def pt2e_inductor_kernels(converted, example=None) -> Dict[str, Any]:
    """What inductor really makes of a converted PT2E graph: compile a copy as the book's PT2E path
    does (:class:`resnet_edu.quantization.FrozenInductorModule`: ``torch.compile``, freezing on during
    the call), run it once on ``example`` (default: a random batch of the graph's recorded input shape)
    and read the result. Returns ``{"kernels": inductor_kernels_in_code(wrapper), "counters": ...}``,
    ``counters`` being the increments of ``torch._dynamo.utils.counters["inductor"]`` during that
    compilation (the pattern matcher's ``qconv_weight_prepack_matcher_count``,
    ``qconv2d_binary_lower_count``, ...). The FX graph cache is off for the call, so the code is
    generated, not loaded; nothing else in the process is reset."""
    import copy
    from unittest import mock

    import torch
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters
    from torch._inductor.graph import GraphLowering

    from .quantization import FrozenInductorModule

    gm = converted
    for attr in ("model", "compiled", "_orig_mod"):
        gm = getattr(gm, attr, gm)
    if not isinstance(gm, torch.fx.GraphModule):
        raise ValueError(f"expected a converted PT2E torch.fx.GraphModule, got {type(gm).__name__}")
    x = _example_input(gm) if example is None else example
    gm = copy.deepcopy(gm)
    codes: List[str] = []
    before = dict(counters["inductor"])
    with mock.patch.object(GraphLowering, "save_output_code", lambda code: codes.append(code)), \
            inductor_config.patch(fx_graph_cache=False), torch.no_grad():
        FrozenInductorModule(torch.compile(gm))(x)
    grown = {k: v - before.get(k, 0) for k, v in counters["inductor"].items() if v != before.get(k, 0)}
    wrappers = [c for c in codes if "def call(" in c]
    if not wrappers:
        raise RuntimeError("inductor generated no code for this graph (did dynamo fall back to eager?)")
    kernels = [k for c in wrappers for k in inductor_kernels_in_code(c)]
    return {"kernels": kernels, "counters": grown}


def plot_pt2e_graph(exported, converted, first: int = 14, ax=None, kernels=None):
    """Three columns of the first ``first`` operators of a ResNet's PT2E graph: as exported (float),
    after ``convert_pt2e`` (quantize/dequantize pairs around float ops), and the kernels inductor's
    generated code calls once the converted graph is compiled with freezing (oneDNN int8 kernels such
    as ``int8 conv+add+relu``, inductor's own C++ loops), in order. ``kernels``: a result of
    :func:`pt2e_inductor_kernels` (or its ``"kernels"`` list) for ``converted``; without it the
    converted graph is compiled here."""
    if kernels is None:
        kernels = pt2e_inductor_kernels(converted)
    if isinstance(kernels, Mapping):
        kernels = kernels["kernels"]
    cols = [("exported (float)", pt2e_graph_ops(exported), "ops"), ("after convert_pt2e", pt2e_graph_ops(converted), "ops"),
            ("compiled by inductor (freezing)", [k["label"] for k in kernels], "kernel calls")]
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")

    def color(op: str) -> str:
        if op.startswith("int8"):
            return BLUE
        if op.startswith(("quantize", "dequantize", "C++")):
            return ORANGE
        if op.startswith(("conv", "float conv")):
            return "#1b3f6b"
        return GREY

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.33 * first + 1.2))
    for c, (title, ops, noun) in enumerate(cols):
        x = c * 3.4
        ax.text(x + 1.4, 0.6, f"{title}\n({len(ops)} {noun} in all)", ha="center", va="bottom", fontsize=9)
        for r, op in enumerate(ops[:first]):
            ax.add_patch(plt.Rectangle((x, -r - 0.8), 2.8, 0.7, color=color(op), alpha=0.9))
            shown = op if len(op) <= 38 else op[:37] + "\u2026"
            ax.text(x + 1.4, -r - 0.45, shown, ha="center", va="center", fontsize=7, color="white")
        if len(ops) > first:
            ax.text(x + 1.4, -first - 0.5, "...", ha="center", va="center")
    ax.set_xlim(-0.2, 3 * 3.4)
    ax.set_ylim(-first - 1.2, 1.6)
    ax.axis("off")
    return ax
