"""A short, readable training loop: seeded, device-agnostic, with a tqdm progress bar.

Three layers, from small to large:

* :func:`train_one_epoch` and :func:`evaluate`: one pass over a loader;
* :func:`fit`: AdamW with a one-cycle learning-rate schedule, evaluating after every epoch;
* :func:`get_digits_model`: the book's trained ResNet-18 on scikit-learn's digits, trained once and
  cached as a checkpoint (keyed by the training recipe and the source code that produces it).

Checkpoints are plain dicts of tensors, strings and numbers, saved with :func:`torch.save` and read
back **only** with ``torch.load(..., weights_only=True)``: a file that carries code (any pickled
object other than those plain types) is refused instead of executed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import pickle
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import DataLoader

__all__ = [
    "seed_everything",
    "default_device",
    "train_one_epoch",
    "evaluate",
    "predict",
    "confusion_matrix",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "UnsafeCheckpointError",
    "DIGITS_RECIPE",
    "digits_cache_dir",
    "digits_model_path",
    "digits_loaders_for",
    "train_digits_model",
    "get_digits_model",
]

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------------
# 1. Seeds and devices
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a run repeats exactly on the same machine."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA device


def default_device() -> torch.device:
    """CUDA when present (e.g. a Colab GPU runtime), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# 2. One epoch, evaluation, predictions
# --------------------------------------------------------------------------------------------------
def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: Optional[Any] = None,
    progress: Optional[Any] = None,
) -> float:
    """One pass over ``loader`` in train mode; returns the mean training loss.

    ``scheduler`` (if given) steps after every batch; ``progress`` (a tqdm bar, if given) advances
    by one per batch and shows the running loss.
    """
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(y)
        count += len(y)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """``(predicted, true)`` labels over ``loader`` (both int64 CPU tensors), in eval mode."""
    device = device or _model_device(model)
    if isinstance(model, nn.Module):
        model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(preds), torch.cat(labels)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: Optional[torch.device] = None) -> Dict[str, float]:
    """``{"loss", "accuracy"}`` over ``loader`` in eval mode (accuracy as a fraction).

    ``model`` may be any callable that maps a batch to logits (e.g. a quantized or compiled model);
    an ``nn.Module`` is put in eval mode first.
    """
    device = device or (_model_device(model) if isinstance(model, nn.Module) else torch.device("cpu"))
    if isinstance(model, nn.Module):
        model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += loss_fn(out.float(), y).item()
        correct += (out.argmax(1) == y).sum().item()
        count += len(y)
    if count == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss / count, "accuracy": correct / count}


def confusion_matrix(predicted: Tensor, true: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]`` = how many examples of true class ``i`` were predicted as class ``j``."""
    if predicted.shape != true.shape:
        raise ValueError(f"predicted and true must have the same shape, got {tuple(predicted.shape)} and {tuple(true.shape)}")
    idx = true.long() * num_classes + predicted.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# --------------------------------------------------------------------------------------------------
# 3. fit: AdamW + one-cycle, evaluated after each epoch
# --------------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    epochs: int = 5,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: Optional[torch.device] = None,
    progress: bool = True,
    threads: Optional[int] = None,
) -> List[Dict[str, float]]:
    """Train ``model`` with AdamW and a one-cycle schedule; evaluate on ``test_loader`` after each epoch.

    ``threads`` (optional) sets the number of CPU threads torch uses while training and restores
    the previous number afterwards. One thread makes a CPU run independent of the machine's core
    count (the same sums in the same order) and avoids threads waiting on each other on a busy machine.

    One-cycle warms the learning rate up from ``lr / 25`` to ``lr`` over the first 25 % of the steps,
    then anneals it towards zero: a short schedule that trains a randomly initialized ResNet-18 on
    the digits to about 98 % in 4 epochs. Returns one dict per epoch:
    ``{"epoch", "train_loss", "test_loss", "test_accuracy", "seconds"}`` (seconds since the start).
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if epochs * len(train_loader) < 5:
        raise ValueError(
            f"the one-cycle schedule needs at least 5 training steps, got epochs={epochs} x "
            f"{len(train_loader)} batches; use more epochs or a smaller batch size"
        )
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be None or a positive integer, got {threads!r}")
    with _torch_threads(threads):
        return _fit(model, train_loader, test_loader, epochs, lr, weight_decay, seed, device, progress)


@contextlib.contextmanager
def _torch_threads(n: Optional[int]):
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(model, train_loader, test_loader, epochs, lr, weight_decay, seed, device, progress) -> List[Dict[str, float]]:
    from tqdm.auto import tqdm

    seed_everything(seed)
    device = device or default_device()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.25)
    history: List[Dict[str, float]] = []
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"training {type(model).__name__}", unit="batch", disable=not progress) as bar:
        for epoch in range(1, epochs + 1):
            train_loss = train_one_epoch(model, train_loader, optimizer, device, scheduler, progress=bar)
            metrics = evaluate(model, test_loader, device)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "test_loss": metrics["loss"],
                    "test_accuracy": metrics["accuracy"],
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{metrics['accuracy']:.3f}")
    model.eval()
    return history


