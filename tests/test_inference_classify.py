"""Shipped mammography models: cards, checksums, exam scores per breast, Grad-CAM."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from inference import classify, registry
from inference.explain import grad_cam
from inference.phantoms import MG_VIEWS, mammo_image, mammo_spacing
from inference.preprocess import mammo as pm

HELD_OUT_SEED = 3_131_313  # outside the training and metric seed ranges of train_mammo
SIZE = (1109, 853)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def models():
    patch, patch_card = registry.load_model(registry.find_model("mammo-patch"))
    exam, exam_card = registry.load_model(registry.find_model("mammo-exam"))
    return patch, patch_card, exam, exam_card


@pytest.fixture(scope="module")
def exam_images():
    """A held-out 4-view exam with a mass and calcifications in the left breast only."""
    out, masks = {}, {}
    for name in MG_VIEWS:
        side, view = name[0], name[1:]
        hit = side == "L"
        img, m = mammo_image(side, view, SIZE, HELD_OUT_SEED, mass=hit, calcifications=hit)
        out[name], masks[name] = (img, mammo_spacing(SIZE)), m
    return out, masks


@pytest.fixture(scope="module")
def analysis(models, exam_images):
    patch, patch_card, exam, exam_card = models
    return classify.analyze_exam(exam_images[0], patch, patch_card, exam, exam_card)


def test_shipped_cards_describe_their_models(models):
    patch, patch_card, exam, exam_card = models
    for card in (patch_card, exam_card):
        assert card.modality == "MG" and card.version
        assert card.weights.endswith(".safetensors") and len(card.sha256) == 64
        assert "synthetic" in card.disclaimer.lower()
        assert card.input["spacing_mm"] == pytest.approx(0.42)
        assert (card.path / card.weights).stat().st_size < 2_000_000
    assert patch_card.task == "patch-classifier" and exam_card.task == "exam-classifier"
    assert patch_card.classes == ["background", "normal", "mass", "calcification"]
    assert patch_card.input["patch_size"] == patch.patch_size and patch_card.input["stride"] == patch.stride
    assert patch_card.metrics["mass_auc"] > 0.9 and exam_card.metrics["view_auc"] > 0.8
    assert not patch.training and not exam.training
    names = {c.name for c in registry.available_models(modality="MG")}
    assert {"mammo-patch", "mammo-exam"} <= names


def test_tampered_shipped_weights_are_refused(tmp_path):
    card = registry.find_model("mammo-exam")
    shutil.copy(card.path / f"{card.name}.json", tmp_path)
    data = bytearray((card.path / card.weights).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / card.weights).write_bytes(bytes(data))
    with pytest.raises(registry.ChecksumError):
        registry.load_model(tmp_path / f"{card.name}.json")
    card_json = json.loads((tmp_path / f"{card.name}.json").read_text())
    assert card_json["sha256"] == card.sha256


def test_exam_scores_combine_views():
    probs = {"RCC": 0.2, "RMLO": 0.4, "LCC": 0.9, "LMLO": 0.5}
    assert classify.exam_scores(probs) == pytest.approx({"R": 0.3, "L": 0.7})
    assert classify.exam_scores(probs, "max") == pytest.approx({"R": 0.4, "L": 0.9})
    assert classify.exam_scores({"LCC": 0.6}) == {"L": 0.6}
    with pytest.raises(ValueError):
        classify.exam_scores(probs, "median")
    with pytest.raises(ValueError, match="view names"):
        classify.exam_scores({"XCC": 0.1})


def test_lesion_side_scores_higher(analysis):
    s = analysis.breast_scores
    assert set(s) == {"R", "L"}
    assert s["L"] > s["R"] + 0.2
    assert s["L"] > 0.5
    for name in ("LCC", "LMLO"):
        assert analysis.views[name].probability > max(analysis.views["RCC"].probability,
                                                      analysis.views["RMLO"].probability)


def test_heatmaps_and_cams_come_back_on_the_source_grid(analysis, exam_images):
    images, masks = exam_images
    for name, v in analysis.views.items():
        shape = images[name][0].shape
        hmap = v.heatmap_on_source("mass")
        cam = v.cam_on_source()
        assert hmap.shape == cam.shape == shape
        assert hmap.dtype == cam.dtype == np.float32
        assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    lcc = analysis.views["LCC"]
    assert lcc.heatmap_on_source("mass")[masks["LCC"]["mass"] > 0].mean() > 0.5


@pytest.mark.parametrize("name", ["LCC", "LMLO"])
def test_grad_cam_peaks_near_the_lesion(analysis, exam_images, name):
    images, masks = exam_images
    cam = analysis.views[name].cam_on_source()
    lesion = (masks[name]["mass"] > 0) | (masks[name]["calcification"] > 0)
    spacing = images[name][1]
    ly, lx = np.nonzero(lesion)
    py, px = np.unravel_index(np.argmax(cam), cam.shape)
    nearest_mm = np.min(np.hypot((ly - py) * spacing[0], (lx - px) * spacing[1]))
    assert nearest_mm < 15.0
    breast = masks[name]["breast"] > 0
    assert cam[lesion].mean() > 2 * cam[breast & ~lesion].mean()


def test_grad_cam_of_a_prepared_image(models):
    _, card, exam, _ = models
    img, _ = mammo_image("R", "CC", (832, 640), seed=HELD_OUT_SEED)
    p = pm.prepare(img, mammo_spacing((832, 640)), normalization=card.normalization)
    cam, logit = grad_cam(exam, p.image)
    stride = exam.trunk.stride
    assert cam.shape == ((p.image.shape[0] - 36) // stride + 1, (p.image.shape[1] - 36) // stride + 1)
    assert np.isfinite(cam).all() and np.isfinite(logit)
    assert classify.view_probability(exam, p.image) == pytest.approx(classify.sigmoid(logit), abs=1e-5)
