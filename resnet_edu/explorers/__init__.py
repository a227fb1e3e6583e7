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

The parts: :mod:`.widgets` (controls, parts, the live and the precomputed form), :mod:`.vega` (the
Vega-Lite machinery of formula explorers), :mod:`.formulas` (chapters 1 and 3), :mod:`.architecture`
(chapters 0, 2, 4, 5) and :mod:`.int8` (chapters 6-9: the digits model and its INT8 versions).

Which form? ``RESNET_EDU_EXPLORERS=static`` or ``=live`` forces one. Otherwise the static form is
used when ``RESNET_EDU_BOOK_BUILD=1``, which ``book/_ext/book_extras.py`` sets for the kernels of a
``jupyter-book build`` (they inherit the environment of the Sphinx process), and when ``Stack``
exists (ipywidgets >= 8). Everywhere else the live form is used.
"""

from __future__ import annotations

from .widgets import BOOK_ENV, MODE_ENV, Control, Part, explorer, mode
from .vega import VEGA_SCRIPTS, Formula, FormulaExplorer, module_check, range_control
from .formulas import FORMULA_EXPLORERS, bottleneck, conv_output_size, conv_parameters, formula_chart
from .architecture import block_shapes, compare_variants, gradients_vs_depth, stage_shapes, stages
from .int8 import digit_image, pt2e_fusion, pt2e_settings_ops, ptq_settings, ptq_settings_rows, quant_error

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
