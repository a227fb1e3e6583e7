"""The architecture chapters' explorers (0, 2, 4, 5): shapes through stages and blocks, gradients
against depth, dilation, variants side by side."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

from .widgets import Control, Part, explorer


# --------------------------------------------------------------------------- chapter 0
def _shape_table(variant: str, size: int) -> str:
    import resnet_edu as rn
    from ..visualization import rows_to_html

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



# --------------------------------------------------------------------------- chapter 2
def gradients_vs_depth(x, y, **kw):
    """Chapter 2: gradient norm per conv layer of a plain and a residual ``deep_stack`` on the batch ``(x, y)``."""
    import torch
    from .. import analysis
    from ..visualization import svg_lines

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
    from .. import analysis
    from ..visualization import rows_to_html

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



# --------------------------------------------------------------------------- chapter 4
DILATION = {"none (output stride 32)": [False, False, False],
            "layer4 (output stride 16)": [False, False, True],
            "layer3 + layer4 (output stride 8)": [False, True, True]}


def _stages(variant: str, size: int, dilation: str) -> str:
    import torch
    import resnet_edu as rn
    from ..visualization import data_flow_html

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
    from .. import analysis

    with torch.device("meta"):
        net = rn.VARIANTS[name]()
    return tuple(analysis.stage_parameters(net).items())


def _variant_row(name: str, size: int, role: str) -> str:
    import torch
    import resnet_edu as rn
    from ..visualization import html_bars

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
