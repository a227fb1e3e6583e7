"""resnet_edu: torchvision's ResNet family rebuilt line by line, and quantized to INT8.

Everything the book's chapters run lives here; notebooks import it and never define a model.
The model code mirrors ``torchvision.models.resnet`` name for name (see :mod:`resnet_edu.models`).
"""

from .analysis import count_macs, count_parameters, trace_shapes, variant_table
from .models import (
    VARIANTS,
    BasicBlock,
    Bottleneck,
    ResNet,
    WeightsUnavailableError,
    conv1x1,
    conv3x3,
    get_weights,
    load_pretrained_state_dict,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)

__version__ = "0.1.0"

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
    "get_weights",
    "load_pretrained_state_dict",
    "WeightsUnavailableError",
    "count_parameters",
    "count_macs",
    "trace_shapes",
    "variant_table",
]
