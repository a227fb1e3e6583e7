"""resnet_edu.explorers: both forms of every explorer, without a browser.

The static form (the HTML book) must hold one stored output per combination of the controls, each
control linked to its stacks, and the default state selected; the live form (Jupyter, Colab) must be
an ``interactive`` over the full ranges whose default output is the static default state.
The browser side (operating the controls in Chromium) is in tests/test_browser.py.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

pytest.importorskip("ipywidgets")
import ipywidgets as widgets  # noqa: E402

from resnet_edu import analysis, explorers as ex  # noqa: E402
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
    helpers = ("Control", "Part", "explorer", "mode", "MODE_ENV", "BOOK_ENV", "ptq_settings_rows", "pt2e_settings_ops")
    public = {n for n in ex.__all__ if n not in helpers}
    assert public == set(EXPLORERS)


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_static_form_stores_every_state_and_links_every_control(name):
    box = _static(name)
    stats = box._resnet_edu_stats
    controls = box._resnet_edu_controls
    assert EXPLORERS and ex.EXPLORER_CLASS in box._dom_classes
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


@pytest.mark.parametrize("name", sorted(EXPLORERS))
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
    assert ex.EXPLORER_CLASS in live._dom_classes
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


def test_formula_states_agree_with_real_modules():
    """The conv explorer's states print the formula's side, and the formula is PyTorch's."""
    box = _static("conv_output_size")
    c = box._resnet_edu_controls
    opts = [w.options for w in c.values()]
    for values in itertools.product(*[[v for _, v in o] for o in opts]):
        size, k, s, p, d = values
        html = ex._conv_side(size, k, s, p, d)
        if size + 2 * p < d * (k - 1) + 1:
            assert "Not a valid convolution" in html
        else:
            side = analysis.conv_output_size(size, k, s, p, d)
            assert f"<b>{side}</b><br>output side (real <code>nn.Conv2d</code>): <b>{side}</b>" in html


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
