"""A fine-tuned version gets its own domain description: fitted with the NEW network on the run's
own exported cases plus a few demo training phantoms, so the cases it was trained on are in domain
(its parent flagged them) while an ordinary phantom stays in domain; when the description cannot be
made, the parent's is kept and the card says why, and the training run still succeeds."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import domain as dom
from inference import domain_fit, registry
from inference.finetune import DomainCases, finetune, version_domain
from inference.phantoms import ct_phantom
from inference.train_seg import ct_label_map

SHAPE, SPACING = (30, 56, 56), (7.0, 6.4, 6.4)  # small, same field of view as the demo CT
OWN_SHAPE = (16, 40, 40)  # the user's cases: a smaller field of view (fewer windows: a quicker test)
NOISE_HU = 300.0  # a much noisier scanner than the phantoms': the shipped model flags it


def noisy_case(seed: int) -> np.ndarray:
    hu, _ = ct_phantom(shape=OWN_SHAPE, spacing=SPACING, seed=seed)
    return (hu + np.random.default_rng(seed).normal(0.0, NOISE_HU, hu.shape)).astype(np.float32)


def write_noisy_dataset(root, cases: int = 3, first_seed: int = 3000):
    for i in range(cases):
        seed = first_seed + i
        _, masks = ct_phantom(shape=OWN_SHAPE, spacing=SPACING, seed=seed)
        for arr, folder, name in ((noisy_case(seed).astype(np.int16), "imagesTr", f"CASE_{i:04d}_0000.nii.gz"),
                                  (ct_label_map(masks), "labelsTr", f"CASE_{i:04d}.nii.gz")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(reversed(SPACING)))
            (root / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(img, str(root / folder / name))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lungs": 1, "liver": 2, "lesions": 3},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    return write_noisy_dataset(tmp_path_factory.mktemp("Dataset777_NoisyScanner"))


def scores(card, net, volumes) -> list[float]:
    feats = domain_fit.collect(card, net, [(v, SPACING) for v in volumes])
    return [dom.check(card, features=f) for f in feats]


def test_a_finetuned_version_describes_its_own_cases_and_keeps_the_phantoms_in_domain(noisy, tmp_path):
    torch.set_num_threads(2)
    parent_net, parent = registry.load_model(registry.find_model("ct-organs-unet3d"), device="cpu")
    own = [noisy_case(3000 + i) for i in range(3)]
    assert [r.in_domain for r in scores(parent, parent_net, own[:1])] == [False]  # the parent flags them

    card = finetune(noisy, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1, val_fraction=0.0,
                    allow_no_validation=True, out_dir=tmp_path, device="cpu")
    fit = card.domain["fit"]
    assert card.domain["kind"] == "embedding" and card.domain != parent.domain
    assert fit["own_cases"] == 3 and fit["demo_cases"] == 4 and fit["images"] == 7
    assert "Dataset777_NoisyScanner" in fit["note"] and domain_fit.DEMO_SUBSET[card.name][1] in fit["note"]
    assert card.extra["domain_note"] == fit["note"]
    assert domain_fit.from_demo_phantoms(card.domain, card.name)  # a version fine-tuned from it adds them too

    net, card = registry.load_model(card, device="cpu")  # the saved version, as Analyze loads it
    held_out, _ = ct_phantom(shape=SHAPE, spacing=SPACING, seed=2000)
    results = scores(card, net, own + [held_out])
    assert all(r.in_domain for r in results), [r.reason for r in results]


def test_the_parents_description_is_kept_with_the_reason_when_it_cannot_be_made(noisy, tmp_path, monkeypatch):
    torch.set_num_threads(2)
    parent = registry.find_model("ct-organs-unet3d")

    def broken(*_args, **_kwargs):
        raise dom.DomainError("no features were recorded")

    monkeypatch.setattr(domain_fit, "describe_embedding", broken)
    card = finetune(noisy, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1, val_fraction=0.0,
                    allow_no_validation=True, out_dir=tmp_path, device="cpu")
    assert card.version == "1.1" and card.domain == parent.domain  # the run still wrote its version
    note = card.extra["domain_note"]
    assert "kept" in note and "ct-organs-unet3d 1" in note and "no features were recorded" in note


def test_too_few_cases_or_another_kind_keeps_the_parents_description():
    net, shipped = registry.load_model(registry.find_model("ct-organs-unet3d"), device="cpu")
    own = DomainCases(2, lambda: iter(()), "cases")
    # a parent described from a user's cases only (not the demo phantoms): 2 cases cannot make one
    user_desc = {**shipped.domain, "fit": {**shipped.domain["fit"], "note": "a user's 40 cases"}}
    assert not domain_fit.from_demo_phantoms(user_desc, shipped.name)
    desc, note = version_domain(replace(shipped, domain=user_desc), net, own, "Dataset1")
    assert desc is user_desc and "2 exported cases" in note and "at least 3" in note
    intensity = {"kind": "intensity", "channels": []}
    desc, note = version_domain(replace(shipped, domain=intensity), net, own, "Dataset1")
    assert desc is intensity and "'intensity'" in note
    desc, note = version_domain(shipped, net, None, "Dataset1")
    assert desc is shipped.domain and "no cases" in note
