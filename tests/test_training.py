"""Training reaches its accuracy, checkpoints round-trip, and a checkpoint carrying code is refused.

Accuracy is asserted; time never is. ``test_digits_model_*`` use the same cache as the book
(``$RESNET_EDU_CACHE`` or ``~/.cache/resnet_edu``), keyed by the source hash, so the book's model is
trained once (here or by the book build, whichever runs first) and the test checks that very model.
"""
from __future__ import annotations

import ast
import os
import pickle

import pytest
import torch
import torch.nn as nn

import resnet_edu as rn
from resnet_edu import training
from resnet_edu.data import digits_loaders, load_digits_tensors
from torch.utils.data import DataLoader, TensorDataset


# --------------------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------------------
def test_short_schedule_reaches_threshold():
    """A small ResNet(BasicBlock, [1, 1, 1, 1]) on 32x32 digits, 2 epochs: at least 95 % test accuracy."""
    tr, te = digits_loaders(size=32, batch_size=32)
    torch.manual_seed(0)
    model = rn.ResNet(rn.BasicBlock, [1, 1, 1, 1], num_classes=10)
    before = torch.get_num_threads()
    history = training.fit(model, tr, te, epochs=2, lr=2e-3, progress=False, device=torch.device("cpu"), threads=1)
    assert torch.get_num_threads() == before  # fit restores the thread count
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == {"epoch", "train_loss", "test_loss", "test_accuracy", "seconds"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] >= 0.95, history
    assert not model.training  # fit leaves the model in eval mode
    # evaluate() agrees with fit's last record
    assert training.evaluate(model, te)["accuracy"] == history[-1]["test_accuracy"]


def _tiny_run(seed):
    t = load_digits_tensors(size=32)
    g = torch.Generator().manual_seed(0)
    tr = DataLoader(TensorDataset(t["x_train"][:320], t["y_train"][:320]), batch_size=64, shuffle=True, generator=g)
    te = DataLoader(TensorDataset(t["x_test"][:64], t["y_test"][:64]), batch_size=64)
    torch.manual_seed(seed)
    model = rn.ResNet(rn.BasicBlock, [1, 1, 1, 1], num_classes=10)
    training.fit(model, tr, te, epochs=1, seed=seed, progress=False, device=torch.device("cpu"), threads=1)
    return model.state_dict()


def test_fit_is_deterministic():
    a, b, c = _tiny_run(0), _tiny_run(0), _tiny_run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])  # the seed matters


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
        ({"lr": -1.0}, "lr must be a positive number, got -1.0"),
        ({"weight_decay": -0.1}, "weight_decay must be a number >= 0"),
        ({"threads": 0}, "threads must be None or a positive integer, got 0"),
    ],
)
def test_fit_bad_arguments(kwargs, match):
    tr, te = digits_loaders(size=8)
    with pytest.raises(ValueError, match=match):
        training.fit(rn.ResNet(rn.BasicBlock, [1, 1, 1, 1], num_classes=10), tr, te, progress=False, **kwargs)


def test_fit_too_few_steps():
    t = load_digits_tensors(size=32)
    tiny = DataLoader(TensorDataset(t["x_train"][:8], t["y_train"][:8]), batch_size=2)
    with pytest.raises(ValueError, match=r"at least 5 training steps, got epochs=1 x 4 batches"):
        training.fit(rn.ResNet(rn.BasicBlock, [1, 1, 1, 1], num_classes=10), tiny, tiny, epochs=1, progress=False)


def test_seed_everything_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -3"):
        training.seed_everything(-3)


