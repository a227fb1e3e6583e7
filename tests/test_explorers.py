"""resnet_edu.explorers: both forms of every explorer, without a browser.

The static form (the HTML book) must hold one stored output per combination of the controls, each
control linked to its stacks, and the default state selected; the live form (Jupyter, Colab) must be
an ``interactive`` over the full ranges whose default output is the static default state.
The formula explorers (``ex.FORMULA_EXPLORERS``) are Vega-Lite charts in the static form: their
spec must bind every control over its full live range, the Vega expressions must give what the
Python formula gives (evaluated with the vendored Vega in headless Chromium, over the whole grid or a
large seeded sample of it), and the real-module check made at build time must catch a disagreement.
The browser side of the book (operating the controls of the built pages) is in tests/test_browser.py.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("ipywidgets")
import ipywidgets as widgets  # noqa: E402

from resnet_edu import analysis, explorers as ex  # noqa: E402
from resnet_edu.explorers import formulas, vega, widgets as machinery  # noqa: E402
from resnet_edu import visualization as viz  # noqa: E402


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)


class _Digits(torch.nn.Module):
    """A tiny deterministic classifier for the chapter 6 explorer."""

    def forward(self, x):
        return torch.stack([x[:, 0].mean((1, 2)) * (k - 4.5) for k in range(10)], 1)


def _digits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 8, 8, generator=g)
    return _Digits(), x, _Digits()(x).argmax(1).roll(1)


# the call() of an inductor wrapper, as torch 2.14 writes it for a converted PT2E graph (abridged)
_WRAPPER = """
class Runner:
    def call(self, args):
        arg84_1, = args
        args.clear()
        buf0 = empty_strided_cpu((32, 3, 32, 32), (3072, 1, 96, 3), torch.uint8)
        cpp_fused_quantize_per_tensor_0(arg84_1, buf0)
        # Topologically Sorted Source Nodes: [quantize_per_tensor_default], Original ATen: [quantized_decomposed.quantize_per_tensor]
        buf1 = torch.ops.onednn.qconv_pointwise.tensor(buf0, x_scale, x_zp, p84, p21, p22, p1, [2, 2], [3, 3], [1, 1], 1, 0.0139, 0, torch.uint8, 'relu', [None], '')
        assert_tensor_metadata(buf1, (32, 64, 16, 16), (16384, 1, 1024, 64), torch.uint8, "torch.ops.onednn.qconv_pointwise.tensor(...)")
        buf2 = torch.ops.quantized.max_pool2d.default(buf1, [3, 3], [2, 2], [1, 1], [1, 1], False)
        buf8 = torch.ops.onednn.qconv_pointwise.tensor(buf2, x_scale_5, x_zp_5, p91, p42, p43, p8, [2, 2], [0, 0], [1, 1], 1, 0.0354, 115, torch.uint8, 'none', [None], '')
        torch.ops.onednn.qconv2d_pointwise.binary_tensor(buf1, x_scale_1, x_zp_1, p86, p27, p28, buf2, p3, [1, 1], [1, 1], [1, 1], 1, 0.026, 0, torch.uint8, 0.0139, 0, 'sum', 1.0, 'relu', [None], '')
        buf4 = extern_kernels.convolution(buf2, buf3, p1, stride=(2, 2), padding=(3, 3), dilation=(1, 1), transposed=False, output_padding=(0, 0), groups=1)
        buf22 = reinterpret_tensor(buf20, (32, 512, 1, 1), (512, 1, 16384, 16384), 0); del buf20  # reuse
        cpp_fused_dequantize_per_tensor_mean_quantize_per_tensor_1(buf18, buf22)
        buf23 = torch.ops.onednn.qlinear_pointwise.tensor(reinterpret_tensor(buf22, (32, 512), (512, 1), 0), x_scale_19, x_zp_19, p104, p81, p82, p0, 1.0, 0, torch.float32, 'none', [None], '')
        buf24 = torch.ops.mkl._mkl_linear.default(buf22, p104, p103, None, 32)
        return (buf23, )