# --------------------------------------------------------------------------------------------------
# 4. Checkpoints: tensors and plain metadata only, loaded with weights_only=True
# --------------------------------------------------------------------------------------------------
class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds more than tensors and plain data (it would run code when unpickled)."""


def _versions() -> Dict[str, str]:
    import torchvision

    from . import __version__

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "resnet_edu": __version__,
            "python": platform.python_version()}


def _plain(value: Any, where: str = "metadata") -> Any:
    """Check that ``value`` is made of str/int/float/bool/None, lists and str-keyed dicts only."""
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):  # exact built-in types: a subclass (e.g. torch's TorchVersion) would
        if isinstance(value, kind):  # be pickled by class name and refused by weights_only=True
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise ValueError(
        f"{where} must hold only str, int, float, bool, None, lists and dicts (so it loads with "
        f"weights_only=True); got {type(value).__name__} {value!r}"
    )


def _build_from_metadata(meta: Dict[str, Any], build: bool = True) -> Optional[nn.Module]:
    """The (untrained) model a checkpoint's metadata describes; ``build=False`` only validates."""
    from . import models

    arch = meta.get("arch")
    if arch in models.VARIANTS:
        return models.VARIANTS[arch](num_classes=meta["num_classes"]) if build else None
    if arch == "ResNet":
        block = {"BasicBlock": models.BasicBlock, "Bottleneck": models.Bottleneck}.get(meta.get("block"))
        layers = meta.get("layers")
        if block is None or not (isinstance(layers, (list, tuple)) and len(layers) == 4):
            raise ValueError(
                "metadata with arch='ResNet' needs block='BasicBlock' or 'Bottleneck' and layers=[n1, n2, n3, n4]; "
                f"got block={meta.get('block')!r}, layers={layers!r}"
            )
        return models.ResNet(block, list(layers), num_classes=meta["num_classes"]) if build else None
    raise ValueError(f"metadata['arch'] must be 'ResNet' or one of {list(models.VARIANTS)}, got {arch!r}")


def save_checkpoint(path: PathLike, model: nn.Module, metadata: Dict[str, Any]) -> Path:
    """Save ``{"format", "state_dict", "metadata"}`` to ``path`` (written atomically).

    ``metadata`` must name the architecture: ``"arch"`` is a key of :data:`resnet_edu.VARIANTS`
    (e.g. ``"resnet18"``), or ``"ResNet"`` together with ``"block"`` (``"BasicBlock"`` or
    ``"Bottleneck"``) and ``"layers"`` (e.g. ``[1, 1, 1, 1]``); plus ``"num_classes"``. It may hold any
    plain data (accuracy, classes, input size, ...). The library versions are added under ``"versions"``.
    """

    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    _build_from_metadata(metadata, build=False)
    if not isinstance(metadata.get("num_classes"), int):
        raise ValueError(f"metadata['num_classes'] must be an int, got {metadata.get('num_classes')!r}")
    meta = _plain({**metadata, "versions": _versions()})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # write to a temporary file in the same folder, then rename: readers never see half a file
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": "resnet_edu.checkpoint/1", "state_dict": state, "metadata": meta}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns ``(model in eval mode, metadata)``.

    The file is read with ``torch.load(..., weights_only=True)``: only tensors and plain Python data
    are unpickled. A file that would import or call anything else raises
    :class:`UnsafeCheckpointError` and nothing in it runs.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it holds more than tensors and plain data, and unpickling it "
            f"could run code. Only load files you trust, and then only with weights_only=True.\n"
            f"Details from torch.load: {exc}"
        ) from None
    if not (isinstance(ckpt, dict) and ckpt.get("format") == "resnet_edu.checkpoint/1"):
        raise ValueError(
            f"{str(path)!r} is not a resnet_edu checkpoint (expected a dict with format "
            "'resnet_edu.checkpoint/1', state_dict and metadata; a bare state dict loads with "
            "model.load_state_dict(torch.load(path, weights_only=True)))"
        )
    meta = ckpt["metadata"]
    model = _build_from_metadata(meta)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.to(map_location).eval(), meta


# --------------------------------------------------------------------------------------------------
# 5. The book's digits model: trained once, cached by recipe + source hash
# --------------------------------------------------------------------------------------------------
DIGITS_RECIPE: Dict[str, Any] = {
    "arch": "resnet18",
    "num_classes": 10,
    "size": 32,  # 8x8 digits upsampled to 32x32: layer4 then works on a 1x1 grid
    "batch_size": 32,
    "test_fraction": 0.25,
    "epochs": 4,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "seed": 0,
    "threads": 1,  # the same result on any CPU count, and no waiting between threads on a busy machine
}
"""How the book's digits model is trained (input size, loader, optimizer settings, seed, CPU threads)."""