def test_confusion_matrix_and_predict():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    true = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = training.confusion_matrix(pred, true, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert cm.sum() == 6 and cm.trace() == 4
    with pytest.raises(ValueError, match="same shape"):
        training.confusion_matrix(pred, true[:3], 3)

    class Fixed(nn.Module):  # always predicts class 3
        def forward(self, x):
            out = torch.zeros(len(x), 10)
            out[:, 3] = 1
            return out

    _, te = digits_loaders(size=8)
    p, y = training.predict(Fixed(), te)
    assert len(p) == len(y) == 450 and set(p.tolist()) == {3}
    assert training.evaluate(Fixed(), te)["accuracy"] == pytest.approx((y == 3).float().mean().item())


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = rn.resnet18(num_classes=10).eval()
    meta = {"arch": "resnet18", "num_classes": 10, "accuracy": 0.5, "classes": [str(i) for i in range(10)],
            "size": 32, "history": [{"epoch": 1, "test_accuracy": 0.5}]}
    path = training.save_checkpoint(tmp_path / "sub" / "m.pt", model, meta)
    loaded, meta2 = training.load_checkpoint(path)
    assert type(loaded) is rn.ResNet and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    for k in meta:
        assert meta2[k] == meta[k]
    assert meta2["versions"]["torch"] == torch.__version__ and "torchvision" in meta2["versions"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_checkpoint_custom_resnet(tmp_path):
    model = rn.ResNet(rn.Bottleneck, [1, 1, 1, 1], num_classes=4)
    path = training.save_checkpoint(tmp_path / "c.pt", model,
                                    {"arch": "ResNet", "block": "Bottleneck", "layers": [1, 1, 1, 1], "num_classes": 4})
    loaded, _ = training.load_checkpoint(path)
    assert isinstance(loaded.layer1[0], rn.Bottleneck) and loaded.fc.out_features == 4


def test_checkpoint_bad_metadata(tmp_path):
    m = rn.resnet18(num_classes=10)
    with pytest.raises(ValueError, match=r"metadata\['arch'\] must be 'ResNet' or one of"):
        training.save_checkpoint(tmp_path / "a.pt", m, {"arch": "resnet19", "num_classes": 10})
    with pytest.raises(ValueError, match="needs block='BasicBlock' or 'Bottleneck'"):
        training.save_checkpoint(tmp_path / "a.pt", m, {"arch": "ResNet", "num_classes": 10})
    with pytest.raises(ValueError, match=r"metadata\['when'\] must hold only str, int, float"):
        training.save_checkpoint(tmp_path / "a.pt", m, {"arch": "resnet18", "num_classes": 10, "when": object()})
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        training.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="is not a resnet_edu checkpoint"):
        training.load_checkpoint(tmp_path / "bare.pt")


class _Payload:
    """Unpickling this calls _Payload.run: the way a malicious pickle runs code (os.system and so on)."""

    ran = []

    def __reduce__(self):
        return (_Payload.run, ("payload executed",))

    @staticmethod
    def run(msg):
        _Payload.ran.append(msg)
        return msg


def test_pickle_with_code_is_refused(tmp_path):
    # 1) a checkpoint in the right format whose metadata smuggles in an object
    path = tmp_path / "evil.pt"
    torch.save({"format": "resnet_edu.checkpoint/1", "state_dict": rn.resnet18(num_classes=10).state_dict(),
                "metadata": {"arch": "resnet18", "num_classes": 10, "x": _Payload()}}, path)
    # the danger is real: an unrestricted load runs the payload
    torch.load(path, weights_only=False)
    assert _Payload.ran == ["payload executed"]
    _Payload.ran.clear()
    with pytest.raises(training.UnsafeCheckpointError, match="refused to load .*evil.pt.*could run code"):
        training.load_checkpoint(path)
    assert _Payload.ran == []
    # 2) a plain pickle file (not even torch's zip format)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(training.UnsafeCheckpointError):
        training.load_checkpoint(raw)
    assert _Payload.ran == []
    assert issubclass(training.UnsafeCheckpointError, pickle.UnpicklingError)


def test_load_checkpoint_uses_weights_only(monkeypatch, tmp_path):
    """Every torch.load in training.py passes weights_only=True."""
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = training.save_checkpoint(tmp_path / "m.pt", rn.resnet18(num_classes=10), {"arch": "resnet18", "num_classes": 10})
    training.load_checkpoint(path)
    assert seen == [True]
    # and statically: every torch.load call in the module's code says weights_only=True
    tree = ast.parse(open(training.__file__).read())
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "load" and getattr(n.func.value, "id", None) == "torch"]
    assert loads, "no torch.load call found"
    for call in loads:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, ast.dump(call)


