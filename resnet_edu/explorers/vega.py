"""Formula explorers in the static book: a Vega-Lite chart whose params are bound to sliders over the
full ranges, the formula written once as Vega expressions, and a build-time check of a real module."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .widgets import EXPLORER_CLASS, Control


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