"""


# every explorer of the book, as the chapters call it (small inputs where a chapter passes data)
EXPLORERS = {
    "stage_shapes": lambda **kw: ex.stage_shapes(**kw),
    "conv_output_size": lambda **kw: ex.conv_output_size(**kw),
    "conv_parameters": lambda **kw: ex.conv_parameters(**kw),
    "gradients_vs_depth": lambda **kw: ex.gradients_vs_depth(*_batch(), **kw),
    "block_shapes": lambda **kw: ex.block_shapes(**kw),
    "bottleneck": lambda **kw: ex.bottleneck(**kw),
    "stages": lambda **kw: ex.stages(**kw),
    "compare_variants": lambda **kw: ex.compare_variants(**kw),
    "digit_image": lambda **kw: ex.digit_image(*_digits(), **kw),
    "quant_error": lambda **kw: ex.quant_error({"w": torch.randn(8, 4, 3, 3), "x activation": torch.rand(2, 4, 5, 5)}, **kw),
    "ptq_settings": lambda **kw: ex.ptq_settings(
        [{"bits": b, "scheme": s, "observer": o, "accuracy": 0.5 + b / 20, "sqnr_db": 6.0 * b + len(o)}
         for b in (4, 8) for s in ("per_channel_symmetric", "per_tensor_symmetric") for o in ("histogram", "minmax")], **kw),
    "pt2e_fusion": lambda **kw: ex.pt2e_fusion(
        {"a": {"converted": ["dequantize_per_tensor", "conv2d", "quantize_per_tensor"],
               "kernels": viz.inductor_kernels_in_code(_WRAPPER)},
         "b": {"converted": ["conv2d", "relu"],
               "kernels": [{"call": "extern_kernels.convolution", "label": "float conv", "int8": False,
                            "post_ops": "", "output": "float32"}]}}, **kw),
}


FORMULA = sorted(ex.FORMULA_EXPLORERS)                     # Vega-Lite charts in the static form
WIDGETS = sorted(n for n in EXPLORERS if n not in FORMULA)  # precomputed Stacks in the static form
_STATIC = {}


def _static(name):
    """The static form of an explorer, built once per test session (building is the slow part)."""
    if name not in _STATIC:
        _STATIC[name] = EXPLORERS[name](display=False, form="static")
    return _STATIC[name]


def _html_of(output_widget) -> str:
    return "".join(o["data"].get("text/html", "") + o["data"].get("image/png", "") for o in output_widget.outputs)


def _selected_leaf(node):
    while isinstance(node, widgets.Stack):
        node = node.children[node.selected_index]
    return node


def test_every_public_explorer_is_covered():
    helpers = ("Control", "Part", "explorer", "mode", "MODE_ENV", "BOOK_ENV", "ptq_settings_rows", "pt2e_settings_ops",
               "Formula", "FormulaExplorer", "FORMULA_EXPLORERS", "VEGA_SCRIPTS", "formula_chart", "module_check",
               "range_control")
    public = {n for n in ex.__all__ if n not in helpers}
    assert public == set(EXPLORERS)
    assert set(FORMULA) == {"conv_output_size", "conv_parameters", "bottleneck"} <= public


@pytest.mark.parametrize("name", WIDGETS)
def test_static_form_stores_every_state_and_links_every_control(name):
    box = _static(name)
    stats = box._resnet_edu_stats
    controls = box._resnet_edu_controls
    assert EXPLORERS and machinery.EXPLORER_CLASS in box._dom_classes
    assert stats["states"] >= max(len(c.options) for c in controls.values()) > 1
    assert 1 <= stats["outputs"] <= stats["states"]
    # each link joins a control's index to a stack's selected_index, and every stack is linked
    links = box._resnet_edu_links
    assert len(links) == stats["stacks"]
    for link in links:
        (src, sattr), (dst, dattr) = link.source, link.target
        assert sattr == "index" and dattr == "selected_index" and isinstance(dst, widgets.Stack)
        assert len(dst.children) == len(src.options)
        assert dst.selected_index == src.index
    linked = {id(link.source[0]) for link in links}
    assert linked == {id(w) for w in controls.values()}, "a control is linked to no stack"
    # every stored output shows something, and different controls choose different pictures
    parts = box.children[1:]
    for part in parts:
        leaves = []
        stack = [part]
        while stack:
            node = stack.pop()
            if isinstance(node, widgets.Stack):
                stack.extend(node.children)
            else:
                leaves.append(node)
        assert all(_html_of(leaf) for leaf in leaves)
        if len(set(map(id, leaves))) > 1:
            assert len({_html_of(leaf) for leaf in leaves}) > 1


@pytest.mark.parametrize("name", WIDGETS)
def test_each_control_changes_what_the_static_form_shows(name):
    """Moving any one control away from the default changes the selected output of some part."""
    box = _static(name)
    controls = box._resnet_edu_controls
    links = box._resnet_edu_links

    def shown():
        return tuple(_html_of(_selected_leaf(p)) for p in box.children[1:])

    default = shown()
    for cname, w in controls.items():
        changed = False
        for i in range(len(w.options)):
            if i == w.index:
                continue
            old = w.index
            for link in links:                     # what jslink does in the browser
                if link.source[0] is w:
                    link.target[0].selected_index = i
            changed = shown() != default
            for link in links:
                if link.source[0] is w:
                    link.target[0].selected_index = old
            if changed:
                break
        assert changed, f"{name}: no value of {cname!r} changes what the reader sees"


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_live_form_is_an_interactive_whose_default_matches_the_static_default(name):
    live = EXPLORERS[name](display=False, form="live")
    static = _static(name)
    assert isinstance(live, widgets.interactive)
    assert machinery.EXPLORER_CLASS in live._dom_classes
    if name in FORMULA:       # the chart's params: same labels, same defaults, same ranges
        params = [p for p in static.spec["params"] if "bind" in p]
        assert [w.description for w in live.kwargs_widgets] == [p["bind"]["name"] for p in params]
        assert live.kwargs == {p["name"][len(vega.PARAM_PREFIX):]: p["value"] for p in params}
        for w, p in zip(live.kwargs_widgets, params):
            if p["bind"]["input"] == "range":
                assert isinstance(w, widgets.IntSlider)
                assert (w.min, w.max, w.step) == (p["bind"]["min"], p["bind"]["max"], p["bind"]["step"])
            else:
                assert [v for _, v in w.options] == p["bind"]["options"]
        return
    assert [w.description for w in live.kwargs_widgets] == [w.description for w in static._resnet_edu_controls.values()]
    # the default state of both forms comes from the same Python function with the same values
    assert live.kwargs == {n: w.value for n, w in static._resnet_edu_controls.items()}


def test_live_ranges_are_wider_than_the_book_lists():
    live = ex.stage_shapes(display=False, form="live")
    size = next(w for w in live.kwargs_widgets if w.description == "size")
    assert isinstance(size, widgets.IntSlider) and (size.min, size.max, size.step) == (32, 320, 32)
    live = ex.gradients_vs_depth(*_batch(), display=False, form="live")
    assert isinstance(live.kwargs_widgets[0], widgets.IntSlider) and live.kwargs_widgets[0].max == 40


def test_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ex.MODE_ENV, raising=False)
    monkeypatch.delenv(ex.BOOK_ENV, raising=False)
    assert ex.mode() == "live"
    monkeypatch.setenv(ex.BOOK_ENV, "1")
    assert ex.mode() == "static"
    monkeypatch.setenv(ex.MODE_ENV, "live")
    assert ex.mode() == "live"
    monkeypatch.setenv(ex.MODE_ENV, "sometimes")
    with pytest.raises(ValueError, match="static.*live"):
        ex.mode()


def test_the_book_build_sets_the_signal():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "book" / "_ext" / "book_extras.py").read_text(encoding="utf-8")
    assert f'os.environ["{ex.BOOK_ENV}"] = "1"' in text


def test_live_formula_panels_agree_with_real_modules():
    """The live panels print the formula next to a real module, for settings of the full ranges."""
    for size, k, st, p, d in [(56, 3, 1, 1, 1), (113, 3, 2, 1, 1), (224, 7, 2, 3, 1), (5, 7, 1, 0, 4), (1, 1, 3, 8, 4)]:
        html = formulas._conv_side(size, k, st, p, d)
        if size + 2 * p < d * (k - 1) + 1:
            assert "Not a valid convolution" in html
        else:
            side = analysis.conv_output_size(size, k, st, p, d)
            assert f"<b>{side}</b><br>output side (real <code>nn.Conv2d</code>): <b>{side}</b>" in html
    assert "<b>36,864</b> weights (formula); a real <code>nn.Conv2d</code> holds <b>36,864</b>" in formulas._conv_params(64, 64, 3, 1)
    assert "Not a valid convolution" in formulas._conv_params(48, 64, 3, 32)
    assert "the block holds <b>70,400</b> parameters (a real <code>Bottleneck</code>: 70,400)" in formulas._bottleneck(64, 64, 1)
    assert "Not a valid block" in formulas._bottleneck(8, 4, 1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="default 5 is not one of the options"):
        ex.Control([1, 2], 5)
    with pytest.raises(ValueError, match="unknown controls"):
        ex.explorer({"a": ex.Control([1, 2])}, [ex.Part(lambda b: "", ["b"])], display=False)
    with pytest.raises(ValueError, match="used by no part"):
        ex.explorer({"a": ex.Control([1, 2]), "b": ex.Control([1])}, [ex.Part(lambda a: "", ["a"])], display=False)
    with pytest.raises(TypeError, match="must return HTML"):
        ex.explorer({"a": ex.Control([1, 2])}, [ex.Part(lambda a: 3, ["a"])], display=False, form="static")
    with pytest.raises(ValueError, match="outside the 40 test images"):
        ex.digit_image(*_digits(), indices=[0, 99], display=False)
    with pytest.raises(ValueError, match="no row for"):
        ex.ptq_settings([{"bits": 8, "scheme": "a", "observer": "x", "accuracy": 1, "sqnr_db": 1},
                         {"bits": 4, "scheme": "b", "observer": "x", "accuracy": 1, "sqnr_db": 1}], display=False)


def test_html_pictures():
    bars = viz.html_bars([("a", 1), ("b", 3)])
    assert "width:33.33%" in bars and "width:100.00%" in bars
    with pytest.raises(ValueError, match="non-negative"):
        viz.html_bars([("a", -1)])
    svg = viz.svg_lines({"plain": [1, 10, 100], "residual": [1, 1, 1]}, log=True)
    assert svg.count("<polyline") == 2 and svg.startswith("<svg")
    with pytest.raises(ValueError, match="positive"):
        viz.svg_lines({"a": [0, 1]}, log=True)
    hist = viz.svg_histogram([0, 0, 0, 1], bins=2)
    assert hist.count("<rect") == 2
    img = viz.png_img(torch.arange(16.0).view(4, 4), width=40)
    assert img.startswith("<img src='data:image/png;base64,") and "width='40'" in img
    rows = [{"name": n, "shape": s, "params": 1} for n, s in
            [("conv1", (1, 64, 112, 112)), ("maxpool", (1, 64, 56, 56)), ("layer1", (1, 64, 56, 56)),
             ("layer2", (1, 128, 28, 28)), ("layer3", (1, 256, 14, 14)), ("layer4", (1, 512, 7, 7)),
             ("avgpool", (1, 512, 1, 1)), ("fc", (1, 1000))]]
    flow = viz.data_flow_html(rows, (1, 3, 224, 224))
    assert "512x7x7" in flow and "<b>fc</b>" in flow
    with pytest.raises(ValueError, match="missing"):
        viz.data_flow_html(rows[:3], (1, 3, 224, 224))
    assert math.isclose(float(bars.count("<tr>")), 2.0)


def _small_resnet():
    import resnet_edu as rn

    torch.manual_seed(0)
    return rn.ResNet(rn.BasicBlock, [1, 1, 1, 1], num_classes=10).eval()


def test_ptq_settings_rows_measure_every_combination():
    model = _small_resnet()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 16, 16, generator=g)
    y = model(x).argmax(1)
    rows = ex.ptq_settings_rows(model, [x[:8]], x, y, bits=(4, 8), observers=("minmax",))
    assert {(r["bits"], r["scheme"]) for r in rows} == {(b, s) for b in (4, 8)
                                                        for s in ("per_tensor_symmetric", "per_channel_symmetric")}
    by = {(r["bits"], r["scheme"]): r for r in rows}
    assert by[(8, "per_channel_symmetric")]["sqnr_db"] > by[(4, "per_channel_symmetric")]["sqnr_db"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    box = ex.ptq_settings(rows, display=False, form="static")
    assert box._resnet_edu_stats["states"] == 4
    with pytest.raises(ValueError, match="observers must be among"):
        ex.ptq_settings_rows(model, [x], x, y, observers=("percentile",))


def test_inductor_kernels_in_code_reads_the_wrapper_call_by_call():
    kernels = viz.inductor_kernels_in_code(_WRAPPER)
    assert [k["label"] for k in kernels] == [
        "C++ loop: quantize", "int8 conv+relu", "int8 max_pool2d", "int8 conv", "int8 conv+add+relu", "float conv",
        "C++ loop: dequantize_mean_quantize", "int8 linear", "float linear"]
    assert [k["output"] for k in kernels if k["label"].startswith("int8")] == ["uint8"] * 4 + ["float32"]
    assert kernels[4]["call"] == "onednn.qconv2d_pointwise.binary_tensor" and kernels[4]["post_ops"] == "add+relu"
    assert sum(k["int8"] for k in kernels) == 5
    with pytest.raises(ValueError, match="no call"):
        viz.inductor_kernels_in_code("def forward(x):\n    return x\n")


def _structure(model):
    """What the model's modules say inductor should fuse: convs, residual adds, downsample convs."""
    import resnet_edu as rn

    blocks = [m for m in model.modules() if isinstance(m, rn.BasicBlock)]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    downsample = sum(b.downsample is not None for b in blocks)
    return convs, len(blocks), downsample


