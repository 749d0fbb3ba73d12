"""ONNX, TorchScript and torch.export imports with a user-filled card, and the ONNX Runtime backend.

The artefacts are made with torch's own exporters from the shipped demo models; the reference is
the demo model itself run by inference.segment, so "equal" means the imported file, described by
its card, gives the demo model's probabilities (max |diff| < 1e-4) and labels.
"""
from __future__ import annotations

import json
import shutil
import warnings
import zipfile

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from inference import domain, formats, onnx_backend  # noqa: E402
from inference.formats.base import VolumeImage  # noqa: E402
from inference.formats.described import DescribedRunner  # noqa: E402
from inference.phantoms import ct_phantom  # noqa: E402
from inference.registry import ModelCard, load_model, shipped_models_dir  # noqa: E402
from inference.segment import Cancelled, segment_volume, sliding_window  # noqa: E402

CT_SPACING = (2.5, 1.4, 1.4)
TOL = 1e-4


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _export_onnx(module, example, path, dynamic=True):
    nd = example.ndim
    axes = {0: "n", **{i: f"s{i}" for i in range(2, nd)}}
    _quiet(torch.onnx.export, module, (example,), str(path), input_names=["image"], output_names=["logits"],
           dynamic_axes={"image": axes, "logits": axes} if dynamic else None, dynamo=False)
    return path


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """The demo CT model, its ONNX export, a small phantom and the demo path's own result on it."""
    model, card = load_model(shipped_models_dir() / "ct-organs-unet3d.json")
    folder = tmp_path_factory.mktemp("ct")
    path = _export_onnx(model, torch.randn(1, 2, 32, 64, 64), folder / "organs.onnx")
    volume, _ = ct_phantom(shape=(40, 140, 140), spacing=CT_SPACING, seed=3)
    labels, probs = segment_volume(model, card, volume, CT_SPACING, device="cpu", probabilities="full")
    return {"model": model, "card": card, "onnx": path, "volume": volume, "labels": labels, "probs": probs,
            "folder": folder}


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTBOX_CACHE_DIR", raising=False)  # the ONNX cache then follows XDG_CACHE_HOME
    return tmp_path / "models"


def _ct_answers(card, **extra):
    """What a user fills in for the exported demo CT model (copied from its card)."""
    return {"modality": "CT", "classes": list(card.classes), "normalization": dict(card.normalization),
            "input": {"spacing_mm": [3.0, 3.0, 3.0], "patch_size": [32, 64, 64], "overlap": 0.25}, **extra}


def _assert_same(pred, ct):
    assert pred.classes == list(ct["card"].classes)
    assert pred.probabilities.shape == ct["probs"].shape
    assert np.abs(pred.probabilities - ct["probs"]).max() < TOL
    np.testing.assert_array_equal(pred.labels, ct["labels"])
    assert len(np.unique(ct["labels"])) >= 3  # the phantom shows organs: the comparison means something


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------
def test_onnx_plan_prefills_what_the_graph_says(ct):
    plan = formats.inspect(ct["onnx"])
    assert plan.format == "onnx" and plan.runs_code == []
    graph = plan.card["extra"]["graph"]
    assert graph["input_shape"][1] == 2 and len(graph["input_shape"]) == 5
    assert graph["output_shape"][1] == 4 and graph["opset"]
    assert plan.card["task"] == "segmentation-3d"  # 5D in, 5D out
    suggested = plan.card["extra"]["suggested"]
    assert suggested["classes"] == ["background", "class 1", "class 2", "class 3"]
    assert suggested["input"]["channels"] == 2 and suggested["input"]["patch_size"] is None  # free sizes
    assert {"modality", "classes", "input", "normalization"} <= set(plan.needs)
    assert "classes" not in plan.card and "input" not in plan.card  # placeholders only count once accepted


def test_static_onnx_prefills_the_patch_size(ct, tmp_path):
    path = _export_onnx(ct["model"], torch.randn(1, 2, 32, 64, 64), tmp_path / "static.onnx", dynamic=False)
    plan = formats.inspect(path)
    assert plan.card["extra"]["suggested"]["input"]["patch_size"] == [32, 64, 64]
    assert plan.card["extra"]["graph"]["input_shape"][0] == 1  # a fixed batch: one window per call


