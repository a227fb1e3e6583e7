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


def conv_output_size(**kw):
    """Chapter 1: the output side of a convolution (formula next to a real ``nn.Conv2d``)."""
    controls = {
        "size": Control([56, 112, 113], 56, live=(1, 224, 1)),
        "kernel": Control([1, 3, 7], 3, live=[1, 3, 5, 7]),
        "stride": Control([1, 2], 1, live=[1, 2, 3]),
        "padding": Control([0, 1, 3], 1, live=(0, 8)),
        "dilation": Control([1, 2], 1, live=(1, 4)),
    }
    return explorer(controls, [Part(_conv_side, list(controls))], **kw)


def _conv_params(in_channels: int, out_channels: int, kernel: int, groups: int) -> str:
    from . import analysis
    from .analysis import count_parameters

    try:
        params = analysis.conv_params(in_channels, out_channels, kernel, groups)
    except ValueError as err:
        return f"<p><b>Not a valid convolution:</b> {err}</p>"
    import torch.nn as nn

    real = count_parameters(nn.Conv2d(in_channels, out_channels, kernel, groups=groups, bias=False))
    return (f"<p>{kernel}&middot;{kernel}&middot;{in_channels}&middot;{out_channels} / {groups} = <b>{params:,}</b> "
            f"weights (formula); a real <code>nn.Conv2d</code> holds <b>{real:,}</b></p>")


def conv_parameters(**kw):
    """Chapter 1: the weights of a convolution, ``k*k*Cin*Cout/groups``, next to a real module's count."""
    controls = {
        "in_channels": Control([64, 128, 256], 64, live=[32, 64, 128, 256, 512]),
        "out_channels": Control([64, 128, 256], 64, live=[32, 64, 128, 256, 512]),
        "kernel": Control([1, 3, 7], 3, live=[1, 3, 5, 7]),
        "groups": Control([1, 2, 32, 64], 1, live=[1, 2, 4, 8, 16, 32, 64]),
    }
    return explorer(controls, [Part(_conv_params, list(controls))], **kw)


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
            + html_bars([("bottleneck", params), ("two 3x3 (dense)", two)], scale=2 * analysis.conv_params(2048, 2048, 3),
                        fmt="{:,}"))


def bottleneck(**kw):
    """Chapter 3: a Bottleneck's inner width and parameters for ``planes``, ``base_width`` and ``groups``."""
    controls = {"planes": Control([64, 128, 256, 512], 64),
                "base_width": Control([4, 8, 16, 64, 128], 64),
                "groups": Control([1, 8, 32, 64], 1)}
    return explorer(controls, [Part(_bottleneck, list(controls))], **kw)


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