def test_pt2e_settings_ops_reads_what_inductor_compiled_for_resnet18():
    """The default X86InductorQuantizer setting: every conv of a resnet18 becomes a oneDNN int8 kernel,
    each block's second conv carries the residual add and ReLU, and the counts follow the modules."""
    import resnet_edu as rn
    from resnet_edu import quantization as rq

    if not rq.pt2e_available():
        pytest.skip("torchao is not installed")
    torch.manual_seed(0)
    model = rn.resnet18(num_classes=10).eval()
    convs, blocks, downsample = _structure(model)
    assert (convs, blocks, downsample) == (20, 8, 3)      # the structure the counts below are derived from
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = ex.pt2e_settings_ops(model, [x], settings=("8-bit activations", "fc left in float"))
    default = results["8-bit activations"]
    assert default["converted"].count("conv2d") == convs
    labels = [k["label"] for k in default["kernels"]]
    int8_conv = [k for k in default["kernels"] if k["call"].startswith("onednn.qconv")]
    assert len(int8_conv) == convs and "float conv" not in labels
    assert labels.count("int8 conv+add+relu") == blocks                 # one per residual add
    assert labels.count("int8 conv+relu") == 1 + blocks                # the stem and each block's first conv
    assert labels.count("int8 conv") == downsample                     # the 1x1 downsample convs
    assert all(k["output"] == "uint8" for k in int8_conv)
    assert labels.count("int8 linear") == 1 and labels.count("int8 max_pool2d") == 1
    # inductor's own counters agree with the kernels found in its generated code
    c = default["counters"]
    assert c["qconv_weight_prepack_matcher_count"] == convs
    assert c["qconv_unary_lower_count"] + c["qconv2d_binary_lower_count"] == convs
    assert c["qconv2d_binary_lower_count"] == blocks and c["qlinear_unary_lower_count"] == 1
    # fc left in float: the convs are unchanged, the classifier is a float linear
    fc_float = [k["label"] for k in results["fc left in float"]["kernels"]]
    assert [lb for lb in fc_float if lb.startswith("int8 conv")] == [lb for lb in labels if lb.startswith("int8 conv")]
    assert "int8 linear" not in fc_float and "float linear" in fc_float
    assert "qlinear_unary_lower_count" not in results["fc left in float"]["counters"]
    # the explorer shows these counts, one state per setting
    box = ex.pt2e_fusion(results, display=False, form="static")
    assert box._resnet_edu_stats["states"] == 2
    html = "".join(o["data"]["text/html"] for o in _selected_leaf(box.children[1]).outputs)
    assert f"{convs} of the graph's {convs} convolutions run as oneDNN int8 kernels ({blocks} with the residual add" in html
    assert "onednn.qconv2d_pointwise.binary_tensor" in html
    with pytest.raises(ValueError, match="unknown settings"):
        ex.pt2e_settings_ops(model, [x], settings=("int4",))
    with pytest.raises(ValueError, match="'kernels'"):
        ex.pt2e_fusion({"a": {"converted": [], "fused": []}}, display=False, form="static")


