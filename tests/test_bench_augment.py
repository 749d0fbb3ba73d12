"""bench_augment end to end at its tiny --quick size: a real exported few-positive dataset, the patch classifier
fine-tuned three ways (none / classic / cGAN), every ladder rung scored with intervals, and the paired bootstrap
that pools seeds checked on numbers whose answer is known."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_augment  # noqa: E402


def test_paired_bootstrap_pools_seeds_and_pairs_the_difference():
    labels = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    perfect = np.tile(labels.astype(float), (2, 1))  # two seeds, every positive above every normal
    reversed_ = 1.0 - perfect
    half = np.vstack([perfect[0], reversed_[0]])  # one seed perfect, one reversed: mean 0.5
    out = bench_augment.paired_bootstrap(labels, {"none": half, "classic": reversed_, "cgan": perfect}, 300)
    assert out["cgan"][:3] == (1.0, 1.0, 1.0) and out["classic"][:3] == (0.0, 0.0, 0.0)
    assert out["none"][0] == 0.5 and out["none"][3] == 0.5  # mean over seeds, sd over seeds
    assert out["cgan-classic"][:3] == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(1)
    noisy = {m: rng.normal(size=(3, 20)) + labels * shift for m, shift in (("none", 0), ("classic", 1), ("cgan", 1))}
    out = bench_augment.paired_bootstrap(labels, noisy, 500)
    for key, (auc, lo, hi, _sd) in out.items():
        assert lo <= auc <= hi, key
    assert out["none"][0] < out["classic"][0]


def test_auc_rows_matches_the_ladder_auc():
    from inference.ladder import auc

    rng = np.random.default_rng(0)
    labels = rng.random(30) < 0.4
    scores = np.round(rng.random((4, 30)), 1)  # ties included
    assert np.allclose(bench_augment.auc_rows(scores, labels), [auc(s, labels) for s in scores])


def infill_installed() -> bool:
    from inference import registry

    return any(c.task == "lesion-infill" for c in registry.available_models())


def test_quick_run_fine_tunes_three_ways_and_scores_every_rung(tmp_path, monkeypatch):
    import torch

    from inference.ladder import MAMMO_RUNGS

    torch.set_num_threads(1)
    mine = tmp_path / "user-models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(mine))
    out_json = tmp_path / "out.json"
    assert bench_augment.main(["--quick", "--device", "cpu", "--json", str(out_json)]) == 0
    out = json.loads(out_json.read_text())
    assert os.environ["LIGHTBOX_MODELS_DIR"] == str(mine) and not mine.exists()  # the user's folder untouched
    assert out["dataset"]["positive_exams"] == 2 and out["dataset"]["lesion_views"] == 4
    versions = [v for m in out["versions"] for v in out["versions"][m]]
    assert len(versions) == len(set(versions)) == 3 - len(out["not_run"]) and all(v.startswith("mammo-patch ") for v in versions)
    ran = [m for m in bench_augment.METHODS if m not in out["not_run"]]
    assert {m: out["augmentation"][m]["augment"] for m in ran} == {m: m for m in ran}
    assert out["augmentation"]["classic"]["n_synthetic"] > 0
    if infill_installed():
        assert ran == list(bench_augment.METHODS) and out["augmentation"]["cgan"]["n_synthetic"] > 0
    else:  # said, not crashed: the cgan column is n/a with the reason
        assert ran == ["none", "classic"] and "mammo-infill-cgan" in out["not_run"]["cgan"]
    assert list(out["rungs"]) == [r.name for r in MAMMO_RUNGS]
    for name, rung in out["rungs"].items():
        assert rung["n_positive"] == rung["n_normal"] == 3
        for key in (out["start_key"], *(m for m in bench_augment.METHODS if m not in out["not_run"])):
            auc, lo, hi, _sd = rung["auc"][key]
            assert 0.0 <= auc <= 1.0 and 0.0 <= lo <= hi <= 1.0, (name, key)
            auc, lo, hi, _sd = rung["lesion_auc"][key]  # the patch classifier's response at the lesion
            assert 0.0 <= auc <= 1.0 and 0.0 <= lo <= hi <= 1.0, (name, key)
        if "cgan-classic" in rung["auc"]:
            diff, lo, hi, _ = rung["auc"]["cgan-classic"]
            assert -1.0 <= lo <= hi <= 1.0 and -1.0 <= diff <= 1.0
