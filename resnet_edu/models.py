"""The ResNet family, rebuilt line by line.

This module mirrors ``torchvision.models.resnet`` (torchvision 0.29): the same class and function
names, the same constructor signatures, the same module tree and therefore the same ``state_dict``
keys in the same order. Given the same weights and input it produces the same outputs bit for bit,
which ``tests/test_models.py`` checks for every builder.

Pretrained weights come from torchvision's ``Weights`` enums (same URLs, same hashes) and travel
through torch.hub's cache exactly as torchvision's do; see :func:`load_pretrained_state_dict`.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, Callable, Dict, List, Optional, Type, Union

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    ResNet152_Weights,
    ResNeXt50_32X4D_Weights,
    ResNeXt101_32X8D_Weights,
    ResNeXt101_64X4D_Weights,
    Wide_ResNet50_2_Weights,
    Wide_ResNet101_2_Weights,
)
from torchvision.models._api import WeightsEnum

__all__ = [
    "conv3x3",
    "conv1x1",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "VARIANTS",
    "WEIGHTS",
    "get_weights",
    "load_pretrained_state_dict",
    "WeightsUnavailableError",
    "model_urls",
    "weights_file",
    "weights_cached",
]


# --------------------------------------------------------------------------------------------------
# 1. The two convolution templates
# --------------------------------------------------------------------------------------------------
def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding.

    ``padding=dilation`` keeps H and W unchanged at stride 1 for any dilation: a dilated 3x3 kernel
    spans ``2*dilation + 1`` pixels, so it needs ``dilation`` pixels of padding on each side.
    ``bias=False`` because a BatchNorm always follows, and BatchNorm subtracts the per-channel mean,
    which removes any constant bias the convolution could add (BN's own ``beta`` takes its place).
    """
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution: mixes channels at each pixel, used to shrink/expand width and in shortcuts.

    No padding is needed (the kernel covers one pixel); ``bias=False`` for the same BatchNorm reason.
    """
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


# --------------------------------------------------------------------------------------------------
# 2. The residual blocks
# --------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)``.

    ``expansion = 1``: the block outputs ``planes`` channels. ``downsample`` is given (by
    ``ResNet._make_layer``) only when the shortcut must change shape: when ``stride != 1`` or when the
    input channel count differs from ``planes * expansion``. Used by resnet18/34.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError(
                f"BasicBlock only supports groups=1 and base_width=64, got groups={groups}, "
                f"base_width={base_width}; grouped or wider blocks need Bottleneck (ResNeXt, Wide ResNet)"
            )
        if dilation > 1:
            raise NotImplementedError(
                f"Dilation > 1 not supported in BasicBlock (got dilation={dilation}); "
                "replace_stride_with_dilation works only with Bottleneck models such as resnet50"
            )
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity  # the residual add: the block learns F(x) and outputs F(x) + x
        out = self.relu(out)

        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore, plus a shortcut. Used by resnet50/101/152, ResNeXt, Wide ResNet.

    ``planes`` is the *inner* width; the block outputs ``planes * expansion`` channels with
    ``expansion = 4``. The inner width is ``int(planes * base_width / 64) * groups``, which is how
    ResNeXt (groups, width per group) and Wide ResNet (base_width 128) reuse this class.
    The stride sits on the 3x3 conv (conv2), not on conv1 as in the original paper: torchvision's
    "ResNet v1.5", slightly more accurate and slightly more expensive.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        # Both self.conv2 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


# --------------------------------------------------------------------------------------------------
# 3. The body: stem, four stages, head
# --------------------------------------------------------------------------------------------------
class ResNet(nn.Module):
    """Stem (7x7/2 conv + 3x3/2 max-pool: 1/4 of the input size), four stages built by
    :meth:`_make_layer` (64, 128, 256, 512 inner channels; stages 2-4 halve the size), then global
    average pooling and one linear layer.

    ``layers`` gives the number of blocks per stage, e.g. ``[3, 4, 6, 3]`` for resnet50.
    ``replace_stride_with_dilation`` swaps the stride 2 of stages 2-4 for dilation (output stride 16
    or 8 for dense prediction). ``zero_init_residual`` starts each block as the identity.
    """

    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: List[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Optional[List[bool]] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer

        if len(layers) != 4:
            raise ValueError(f"layers must list the number of blocks of the 4 stages, e.g. [2, 2, 2, 2]; got {layers}")
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            # each element in the tuple indicates if we should replace
            # the 2x2 stride with a dilated convolution instead
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation should be None "
                f"or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        # The init loop: He (Kaiming) normal init for convs, BN starts as the identity map.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        # Zero-initialize the last BN in each residual branch,
        # so that the residual branch starts with zeros, and each residual block behaves like an identity.
        # This improves the model by 0.2~0.3% according to https://arxiv.org/abs/1706.02677
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.constant_(m.bn3.weight, 0)  # type: ignore[arg-type]
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)  # type: ignore[arg-type]

    def _make_layer(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        """One stage: ``blocks`` blocks, the first of which may change size and width.

        The downsample rule: the shortcut of the first block needs a 1x1 conv + BN exactly when
        ``stride != 1`` (the size changes) or ``self.inplanes != planes * block.expansion`` (the
        channel count changes). ``self.inplanes`` carries the channel count from stage to stage.
        """
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )

        layers = []
        layers.append(
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer
            )
        )
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                )
            )

        return nn.Sequential(*layers)

    def _forward_impl(self, x: Tensor) -> Tensor:
        # See note [TorchScript super()]
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


# --------------------------------------------------------------------------------------------------
# 4. Pretrained weights: torchvision's enums, torch.hub's cache
# --------------------------------------------------------------------------------------------------
WEIGHTS: Dict[str, Type[WeightsEnum]] = {
    "resnet18": ResNet18_Weights,
    "resnet34": ResNet34_Weights,
    "resnet50": ResNet50_Weights,
    "resnet101": ResNet101_Weights,
    "resnet152": ResNet152_Weights,
    "resnext50_32x4d": ResNeXt50_32X4D_Weights,
    "resnext101_32x8d": ResNeXt101_32X8D_Weights,
    "resnext101_64x4d": ResNeXt101_64X4D_Weights,
    "wide_resnet50_2": Wide_ResNet50_2_Weights,
    "wide_resnet101_2": Wide_ResNet101_2_Weights,
}


model_urls: Dict[str, str] = {arch: enum.IMAGENET1K_V1.url for arch, enum in WEIGHTS.items() if "IMAGENET1K_V1" in enum.__members__}
"""The seed's ``model_urls`` (what ``pretrained=True`` loads), read from torchvision's enums.

