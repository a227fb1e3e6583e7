"""Real data that needs no download: scikit-learn's handwritten digits as ResNet-ready tensors.

The digits set ships inside scikit-learn (1,797 images of 8x8 pixels, 10 classes), so the book
builds and the tests run offline. Images are upsampled to ``size x size`` (32 by default), copied to
3 channels and normalized, so every member of the ResNet family accepts them unchanged.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DIGITS_CLASSES", "load_digits_tensors", "digits_loaders", "calibration_batches"]

DIGITS_CLASSES = [str(i) for i in range(10)]


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def load_digits_tensors(size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> Dict[str, torch.Tensor]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` with x of shape (N, 3, size, size), float32.

    The split is stratified and fixed by ``seed``; normalization uses the training set's mean and
    standard deviation only (no peeking at the test set).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_positive_int("size", size, 8)
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be a float strictly between 0 and 1, got {test_fraction!r}")
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values 0..16 -> 0..1
    labels = digits.target.astype(np.int64)
    i_train, i_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )

    def prepare(idx: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images[idx]).unsqueeze(1)  # (N, 1, 8, 8)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x.repeat(1, 3, 1, 1)

    x_train, x_test = prepare(i_train), prepare(i_test)
    mean, std = x_train.mean(), x_train.std()
    return {
        "x_train": (x_train - mean) / std,
        "y_train": torch.from_numpy(labels[i_train]),
        "x_test": (x_test - mean) / std,
        "y_test": torch.from_numpy(labels[i_test]),
    }


def digits_loaders(
    size: int = 32, batch_size: int = 64, seed: int = 0, test_fraction: float = 0.25
) -> Tuple[DataLoader, DataLoader]:
    """Train and test DataLoaders over the digits; the training order is shuffled by a seeded generator."""
    _check_positive_int("batch_size", batch_size)
    t = load_digits_tensors(size=size, test_fraction=test_fraction, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(t["x_train"], t["y_train"]), batch_size=batch_size, shuffle=True, generator=generator)
    test = DataLoader(TensorDataset(t["x_test"], t["y_test"]), batch_size=batch_size, shuffle=False)
    return train, test


def calibration_batches(loader: DataLoader, num_batches: int = 8) -> list:
    """The first ``num_batches`` input batches of ``loader`` (inputs only), for quantization calibration."""
    _check_positive_int("num_batches", num_batches)
    batches = []
    for x, *_ in loader:
        batches.append(x)
        if len(batches) == num_batches:
            break
    return batches