def digits_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """``cache_dir``, else ``$RESNET_EDU_CACHE``, else ``~/.cache/resnet_edu``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RESNET_EDU_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "resnet_edu"


def _recipe_key(recipe: Dict[str, Any]) -> str:
    """Hash of the recipe, the torch version and the source of the modules that shape the result."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    for name in ("models.py", "data.py", "training.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def digits_model_path(cache_dir: Optional[PathLike] = None, recipe: Optional[Dict[str, Any]] = None) -> Path:
    """Where :func:`get_digits_model` keeps (or will keep) its checkpoint."""
    recipe = dict(DIGITS_RECIPE if recipe is None else recipe)
    return digits_cache_dir(cache_dir) / f"digits_{recipe['arch']}_{_recipe_key(recipe)}.pt"


def digits_loaders_for(metadata: Optional[Dict[str, Any]] = None, batch_size: Optional[int] = None) -> Tuple[DataLoader, DataLoader]:
    """The digits loaders that match a digits model's metadata (same size, split and normalization).

    ``digits_loaders_for(meta)`` is ``data.digits_loaders(size=meta["size"], ...)``; without
    metadata it follows :data:`DIGITS_RECIPE`.
    """
    from .data import digits_loaders

    m = DIGITS_RECIPE if metadata is None else metadata
    return digits_loaders(
        size=m["size"], batch_size=batch_size or m["batch_size"], seed=m["seed"], test_fraction=m["test_fraction"]
    )


def train_digits_model(recipe: Optional[Dict[str, Any]] = None, progress: bool = True) -> Tuple[nn.Module, Dict[str, Any]]:
    """Train a ResNet on the digits following ``recipe`` (default :data:`DIGITS_RECIPE`); no caching.

    Trains on the CPU so the result is the same on every machine with the same torch. Returns
    ``(model in eval mode, metadata)``.
    """
    from .data import DIGITS_CLASSES, load_digits_tensors
    from .models import VARIANTS

    recipe = {**DIGITS_RECIPE, **(recipe or {})}
    if recipe["arch"] not in VARIANTS:
        raise ValueError(f"recipe['arch'] must be one of {list(VARIANTS)}, got {recipe['arch']!r}")
    train_loader, test_loader = digits_loaders_for(recipe)
    seed_everything(recipe["seed"])
    model = VARIANTS[recipe["arch"]](num_classes=recipe["num_classes"])
    start = time.perf_counter()
    history = fit(
        model, train_loader, test_loader, epochs=recipe["epochs"], lr=recipe["lr"],
        weight_decay=recipe["weight_decay"], seed=recipe["seed"], device=torch.device("cpu"), progress=progress,
        threads=recipe["threads"],
    )
    seconds = time.perf_counter() - start
    t = load_digits_tensors(size=recipe["size"], test_fraction=recipe["test_fraction"], seed=recipe["seed"])
    meta = {
        **recipe,
        "accuracy": history[-1]["test_accuracy"],
        "train_seconds": seconds,
        "torch_threads": recipe["threads"],
        "classes": list(DIGITS_CLASSES),
        "mean": float(t["mean"]),
        "std": float(t["std"]),
        "history": history,
        "dataset": "scikit-learn digits (8x8, upsampled), stratified split",
        "n_train": len(train_loader.dataset),
        "n_test": len(test_loader.dataset),
    }
    return model.eval(), meta


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: two processes may both train; the atomic rename keeps the file whole
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_digits_model(cache_dir: Optional[PathLike] = None, progress: bool = True) -> Tuple[nn.Module, Dict[str, Any]]:
    """The book's trained FP32 digits model and its metadata: ``(ResNet in eval mode on the CPU, dict)``.

    The first call trains it (:func:`train_digits_model`, about a minute on 2 CPU cores) and saves a
    checkpoint under ``cache_dir`` (default ``$RESNET_EDU_CACHE``, else ``~/.cache/resnet_edu``);
    later calls load that checkpoint. The file name carries a hash of :data:`DIGITS_RECIPE` and of the
    source of ``models.py``, ``data.py`` and ``training.py``, so any change to them trains anew.
    Each call returns a fresh model object, so callers may modify theirs (fuse, quantize) freely.

    The metadata holds at least ``arch``, ``accuracy`` (test accuracy, a fraction), ``train_seconds``,
    ``size`` (input is ``(N, 3, size, size)``), ``classes``, ``history`` (one dict per epoch),
    ``mean``/``std`` (the normalization), ``versions`` and ``path`` (the checkpoint file). Use
    :func:`digits_loaders_for` with it to get the matching data.
    """
    path = digits_model_path(cache_dir)
    if not path.is_file():
        with _exclusive(path.with_name(path.name + ".lock")):  # one process trains, the others wait
            if not path.is_file():
                model, meta = train_digits_model(progress=progress)
                meta["key"] = path.stem.rsplit("_", 1)[-1]
                save_checkpoint(path, model, meta)
    model, meta = load_checkpoint(path)  # every call returns exactly what the file holds
    meta = copy.deepcopy(meta)
    meta["path"] = str(path)
    return model, meta