# --------------------------------------------------------------------------------------------------
# the book's digits model
# --------------------------------------------------------------------------------------------------
def test_cache_dir_and_key(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_EDU_CACHE", str(tmp_path))
    assert training.digits_cache_dir() == tmp_path
    assert training.digits_cache_dir(tmp_path / "x") == tmp_path / "x"
    p = training.digits_model_path()
    assert p.parent == tmp_path and p.name.startswith("digits_resnet18_") and p.suffix == ".pt"
    q = training.digits_model_path(recipe={**training.DIGITS_RECIPE, "epochs": 7})
    assert q != p  # another recipe, another file
    monkeypatch.delenv("RESNET_EDU_CACHE")
    assert training.digits_cache_dir() == training.Path.home() / ".cache" / "resnet_edu"


@pytest.fixture(scope="module")
def digits_model():
    return training.get_digits_model(progress=False)


def test_digits_model_reaches_97_percent(digits_model):
    model, meta = digits_model
    assert isinstance(model, rn.ResNet) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    for key in ("arch", "accuracy", "train_seconds", "size", "classes", "history", "mean", "std", "versions", "path"):
        assert key in meta, key
    assert meta["arch"] == "resnet18" and meta["classes"] == [str(i) for i in range(10)]
    # recompute the accuracy from the data, do not trust the stored number
    _, test_loader = training.digits_loaders_for(meta)
    acc = training.evaluate(model, test_loader)["accuracy"]
    assert acc == pytest.approx(meta["accuracy"])
    assert acc >= 0.97, acc
    assert meta["history"][-1]["test_accuracy"] == meta["accuracy"]
    assert os.path.isfile(meta["path"])


def test_digits_model_second_call_loads_the_same_weights(digits_model):
    model, meta = digits_model
    again, meta2 = training.get_digits_model(progress=False)
    assert again is not model  # a fresh object each call
    assert meta2["path"] == meta["path"] and meta2["train_seconds"] == meta["train_seconds"]
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_digits_loaders_for_matches_metadata(digits_model):
    _, meta = digits_model
    tr, te = training.digits_loaders_for(meta)
    x, _ = next(iter(te))
    assert x.shape[1:] == (3, meta["size"], meta["size"])
    assert len(tr.dataset) == meta["n_train"] and len(te.dataset) == meta["n_test"]


def test_get_digits_model_trains_once_and_caches(tmp_path, monkeypatch):
    """With a stand-in for the (slow) training: the first call trains and saves, later calls load;
    two concurrent calls train only once (a lock file serializes them)."""
    import threading

    calls = []

    def fake_train(recipe=None, progress=True):
        calls.append(1)
        torch.manual_seed(len(calls))
        return rn.resnet18(num_classes=10).eval(), {**training.DIGITS_RECIPE, "accuracy": 0.5, "train_seconds": 1.0,
                                                      "classes": [str(i) for i in range(10)], "history": []}

    monkeypatch.setattr(training, "train_digits_model", fake_train)
    results = []
    threads = [threading.Thread(target=lambda: results.append(training.get_digits_model(cache_dir=tmp_path))) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(calls) == 1 and len(results) == 2
    (m1, meta1), (m2, meta2) = results
    assert meta1["path"] == meta2["path"] and os.path.dirname(meta1["path"]) == str(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    training.get_digits_model(cache_dir=tmp_path)
    assert len(calls) == 1
