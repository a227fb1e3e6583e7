"""A short, readable training loop: seeded, device-agnostic, with a tqdm progress bar."""

from __future__ import annotations

import random
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

__all__ = ["seed_everything", "default_device", "train_one_epoch", "evaluate", "fit"]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when present (e.g. a Colab GPU runtime), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_one_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device, progress=None
) -> float:
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: Optional[torch.device] = None) -> Dict[str, float]:
    """``{"loss", "accuracy"}`` over ``loader`` in eval mode (accuracy as a fraction)."""
    device = device or next(model.parameters()).device
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += loss_fn(out, y).item()
        correct += (out.argmax(1) == y).sum().item()
        count += len(y)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    epochs: int = 5,
    lr: float = 0.05,
    seed: int = 0,
    device: Optional[torch.device] = None,
    progress: bool = True,
) -> List[Dict[str, float]]:
    """Train with SGD (momentum 0.9, weight decay 5e-4) and a one-cycle schedule; evaluate after each epoch.

    Returns one dict per epoch: ``{"epoch", "train_loss", "test_loss", "test_accuracy"}``.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    from tqdm.auto import tqdm

    seed_everything(seed)
    device = device or default_device()
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    history = []
    bar = tqdm(total=steps, desc="training", disable=not progress)

    class _Stepper:  # advance the schedule together with the progress bar
        def update(self, n: int) -> None:
            scheduler.step()
            bar.update(n)

        def set_postfix(self, **kw) -> None:
            bar.set_postfix(**kw)

    for epoch in range(1, epochs + 1):
        train_loss = train_one_epoch(model, train_loader, optimizer, device, progress=_Stepper())
        metrics = evaluate(model, test_loader, device)
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "test_loss": metrics["loss"], "test_accuracy": metrics["accuracy"]}
        )
    bar.close()
    return history
