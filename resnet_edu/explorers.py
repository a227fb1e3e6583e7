"""The chapters' explorers: one function per panel, called from a notebook cell as ``explore.<name>()``.

An explorer is a handful of *controls* (a variant, an input side, a number of bits...) and one or
more *parts*, each a Python function of some of the controls that returns what the reader sees (an
HTML string, a matplotlib figure, or a list of them). The same call shows it in two forms:

* **live** (Jupyter, Colab, any running kernel): an ``ipywidgets.interactive`` panel over the full
  ranges; every change calls the Python function again. Works with ipywidgets 7 and 8.
* **static** (the HTML book, which has no kernel): every combination of the controls' short
  explicit lists is rendered once, at build time, into an ``Output`` widget; the outputs sit in
  nested ``Stack`` widgets whose ``selected_index`` is ``jslink``-ed to the controls. The page's
  saved widget state and the vendored ``embed-amd.js`` then switch between the precomputed states
  in the browser: no kernel, no network. A part depends only on the controls it names, so two
  independent parts cost the sum, not the product, of their states; identical outputs are stored once.

*Formula explorers* (``conv_output_size``, ``conv_parameters``, ``bottleneck``: pure arithmetic over
wide ranges, far too many states to precompute) take a third way in the static form: a Vega-Lite
chart whose params are bound to sliders over the full ranges, with the formula written once as Vega
expressions (:class:`Formula`) that the browser evaluates. The book vendors Vega and Vega-Lite
(``VEGA_SCRIPTS``) and loads them only on pages with such a chart. ``tests/test_explorers.py``
evaluates the expressions in Chromium and compares them with the Python formula; when the page is
built, a real PyTorch module is checked against the Python formula on the whole grid (or a stated
sample of it) and the page says so (:func:`module_check`).

Which form? ``RESNET_EDU_EXPLORERS=static`` or ``=live`` forces one. Otherwise the static form is
used when ``RESNET_EDU_BOOK_BUILD=1``, which ``book/_ext/book_extras.py`` sets for the kernels of a
``jupyter-book build`` (they inherit the environment of the Sphinx process), and when ``Stack``
exists (ipywidgets >= 8). Everywhere else the live form is used.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Control",
    "Part",
    "explorer",
    "mode",
    "MODE_ENV",
    "BOOK_ENV",
    "Formula",
    "FormulaExplorer",
    "FORMULA_EXPLORERS",
    "VEGA_SCRIPTS",
    "formula_chart",
    "module_check",
    "range_control",
    "stage_shapes",
    "conv_output_size",
    "conv_parameters",
    "gradients_vs_depth",
    "block_shapes",
    "bottleneck",
    "stages",
    "compare_variants",
    "digit_image",
    "quant_error",
    "ptq_settings",
    "ptq_settings_rows",
    "pt2e_fusion",
    "pt2e_settings_ops",
]

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
    from .visualization import EXPLORER_CSS

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
        from .visualization import EXPLORER_CSS

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


# --------------------------------------------------------------------------- formula explorers (Vega-Lite)
# A formula explorer is drawn in the HTML book by Vega-Lite, over the full ranges of its controls:
# the formula is written once, as Vega expressions (a :class:`Formula`), and the browser evaluates it
# for every position of the sliders. ``tests/test_explorers.py`` evaluates the same expressions with
# the vendored Vega in Chromium and compares them with the Python formula (``resnet_edu.analysis``)
# over the controls' grid; when the page is built, a real PyTorch module is checked against that
# Python formula (``FormulaExplorer.real``) and the page says on how many combinations it was.
VEGA_CLASS = "resnet-edu-vega"
# Vega's own signals include ``width``, ``height`` and ``padding``: each control is the param ``c_<name>``.
PARAM_PREFIX = "c_"
QUANTITY_PREFIX = "q_"      # a quantity of a formula at the chosen setting is the param ``q_<name>``
# Vendored under book/_static/ (see book/_static/thirdparty/README.md); book/_ext/book_extras.py adds
# them to the pages that hold a formula explorer, before require.js.
VEGA_SCRIPTS = ("thirdparty/vega/vega.min.js", "thirdparty/vega/vega-lite.min.js")
VEGA_CSS = (
    ".resnet-edu-vega .rx-vega-controls{display:flex;flex-wrap:wrap;gap:0.2em 1.4em;margin:0.3em 0}"
    ".resnet-edu-vega .vega-bind label{display:flex;align-items:center;gap:0.4em;margin:0}"
    ".resnet-edu-vega .vega-bind-name{min-width:6.5em}"
    ".resnet-edu-vega .vega-bind input[type=range]{width:9em}"
    ".resnet-edu-vega .vega-bind span:last-child{min-width:2.5em;font-variant-numeric:tabular-nums}"
    ".resnet-edu-vega .rx-vega-chart{overflow-x:auto;max-width:100%}"
    ".resnet-edu-vega .rx-vega-note{font-size:0.9em;margin:0.3em 0 0}"
)
# Runs where the explorer's HTML is parsed (the vendored libraries are loaded in <head> before it):
# compile the Vega-Lite spec, draw it as SVG, put the bound controls above it. ``root.resnetEduView``
# is the Vega view (the tests read the computed data through it).
VEGA_LOADER = """(function () {
  var root = document.getElementById("__ID__");
  if (!root || root.getAttribute("data-state")) { return; }
  function show() {
    var chart = root.querySelector(".rx-vega-chart");
    if (!(window.vega && window.vegaLite)) {
      root.setAttribute("data-state", "no-vega");
      chart.textContent = "This chart needs Vega and Vega-Lite, which the HTML book loads; they are missing here.";
      return;
    }
    root.setAttribute("data-state", "loading");
    function fail(err) {
      root.setAttribute("data-state", "error");
      chart.textContent = "This chart could not be drawn: " + err;
      console.error(err);
    }
    try {
      var spec = JSON.parse(root.querySelector(".rx-vega-spec").textContent);
      var view = new vega.View(vega.parse(vegaLite.compile(spec).spec), {
        renderer: "svg", container: chart, bind: root.querySelector(".rx-vega-controls"), hover: true});
      root.resnetEduView = view;
      view.runAsync().then(function () { root.setAttribute("data-state", "rendered"); }, fail);
    } catch (err) { fail(err); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", show); } else { show(); }
})();"""


@dataclass(frozen=True)
class Formula:
    """Named quantities, each a Vega expression written over the controls and the quantities before
    it: ``{name}`` stands for a control or an earlier quantity. :meth:`signals` turns them into
    Vega-Lite params (the quantities at the setting the reader chose), :meth:`calculate` into
    ``calculate`` transforms over data rows (a curve over all input sides, or a test's grid)."""

    steps: Tuple[Tuple[str, str], ...]

    def then(self, *steps: Tuple[str, str]) -> "Formula":
        return Formula(tuple(self.steps) + tuple(steps))

    @property
    def names(self) -> List[str]:
        return [n for n, _ in self.steps]

    def _expressions(self, controls: Sequence[str], datum: Sequence[str], quantity: str) -> List[Tuple[str, str]]:
        import re

        known, done, out = set(controls), set(), []
        for name, template in self.steps:
            def sub(m, name=name):
                key = m.group(1)
                if key in done:
                    return quantity + key
                if key in datum:
                    return f"datum.{key}"
                if key in known:
                    return PARAM_PREFIX + key
                raise ValueError(f"quantity {name!r} uses {{{key}}}, which is neither a control "
                                 f"({sorted(known)}) nor a quantity before it ({sorted(done)})")
            out.append((name, re.sub(r"\{(\w+)\}", sub, template)))
            done.add(name)
        return out

    def calculate(self, controls: Sequence[str], datum: Sequence[str] = ()) -> List[Dict[str, str]]:
        """Vega-Lite ``calculate`` transforms: one field per quantity, for each data row (a control
        listed in ``datum`` is read from the row, any other from its bound param)."""
        return [{"calculate": e, "as": n} for n, e in self._expressions(controls, datum, "datum.")]

    def signals(self, controls: Sequence[str]) -> List[Dict[str, str]]:
        """Vega-Lite params ``q_<quantity>``, each an expression of the bound params: the quantities at
        the setting the reader chose (for the chart's title and marks)."""
        return [{"name": QUANTITY_PREFIX + n, "expr": e} for n, e in self._expressions(controls, (), QUANTITY_PREFIX)]


@dataclass(frozen=True)
class FormulaExplorer:
    """What a formula explorer is made of. ``formula``: the quantities the chart computes (Vega
    expressions); ``reference(**values)``: the same quantities from the Python formula
    (``resnet_edu.analysis``) as a dict with ``valid`` (False where the formula refuses the setting,
    the quantities it cannot give then None), compared with the Vega ones by the tests;
    ``real(**values)``: the same dict from a real PyTorch module, compared with ``reference`` when the
    page is built; ``spec(controls)``: the Vega-Lite chart; ``sample``: how many settings that check
    draws besides the corners (None: all of them); ``what``: what the check compares, naming the
    module; ``refused``: what happens on the settings the formula refuses."""

    formula: Formula
    reference: Callable[..., Dict[str, Any]]
    real: Callable[..., Dict[str, Any]]
    spec: Callable[[Mapping[str, Control]], Dict[str, Any]]
    sample: Optional[int]
    what: str
    refused: str


class VegaChart:
    """The static form of a formula explorer: a Vega-Lite chart over the full ranges (``spec``), the
    HTML the book embeds (``html``) and the real-module check made when it was built (``check``)."""

    def __init__(self, name: str, spec: Dict[str, Any], check: Dict[str, Any], note: str) -> None:
        self.name, self.spec, self.check, self.note = name, spec, check, note
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        self.id = "rx-vega-" + hashlib.sha1(f"{name}:{text}".encode()).hexdigest()[:10]
        safe = text.replace("</", "<\\/")           # the JSON sits in a <script> element
        self.html = (f'<div class="{EXPLORER_CLASS} {VEGA_CLASS}" id="{self.id}" data-explorer="{name}">'
                     f"<style>{VEGA_CSS}</style>"
                     '<div class="rx-vega-controls"></div><div class="rx-vega-chart"></div>'
                     f'<p class="rx-vega-note">{note}</p>'
                     f'<script type="application/json" class="rx-vega-spec">{safe}</script>'
                     f"<script>{VEGA_LOADER.replace('__ID__', self.id)}</script></div>")

    def _repr_html_(self) -> str:
        return self.html


def range_control(lo: int, hi: int, default: int, step: int = 1, label: Optional[str] = None) -> Control:
    """A slider over ``lo..hi`` (both included) in steps of ``step``, in both forms of a formula explorer."""
    values = list(range(lo, hi + 1, step))
    if values[-1] != hi:
        raise ValueError(f"hi={hi} is not reached from lo={lo} in steps of {step}")
    return Control(values, default, live=(lo, hi, step), label=label)


def vega_params(controls: Mapping[str, Control]) -> List[Dict[str, Any]]:
    """One bound Vega-Lite param per control: a range slider for ``live=(lo, hi, step)``, else a select."""
    params = []
    for name, c in controls.items():
        label = c.label or name
        if isinstance(c.live, tuple):
            lo, hi, step = (tuple(c.live) + (1,))[:3]
            bind = {"input": "range", "min": lo, "max": hi, "step": step, "name": label}
        else:
            bind = {"input": "select", "options": list(c.live if c.live is not None else c.options), "name": label}
        params.append({"name": PARAM_PREFIX + name, "value": c.default, "bind": bind})
    return params


def grid_size(controls: Mapping[str, Control]) -> int:
    return math.prod(len(c.options) for c in controls.values())


def grid_combination(controls: Mapping[str, Control], index: int) -> Dict[str, Any]:
    """The ``index``-th combination of the controls' values (the last control varies fastest)."""
    out = {}
    for name in reversed(list(controls)):
        opts = controls[name].options
        index, i = divmod(index, len(opts))
        out[name] = opts[i]
    return dict(reversed(list(out.items())))


def grid_indices(controls: Mapping[str, Control], sample: Optional[int], seed: int = 0) -> List[int]:
    """All combinations (``sample`` None or at least the grid), else every corner (each control at its
    first, default and last value) plus ``sample`` combinations drawn with ``random.Random(seed)``."""
    import itertools
    import random

    total = grid_size(controls)
    if sample is None or sample >= total:
        return list(range(total))
    names = list(controls)
    picks = [sorted({0, controls[n].index, len(controls[n].options) - 1}) for n in names]
    corners = set()
    for combo in itertools.product(*picks):
        index = 0
        for n, i in zip(names, combo):
            index = index * len(controls[n].options) + i
        corners.add(index)
    return sorted(corners | set(random.Random(seed).sample(range(total), sample)))


def module_check(name: str, controls: Mapping[str, Control], fx: FormulaExplorer) -> Dict[str, Any]:
    """Compare ``fx.real`` with ``fx.reference`` over the grid (or ``fx.sample`` of it). Raises
    AssertionError naming the first settings where they differ; returns the counts the page states."""
    import time

    import torch

    start = time.perf_counter()
    indices = grid_indices(controls, fx.sample)
    valid = invalid = 0
    differ = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # thousands of tiny modules: threads only add overhead
    try:
        for index in indices:
            values = grid_combination(controls, index)
            want, got = fx.reference(**values), fx.real(**values)
            if want != got:
                differ.append(f"{values}: formula {want}, module {got}")
            elif want["valid"]:
                valid += 1
            else:
                invalid += 1
    finally:
        torch.set_num_threads(threads)
    if differ:
        raise AssertionError(f"{name}: the real module disagrees with the formula on {len(differ)} of "
                             f"{len(indices)} settings, e.g. " + "; ".join(differ[:3]))
    return {"combinations": grid_size(controls), "checked": len(indices), "valid": valid, "invalid": invalid,
            "all": len(indices) == grid_size(controls), "seconds": time.perf_counter() - start}


def _check_note(fx: FormulaExplorer, check: Mapping[str, Any]) -> str:
    """The sentence under a formula explorer's chart: what was checked against a real module, on how many settings."""
    if check["all"]:
        which = f"all {check['combinations']:,} settings the controls reach"
    else:
        which = (f"{check['checked']:,} of the {check['combinations']:,} settings the controls reach (each control "
                 f"at its ends and default, the others drawn at random with a fixed seed)")
    refused = f"; on the other {check['invalid']:,}, {fx.refused}" if check["invalid"] else ""
    return f"Checked when this page was built, on {which}: {fx.what} on all {check['valid']:,} valid ones{refused}."


@lru_cache(maxsize=None)
def _checked(name: str) -> Tuple[Dict[str, Any], str]:
    fx = FORMULA_EXPLORERS[name]
    controls = _FORMULA_CONTROLS[name]()
    check = module_check(name, controls, fx)
    return check, _check_note(fx, check)


def formula_chart(name: str) -> VegaChart:
    """The static (Vega-Lite) form of the formula explorer ``name``, with its real-module check."""
    if name not in FORMULA_EXPLORERS:
        raise ValueError(f"{name!r} is not a formula explorer; formula explorers: {sorted(FORMULA_EXPLORERS)}")
    fx = FORMULA_EXPLORERS[name]
    controls = _FORMULA_CONTROLS[name]()
    check, note = _checked(name)
    return VegaChart(name, fx.spec(controls), dict(check), note)


def _formula_explorer(name: str, parts: Sequence[Part], display: bool = True, form: Optional[str] = None):
    controls = _FORMULA_CONTROLS[name]()
    _check(controls, parts)
    form = form or mode()
    if form != "static":
        return explorer(controls, parts, display=display, form=form)
    chart = formula_chart(name)
    if not display:
        return chart
    from IPython.display import HTML, display as _display

    _display(HTML(chart.html))
    return None


CHART_WIDTH = 270      # px of a chart's plot area: with its axis, the explorer fits a 390 px phone
BAR_WIDTH = 220        # the bar charts' plot area (their labels take more room than a numeric axis)


def _vega_spec(controls: Mapping[str, Control], formula: Formula, view: Dict[str, Any]) -> Dict[str, Any]:
    """A formula explorer's Vega-Lite spec: ``view`` with the bound params of the controls, the
    quantities of ``formula`` as params ``q_<name>``, and its quantity ``line`` (lines split at
    ``\\n``) as the title."""
    title = {"text": {"expr": f"split({QUANTITY_PREFIX}line, '\\n')"}, "anchor": "start", "frame": "bounds",
             "fontSize": 12.5, "fontWeight": "normal", "lineHeight": 16, "offset": 10}
    return {"params": vega_params(controls) + formula.signals(list(controls)), "title": title, **view,
            "background": "white", "padding": 6,
            "config": {"view": {"stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 12},
                       "legend": {"labelFontSize": 11, "titleFontSize": 12}}}


# --------------------------------------------------------------------------- chapter 0
def _shape_table(variant: str, size: int) -> str:
    import resnet_edu as rn
    from .visualization import rows_to_html

    import torch

    with torch.device("meta"):                 # shapes and counts only: no memory, no time
        net = rn.VARIANTS[variant]()
    rows = rn.trace_shapes(net, (1, 3, size, size), depth=0)
    return (f"<p><b>{variant}</b> at {size}x{size}</p>"
            + rows_to_html(rows, ["name", "type", "shape", "params"], {"params": ","}))


def stage_shapes(variants: Sequence[str] = ("resnet18", "resnet34", "resnet50"), **kw):
    """Chapter 0: each top-level part's output shape and parameters for a variant and an input side."""
    controls = {"variant": Control(variants, variants[0]),
                "size": Control([32, 64, 128, 224, 320], 224, live=(32, 320, 32))}
    return explorer(controls, [Part(_shape_table, ["variant", "size"])], **kw)


# --------------------------------------------------------------------------- chapter 1
def _conv_side(size: int, kernel: int, stride: int, padding: int, dilation: int) -> str:
    from . import analysis

    span = dilation * (kernel - 1) + 1
    try:
        side = analysis.conv_output_size(size, kernel, stride, padding, dilation)
    except ValueError as err:
        return f"<p><b>Not a valid convolution:</b> {err}</p>"
    import torch
    import torch.nn as nn

    real = nn.Conv2d(1, 1, kernel, stride, padding, dilation, bias=False)(torch.zeros(1, 1, size, size)).shape[-1]
    formula = (f"&lfloor;({size} + 2&middot;{padding} &minus; {dilation}&middot;({kernel} &minus; 1) &minus; 1) / {stride}"
               f"&rfloor; + 1 = <b>{side}</b>")
    return (f"<p>output side (formula): {formula}<br>output side (real <code>nn.Conv2d</code>): <b>{real}</b><br>"
            f"the kernel spans {span} input pixels</p>")


def _conv_side_controls() -> Dict[str, Control]:
    return {"size": range_control(1, 224, 56), "kernel": range_control(1, 7, 3, step=2),
            "stride": range_control(1, 3, 1), "padding": range_control(0, 8, 1), "dilation": range_control(1, 4, 1)}


CONV_SIDE = Formula((
    ("span", "{dilation} * ({kernel} - 1) + 1"),
    ("padded", "{size} + 2 * {padding}"),
    ("valid", "{padded} >= {span}"),
    ("side", "{valid} ? floor(({size} + 2 * {padding} - {dilation} * ({kernel} - 1) - 1) / {stride}) + 1 : null"),
))


def _conv_side_reference(size: int, kernel: int, stride: int, padding: int, dilation: int) -> Dict[str, Any]:
    from . import analysis

    try:
        return {"valid": True, "side": analysis.conv_output_size(size, kernel, stride, padding, dilation)}
    except ValueError:
        return {"valid": False, "side": None}


@lru_cache(maxsize=None)
def _conv_module(kernel: int, stride: int, padding: int, dilation: int):
    import torch.nn as nn

    return nn.Conv2d(1, 1, kernel, stride, padding, dilation, bias=False)


def _conv_side_real(size: int, kernel: int, stride: int, padding: int, dilation: int) -> Dict[str, Any]:
    """The output side of a real ``nn.Conv2d`` run on an empty batch of ``size`` x ``size`` inputs:
    the module's own shape checks and output shape, without the arithmetic (fast enough for every setting)."""
    import torch

    with torch.inference_mode():
        try:
            out = _conv_module(kernel, stride, padding, dilation)(torch.zeros(0, 1, size, size))
        except RuntimeError:            # "Kernel size can't be greater than actual input size"
            return {"valid": False, "side": None}
    if out.shape[-1] != out.shape[-2]:
        raise AssertionError(f"a square input gave a {tuple(out.shape)} output")
    return {"valid": True, "side": int(out.shape[-1])}


def _conv_side_spec(controls: Mapping[str, Control]) -> Dict[str, Any]:
    from .visualization import BLUE, ORANGE

    names = list(controls)
    text = CONV_SIDE.then(("line", "{valid} ? 'output side = ⌊(' + {size} + ' + 2·' + {padding} + ' − ' + {dilation}"
                                   " + '·(' + {kernel} + ' − 1) − 1) / ' + {stride} + '⌋ + 1'"
                                   " + '\\n= ' + {side} + '; the kernel spans ' + {span} + ' input pixels'"
                                   " : 'not a valid convolution: the dilated kernel spans'"
                                   " + '\\n' + {span} + ' pixels, the padded input only ' + {padded}"))
    x = {"field": "size", "type": "quantitative", "title": "input side", "scale": {"domain": [0, 224]}}
    y = {"field": "side", "type": "quantitative", "title": "output side", "scale": {"domain": [0, 240]}}
    here = f"datum.size == {PARAM_PREFIX}size"
    curve = {"width": CHART_WIDTH, "height": 180, "data": {"sequence": {"start": 1, "stop": 225, "as": "size"}},
             "transform": CONV_SIDE.calculate(names, datum=["size"]),
             "layer": [
                 {"transform": [{"filter": "datum.valid"}], "mark": {"type": "line", "interpolate": "step-after",
                                                                     "color": BLUE}, "encoding": {"x": x, "y": y}},
                 {"transform": [{"filter": here}], "mark": {"type": "rule", "color": ORANGE, "strokeDash": [4, 3]},
                  "encoding": {"x": x}},
                 {"transform": [{"filter": f"{here} && datum.valid"}],
                  "mark": {"type": "point", "filled": True, "size": 80, "color": ORANGE, "opacity": 1},
                  "encoding": {"x": x, "y": y}}]}
    return _vega_spec(controls, text, curve)


def conv_output_size(**kw):
    """Chapter 1: the output side of a convolution. The book draws it with Vega-Lite over the full
    ranges (the side for every input side 1-224 at the chosen kernel, stride, padding and dilation);
    the live panel shows the formula next to a real ``nn.Conv2d``."""
    return _formula_explorer("conv_output_size", [Part(_conv_side, list(_conv_side_controls()))], **kw)


def _conv_params(in_channels: int, out_channels: int, kernel: int, groups: int) -> str:
    from . import analysis
    from .analysis import count_parameters

    try:
        params = analysis.conv_params(in_channels, out_channels, kernel, groups)
    except ValueError as err:
        return f"<p><b>Not a valid convolution:</b> {err}</p>"
    import torch.nn as nn

    # on the meta device: shapes without memory (a 7x7 conv at 2048 channels would take 822 MB)
    real = count_parameters(nn.Conv2d(in_channels, out_channels, kernel, groups=groups, bias=False, device="meta"))
    return (f"<p>{kernel}&middot;{kernel}&middot;{in_channels}&middot;{out_channels} / {groups} = <b>{params:,}</b> "
            f"weights (formula); a real <code>nn.Conv2d</code> holds <b>{real:,}</b></p>")


def _conv_params_controls() -> Dict[str, Control]:
    return {"in_channels": range_control(8, 2048, 64, step=8), "out_channels": range_control(8, 2048, 64, step=8),
            "kernel": range_control(1, 7, 3, step=2), "groups": Control([1, 2, 4, 8, 16, 32, 64], 1)}


CONV_PARAMS = Formula((
    ("valid", "{in_channels} % {groups} == 0 && {out_channels} % {groups} == 0"),
    ("weights", "{valid} ? {kernel} * {kernel} * {in_channels} * {out_channels} / {groups} : null"),
    ("dense", "{kernel} * {kernel} * {in_channels} * {out_channels}"),
))


def _conv_params_reference(in_channels: int, out_channels: int, kernel: int, groups: int) -> Dict[str, Any]:
    from . import analysis

    dense = analysis.conv_params(in_channels, out_channels, kernel)
    try:
        return {"valid": True, "weights": analysis.conv_params(in_channels, out_channels, kernel, groups), "dense": dense}
    except ValueError:
        return {"valid": False, "weights": None, "dense": dense}


def _conv_params_real(in_channels: int, out_channels: int, kernel: int, groups: int) -> Dict[str, Any]:
    """Parameters of real ``nn.Conv2d`` modules (built on the meta device: shapes, no memory)."""
    import torch.nn as nn
    from .analysis import count_parameters

    dense = count_parameters(nn.Conv2d(in_channels, out_channels, kernel, bias=False, device="meta"))
    try:
        conv = nn.Conv2d(in_channels, out_channels, kernel, groups=groups, bias=False, device="meta")
    except ValueError:                  # "in_channels must be divisible by groups"
        return {"valid": False, "weights": None, "dense": dense}
    return {"valid": True, "weights": count_parameters(conv), "dense": dense}


def _conv_params_spec(controls: Mapping[str, Control]) -> Dict[str, Any]:
    from .visualization import BLUE, GREY

    text = CONV_PARAMS.then(("line", "{valid} ? 'k·k·Cin·Cout / groups = ' + {kernel} + '·' + {kernel} + '·' + {in_channels}"
                                     " + '·' + {out_channels} + ' / ' + {groups} + '\\n= ' + format({weights}, ',')"
                                     " + ' weights (with groups = 1: ' + format({dense}, ',') + ')'"
                                     " : 'not a valid convolution: groups = ' + {groups} + ' must divide'"
                                     " + '\\nin_channels = ' + {in_channels} + ' and out_channels = ' + {out_channels}"))
    q = QUANTITY_PREFIX
    bars = [{"calculate": f"datum.bar == 'this convolution' ? {q}weights : {q}dense", "as": "value"},
            {"filter": "datum.value != null"}]
    labels = ["this convolution", "with groups = 1"]
    chart = {"width": BAR_WIDTH, "height": {"step": 26}, "data": {"values": [{"bar": b} for b in labels]},
             "transform": bars, "mark": {"type": "bar"},
             "encoding": {"y": {"field": "bar", "type": "nominal", "title": None, "scale": {"domain": labels}},
                          "x": {"field": "value", "type": "quantitative", "title": "weights"},
                          "color": {"field": "bar", "type": "nominal", "legend": None,
                                    "scale": {"domain": labels, "range": [BLUE, GREY]}},
                          "tooltip": [{"field": "bar", "type": "nominal"},
                                      {"field": "value", "type": "quantitative", "format": ","}]}}
    return _vega_spec(controls, text, chart)


def conv_parameters(**kw):
    """Chapter 1: the weights of a convolution, ``k*k*Cin*Cout/groups``. The book draws it with
    Vega-Lite over the full ranges; the live panel shows the formula next to a real module's count."""
    return _formula_explorer("conv_parameters", [Part(_conv_params, list(_conv_params_controls()))], **kw)


# --------------------------------------------------------------------------- chapter 2
def gradients_vs_depth(x, y, **kw):
    """Chapter 2: gradient norm per conv layer of a plain and a residual ``deep_stack`` on the batch ``(x, y)``."""
    import torch
    from . import analysis
    from .visualization import svg_lines

    @lru_cache(maxsize=None)
    def measure(blocks: int):
        out = {}
        for shortcuts in (False, True):
            torch.manual_seed(0)
            model = analysis.deep_stack(blocks, shortcuts=shortcuts, width=8)
            out["residual" if shortcuts else "plain"] = [v for _, v in analysis.gradient_norms(model, x, y)]
        return out

    def draw(blocks: int) -> str:
        return svg_lines(measure(blocks), log=True, title=f"{blocks} blocks: gradient norm per conv layer at initialisation",
                         xlabel="conv layer (0 = next to the input)", ylabel="gradient norm")

    controls = {"blocks": Control([1, 2, 4, 8, 16, 24, 32, 40], 24, live=(1, 40, 1))}
    return explorer(controls, [Part(draw, ["blocks"])], **kw)


def _block_shapes(inplanes: int, planes: int, stride: int, size: int) -> str:
    import resnet_edu as rn
    from . import analysis
    from .visualization import rows_to_html

    first = analysis.make_stage(rn.BasicBlock, inplanes, planes, blocks=1, stride=stride)[0]
    rows = rn.trace_shapes(first, (1, inplanes, size, size))
    has = "yes: 1x1 conv + BN" if first.downsample is not None else "no: the identity is added as it is"
    return (f"<p>downsample branch: <b>{has}</b>; block parameters: {rn.count_parameters(first):,}</p>"
            + rows_to_html(rows, ["name", "type", "shape", "params"], {"params": ","}))


def block_shapes(**kw):
    """Chapter 2: a ``BasicBlock`` built by ``_make_layer`` as the first block of a stage, module by module."""
    controls = {"inplanes": Control([64, 128, 256], 64, live=[64, 128, 256, 512]),
                "planes": Control([64, 128, 256], 128, live=[64, 128, 256, 512]),
                "stride": Control([1, 2], 2),
                "size": Control([7, 28, 56], 56, live=(7, 112, 1))}
    return explorer(controls, [Part(_block_shapes, list(controls))], **kw)


# --------------------------------------------------------------------------- chapter 3
def _bottleneck(planes: int, base_width: int, groups: int) -> str:
    import torch
    import resnet_edu as rn
    from . import analysis
    from .visualization import html_bars

    channels = 4 * planes
    try:
        width = analysis.bottleneck_width(planes, base_width, groups)
        params = analysis.bottleneck_params(channels, planes, groups, base_width)
    except ValueError as err:
        return f"<p><b>Not a valid block:</b> {err}</p>"
    with torch.device("meta"):
        real = rn.count_parameters(rn.Bottleneck(channels, planes, groups=groups, base_width=base_width))
    if real != params:
        raise AssertionError(f"formula {params} != real module {real}")
    two = 2 * analysis.conv_params(channels, channels, 3)
    return (f"<p>{channels} &rarr; <b>{width}</b> (groups={groups}) &rarr; {channels}: the block holds "
            f"<b>{params:,}</b> parameters (a real <code>Bottleneck</code>: {real:,}); two dense 3x3 at {channels} "
            f"channels: {two:,}, <b>{two / params:.1f}x</b> as many</p>"
            + html_bars([("bottleneck", params), ("two 3x3 (dense)", two)], scale=max(params, two), fmt="{:,}"))


def _bottleneck_controls() -> Dict[str, Control]:
    return {"planes": range_control(8, 512, 64, step=8), "base_width": range_control(1, 128, 64),
            "groups": range_control(1, 64, 1)}


BOTTLENECK = Formula((
    ("channels", "4 * {planes}"),
    ("per_group", "floor({planes} * ({base_width} / 64))"),
    ("valid", "{per_group} >= 1"),
    ("width", "{valid} ? {per_group} * {groups} : null"),
    ("conv1", "{valid} ? {channels} * {width} : null"),
    ("conv2", "{valid} ? 3 * 3 * {width} * {width} / {groups} : null"),
    ("conv3", "{valid} ? {width} * {channels} : null"),
    ("bn", "{valid} ? 2 * {width} + 2 * {width} + 2 * {channels} : null"),
    ("params", "{valid} ? {conv1} + {conv2} + {conv3} + {bn} : null"),
    ("dense", "2 * 3 * 3 * {channels} * {channels}"),
))
BOTTLENECK_PARTS = (("1x1 reduce", "conv1"), ("3x3 (grouped)", "conv2"), ("1x1 restore", "conv3"),
                    ("3 BatchNorms", "bn"), ("dense 3x3 #1", "dense"), ("dense 3x3 #2", "dense"))


def _bottleneck_reference(planes: int, base_width: int, groups: int) -> Dict[str, Any]:
    from . import analysis

    channels = 4 * planes
    out: Dict[str, Any] = {"valid": False, "width": None, "conv1": None, "conv2": None, "conv3": None, "params": None,
                           "dense": 2 * analysis.conv_params(channels, channels, 3)}
    try:
        width = analysis.bottleneck_width(planes, base_width, groups)
    except ValueError:
        return out
    out.update(valid=True, width=width, conv1=analysis.conv_params(channels, width, 1),
               conv2=analysis.conv_params(width, width, 3, groups=groups), conv3=analysis.conv_params(width, channels, 1),
               params=analysis.bottleneck_params(channels, planes, groups, base_width))
    return out


def _bottleneck_real(planes: int, base_width: int, groups: int) -> Dict[str, Any]:
    """A real torchvision-style ``Bottleneck(4*planes, planes, groups, base_width)`` built on the meta
    device. Where the inner width is 0, torchvision still builds the block, with empty convolutions:
    reported as not valid (the formula refuses it)."""
    import warnings

    import torch
    import resnet_edu as rn

    channels = 4 * planes
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "Initializing zero-element tensors is a no-op" (width 0)
        block = rn.Bottleneck(channels, planes, groups=groups, base_width=base_width)
        dense = 2 * rn.count_parameters(rn.conv3x3(channels, channels))
    width = block.conv2.in_channels
    if width == 0:
        return {"valid": False, "width": None, "conv1": None, "conv2": None, "conv3": None, "params": None,
                "dense": dense}
    return {"valid": True, "width": width, "conv1": rn.count_parameters(block.conv1),
            "conv2": rn.count_parameters(block.conv2), "conv3": rn.count_parameters(block.conv3),
            "params": rn.count_parameters(block), "dense": dense}


def _bottleneck_spec(controls: Mapping[str, Control]) -> Dict[str, Any]:
    from .visualization import BLUE, GREY, ORANGE

    text = BOTTLENECK.then(("line", "{valid} ? 'width = ⌊' + {planes} + '·' + {base_width} + ' / 64⌋·' + {groups}"
                                    " + ' = ' + {width} + ' channels inside'"
                                    " + '\\n' + {channels} + ' → ' + {width} + ' → ' + {channels} + ': '"
                                    " + format({params}, ',') + ' parameters'"
                                    " + '\\ntwo dense 3x3 at ' + {channels} + ': ' + format({dense}, ',')"
                                    " + ' (' + format({dense} / {params}, '.1f') + 'x as many)'"
                                    " : 'width = ⌊' + {planes} + '·' + {base_width} + ' / 64⌋·' + {groups}"
                                    " + ' = 0:\\nno channels inside, not a valid block'"))
    rows = [{"bar": "two dense 3x3" if field == "dense" else "Bottleneck", "part": part, "order": i}
            for i, (part, field) in enumerate(BOTTLENECK_PARTS)]
    pick = " : ".join(f"datum.part == '{part}' ? {QUANTITY_PREFIX}{field}" for part, field in BOTTLENECK_PARTS) + " : null"
    parts = [p for p, _ in BOTTLENECK_PARTS]
    chart = {"width": BAR_WIDTH, "height": {"step": 28}, "data": {"values": rows},
             "transform": [{"calculate": pick, "as": "value"}, {"filter": "datum.value != null"}],
             "mark": {"type": "bar", "stroke": "white", "strokeWidth": 0.5},
             "encoding": {"y": {"field": "bar", "type": "nominal", "title": None, "sort": ["Bottleneck", "two dense 3x3"]},
                          "x": {"field": "value", "type": "quantitative", "aggregate": "sum", "title": "parameters"},
                          "order": {"field": "order", "type": "quantitative"},
                          "color": {"field": "part", "type": "nominal", "title": None, "sort": parts,
                                    "scale": {"domain": parts,
                                              "range": [BLUE, ORANGE, "#5b9bd5", "#b0b0b0", GREY, "#a5adb0"]},
                                    "legend": {"orient": "bottom", "columns": 2}},
                          "tooltip": [{"field": "part", "type": "nominal"},
                                      {"field": "value", "type": "quantitative", "aggregate": "sum", "format": ","}]}}
    return _vega_spec(controls, text, chart)


def bottleneck(**kw):
    """Chapter 3: a Bottleneck's inner width and parameters for ``planes``, ``base_width`` and ``groups``.
    The book draws it with Vega-Lite over the full ranges; the live panel checks each setting against a
    real ``Bottleneck`` built on the meta device."""
    return _formula_explorer("bottleneck", [Part(_bottleneck, list(_bottleneck_controls()))], **kw)


FORMULA_EXPLORERS: Dict[str, FormulaExplorer] = {
    "conv_output_size": FormulaExplorer(
        CONV_SIDE, _conv_side_reference, _conv_side_real, _conv_side_spec, None,
        "a real <code>nn.Conv2d</code>, run on an empty batch of inputs of each side (its own shape checks, no "
        "arithmetic), gives the formula's output side",
        "the module raises an error where the formula does, and the chart says the setting is not valid"),
    "conv_parameters": FormulaExplorer(
        CONV_PARAMS, _conv_params_reference, _conv_params_real, _conv_params_spec, 4000,
        "real <code>nn.Conv2d</code> modules hold the formula's number of weights",
        "<code>nn.Conv2d</code> refuses the groups (ValueError) where the formula does"),
    "bottleneck": FormulaExplorer(
        BOTTLENECK, _bottleneck_reference, _bottleneck_real, _bottleneck_spec, 2000,
        "a real <code>Bottleneck</code> (built on the meta device) has the formula's inner width and parameters",
        "the inner width is 0: the formula refuses the setting, and torchvision builds a block whose "
        "convolutions are empty"),
}
_FORMULA_CONTROLS: Dict[str, Callable[[], Dict[str, Control]]] = {
    "conv_output_size": _conv_side_controls, "conv_parameters": _conv_params_controls, "bottleneck": _bottleneck_controls}


# --------------------------------------------------------------------------- chapter 4
DILATION = {"none (output stride 32)": [False, False, False],
            "layer4 (output stride 16)": [False, False, True],
            "layer3 + layer4 (output stride 8)": [False, True, True]}


def _stages(variant: str, size: int, dilation: str) -> str:
    import torch
    import resnet_edu as rn
    from .visualization import data_flow_html

    flags = DILATION[dilation]
    if variant in ("resnet18", "resnet34") and any(flags):
        return ("<p><b>BasicBlock models do not support dilation</b> (the block raises NotImplementedError); "
                "choose a Bottleneck variant.</p>")
    with torch.device("meta"):
        net = rn.VARIANTS[variant](replace_stride_with_dilation=flags)
    rows = rn.trace_shapes(net, (1, 3, size, size), depth=0)
    total = rn.count_parameters(net)
    return (f"<p><b>{variant}</b> at {size}x{size}, dilation: {dilation}; {total:,} parameters</p>"
            + data_flow_html(rows, (1, 3, size, size)))


def stages(**kw):
    """Chapter 4: the data flow through any variant at a chosen input side and dilation setting."""
    import resnet_edu as rn

    controls = {"variant": Control(list(rn.VARIANTS), "resnet50"),
                "size": Control([32, 200, 224], 224, live=(32, 448, 8)),
                "dilation": Control(list(DILATION), "none (output stride 32)")}
    return explorer(controls, [Part(_stages, list(controls))], **kw)


# --------------------------------------------------------------------------- chapter 5
@lru_cache(maxsize=None)
def _variant_parts(name: str) -> Tuple[Tuple[str, int], ...]:
    import torch
    import resnet_edu as rn
    from . import analysis

    with torch.device("meta"):
        net = rn.VARIANTS[name]()
    return tuple(analysis.stage_parameters(net).items())


def _variant_row(name: str, size: int, role: str) -> str:
    import torch
    import resnet_edu as rn
    from .visualization import html_bars

    parts = dict(_variant_parts(name))
    with torch.device("meta"):
        net = rn.VARIANTS[name]()
    macs = rn.count_macs(net, (1, 3, size, size))
    scale = max(dict(_variant_parts("wide_resnet101_2")).values())
    return (f"<p><b>{role}: {name}</b>, {sum(parts.values()):,} parameters, {macs / 1e9:.3f} GMACs at {size}x{size}</p>"
            + html_bars(list(parts.items()), scale=scale, fmt="{:,}"))


def compare_variants(first: str = "resnet50", second: str = "resnext50_32x4d", **kw):
    """Chapter 5: two variants' parameters per part (stem, layer1..4, fc) and their MACs at an input side."""
    import resnet_edu as rn

    names = list(rn.VARIANTS)
    controls = {"first": Control(names, first), "second": Control(names, second),
                "size": Control([64, 224, 448], 224, live=(64, 448, 32))}

    def one(first, size):
        return _variant_row(first, size, "first")

    def two(second, size):
        return _variant_row(second, size, "second")

    return explorer(controls, [Part(one, ["first", "size"]), Part(two, ["second", "size"])], **kw)


# --------------------------------------------------------------------------- chapter 6
def digit_image(model, x, y, indices: Optional[Sequence[int]] = None, **kw):
    """Chapter 6: one test image and the model's three most likely digits.

    ``indices``: the images the book precomputes (default: the misclassified ones and the first
    few others, at most 16); the live panel offers every index of ``x``."""
    import torch
    from .visualization import html_bars, png_img

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
    from . import quantization as rq
    from .visualization import svg_histogram

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
    from .visualization import html_bars

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
    ARM); activations use 7 bits only where fbgemm-style kernels without VNNI need it."""
    import torch
    from torch.ao.quantization import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver, QConfig
    from . import quantization as rq

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
    reduce = backend in ("x86", "fbgemm") and not torch.cpu._is_vnni_supported()
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
    from .visualization import rows_to_html

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
    from . import quantization as rq
    from .visualization import pt2e_graph_ops, pt2e_inductor_kernels

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