def test_install_refuses_while_needs_are_empty(ct, models_dir):
    plan = formats.inspect(ct["onnx"])
    with pytest.raises(formats.NotImportable, match="classes.*input.*normalization"):
        formats.install(plan, {"modality": "CT"})
    assert not models_dir.exists() or not list(models_dir.iterdir())


def test_onnx_runner_equals_the_torch_demo_model(ct, models_dir):
    plan = formats.inspect(ct["onnx"])
    card = formats.install(plan, _ct_answers(ct["card"], name="organs-onnx"))
    assert card.architecture == "onnx" and (models_dir / card.weights).exists()
    runner, loaded = load_model(models_dir / "organs-onnx-1.json")
    assert isinstance(runner.net, onnx_backend.OrtModule)  # onnxruntime, not torch, ran it
    seen = []
    pred = runner.predict(VolumeImage(ct["volume"], CT_SPACING, modality="CT"), progress=seen.append)
    _assert_same(pred, ct)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        runner.predict(VolumeImage(ct["volume"], CT_SPACING), cancel=lambda: True)


def test_onnx_card_contradicting_the_file_is_refused(ct, models_dir):
    plan = formats.inspect(ct["onnx"])
    answers = _ct_answers(ct["card"], name="wrong-channels")
    answers["input"]["channels"] = 3
    with pytest.raises(formats.NotImportable, match="takes 2 input channel"):  # before anything is written
        formats.install(plan, answers)
    assert not list(models_dir.glob("wrong-channels*"))


def _tiny_onnx(path, domain):
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_custom_operator_domains_are_refused(tmp_path):
    assert formats.inspect(_tiny_onnx(tmp_path / "plain.onnx", "")).card["task"] == "segmentation-2d"
    with pytest.raises(formats.NotImportable, match="custom domain.*my.ops"):
        formats.inspect(_tiny_onnx(tmp_path / "custom.onnx", "my.ops"))


def test_external_tensors_are_refused(ct, tmp_path):
    model = onnx.load(str(ct["onnx"]))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    with pytest.raises(formats.NotImportable, match="separate files"):
        formats.inspect(tmp_path / "ext.onnx")


# --------------------------------------------------------------------------
# TorchScript and torch.export
# --------------------------------------------------------------------------
def test_torchscript_runner_equals_the_demo_model(ct, models_dir, tmp_path):
    traced = _quiet(torch.jit.trace, ct["model"], torch.randn(1, 2, 32, 64, 64))
    path = tmp_path / "organs.pt"
    _quiet(torch.jit.save, traced, str(path))
    plan = formats.inspect(path)
    assert plan.format == "torchscript" and plan.runs_code == []
    assert "task" in plan.needs and "input" in plan.needs  # the file says nothing of its input
    card = formats.install(plan, _ct_answers(ct["card"], name="organs-ts", task="segmentation-3d"))
    runner, _ = load_model(card)
    _assert_same(runner.predict(VolumeImage(ct["volume"], CT_SPACING)), ct)


