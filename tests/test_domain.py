"""Out of its depth: the demo models flag real CT/MR/CR images and pass held-out phantoms.

Real images are pydicom's and pydicom-data's test files, loaded the way Analyze loads them
(viewer.core.io; MONOCHROME1 inverted, a mammogram's missing spacing estimated). A single CT or MR
slice becomes a thin volume by repeating it to 8 slices (the 3D model needs some depth), and an
image narrower than 60 mm (MR_small: 20 mm) is tiled in-plane to fill one network window; the
check must still say these are unlike the phantoms. Held-out phantoms use seeds no training used.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import domain as dom
from inference import phantoms
from inference.formats.base import VolumeImage
from inference.registry import ModelCard, load_model, shipped_models_dir

pydicom_data = pytest.importorskip("pydicom.data")

CT_REAL = ["CT_small.dcm", "eCT_Supplemental.dcm", "693_UNCR.dcm"]
MR_REAL = ["MR_small.dcm", "MR2_UNCR.dcm", "emri_small.dcm"]
CR_REAL = ["RG1_UNCR.dcm", "RG3_UNCR.dcm", "RG1_J2KR.dcm"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def models():
    return {name: load_model(shipped_models_dir() / f"{name}.json", device="cpu")
            for name in ("ct-organs-unet3d", "mammo-patch", "mammo-exam", "mammo-lesion-unet2d")}


def real_file(name: str) -> Path:
    try:
        return Path(pydicom_data.get_testdata_file(name))
    except Exception as exc:  # noqa: BLE001 - pydicom-data not installed
        pytest.skip(f"{name}: pydicom test file not available ({exc})")


def load_real(name: str):
    """(volume, series) as Analyze gets them."""
    from viewer.core.io import load_series, scan

    series = [s for s in scan(real_file(name)).series if s.kind in ("dicom", "file")][0]
    return load_series(series), series


def thin_volume(array, spacing, slices: int = 8, min_mm: float = 60.0):
    """Repeat slices to `slices`; tile in-plane until the image spans min_mm (see module docstring)."""
    a = np.asarray(array, dtype=np.float32)
    if a.shape[0] < slices:
        a = np.repeat(a, math.ceil(slices / a.shape[0]), axis=0)[:slices]
    reps = [1] + [max(1, math.ceil(min_mm / (n * float(s)))) for n, s in zip(a.shape[1:], spacing[1:])]
    return np.tile(a, reps)


# --------------------------------------------------------------------------
# the result object and the dispatch
# --------------------------------------------------------------------------
def test_result_json_shape():
    d = dom.DomainResult(False, 12.345678, 3.3333333, "why").as_dict()
    assert d == {"in_domain": False, "score": 12.35, "threshold": 3.333, "reason": "why"}
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert dom.DomainResult(None, float("nan"), None).as_dict()["score"] is None


def test_combine_lets_the_furthest_model_speak():
    out = dom.combine({"a": dom.DomainResult(True, 1.0, 3.0, "ok"), "b": dom.DomainResult(False, 9.0, 2.0, "far"),
                       "c": dom.DomainResult(None, None, None, "no description")})
    assert (out.in_domain, out.score, out.threshold) == (False, 9.0, 2.0) and out.reason.startswith("b: ")
    assert dom.combine({"c": dom.DomainResult(None, None, None, "x")}).in_domain is None


def test_card_without_description_says_none(models):
    module, card = models["ct-organs-unet3d"]
    bare = dataclasses.replace(card, domain={})
    r = dom.check(bare, features=np.ones((2, 4)))
    assert r.in_domain is None and r.score is None and "no description" in r.reason
    with dom.watch(bare, module) as w:
        module(torch.zeros(1, 2, 16, 32, 32))
    assert w.result().in_domain is None


def test_shipped_cards_describe_their_training_data(models):
    for name, (module, card) in models.items():
        d = card.domain
        assert d.get("kind") == "embedding", name
        assert module.get_submodule(d["layer"]) is dom.embedding_layer(card, module)
        assert 1.0 < float(d["threshold"]) < 100.0, name
        assert len(json.dumps(d)) < 40_000, f"{name}: description is not compact"


# --------------------------------------------------------------------------
# CT model
# --------------------------------------------------------------------------
def ct_result(models, hu, spacing):
    from inference.segment import segment_volume

    module, card = models["ct-organs-unet3d"]
    with dom.watch(card, module) as w:
        segment_volume(module, card, hu, spacing, device="cpu", probabilities="none")
    return w.result()


def test_ct_held_out_phantom_is_in_domain(models):
    spacing = (5.0, 2.8, 2.8)  # one of the training scanner geometries, a seed never trained on
    hu, _ = phantoms.ct_phantom(shape=(60, 128, 128), spacing=spacing, seed=1001)
    r = ct_result(models, hu, spacing)
    assert r.in_domain is True, r.reason
    assert r.score < r.threshold / 2


@pytest.mark.parametrize("name", CT_REAL + MR_REAL)
def test_ct_model_flags_real_ct_and_mr(models, name):
    volume, _ = load_real(name)
    spacing = tuple(float(s) for s in volume.spacing)
    r = ct_result(models, thin_volume(volume.array, spacing), spacing)
    assert r.in_domain is False, f"{name}: {r.reason}"
    assert "unlike this model's training data" in r.reason


# --------------------------------------------------------------------------
# mammography models
# --------------------------------------------------------------------------
def mammo_results(models, image, spacing, name):
    """{model: DomainResult} of one view through analyze_view (patch + exam) and segment_image."""
    from inference.classify import analyze_view
    from inference.segment import segment_image

    pm, pc = models["mammo-patch"]
    em, ec = models["mammo-exam"]
    sm, sc = models["mammo-lesion-unet2d"]
    with dom.watch(pc, pm) as wp, dom.watch(ec, em) as we:
        analyze_view(name, image, spacing, pm, pc, em, None, "cpu", True)
    with dom.watch(sc, sm) as ws:
        segment_image(sm, sc, image, spacing, name[0], name[1:], device="cpu")
    return {"mammo-patch": wp.result(), "mammo-exam": we.result(), "mammo-lesion-unet2d": ws.result()}


@pytest.mark.parametrize("name,size", [("LMLO", (1109, 853)), ("RCC", (832, 640))])
def test_mammo_held_out_phantoms_are_in_domain(models, name, size):
    img, _ = phantoms.mammo_image(name[0], name[1:], size=size, seed=900_003, mass=True)
    for model, r in mammo_results(models, img, phantoms.mammo_spacing(size), name).items():
        assert r.in_domain is True, f"{model}: {r.reason}"


@pytest.mark.parametrize("name", CR_REAL)
def test_mammo_models_flag_radiographs(models, name):
    from viewer.core.mammo import bright_is_dense, estimate_spacing

    volume, series = load_real(name)
    image = bright_is_dense(volume, series)[0]
    estimate = estimate_spacing(series, volume.shape)
    spacing = (estimate.mm, estimate.mm) if estimate else tuple(float(s) for s in volume.spacing[1:])
    for model, r in mammo_results(models, image, spacing, "RCC").items():
        assert r.in_domain is False, f"{name} -> {model}: {r.reason}"


# --------------------------------------------------------------------------
# the watch itself
# --------------------------------------------------------------------------
def test_watch_ignores_other_threads_and_removes_its_hook(models):
    module, card = models["mammo-exam"]
    x = torch.zeros(1, 1, 80, 80)
    with dom.watch(card, module) as w:
        t = threading.Thread(target=lambda: module(x))
        t.start()
        t.join()
        assert len(w.samples) == 0
        module(x)
        assert len(w.samples) == 1
    module(x)  # after the block: not collected any more
    assert len(w.samples) == 1
    w.clear()
    assert w.result().in_domain is None


def test_describe_embedding_from_callables():
    from inference.domain_fit import describe_embedding
    from inference.registry import build

    card = ModelCard(name="tiny", version="1", task="segmentation-2d", modality="MG", architecture="unet2d",
                     arch_kwargs={"channels": [4, 8], "strides": [2]})
    torch.manual_seed(0)
    module = build(card).eval()
    gen = torch.Generator().manual_seed(0)
    cases = [lambda: module(torch.randn(2, 1, 32, 32, generator=gen)) for _ in range(8)]
    desc = describe_embedding(card, module, cases)
    assert desc["kind"] == "embedding" and desc["layer"] == "model.1.submodule"
    card.domain = desc
    with dom.watch(card, module) as w:
        module(torch.randn(2, 1, 32, 32, generator=gen))
    assert w.result().in_domain is True
    with dom.watch(card, module) as w:
        module(torch.full((2, 1, 32, 32), 50.0) + torch.randn(2, 1, 32, 32, generator=gen))
    assert w.result().in_domain is False


# --------------------------------------------------------------------------
# "intensity" kind (imported nnU-Net models)
# --------------------------------------------------------------------------
def fingerprint(values: np.ndarray) -> dict:
    """nnU-Net's foreground_intensity_properties_per_channel entry of some voxels."""
    v = values.astype(np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "percentile_00_5": float(np.percentile(v, 0.5)),
            "percentile_99_5": float(np.percentile(v, 99.5)), "min": float(v.min()), "max": float(v.max()),
            "median": float(np.median(v))}


