"""Real data that needs no download: scikit-learn's handwritten digits as ResNet-ready tensors.

The digits set ships inside scikit-learn (1,797 images of 8x8 pixels, 10 classes), so the book
builds and the tests run offline. Images are upsampled to ``size x size`` (32 by default), copied to
3 channels and normalized, so every member of the ResNet family accepts them unchanged.

For readers with internet there is also :func:`cifar10_loaders` (torchvision's CIFAR-10, 170 MB
download). The book and the tests never call it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DIGITS_CLASSES",
    "CIFAR10_CLASSES",
    "load_digits_tensors",
    "digits_loaders",
    "calibration_batches",
    "cifar10_loaders",
]

DIGITS_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (float, int)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def load_digits_tensors(size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> Dict[str, Tensor]:
    """``{"x_train", "y_train", "x_test", "y_test", "mean", "std"}``; x has shape (N, 3, size, size), float32.

    The split is stratified and fixed by ``seed`` (1,347 training and 450 test images with the
    defaults). Normalization uses the training set's mean and standard deviation only (no peeking
    at the test set); ``mean`` and ``std`` are returned as 0-d tensors so that a new image can be
    normalized the same way: ``(x - mean) / std``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    size = _check_int("size", size, 8)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    seed = _check_int("seed", seed, 0)
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values 0..16 -> 0..1
    labels = digits.target.astype(np.int64)
    i_train, i_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )

    def prepare(idx: np.ndarray) -> Tensor:
        x = torch.from_numpy(images[idx]).unsqueeze(1)  # (N, 1, 8, 8)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x.repeat(1, 3, 1, 1)  # ResNet's stem expects 3 channels

    x_train, x_test = prepare(i_train), prepare(i_test)
    mean, std = x_train.mean(), x_train.std()
    return {
        "x_train": (x_train - mean) / std,
        "y_train": torch.from_numpy(labels[i_train]),
        "x_test": (x_test - mean) / std,
        "y_test": torch.from_numpy(labels[i_test]),
        "mean": mean,
        "std": std,
    }


def digits_loaders(
    size: int = 32, batch_size: int = 32, seed: int = 0, test_fraction: float = 0.25
) -> Tuple[DataLoader, DataLoader]:
    """Train and test DataLoaders over the digits.

    The training order is shuffled by a generator seeded with ``seed``, so two loaders built with
    the same arguments yield the same batches in the same order. The test loader is not shuffled.
    """
    batch_size = _check_int("batch_size", batch_size)
    t = load_digits_tensors(size=size, test_fraction=test_fraction, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        TensorDataset(t["x_train"], t["y_train"]), batch_size=batch_size, shuffle=True, generator=generator
    )
    test = DataLoader(TensorDataset(t["x_test"], t["y_test"]), batch_size=batch_size, shuffle=False)
    return train, test


def calibration_batches(loader: DataLoader, num_batches: int = 8) -> List[Tensor]:
    """The first ``num_batches`` input batches of ``loader`` (inputs only), for quantization calibration.

    Raises ``ValueError`` when the loader holds fewer batches than asked for, so a calibration set
    never silently comes out smaller than intended.
    """
    num_batches = _check_int("num_batches", num_batches)
    if not isinstance(loader, (DataLoader, list, tuple)):
        raise ValueError(f"loader must be a DataLoader (or a list of (x, y) batches), got {type(loader).__name__}")
    batches: List[Tensor] = []
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        batches.append(x)
        if len(batches) == num_batches:
            break
    if len(batches) < num_batches:
        raise ValueError(f"num_batches={num_batches} but the loader holds only {len(batches)} batches")
    return batches


def cifar10_loaders(
    root: Optional[str] = None,
    size: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    download: bool = True,
) -> Tuple[DataLoader, DataLoader]:
    """CIFAR-10 (50,000 train / 10,000 test colour images, 32x32) through ``torchvision.datasets``.

    For readers with internet (e.g. on Colab): the first call downloads about 170 MB into ``root``
    (default ``$RESNET_EDU_DATA``, else ``~/.cache/resnet_edu/data``). Normalized with the usual
    CIFAR-10 channel statistics; the training set gets random crops and flips. Without network and
    without the files, the error says where to put them. Never used by the tests or the book build.
    """
    import torchvision
    from torchvision import transforms as T

    size = _check_int("size", size, 8)
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, 0)
    root = root or os.environ.get("RESNET_EDU_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "resnet_edu", "data")
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    resize = [T.Resize(size)] if size != 32 else []
    train_tf = T.Compose(resize + [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    test_tf = T.Compose(resize + [T.ToTensor(), T.Normalize(mean, std)])
    try:
        train_set = torchvision.datasets.CIFAR10(root, train=True, transform=train_tf, download=download)
        test_set = torchvision.datasets.CIFAR10(root, train=False, transform=test_tf, download=download)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a missing dataset is a RuntimeError
        raise RuntimeError(
            f"CIFAR-10 is not available in {root!r} and could not be downloaded ({exc.__class__.__name__}: {exc}). "
            f"With internet, call cifar10_loaders(download=True); offline, copy the folder 'cifar-10-batches-py' "
            f"(from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) into {root!r}. "
            "The book itself uses the offline digits data (digits_loaders)."
        ) from None
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
    test = DataLoader(test_set, batch_size=batch_size, shuffle=False)
    return train, test