def test_pt2e_dynamic_activations_and_the_compiled_picture():
    """Dynamic activations: each conv still runs exactly once, as an int8 or a float kernel, and the
    picture's third column is the compiled kernel list."""
    import matplotlib

    matplotlib.use("Agg")
    from resnet_edu import quantization as rq

    if not rq.pt2e_available():
        pytest.skip("torchao is not installed")
    model = _small_resnet()
    convs, _, _ = _structure(model)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    dyn = ex.pt2e_settings_ops(model, [x], settings=("dynamic activations",))["dynamic activations"]
    labels = [k["label"] for k in dyn["kernels"]]
    assert "choose_qparams" in dyn["converted"]
    assert sum(lb.startswith("int8 conv") or lb == "float conv" for lb in labels) == convs
    assert labels.count("int8 linear") == 1
    exported = rq.export_for_pt2e(model, x)
    converted = rq.quantize_pt2e(model, [x], compile=False, progress=False)
    compiled = viz.pt2e_inductor_kernels(converted)          # example from the graph's recorded input shape
    assert sum(k["call"].startswith("onednn.qconv") for k in compiled["kernels"]) == convs
    ax = viz.plot_pt2e_graph(exported, converted, first=6, kernels=compiled)
    assert len(ax.patches) == 18
    shown = [t.get_text() for t in ax.texts]
    title = next(i for i, t in enumerate(shown) if t.startswith("compiled by inductor"))
    assert f"({len(compiled['kernels'])} kernel calls in all)" in shown[title]
    first = [lb if len(lb) <= 38 else lb[:37] + "\u2026" for lb in (k["label"] for k in compiled["kernels"][:6])]
    assert shown[title + 1:title + 7] == first and any(t.startswith("int8 conv") for t in first)