Same idea as the seed's dict, current files: for resnet18 ... resnet152 the seed (an older
torchvision) names older files (``resnet18-5c106cde.pth``), today's enums point at re-published ones
(``resnet18-f37072fd.pth``); the ResNeXt and Wide ResNet files are unchanged, and
``resnext101_64x4d`` is newer than the seed.
"""


class WeightsUnavailableError(RuntimeError):
    """Raised when pretrained weights are neither in torch.hub's cache nor downloadable."""


def get_weights(arch: str, weights: Any) -> Optional[WeightsEnum]:
    """Turn ``weights=`` into a torchvision ``WeightsEnum`` member (or ``None``).

    Accepts ``None``, a member of the right enum (e.g. ``ResNet50_Weights.IMAGENET1K_V2``), its name
    (``"IMAGENET1K_V1"``), ``"DEFAULT"``, or the full name ``"ResNet50_Weights.IMAGENET1K_V2"``.
    """
    if arch not in WEIGHTS:
        raise ValueError(f"unknown architecture {arch!r}; accepted: {', '.join(WEIGHTS)}")
    enum = WEIGHTS[arch]
    valid = [m.name for m in enum] + ["DEFAULT"]
    if weights is None:
        return None
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, WeightsEnum):
        raise ValueError(
            f"weights {weights} belong to another model; {arch} accepts {enum.__name__}.<name> "
            f"with <name> one of {valid}"
        )
    if isinstance(weights, str):
        name = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
        if name == "DEFAULT":
            return enum.DEFAULT  # type: ignore[attr-defined]
        if name in enum.__members__:
            return enum[name]
        raise ValueError(f"unknown weights {weights!r} for {arch}; accepted: {valid} (or None for random init)")
    raise ValueError(
        f"weights must be None, a {enum.__name__} member or one of the names {valid}; "
        f"got {type(weights).__name__} {weights!r}"
    )


def _weights_enum_check(weights: Any) -> WeightsEnum:
    if not isinstance(weights, WeightsEnum):
        raise ValueError(
            f"weights must be a torchvision WeightsEnum member such as ResNet18_Weights.IMAGENET1K_V1 "
            f"(get one with get_weights(arch, name)); got {type(weights).__name__} {weights!r}"
        )
    return weights


def weights_file(weights: WeightsEnum) -> str:
    """Where torch.hub keeps ``weights``: ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``). The file name is
    the last part of the URL, e.g. ``resnet18-f37072fd.pth``: the 8 hex digits after the dash are the
    start of the file's SHA-256, which torch.hub checks after a download (``check_hash=True``).
    """
    weights = _weights_enum_check(weights)
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(weights.url).path))