@pytest.fixture(scope="module")
def liver_card():
    spacing = (5.0, 2.8, 2.8)
    fg = []
    for seed in (0, 1):
        hu, masks = phantoms.ct_phantom(shape=(60, 128, 128), spacing=spacing, seed=seed)
        fg.append(hu[(masks["liver"] > 0) | (masks["lesions"] > 0)])
    return ModelCard(name="liver-nnunet", version="1", task="segmentation-3d", modality="CT", architecture="nnunet",
                     domain={"kind": "intensity", "channels": [fingerprint(np.concatenate(fg))],
                             "spacing_mm": list(spacing)})


def test_intensity_passes_matching_ct(liver_card):
    hu, masks = phantoms.ct_phantom(shape=(60, 128, 128), spacing=(5.0, 2.8, 2.8), seed=1002)
    labels = ((masks["liver"] > 0) | (masks["lesions"] > 0)).astype(np.uint8)
    r = dom.check(liver_card, VolumeImage(hu, (5.0, 2.8, 2.8), modality="CT"), labels=labels)
    assert r.in_domain is True, r.reason
    assert r.threshold == 1.0 and r.score < 0.6


def test_intensity_flags_mr(liver_card):
    mr, masks = phantoms.mr_phantom(shape=(50, 96, 96), spacing=(3.0, 2.4, 2.4), seed=3)
    image = VolumeImage(mr, (3.0, 2.4, 2.4))  # no modality: the intensities alone must say it
    assert dom.check(liver_card, image, labels=masks["brain"]).in_domain is False
    assert dom.check(liver_card, image).in_domain is False
    volume, _ = load_real("MR_small.dcm")
    real = VolumeImage(thin_volume(volume.array, volume.spacing), tuple(float(s) for s in volume.spacing))
    r = dom.check(liver_card, real)
    assert r.in_domain is False and r.score > 1.0, r.reason


def test_intensity_names_a_modality_mismatch(liver_card):
    hu, masks = phantoms.ct_phantom(shape=(60, 128, 128), spacing=(5.0, 2.8, 2.8), seed=1002)
    r = dom.check(liver_card, VolumeImage(hu, (5.0, 2.8, 2.8), modality="MR"), labels=masks["liver"])
    assert r.in_domain is False and "MR image" in r.reason
