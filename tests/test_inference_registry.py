"""Model cards + weights: round trip, checksum refusal, no unpickling, discovery, device choice."""
from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
from torch import nn

from inference import device as dev
from inference import registry
from inference.registry import ChecksumError, ModelCard, ModelError


@registry.register_architecture("test-tiny")
class Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 2, 1))

    def forward(self, x):
        return self.net(x)


def card(name="tiny", version="1.0.0", **kw) -> ModelCard:
    return ModelCard(name=name, version=version, task="patch-classifier", modality="MG",
                     architecture="test-tiny", arch_kwargs={"width": 4}, classes=["a", "b"], **kw)


def trained_tiny(seed=0) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny()
    with torch.no_grad():  # non-trivial BN statistics must survive the round trip too
        m.net[1].running_mean.uniform_(-1, 1)
        m.net[1].running_var.uniform_(0.5, 2)
    return m.eval()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user-models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(d))
    return d


def test_round_trip_gives_identical_outputs(tmp_path):
    m = trained_tiny()
    path = registry.save_model(m, card(), tmp_path)
    assert path == tmp_path / "tiny.json"
    data = json.loads(path.read_text())
    assert data["weights"] == "tiny.safetensors" and len(data["sha256"]) == 64
    assert "path" not in data and "synthetic" in data["disclaimer"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    loaded, c = registry.load_model(path)
    assert not loaded.training
    assert c.classes == ["a", "b"] and c.path == tmp_path
    x = torch.randn(2, 1, 9, 11)
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))


def test_checksum_mismatch_is_refused_before_loading(tmp_path, monkeypatch):
    path = registry.save_model(trained_tiny(), card(), tmp_path)
    weights = tmp_path / "tiny.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one flipped bit in a tensor
    weights.write_bytes(bytes(raw))
    parsed = []
    import safetensors.torch as st
    monkeypatch.setattr(st, "load", lambda *a, **k: parsed.append(1))
    with pytest.raises(ChecksumError, match="tiny.safetensors"):
        registry.load_model(path)
    assert not parsed
    assert issubclass(ChecksumError, ModelError)


def test_card_without_checksum_is_refused(tmp_path):
    path = registry.save_model(trained_tiny(), card(), tmp_path)
    data = json.loads(path.read_text())
    data["sha256"] = ""
    path.write_text(json.dumps(data))
    with pytest.raises(ChecksumError):
        registry.load_model(path)


class _Boom:
    def __reduce__(self):
        return (exec, ("import builtins; builtins._lightbox_pwned = True",))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pickle_bearing_file_is_never_unpickled(tmp_path, suffix):
    """Even with a matching checksum (attacker wrote the card too) the payload never runs."""
    import builtins
    weights = tmp_path / f"evil{suffix}"
    if suffix == ".pt":
        torch.save({"w": _Boom()}, weights)  # an ordinary pickle zip, not TorchScript
    else:
        weights.write_bytes(pickle.dumps({"w": _Boom()}))
    c = card(name="evil", weights=weights.name, sha256=registry.sha256_bytes(weights.read_bytes()))
    c.path = tmp_path
    with pytest.raises(ModelError):
        registry.load_model(c)
    assert not hasattr(builtins, "_lightbox_pwned")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_model_loads_with_checksum(tmp_path):
    m = trained_tiny()
    scripted = torch.jit.script(m)
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    c = card(name="scripted", weights="scripted.pt", sha256=registry.sha256_bytes(path.read_bytes()))
    c.path = tmp_path
    loaded, _ = registry.load_model(c)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), m(x))
    c.sha256 = "0" * 64
    with pytest.raises(ChecksumError):
        registry.load_model(c)


def test_weights_must_live_beside_the_card(tmp_path):
    c = card(weights="../elsewhere.safetensors", sha256="0" * 64)
    c.path = tmp_path
    with pytest.raises(ModelError, match="beside the card"):
        registry.load_model(c)


def test_unknown_architecture_and_wrong_shapes_are_model_errors(tmp_path):
    path = registry.save_model(trained_tiny(), card(), tmp_path)
    data = json.loads(path.read_text())
    data["arch_kwargs"] = {"width": 5}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit"):
        registry.load_model(path)
    data["architecture"] = "no-such-net"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unknown architecture"):
        registry.load_model(path)


