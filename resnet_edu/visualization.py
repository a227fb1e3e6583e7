"""Figures and interactive panels the chapters share.

``panel`` wraps ``ipywidgets.interactive`` so that every panel shows its default state twice: live in
the widget (Jupyter, Colab, and the HTML book with JavaScript) and as a plain static output below it
(the HTML book without JavaScript, or any viewer that drops widget state). A panel is never an empty box.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

import matplotlib.pyplot as plt

__all__ = ["panel", "rows_to_html", "plot_stage_params"]


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