def test_pictures_for_chapters_7_and_8():
    import matplotlib

    matplotlib.use("Agg")
    from resnet_edu import quantization as rq

    ax = viz.plot_vpmaddubsw_vs_vnni()
    labels = [t.get_text() for t in ax.texts]
    assert "-32,768" in labels and "-65,280" in labels and labels.count("-32,512") == 2
    with pytest.raises(ValueError, match="int8"):
        viz.plot_vpmaddubsw_vs_vnni(weight=300)
    model = _small_resnet()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    qm = rq.quantize_ptq(model, [x], progress=False)
    converted = any(viz._is_quantized_type(m) for m in qm.modules())
    domains = {n: viz._domain(m, converted) for n, m in qm.named_children()}
    assert domains["quant"] == "quantize" and domains["dequant"] == "dequantize"
    assert domains["layer1"] == domains["fc"] == domains["maxpool"] == "int8"
    viz.plot_quant_border(qm)
    with pytest.raises(ValueError, match="quant"):
        viz.plot_quant_border(model)


def test_show_source_selects_by_name():
    import resnet_edu as rn
    from resnet_edu.book import docstring_section, source_of

    body = source_of(rn.Bottleneck.__init__, "width", before="self.relu", comments=False)
    assert body.splitlines()[0].startswith("width = int(planes") and body.splitlines()[-1].startswith("self.bn3 =")
    assert "#" not in body
    init_loop = source_of(rn.ResNet.__init__, after="self.fc", before="zero_init_residual")
    assert init_loop.splitlines()[0].startswith("# The init loop") and "kaiming_normal_" in init_loop
    assert "zero_init_residual" not in init_loop
    assert source_of(rn.ResNet.__init__, "zero_init_residual").splitlines()[-1].strip().startswith("nn.init.constant_(m.bn2")
    assert source_of(rn.ResNet._make_layer).startswith("def _make_layer(")
    tail = source_of(rn.BasicBlock.forward, last=2).splitlines()
    assert tail[0].startswith("out = self.relu(out)") and tail[-1] == "return out"
    with pytest.raises(ValueError, match="last alone"):
        source_of(rn.BasicBlock.forward, "out", last=2)
    with pytest.raises(ValueError, match="no statement named 'nope'.*self.conv1"):
        source_of(rn.ResNet.__init__, "nope")
    with pytest.raises(ValueError, match="start or after"):
        source_of(rn.ResNet.__init__, "self.conv1", after="self.bn1")
    import torchvision

    assert docstring_section(torchvision.models.resnet50, "note").startswith("The bottleneck of TorchVision")
    with pytest.raises(ValueError, match="no '.. warning::'"):
        docstring_section(torchvision.models.resnet50, "warning")