@pytest.fixture(scope="module")
def pt2(ct):
    path = ct["folder"] / "organs.pt2"
    program = torch.export.export(ct["model"], (torch.randn(2, 2, 32, 64, 64),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    torch.export.save(program, str(path))
    return path


def test_torch_export_needs_confirmation_and_equals_the_demo_model(ct, pt2, models_dir):
    plan = formats.inspect(pt2)
    assert plan.format == "torch-export" and plan.card["task"] == "segmentation-3d"
    assert plan.card["extra"]["graph"]["input_shape"][1:] == [2, 32, 64, 64]
    assert plan.card["extra"]["suggested"]["input"]["patch_size"] == [32, 64, 64]
    assert plan.runs_code and "eval" in plan.runs_code[0]  # torch.export.load can run Python
    answers = _ct_answers(ct["card"], name="organs-pt2")
    with pytest.raises(formats.NotImportable, match="confirm"):
        formats.install(plan, answers)
    card = formats.install(plan, answers, confirmed=True)
    assert card.extra["import"]["code_confirmed"] == plan.runs_code
    runner, _ = load_model(card)
    _assert_same(runner.predict(VolumeImage(ct["volume"], CT_SPACING)), ct)


def test_torch_export_calling_python_is_refused(pt2, tmp_path):
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("models/model.json"):
                program = json.loads(data)
                program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"
                data = json.dumps(program).encode()
            dst.writestr(item, data)
    with pytest.raises(formats.NotImportable, match="torch.hub.load"):
        formats.inspect(bad)


# --------------------------------------------------------------------------
# 2D: a mammography U-Net and an image classifier
# --------------------------------------------------------------------------
def test_onnx_2d_segmentation_per_slice(tmp_path, models_dir):
    model, card = load_model(shipped_models_dir() / "mammo-lesion-unet2d.json")
    path = _export_onnx(model, torch.randn(1, 1, 192, 192), tmp_path / "lesion.onnx")
    plan = formats.inspect(path)
    assert plan.card["task"] == "segmentation-2d"
    installed = formats.install(plan, {"modality": "MG", "classes": list(card.classes),
                                       "normalization": dict(card.normalization),
                                       "input": {"spacing_mm": [0.42, 0.42], "patch_size": [192, 192]}})
    runner, _ = load_model(installed)
    rng = np.random.default_rng(0)
    image = (2000 + 400 * rng.standard_normal((1, 200, 230))).astype(np.float32)  # already at 0.42 mm
    pred = runner.predict(VolumeImage(image, (1.0, 0.42, 0.42), modality="MG"))
    x = torch.from_numpy((image[0] - 2000.0) / 1000.0)[None, None]
    ref = torch.softmax(sliding_window(model, x, (192, 192), overlap=0.25), dim=1)[0].numpy()
    assert pred.probabilities.shape == (2, 1, 200, 230)
    assert np.abs(pred.probabilities[:, 0] - ref).max() < TOL
    np.testing.assert_array_equal(pred.labels[0], ref.argmax(0))


class _TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_onnx_image_classifier_scores(tmp_path, models_dir):
    torch.manual_seed(0)
    net = _TinyClassifier().eval()
    path = _export_onnx(net, torch.randn(1, 1, 64, 64), tmp_path / "cls.onnx", dynamic=False)
    plan = formats.inspect(path)
    assert plan.card["task"] == "image-classifier"
    assert plan.card["extra"]["suggested"]["classes"] == ["class 0", "class 1", "class 2"]
    card = formats.install(plan, {"modality": "MG", "classes": ["normal", "benign", "malignant"],
                                  "normalization": {"kind": "minmax"}, "input": {"patch_size": [64, 64]}})
    runner, _ = load_model(card)
    image = np.random.default_rng(1).uniform(0, 4095, (1, 128, 96)).astype(np.float32)
    pred = runner.predict(VolumeImage(image, (1.0, 0.1, 0.1), modality="MG"))
    x = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=(64, 64), mode="bilinear",
                                        align_corners=False, antialias=True)
    x = (x - float(image.min())) / float(image.max() - image.min())
    ref = torch.softmax(net(x), dim=1)[0].detach().numpy()
    assert list(pred.scores) == ["normal", "benign", "malignant"]
    np.testing.assert_allclose(list(pred.scores.values()), ref, atol=TOL)
    with pytest.raises(ValueError, match="one image"):
        runner.predict(VolumeImage(np.zeros((3, 64, 64), np.float32), (1.0, 0.1, 0.1)))


# --------------------------------------------------------------------------
# the ONNX Runtime backend for the demo models
# --------------------------------------------------------------------------
def _tiny_unet_card(tmp_path):
    card = ModelCard(name="tiny-unet", version="1", task="segmentation-2d", modality="MG", architecture="unet2d",
                     arch_kwargs={"in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
                                  "num_res_units": 1}, classes=["background", "mass"],
                     input={"patch_size": [32, 32], "spacing_mm": [0.42, 0.42]}, normalization={"kind": "none"},
                     sha256="ab" * 32, path=tmp_path)
    torch.manual_seed(0)
    from inference.registry import build

    return build(card).eval(), card


def test_accelerate_follows_the_measured_rule(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_ONNXRUNTIME", "auto")  # the suite's default keeps torch
    module, card = _tiny_unet_card(tmp_path)
    monkeypatch.setattr(onnx_backend, "SPEEDUP", 1e9)  # any agreeing ONNX Runtime model counts as faster
    fast = onnx_backend.accelerate(module, card, "cpu", repeats=1)
    assert isinstance(fast, onnx_backend.OrtModule)
    onnx_path = onnx_backend.cached_onnx(card)
    assert onnx_path.parent == tmp_path / "cache" / "lightbox" / "onnx" and onnx_path.exists()
    record = json.loads(onnx_path.with_suffix(".json").read_text())
    assert record["backend"] == "onnxruntime" and record["max_diff"] < TOL
    assert fast.tap is not None and record["tap"] == fast.tap.name  # the domain check's layer rides along
    x = torch.randn(1, 1, 70, 90)
    outputs, features = [], []
    for m in (module, fast):
        with domain.watch(card, m) as watch, torch.inference_mode():
            outputs.append(sliding_window(m, x, (32, 32)))
        assert not watch.problem
        features.append(watch.samples)
    assert (outputs[0].softmax(1) - outputs[1].softmax(1)).abs().max() < TOL
    assert features[0].shape == features[1].shape and features[0].shape[0] == 12  # one sample per window (3 x 4)
    assert np.abs(features[0] - features[1]).max() < 1e-4

    onnx_path.with_suffix(".json").unlink()  # a new measurement; the export is reused
    monkeypatch.setattr(onnx_backend, "SPEEDUP", 0.0)  # nothing can be that fast: torch stays
    assert onnx_backend.accelerate(module, card, "cpu", repeats=1) is module
    assert onnx_backend.accelerate(module, card, "cuda") is module
    assert onnx_backend.accelerate(module, card, "cpu", differentiable=True) is module


def test_accelerate_keeps_torch_when_onnx_disagrees_or_fails(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_ONNXRUNTIME", "auto")
    module, card = _tiny_unet_card(tmp_path)
    monkeypatch.setattr(onnx_backend, "SPEEDUP", 1e9)
    real = onnx_backend.OrtModule.__call__
    monkeypatch.setattr(onnx_backend.OrtModule, "__call__", lambda self, x: real(self, x) * 1.5)
    assert onnx_backend.accelerate(module, card, "cpu", repeats=1) is module  # faster but not the same
    monkeypatch.setattr(onnx_backend, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no exporter")))
    shutil.rmtree(tmp_path / "cache")
    assert onnx_backend.accelerate(module, card, "cpu", repeats=1) is module


def test_ort_module_stands_in_for_a_torch_module(tmp_path):
    module, card = _tiny_unet_card(tmp_path)
    path = onnx_backend.export(module, torch.randn(2, 1, 32, 32), tmp_path / "tiny.onnx")
    ortm = onnx_backend.OrtModule(path, attributes={"stride": 8})
    assert ortm.to("cpu").eval() is ortm and list(ortm.parameters()) == [] and ortm.stride == 8
    x = torch.randn(3, 1, 48, 40)
    with torch.inference_mode():
        assert (module(x) - ortm(x)).abs().max() < TOL
    runner = DescribedRunner(card, ortm)
    pred = runner.predict(VolumeImage(np.zeros((2, 40, 40), np.float32), (3.0, 0.42, 0.42)))
    assert pred.labels.shape == (2, 40, 40) and pred.probabilities.shape == (2, 2, 40, 40)


def test_a_broken_onnx_file_is_named(tmp_path, models_dir):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(formats.NotImportable, match="broken.onnx"):
        formats.inspect(bad, format="onnx")
    with pytest.raises(ValueError, match="broken.onnx: ONNX Runtime cannot load it"):
        onnx_backend.OrtModule(bad)
