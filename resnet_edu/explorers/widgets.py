"""The explorer machinery: controls and parts, shown live (``ipywidgets.interactive``) or static
(every state precomputed into ``Output`` widgets in ``Stack``s ``jslink``-ed to the controls)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

MODE_ENV = "RESNET_EDU_EXPLORERS"
BOOK_ENV = "RESNET_EDU_BOOK_BUILD"
EXPLORER_CLASS = "resnet-edu-explorer"


# --------------------------------------------------------------------------- machinery
@dataclass
class Control:
    """One control. ``options``: the values precomputed for the book (a short explicit list);
    ``default``: the value shown first; ``live``: an ipywidgets abbreviation for the live panel
    (``(64, 448, 32)`` for a slider over the full range); without it the live panel offers ``options``."""

    options: Sequence[Any]
    default: Any = None
    live: Any = None
    label: Optional[str] = None

    def __post_init__(self) -> None:
        self.options = list(self.options)
        if not self.options:
            raise ValueError("a Control needs at least one option")
        if self.default is None:
            self.default = self.options[0]
        if self.default not in self.options:
            raise ValueError(f"default {self.default!r} is not one of the options {self.options!r}")

    @property
    def index(self) -> int:
        return self.options.index(self.default)


@dataclass
class Part:
    """What the reader sees for one subset of the controls: ``fn(**{name: value for name in deps})``."""

    fn: Callable[..., Any]
    deps: Sequence[str]


def _has_stack() -> bool:
    try:
        from ipywidgets import Stack  # noqa: F401  (ipywidgets >= 8)
    except ImportError:
        return False
    return True


def mode() -> str:
    """``"static"`` (precomputed states, for the HTML book) or ``"live"`` (an interactive panel)."""
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced not in ("", "static", "live"):
        raise ValueError(f"{MODE_ENV} must be 'static' or 'live' (or unset), got {forced!r}")
    if forced == "static" and not _has_stack():
        raise RuntimeError(f"{MODE_ENV}=static needs ipywidgets >= 8 (ipywidgets.Stack)")
    if forced:
        return forced
    return "static" if os.environ.get(BOOK_ENV) == "1" and _has_stack() else "live"


def _figure_png(fig, dpi: int = 72) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _items(content: Any) -> List[Any]:
    if content is None:
        return []
    return list(content) if isinstance(content, (list, tuple)) else [content]


def to_outputs(content: Any) -> List[Dict[str, Any]]:
    """nbformat outputs (``display_data``) for what a part returned: HTML strings and figures."""
    from matplotlib.figure import Figure

    outs = []
    for item in _items(content):
        if isinstance(item, str):
            outs.append({"output_type": "display_data", "data": {"text/html": item, "text/plain": "<HTML>"}, "metadata": {}})
        elif isinstance(item, Figure):
            outs.append({"output_type": "display_data", "data": {"image/png": _figure_png(item), "text/plain": "<Figure>"},
                         "metadata": {}})
        else:
            raise TypeError(f"an explorer part must return HTML (str), a matplotlib Figure or a list of them, "
                            f"got {type(item).__name__}")
    return outs


def _show(content: Any) -> None:
    from IPython.display import HTML, Image, display

    for out in to_outputs(content):
        data = out["data"]
        if "text/html" in data:
            display(HTML(data["text/html"]))
        else:
            display(Image(data=base64.b64decode(data["image/png"])))


def _control_widget(name: str, c: Control, layout):
    import ipywidgets as widgets

    label = c.label or name
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c.options)
    style = {"description_width": "initial"}
    if numeric and len(c.options) > 1:
        return widgets.SelectionSlider(options=[(str(v), v) for v in c.options], value=c.default, description=label,
                                       continuous_update=True, style=style)
    return widgets.Dropdown(options=[(str(v), v) for v in c.options], value=c.default, description=label, style=style)


def _check(controls: Mapping[str, Control], parts: Sequence[Part]) -> None:
    if not controls:
        raise ValueError("an explorer needs at least one control")
    for p in parts:
        unknown = [d for d in p.deps if d not in controls]
        if unknown:
            raise ValueError(f"part {getattr(p.fn, '__name__', p.fn)!r} depends on unknown controls {unknown}; "
                             f"controls are {list(controls)}")
    used = {d for p in parts for d in p.deps}
    unused = [n for n in controls if n not in used]
    if unused:
        raise ValueError(f"controls {unused} are used by no part")


def build_static(controls: Mapping[str, Control], parts: Sequence[Part]):
    """The static form: ``(box, stats)``; ``stats`` counts states, stored outputs, stacks and links."""
    import ipywidgets as widgets

    shared = widgets.Layout()          # one layout model for every stack and output: smaller pages
    ctrl = {n: _control_widget(n, c, shared) for n, c in controls.items()}
    leaves: Dict[str, Any] = {}
    stats = {"states": 0, "outputs": 0, "stacks": 0, "links": 0}
    links = []

    def leaf(fn, values):
        outputs = to_outputs(fn(**values))
        if not outputs:
            raise ValueError(f"{getattr(fn, '__name__', fn)}({values}) shows nothing")
        stats["states"] += 1
        key = hashlib.sha1(json.dumps(outputs, sort_keys=True).encode()).hexdigest()
        if key not in leaves:
            leaves[key] = widgets.Output(outputs=tuple(outputs), layout=shared)
        return leaves[key]

    def tree(fn, deps, values):
        if not deps:
            return leaf(fn, values)
        name, rest = deps[0], deps[1:]
        c = controls[name]
        kids = [tree(fn, rest, {**values, name: v}) for v in c.options]
        stack = widgets.Stack(kids, selected_index=c.index, layout=shared)
        links.append(widgets.jslink((ctrl[name], "index"), (stack, "selected_index")))
        stats["stacks"] += 1
        return stack

    trees = [tree(p.fn, list(p.deps), {}) for p in parts]
    stats["outputs"] = len(leaves)
    stats["links"] = len(links)
    from ..visualization import EXPLORER_CSS

    style = widgets.HTML(f"<style>{EXPLORER_CSS}</style>", layout=shared)   # once per explorer
    row = widgets.HBox(list(ctrl.values()) + [style], layout=widgets.Layout(flex_flow="row wrap"))
    box = widgets.VBox([row, *trees])
    box.add_class(EXPLORER_CLASS)
    box._resnet_edu_links = links      # keep the links referenced next to the box
    box._resnet_edu_stats = stats
    box._resnet_edu_controls = ctrl
    return box, stats


def build_live(controls: Mapping[str, Control], parts: Sequence[Part]):
    """The live form: an ``ipywidgets.interactive`` over the controls' full ranges."""
    import ipywidgets as widgets

    kw = {}
    for n, c in controls.items():
        abbrev = c.live if c.live is not None else [(str(v), v) for v in c.options]
        w = widgets.interactive.widget_from_abbrev(abbrev, c.default)
        w.description = c.label or n
        kw[n] = w

    def run(**values):
        from IPython.display import HTML, display
        from ..visualization import EXPLORER_CSS

        display(HTML(f"<style>{EXPLORER_CSS}</style>"))
        for p in parts:
            _show(p.fn(**{d: values[d] for d in p.deps}))

    ui = widgets.interactive(run, **kw)
    ui.add_class(EXPLORER_CLASS)
    return ui


def explorer(controls: Mapping[str, Control], parts: Sequence[Part], display: bool = True, form: Optional[str] = None):
    """Show an explorer in the form :func:`mode` picks (or ``form``); return the widget when ``display`` is False."""
    _check(controls, parts)
    form = form or mode()
    if form == "static":
        box, _ = build_static(controls, parts)
    elif form == "live":
        box = build_live(controls, parts)
        box.update()
    else:
        raise ValueError(f"form must be 'static' or 'live', got {form!r}")
    if not display:
        return box
    from IPython.display import display as _display

    _display(box)
    return None