# --------------------------------------------------------------------------- formula explorers (Vega-Lite)
STATIC_DIR = Path(__file__).resolve().parent.parent / "book" / "_static"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GRID_ALL = 120_000          # a grid up to this size is compared setting by setting
GRID_SAMPLE = 30_000        # else this many settings drawn with a fixed seed, plus the corners


def _controls(name):
    return formulas._FORMULA_CONTROLS[name]()


@pytest.mark.parametrize("name", FORMULA)
def test_formula_chart_binds_every_control_over_its_full_range(name):
    chart = _static(name)
    controls = _controls(name)
    assert isinstance(chart, vega.VegaChart) and chart.name == name
    params = chart.spec["params"]
    bound = [p for p in params if "bind" in p]
    assert [p["name"] for p in bound] == [vega.PARAM_PREFIX + n for n in controls]
    for p, (n, c) in zip(bound, controls.items()):
        assert p["value"] == c.default
        if p["bind"]["input"] == "range":
            b = p["bind"]
            assert list(range(b["min"], b["max"] + 1, b["step"])) == c.options, n
        else:
            assert p["bind"]["options"] == c.options, n
    assert vega.grid_size(controls) > 50_000, "a formula explorer is for ranges too wide to precompute"
    # the page's HTML: the spec (parsable, no "</" that would end its <script>), the classes, the loader
    import json
    import re

    body = re.search(r'<script type="application/json" class="rx-vega-spec">(.*?)</script>', chart.html, re.S).group(1)
    assert json.loads(body.replace("<\\/", "</")) == json.loads(json.dumps(chart.spec))
    assert chart.html.startswith(f'<div class="{machinery.EXPLORER_CLASS} {vega.VEGA_CLASS}" id="{chart.id}"')
    assert f'document.getElementById("{chart.id}")' in chart.html
    # the formula is written once: the chart's quantities are the formula's own expressions, as params
    # of the chosen setting (and, for the curve over all input sides, as calculate transforms)
    formula = ex.FORMULA_EXPLORERS[name].formula
    signals = [p for p in params if p["name"].startswith(vega.QUANTITY_PREFIX)]
    assert signals[:len(formula.steps)] == formula.signals(list(controls))
    assert [p["name"] for p in signals[len(formula.steps):]] == [vega.QUANTITY_PREFIX + "line"]
    assert "q_line" in json.dumps(chart.spec["title"])
    if name == "conv_output_size":
        assert chart.spec["transform"] == formula.calculate(list(controls), datum=["size"])


@pytest.mark.parametrize("name", FORMULA)
def test_the_note_states_the_real_module_check(name):
    chart = _static(name)
    check = chart.check
    assert check["valid"] + check["invalid"] == check["checked"] and check["valid"] > 0
    assert f"{check['checked']:,}" in chart.note and f"{check['valid']:,} valid" in chart.note
    if name == "conv_output_size":       # small enough to check every setting at build time
        assert check["all"] and check["checked"] == check["combinations"] == 224 * 4 * 3 * 9 * 4
        assert check["invalid"] > 0 and chart.note.startswith("Checked when this page was built, on all 96,768 settings")
    else:
        assert not check["all"] and check["checked"] >= ex.FORMULA_EXPLORERS[name].sample
        assert f"of the {check['combinations']:,} settings" in chart.note
    assert f'<p class="rx-vega-note">{chart.note}</p>' in chart.html