def test_user_folder_models_appear_and_newest_version_wins(user_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: tmp_path / "shipped")
    registry.save_model(trained_tiny(), card(version="1.0.0"), tmp_path / "shipped")
    assert registry.model_dirs()[1] == user_dir
    assert [c.version for c in registry.available_models()] == ["1.0.0"]
    registry.save_model(trained_tiny(1), card(version="1.10.0"), user_dir)
    registry.save_model(trained_tiny(2), card(name="other", version="2"), user_dir)
    names = sorted((c.name, c.version) for c in registry.available_models(task="patch-classifier"))
    assert names == [("other", "2"), ("tiny", "1.0.0"), ("tiny", "1.10.0")]
    assert registry.available_models(modality="CT") == []
    found = registry.find_model("tiny")
    assert found.version == "1.10.0" and found.path == user_dir
    assert registry.find_model("tiny", version="1.0.0").path == tmp_path / "shipped"
    with pytest.raises(ModelError, match="no model named 'missing'"):
        registry.find_model("missing")


def test_user_dir_defaults_to_xdg_config(monkeypatch, tmp_path):
    monkeypatch.delenv("LIGHTBOX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert registry.user_models_dir() == tmp_path / "lightbox" / "models"
    assert registry.model_dirs()[0].parts[-2:] == ("resources", "models")


def test_broken_card_is_named_not_fatal(user_dir, caplog):
    registry.save_model(trained_tiny(), card(name="good"), user_dir)
    (user_dir / "broken.json").write_text("{not json")
    (user_dir / "incomplete.json").write_text(json.dumps({"name": "x"}))
    registry.save_model(trained_tiny(), card(name="orphan"), user_dir)
    (user_dir / "orphan.safetensors").unlink()
    problems: list = []
    cards = registry.available_models(problems=problems)
    assert "good" in [c.name for c in cards]
    assert not {"x", "orphan"} & {c.name for c in cards}
    joined = "\n".join(problems)
    for name in ("broken.json", "incomplete.json", "orphan.json"):
        assert name in joined
    assert "missing" in joined and "lacks" in joined
    assert "broken.json" in caplog.text


def test_pick_device_auto_and_explicit():
    auto = dev.pick_device("auto")
    assert auto.type in ("cuda", "mps", "cpu")
    assert dev.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(dev.DeviceError, match="unknown device"):
        dev.pick_device("tpu")
    if not torch.cuda.is_available():
        assert auto.type != "cuda"
        with pytest.raises(dev.DeviceError, match="cuda"):
            dev.pick_device("cuda")


def test_model_device_follows_the_weights():
    m = trained_tiny()
    assert dev.model_device(m) == torch.device("cpu")
    assert dev.model_device(m, "cpu") == torch.device("cpu")
    assert dev.model_device(nn.ReLU()) == torch.device("cpu")  # no parameters


def test_autocast_is_noop_on_cpu():
    with dev.autocast(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert dev.autocast_dtype(torch.device("cpu")) is None


def test_oom_retries_on_cpu_with_a_message():
    calls = []

    def fn(d):
        calls.append(d.type)
        if d.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return 42

    messages = []
    assert dev.run_with_cpu_fallback(fn, torch.device("cuda"), notify=messages.append) == 42
    assert calls == ["cuda", "cpu"] and "out of memory" in messages[0] and "CPU" in messages[0]
    calls.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert dev.run_with_cpu_fallback(fn, torch.device("cuda")) == 42
    assert any("CPU" in str(x.message) for x in w)


def test_other_errors_and_cpu_oom_are_not_swallowed():
    def bad(d):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        dev.run_with_cpu_fallback(bad, torch.device("cuda"))

    def oom(d):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        dev.run_with_cpu_fallback(oom, torch.device("cpu"))


def test_saving_is_reproducible_byte_for_byte(tmp_path):
    """Same weights -> same file and sha256, so retraining with the same seed can be verified."""
    a = registry.save_model(trained_tiny(), card(), tmp_path / "a")
    b = registry.save_model(trained_tiny(), card(), tmp_path / "b")
    assert (tmp_path / "a" / "tiny.safetensors").read_bytes() == (tmp_path / "b" / "tiny.safetensors").read_bytes()
    assert json.loads(a.read_text())["sha256"] == json.loads(b.read_text())["sha256"]
    c = registry.save_model(trained_tiny(seed=5), card(), tmp_path / "c")
    assert json.loads(c.read_text())["sha256"] != json.loads(a.read_text())["sha256"]


def test_card_with_nan_metric_is_refused_before_writing(tmp_path):
    with pytest.raises(ModelError, match="finite"):
        registry.save_model(trained_tiny(), card(metrics={"auc": float("nan")}), tmp_path)
    assert not any(tmp_path.iterdir())
