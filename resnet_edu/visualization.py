"""Figures and interactive panels the chapters share.

``panel`` wraps ``ipywidgets.interactive`` so that every panel shows its default state twice: live in
the widget (Jupyter, Colab, and the HTML book with JavaScript) and as a plain static output below it
(the HTML book without JavaScript, or any viewer that drops widget state). A panel is never an empty box.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import matplotlib.pyplot as plt

__all__ = [
    "panel",
    "rows_to_html",
    "plot_stage_params",
    "plot_receptive_field",
    "plot_gradient_norms",
    "plot_training_curves",
    "plot_data_flow",
    "plot_params_vs_macs",
    "plot_stage_breakdown",
]


def panel(fn: Callable[..., Any], static: bool = True, **controls: Any):
    """Build an interactive panel over ``fn(**values)`` and display it.

    ``controls`` are ipywidgets abbreviations or widgets (``variant=["resnet18", "resnet50"]``,
    ``size=(32, 448, 32)``). ``fn`` should display its result (a table, a figure). With ``static=True``
    the default state is rendered once more as ordinary output, marked as such.
    """
    import ipywidgets as widgets
    from IPython.display import HTML, display

    ui = widgets.interactive(fn, **controls)
    ui.update()  # render the default state into the widget's output area now
    display(ui)
    if static:
        defaults = {k: v for k, v in ui.kwargs.items()}
        display(HTML(f"<p class='panel-static-caption'><em>Static copy of the panel's default state "
                     f"({', '.join(f'{k}={v!r}' for k, v in defaults.items())}):</em></p>"))
        fn(**defaults)
    return ui


def rows_to_html(rows: Sequence[Dict[str, Any]], columns: Sequence[str] | None = None, formats: Dict[str, str] | None = None) -> str:
    """A plain HTML table from a list of dicts (no pandas needed); ``formats`` maps column -> format spec."""
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
