"""The digits data: shapes, a fixed split, normalization from the training set only, clear errors."""
from __future__ import annotations

import pytest
import torch

from resnet_edu import data


def test_shapes_split_and_labels():
    t = data.load_digits_tensors(size=32)
    assert t["x_train"].shape == (1347, 3, 32, 32) and t["x_test"].shape == (450, 3, 32, 32)
    assert t["x_train"].dtype == torch.float32 and t["y_train"].dtype == torch.int64
    assert len(t["y_train"]) == 1347 and len(t["y_test"]) == 450
    # stratified: every class appears in the test set in about the same share
    counts = torch.bincount(t["y_test"], minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # 25 % of each class (174 to 183 images)
    # 3 identical channels (a grey image made RGB)
    assert torch.equal(t["x_train"][:, 0], t["x_train"][:, 2])


def test_normalization_uses_training_statistics():
    t = data.load_digits_tensors(size=16)
    assert abs(t["x_train"].mean().item()) < 1e-5
    assert abs(t["x_train"].std().item() - 1) < 1e-4
    assert abs(t["x_test"].mean().item()) > 1e-4  # test set normalized with train statistics, not its own
    assert t["mean"].ndim == 0 and t["std"].item() > 0


def test_split_is_fixed_by_seed():
    a, b = data.load_digits_tensors(size=8, seed=0), data.load_digits_tensors(size=8, seed=0)
    c = data.load_digits_tensors(size=8, seed=1)
    assert torch.equal(a["y_test"], b["y_test"]) and torch.equal(a["x_test"], b["x_test"])
    assert not torch.equal(a["y_test"], c["y_test"])


def test_loaders_repeat_the_same_order():
    tr1, te1 = data.digits_loaders(size=8, batch_size=100)
    tr2, _ = data.digits_loaders(size=8, batch_size=100)
    x1, y1 = next(iter(tr1))
    x2, y2 = next(iter(tr2))
    assert torch.equal(y1, y2) and torch.equal(x1, x2)
    assert len(tr1.dataset) == 1347 and len(te1.dataset) == 450
    assert len(tr1) == 14  # ceil(1347 / 100)


def test_calibration_batches():
    tr, _ = data.digits_loaders(size=8, batch_size=16)
    batches = data.calibration_batches(tr, num_batches=3)
    assert len(batches) == 3 and all(b.shape == (16, 3, 8, 8) for b in batches)
    with pytest.raises(ValueError, match="num_batches=1000 but the loader holds only 85 batches"):
        data.calibration_batches(tr, num_batches=1000)
    with pytest.raises(ValueError, match="num_batches must be an integer >= 1, got 0"):
        data.calibration_batches(tr, num_batches=0)
    with pytest.raises(ValueError, match="loader must be a DataLoader"):
        data.calibration_batches(torch.zeros(3), num_batches=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": 4}, r"size must be an integer >= 8, got 4"),
        ({"size": 32.0}, r"size must be an integer >= 8, got 32.0"),
        ({"size": True}, r"size must be an integer"),
        ({"test_fraction": 1.5}, r"test_fraction must be a number strictly between 0 and 1, got 1.5"),
        ({"test_fraction": 0}, r"test_fraction must be a number strictly between 0 and 1"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_digits_tensors(**kwargs)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        data.digits_loaders(batch_size=0)


def test_cifar10_offline_error_is_clear(tmp_path, monkeypatch):
    """Never downloads: with download=False and an empty folder the error says what to do."""
    with pytest.raises(RuntimeError, match=r"CIFAR-10 is not available in .*cifar-10-batches-py"):
        data.cifar10_loaders(root=str(tmp_path), download=False)
