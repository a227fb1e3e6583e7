"""The formula explorers of chapters 1 and 3 (a convolution's output side and weights, a Bottleneck's
width and parameters) and their registry."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .vega import (BAR_WIDTH, CHART_WIDTH, PARAM_PREFIX, QUANTITY_PREFIX, Formula, FormulaExplorer, VegaChart, _check_note,
                   _vega_spec, module_check, range_control)
from .widgets import Control, Part, _check, explorer, mode


# --------------------------------------------------------------------------- chapter 1
def _conv_side(size: int, kernel: int, stride: int, padding: int, dilation: int) -> str:
    from .. import analysis

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
    from .. import analysis

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
    from ..visualization import BLUE, ORANGE

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
    from .. import analysis
    from ..analysis import count_parameters

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
    from .. import analysis

    dense = analysis.conv_params(in_channels, out_channels, kernel)
    try:
        return {"valid": True, "weights": analysis.conv_params(in_channels, out_channels, kernel, groups), "dense": dense}
    except ValueError:
        return {"valid": False, "weights": None, "dense": dense}


def _conv_params_real(in_channels: int, out_channels: int, kernel: int, groups: int) -> Dict[str, Any]:
    """Parameters of real ``nn.Conv2d`` modules (built on the meta device: shapes, no memory)."""
    import torch.nn as nn
    from ..analysis import count_parameters

    dense = count_parameters(nn.Conv2d(in_channels, out_channels, kernel, bias=False, device="meta"))
    try:
        conv = nn.Conv2d(in_channels, out_channels, kernel, groups=groups, bias=False, device="meta")
    except ValueError:                  # "in_channels must be divisible by groups"
        return {"valid": False, "weights": None, "dense": dense}
    return {"valid": True, "weights": count_parameters(conv), "dense": dense}


def _conv_params_spec(controls: Mapping[str, Control]) -> Dict[str, Any]:
    from ..visualization import BLUE, GREY

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



# --------------------------------------------------------------------------- chapter 3
def _bottleneck(planes: int, base_width: int, groups: int) -> str:
    import torch
    import resnet_edu as rn
    from .. import analysis
    from ..visualization import html_bars

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
    from .. import analysis

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
    from ..visualization import BLUE, GREY, ORANGE

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