def test_module_check_fails_when_the_module_disagrees():
    """The build-time check can fail: a 'module' that rounds the other way is caught, and named."""
    fx = ex.FORMULA_EXPLORERS["conv_output_size"]

    def ceil_module(size, kernel, stride, padding, dilation):
        real = fx.real(size, kernel, stride, padding, dilation)
        if real["valid"]:
            real["side"] = -(-(size + 2 * padding - dilation * (kernel - 1) - 1) // stride) + 1
        return real

    import dataclasses

    broken = dataclasses.replace(fx, real=ceil_module, sample=300)
    with pytest.raises(AssertionError, match=r"conv_output_size: the real module disagrees .* formula \{'valid': True"):
        ex.module_check("conv_output_size", _controls("conv_output_size"), broken)
    small = dataclasses.replace(fx, sample=300)
    check = ex.module_check("conv_output_size", _controls("conv_output_size"), small)
    assert not check["all"] and check["checked"] >= 300


def test_formula_names_what_it_cannot_resolve():
    f = ex.Formula((("a", "{x} + 1"), ("b", "{a} * {y}")))
    assert f.calculate(["x", "y"]) == [{"calculate": "c_x + 1", "as": "a"}, {"calculate": "datum.a * c_y", "as": "b"}]
    assert f.calculate(["x", "y"], datum=["x"])[0]["calculate"] == "datum.x + 1"
    assert f.signals(["x", "y"]) == [{"name": "q_a", "expr": "c_x + 1"}, {"name": "q_b", "expr": "q_a * c_y"}]
    with pytest.raises(ValueError, match=r"quantity 'b' uses \{y\}, which is neither a control"):
        f.calculate(["x"])
    with pytest.raises(ValueError, match="not a formula explorer"):
        ex.formula_chart("stages")
    with pytest.raises(ValueError, match="hi=10 is not reached"):
        ex.range_control(1, 10, 1, step=2)


# ---- in Chromium, with the vendored Vega and Vega-Lite
@pytest.fixture(scope="module")
def chromium(playwright_driver):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the Vega formulas are not evaluated")
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    yield browser
    browser.close()


class _Page:
    """A page of a made-up origin holding ``body`` after the given ``_static`` scripts: every
    request is answered from book/_static or refused (and recorded in ``outside``)."""

    def __init__(self, browser, body: str, scripts=ex.VEGA_SCRIPTS):
        self.page = browser.new_page()
        self.outside, self.errors = [], []
        head = "".join(f'<script src="/_static/{s}"></script>' for s in scripts)
        html = f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"

        def route(r):
            url = r.request.url
            if url == "http://book.test/":
                r.fulfill(body=html, content_type="text/html")
            elif url.startswith("http://book.test/_static/") and (STATIC_DIR / url[25:]).is_file():
                r.fulfill(path=str(STATIC_DIR / url[25:]))
            else:
                self.outside.append(url)
                r.abort()

        self.page.route("**/*", route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.goto("http://book.test/", wait_until="load")

    def wait(self):
        self.page.wait_for_function("() => Array.from(document.querySelectorAll('.resnet-edu-vega')).every("
                                    "e => ['rendered', 'error', 'no-vega'].includes(e.getAttribute('data-state')))",
                                    timeout=30_000)
        return self.page.eval_on_selector_all(".resnet-edu-vega", "els => els.map(e => e.getAttribute('data-state'))")

    def close(self):
        self.page.close()


# Evaluates Vega-Lite calculate transforms over rows, through vega-lite's compiler and Vega's dataflow;
# returns the asked fields column by column. Rows go in and out as one JSON string (far faster than
# Playwright's value by value serialisation).
_EVALUATE = """async ({rows, transforms, fields}) => {
  const spec = {data: {name: "grid"}, transform: transforms, mark: "point"};
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), {renderer: "none"});
  view.insert("grid", JSON.parse(rows));
  await view.runAsync();
  const out = compiled.data.map(d => view.data(d.name)).find(r => r.length && fields.every(f => f in r[0]));
  return JSON.stringify(fields.map(f => out.map(r => r[f])));
}"""


def _evaluate(page, formula, controls, indices):
    import json

    rows = [vega.grid_combination(controls, i) for i in indices]
    fields = list(controls) + formula.names
    cols = json.loads(page.page.evaluate(_EVALUATE, {"rows": json.dumps(rows), "fields": fields,
                                                     "transforms": formula.calculate(list(controls), datum=list(controls))}))
    return [dict(zip(fields, values)) for values in zip(*cols)]


def _differences(name, rows):
    fx = ex.FORMULA_EXPLORERS[name]
    controls = list(_controls(name))
    bad = []
    for row in rows:
        values = {c: row[c] for c in controls}
        want = fx.reference(**values)
        got = {k: row[k] for k in want}
        if not isinstance(got["valid"], bool) or got != want:
            bad.append(f"{values}: Vega {got}, Python {want}")
    return bad


@pytest.mark.parametrize("name", FORMULA)
def test_vega_formula_matches_python_on_the_grid(name, chromium):
    """The chart's expressions, run by the vendored Vega in Chromium, give the Python formula's numbers
    (and refuse the same settings) on every setting of the grid, or on a seeded sample of 30,000
    plus every corner when the grid is larger than 120,000."""
    controls = _controls(name)
    indices = vega.grid_indices(controls, None if vega.grid_size(controls) <= GRID_ALL else GRID_SAMPLE, seed=1)
    page = _Page(chromium, "")
    try:
        rows = _evaluate(page, ex.FORMULA_EXPLORERS[name].formula, controls, indices)
    finally:
        page.close()
    assert len(rows) == len(indices)
    assert {r["valid"] for r in rows} == {True, False}, "the grid should hold valid and refused settings"
    bad = _differences(name, rows)
    assert not bad, f"{name}: {len(bad)} of {len(rows)} settings differ, e.g. " + "; ".join(bad[:3])
    assert not page.outside and not page.errors, (page.outside, page.errors)
    if name == "conv_output_size":
        assert len(rows) == vega.grid_size(controls) == 96_768


def test_the_vega_comparison_can_fail(chromium):
    """A formula with ceil for floor, or with the groups forgotten, is caught by the same comparison."""
    import dataclasses

    page = _Page(chromium, "")
    try:
        for name, old, new in [("conv_output_size", "floor(", "ceil("), ("conv_parameters", " / {groups}", ""),
                               ("bottleneck", "floor({planes}", "round({planes}")]:
            formula = ex.FORMULA_EXPLORERS[name].formula
            steps = tuple((n, t.replace(old, new)) for n, t in formula.steps)
            assert steps != formula.steps
            controls = _controls(name)
            rows = _evaluate(page, dataclasses.replace(formula, steps=steps), controls,
                             vega.grid_indices(controls, 3000, seed=2))
            assert _differences(name, rows), f"{name}: a broken formula ({old!r} -> {new!r}) went unnoticed"
    finally:
        page.close()


# The quantities of a chart at the chosen setting (its q_ params), the bound params and the drawing.
_CHART_STATE = """el => {
  const spec = JSON.parse(el.querySelector('.rx-vega-spec').textContent);
  const view = el.resnetEduView;
  const row = {}, params = {};
  for (const p of spec.params) {
    if (p.bind) { params[p.name] = view.signal(p.name); } else { row[p.name.slice(2)] = view.signal(p.name); }
  }
  const svg = el.querySelector('.rx-vega-chart svg');
  return {row, params, svg: svg ? svg.outerHTML : '', text: svg ? svg.textContent : ''};
}"""


@pytest.mark.parametrize("name", FORMULA)
def test_vega_chart_follows_its_controls(name, chromium):
    """Operated like a reader would (keys on each slider, each option of a select), the chart redraws
    and its text gives the Python formula's numbers for the controls' new values; set from script to
    random settings over the full ranges, the same."""
    import random

    chart = _static(name)
    fx = ex.FORMULA_EXPLORERS[name]
    controls = _controls(name)
    page = _Page(chromium, chart.html)
    try:
        assert page.wait() == ["rendered"], page.errors
        el = page.page.locator(".resnet-edu-vega")

        def check_state():
            state = el.evaluate(_CHART_STATE)
            values = {n[len(vega.PARAM_PREFIX):]: v for n, v in state["params"].items()}
            want = fx.reference(**values)
            got = {k: state["row"][k] for k in want}
            assert got == want, f"{name} at {values}: chart {got}, Python {want}"
            first = state["row"]["line"].split("\n")[0]
            assert first.replace(" ", "") in state["text"].replace(" ", ""), (first, state["text"][:300])
            return state

        check_state()
        sliders, selects = el.locator("input[type=range]"), el.locator("select")
        assert sliders.count() + selects.count() == len(controls)
        for j in range(sliders.count()):
            before = check_state()
            changed = False
            for key in ("End", "Home", "ArrowRight"):
                sliders.nth(j).focus()
                page.page.keyboard.press(key)
                page.page.wait_for_timeout(30)
                after = check_state()
                changed = changed or after["svg"] != before["svg"]
            assert changed, f"{name}: slider {j + 1} changes nothing"
        for j in range(selects.count()):
            before = check_state()
            options = selects.nth(j).locator("option").count()
            changed = False
            for k in range(options):
                selects.nth(j).select_option(index=k)
                page.page.wait_for_timeout(30)
                changed = changed or check_state()["svg"] != before["svg"]
            assert changed, f"{name}: select {j + 1} changes nothing"
        rng = random.Random(3)
        for index in vega.grid_indices(controls, 40, seed=4)[:: max(1, len(controls))] + rng.sample(range(vega.grid_size(controls)), 20):
            values = vega.grid_combination(controls, index)
            el.evaluate("(el, values) => { for (const [k, v] of Object.entries(values)) el.resnetEduView.signal(k, v);"
                        " return el.resnetEduView.runAsync().then(() => true); }",
                        {vega.PARAM_PREFIX + k: v for k, v in values.items()})
            check_state()
    finally:
        page.close()
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_vega_must_load_before_require_js(chromium):
    """Why book_extras loads Vega before require.js: loaded after it, the bundles register as anonymous
    AMD modules and the chart cannot draw (the explorer says so); in the book's order it draws."""
    chart = _static("conv_parameters")
    widgets_js = ("thirdparty/requirejs/require.js",)
    for scripts, want in [(widgets_js + ex.VEGA_SCRIPTS, "no-vega"), (ex.VEGA_SCRIPTS + widgets_js, "rendered")]:
        page = _Page(chromium, chart.html, scripts=scripts)
        try:
            assert page.wait() == [want], (scripts, page.errors)
            if want == "no-vega":
                assert "needs Vega" in page.page.inner_text(".rx-vega-chart")
        finally:
            page.close()
        assert not page.outside
