"""Pretrained weights travel through torch.hub's cache exactly as torchvision's do (no network here).

Each test points TORCH_HOME at a temporary folder. Where a test needs "downloaded" weights, it plants
a real state dict of the architecture under the exact file name of torchvision's URL, then checks
that the builders load exactly those tensors. Network access is replaced by a function that fails,
so no test can download anything even on a machine with internet.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights, ResNet50_Weights

import resnet_edu as rn
from resnet_edu import models


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME and no network (urlopen and torch.hub's downloader both fail)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("RESNET_EDU_OFFLINE", raising=False)
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert torch.hub.get_dir() == os.path.join(str(tmp_path), "hub")
    return tmp_path, calls


def plant(tmp_path, weights, state_dict) -> str:
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.path.basename(weights.url)
    torch.save(state_dict, path)
    return str(path)


def test_weights_file_follows_torchvision_url(torch_home):
    tmp_path, _ = torch_home
    w = ResNet18_Weights.IMAGENET1K_V1
    assert w.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert models.weights_file(w) == os.path.join(str(tmp_path), "hub", "checkpoints", "resnet18-f37072fd.pth")
    assert not models.weights_cached(w)
    assert models.model_urls["resnet18"] == w.url
    assert models.model_urls["resnet50"] == ResNet50_Weights.IMAGENET1K_V1.url


@pytest.mark.parametrize("how", ["weights_name", "weights_enum", "pretrained"])
def test_planted_checkpoint_loads_exactly(torch_home, how):
    tmp_path, calls = torch_home
    torch.manual_seed(123)
    reference = torchvision.models.resnet18()  # the real architecture's state dict, random values
    expected = reference.state_dict()
    path = plant(tmp_path, ResNet18_Weights.IMAGENET1K_V1, expected)
    assert models.weights_cached(ResNet18_Weights.IMAGENET1K_V1)
    if how == "weights_name":
        model = rn.resnet18(weights="IMAGENET1K_V1")
    elif how == "weights_enum":
        model = rn.resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    else:
        with pytest.warns(UserWarning, match="pretrained=True is deprecated"):
            model = rn.resnet18(pretrained=True)
    got = model.state_dict()
    assert list(got) == list(expected)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert calls == []  # the cache was enough: no network attempt
    assert os.path.isfile(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))


def test_default_resolves_to_the_newest_file(torch_home):
    tmp_path, _ = torch_home
    sd = torchvision.models.resnet50().state_dict()
    plant(tmp_path, ResNet50_Weights.IMAGENET1K_V2, sd)
    model = rn.resnet50(weights="DEFAULT")  # DEFAULT is V2 for resnet50: resnet50-11ad3fa6.pth
    assert torch.equal(model.fc.weight, sd["fc.weight"])
    # pretrained=True means IMAGENET1K_V1 (the old default), not DEFAULT: another file, not planted
    with pytest.warns(UserWarning, match="pretrained=True is deprecated"):
        with pytest.raises(models.WeightsUnavailableError, match="resnet50-0676ba61.pth"):
            rn.resnet50(pretrained=True)


def test_offline_error_names_url_file_and_folder(torch_home):
    tmp_path, calls = torch_home
    folder = os.path.join(str(tmp_path), "hub", "checkpoints")
    with pytest.raises(models.WeightsUnavailableError) as info:
        rn.resnet18(weights="IMAGENET1K_V1")
    msg = str(info.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "save it as resnet18-f37072fd.pth in the folder " + folder in msg
    assert "TORCH_HOME" in msg
    assert len(calls) == 1  # one quick reachability check, then the error
    assert isinstance(info.value, RuntimeError)


def test_offline_env_var_skips_the_network(torch_home, monkeypatch):
    _, calls = torch_home
    monkeypatch.setenv("RESNET_EDU_OFFLINE", "1")
    with pytest.raises(models.WeightsUnavailableError, match="RESNET_EDU_OFFLINE is set.*resnet34-b627a593.pth"):
        rn.resnet34(weights="DEFAULT")
    assert calls == []


def test_pretrained_true_offline_gives_the_same_message(torch_home):
    with pytest.warns(UserWarning, match="pretrained=True is deprecated"):
        with pytest.raises(models.WeightsUnavailableError, match=r"save it as resnet18-f37072fd\.pth in the folder"):
            rn.resnet18(pretrained=True)


def test_pretrained_false_means_random_init(torch_home):
    _, calls = torch_home
    torch.manual_seed(0)
    a = rn.resnet18(pretrained=False)
    torch.manual_seed(0)
    b = rn.resnet18()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert calls == []


def test_strict_loading_reports_missing_and_mismatched_keys(torch_home):
    tmp_path, _ = torch_home
    sd = torchvision.models.resnet18().state_dict()
    del sd["fc.bias"]
    plant(tmp_path, ResNet18_Weights.IMAGENET1K_V1, sd)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "fc.bias"'):
        rn.resnet18(weights="IMAGENET1K_V1")
    # a 10-class head cannot take ImageNet's 1000-class fc: strict loading names the shapes
    with pytest.raises(RuntimeError, match=r"size mismatch for fc.weight: copying a param with shape "
                                           r"torch.Size\(\[1000, 512\]\).*torch.Size\(\[10, 512\]\)"):
        rn.resnet18(num_classes=10).load_state_dict(torchvision.models.resnet18().state_dict(), strict=True)


def test_corrupt_cached_file_names_the_file(torch_home):
    tmp_path, _ = torch_home
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"cached weights file .*resnet18-f37072fd.pth could not be read"):
        rn.resnet18(weights="IMAGENET1K_V1")


def test_cached_file_with_code_is_refused(torch_home):
    tmp_path, _ = torch_home
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(1), "evil": _Evil()}, folder / "resnet18-f37072fd.pth")
    with pytest.raises(RuntimeError, match="could not be read.*Weights only load failed"):
        rn.resnet18(weights="IMAGENET1K_V1")
    assert not _Evil.ran


class _Evil:
    ran = False

    def __reduce__(self):
        return (_Evil._run, ())

    @staticmethod
    def _run():
        _Evil.ran = True
        return "ran"


def test_load_pretrained_state_dict_rejects_non_enum():
    with pytest.raises(ValueError, match="weights must be a torchvision WeightsEnum member"):
        models.load_pretrained_state_dict("IMAGENET1K_V1")


def test_preprocessing_comes_from_the_weights():
    w = rn.get_weights("resnet18", "DEFAULT")
    t = w.transforms()
    assert t.crop_size == [224] and t.resize_size == [256]
    assert list(t.mean) == [0.485, 0.456, 0.406] and list(t.std) == [0.229, 0.224, 0.225]
    assert len(w.meta["categories"]) == 1000