def weights_cached(weights: WeightsEnum) -> bool:
    """True when ``weights`` are already in torch.hub's cache, so loading them needs no network."""
    return os.path.isfile(weights_file(weights))


def _offline_error(weights: WeightsEnum, reason: str) -> WeightsUnavailableError:
    path = weights_file(weights)
    folder, filename = os.path.split(path)
    return WeightsUnavailableError(
        f"could not download pretrained weights {weights} from {weights.url} ({reason}). "
        f"Offline? Download that URL on a machine with internet and save it as {filename} in the folder "
        f"{folder} (torch.hub's cache; set TORCH_HOME to move it), then call again."
    )


def load_pretrained_state_dict(weights: WeightsEnum, progress: bool = True) -> Dict[str, Tensor]:
    """Load a state dict through torch.hub's cache, exactly as torchvision does.

    1. If :func:`weights_file` exists, it is read from disk (no network).
    2. Otherwise a quick reachability check (a HEAD request with a 10 s timeout) runs first, so an
       offline machine fails at once instead of hanging; then ``torch.hub.load_state_dict_from_url``
       downloads the file into the cache and verifies its hash prefix.

    Files are unpickled with ``weights_only=True`` (tensors only; no code runs). Setting the
    environment variable ``RESNET_EDU_OFFLINE=1`` skips the network entirely. Without network and
    without the file, :class:`WeightsUnavailableError` says which URL to fetch, what to name the file
    and which folder to put it in.
    """
    weights = _weights_enum_check(weights)
    url = weights.url
    path = weights_file(weights)
    folder, filename = os.path.split(path)
    if os.path.isfile(path):
        try:
            return torch.hub.load_state_dict_from_url(
                url, model_dir=folder, progress=progress, check_hash=True, file_name=filename, weights_only=True
            )
        except Exception as exc:  # a truncated or foreign file: say which one, keep the cause
            raise RuntimeError(
                f"the cached weights file {path} could not be read ({exc.__class__.__name__}: {exc}); "
                f"delete it and load again, or replace it with a fresh download of {url}"
            ) from exc
    if os.environ.get("RESNET_EDU_OFFLINE", "") not in ("", "0"):
        raise _offline_error(weights, "RESNET_EDU_OFFLINE is set, so no download was tried") from None
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _offline_error(weights, f"{exc.__class__.__name__}: {exc}") from None
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=folder, progress=progress, check_hash=True, file_name=filename, weights_only=True
        )
    except (urllib.error.URLError, OSError, ConnectionError) as exc:
        raise _offline_error(weights, f"{exc.__class__.__name__}: {exc}") from None


def _resnet(
    block: Type[Union[BasicBlock, Bottleneck]],
    layers: List[int],
    weights: Optional[WeightsEnum],
    progress: bool,
    **kwargs: Any,
) -> ResNet:
    if weights is not None:
        num_classes = len(weights.meta["categories"])
        if kwargs.get("num_classes", num_classes) != num_classes:
            raise ValueError(
                f"num_classes={kwargs['num_classes']} does not fit the pretrained weights {weights}, which have "
                f"{num_classes} classes; build without weights, load them, then replace model.fc"
            )
        kwargs["num_classes"] = num_classes

    model = ResNet(block, layers, **kwargs)

    if weights is not None:
        model.load_state_dict(load_pretrained_state_dict(weights, progress=progress), strict=True)

    return model


def _builder(arch: str) -> Callable[[Callable[..., ResNet]], Callable[..., ResNet]]:
    """Resolve ``weights=`` (enum, name or ``"DEFAULT"``) and the seed's legacy ``pretrained=``."""

    def decorate(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
        @functools.wraps(fn)
        def wrapper(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> ResNet:
            if "pretrained" in kwargs:
                pretrained = kwargs.pop("pretrained")
                if pretrained and weights is not None:
                    raise ValueError(
                        f"{arch}: got both pretrained={pretrained!r} and weights={weights!r}; "
                        "use only weights= (pretrained=True is the old spelling of weights='IMAGENET1K_V1')"
                    )
                if pretrained:
                    warnings.warn(
                        "pretrained=True is deprecated (torchvision >= 0.13); it means "
                        "weights='IMAGENET1K_V1'. Use weights= instead.",
                        UserWarning,
                        stacklevel=2,
                    )
                    weights = "IMAGENET1K_V1"
            return fn(weights=get_weights(arch, weights), progress=progress, **kwargs)

        return wrapper

    return decorate


@_builder("resnet18")
def resnet18(*, weights: Optional[ResNet18_Weights] = None, progress: bool = True, **kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2015): BasicBlock, [2, 2, 2, 2]."""
    return _resnet(BasicBlock, [2, 2, 2, 2], weights, progress, **kwargs)


@_builder("resnet34")
def resnet34(*, weights: Optional[ResNet34_Weights] = None, progress: bool = True, **kwargs: Any) -> ResNet:
    """ResNet-34 (He et al. 2015): BasicBlock, [3, 4, 6, 3]."""
    return _resnet(BasicBlock, [3, 4, 6, 3], weights, progress, **kwargs)


@_builder("resnet50")
def resnet50(*, weights: Optional[ResNet50_Weights] = None, progress: bool = True, **kwargs: Any) -> ResNet:
    """ResNet-50 (He et al. 2015, v1.5 stride placement): Bottleneck, [3, 4, 6, 3]."""
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, **kwargs)


@_builder("resnet101")
def resnet101(*, weights: Optional[ResNet101_Weights] = None, progress: bool = True, **kwargs: Any) -> ResNet:
    """ResNet-101 (He et al. 2015, v1.5): Bottleneck, [3, 4, 23, 3]."""
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, **kwargs)


@_builder("resnet152")
def resnet152(*, weights: Optional[ResNet152_Weights] = None, progress: bool = True, **kwargs: Any) -> ResNet:
    """ResNet-152 (He et al. 2015, v1.5): Bottleneck, [3, 8, 36, 3]."""
    return _resnet(Bottleneck, [3, 8, 36, 3], weights, progress, **kwargs)


def _fixed(kwargs: Dict[str, Any], name: str, value: Any, arch: str) -> None:
    """Set a hyper-parameter a named variant fixes, refusing a conflicting user value."""
    if name in kwargs and kwargs[name] != value:
        raise ValueError(f"{arch} fixes {name}={value}; got {name}={kwargs[name]}. Build ResNet(...) directly instead")
    kwargs[name] = value


@_builder("resnext50_32x4d")
def resnext50_32x4d(
    *, weights: Optional[ResNeXt50_32X4D_Weights] = None, progress: bool = True, **kwargs: Any
) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. 2017): Bottleneck, [3, 4, 6, 3], 32 groups of width 4."""
    _fixed(kwargs, "groups", 32, "resnext50_32x4d")
    _fixed(kwargs, "width_per_group", 4, "resnext50_32x4d")
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, **kwargs)


@_builder("resnext101_32x8d")
def resnext101_32x8d(
    *, weights: Optional[ResNeXt101_32X8D_Weights] = None, progress: bool = True, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 32x8d (Xie et al. 2017): Bottleneck, [3, 4, 23, 3], 32 groups of width 8."""
    _fixed(kwargs, "groups", 32, "resnext101_32x8d")
    _fixed(kwargs, "width_per_group", 8, "resnext101_32x8d")
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, **kwargs)


@_builder("resnext101_64x4d")
def resnext101_64x4d(
    *, weights: Optional[ResNeXt101_64X4D_Weights] = None, progress: bool = True, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 64x4d (Xie et al. 2017): Bottleneck, [3, 4, 23, 3], 64 groups of width 4."""
    _fixed(kwargs, "groups", 64, "resnext101_64x4d")
    _fixed(kwargs, "width_per_group", 4, "resnext101_64x4d")
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, **kwargs)


@_builder("wide_resnet50_2")
def wide_resnet50_2(
    *, weights: Optional[Wide_ResNet50_2_Weights] = None, progress: bool = True, **kwargs: Any
) -> ResNet:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis 2016): resnet50 with twice the inner width (base 128)."""
    _fixed(kwargs, "width_per_group", 64 * 2, "wide_resnet50_2")
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, progress, **kwargs)


@_builder("wide_resnet101_2")
def wide_resnet101_2(
    *, weights: Optional[Wide_ResNet101_2_Weights] = None, progress: bool = True, **kwargs: Any
) -> ResNet:
    """Wide ResNet-101-2 (Zagoruyko & Komodakis 2016): resnet101 with twice the inner width (base 128)."""
    _fixed(kwargs, "width_per_group", 64 * 2, "wide_resnet101_2")
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, progress, **kwargs)


VARIANTS: Dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnext50_32x4d": resnext50_32x4d,
    "resnext101_32x8d": resnext101_32x8d,
    "resnext101_64x4d": resnext101_64x4d,
    "wide_resnet50_2": wide_resnet50_2,
    "wide_resnet101_2": wide_resnet101_2,
}
"""Every builder by name, in the order of the book's variant table."""
