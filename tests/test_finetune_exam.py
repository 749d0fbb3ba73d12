"""Fine-tuning the exam classifier from confirmed view classes: a tiny dataset of phantom views in the
export's classification format becomes a new, loadable version that analyze_exam runs; the model
really learns; labels map as documented; untrusted or unusable datasets are refused with the reason."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import registry
from inference.classify import analyze_exam
from inference.finetune import FinetuneError, default_model, finetune, next_version
from inference.finetune_exam import LabelledView, labelled_views, split_cases, target_of
from inference.phantoms import MG_VIEWS, mammo_image, mammo_spacing

SIZE = (222, 171)  # 1.05 mm pixels: the whole 233 x 179 mm detector, cheap to render


def lesion_in(case: int, view: str) -> bool:
    """One breast of each case has a mass, alternating sides, so every case has both classes."""
    return (case + (view[0] == "L")) % 2 == 0


def write_exam_dataset(root, cases: int, first_seed: int, label=None):
    """classification.json + imagesCls/*.nii.gz as the app exports them; ``label(case, view, lesion)``
    gives each view's text (default malignant/benign), and every case gets an exam row too."""
    label = label or (lambda _c, _v, lesion: "malignant" if lesion else "benign")
    (root / "imagesCls").mkdir(parents=True, exist_ok=True)
    spacing = mammo_spacing(SIZE)
    rows = []
    for c in range(cases):
        case = f"CASE_{c:04d}"
        for view in MG_VIEWS:
            lesion = lesion_in(c, view)
            pixels, _masks = mammo_image(view[0], view[1:], SIZE, first_seed + c, mass=lesion)
            image = sitk.GetImageFromArray(pixels[np.newaxis].astype(np.int16))  # a Volume (1, rows, cols)
            image.SetSpacing((spacing[1], spacing[0], 1.0))
            rel = f"imagesCls/{case}_{view}.nii.gz"
            sitk.WriteImage(image, str(root / rel))
            rows.append({"case": case, "view": view, "label": label(c, view, lesion), "image": rel,
                         "chest_wall": "left"})  # phantoms are written as acquired: chest wall left
        rows.append({"case": case, "view": "exam", "label": "suspicious", "image": "", "chest_wall": ""})
    (root / "classification.json").write_text(json.dumps({"classification": rows}))
    return root


def read_view(path):
    image = sitk.ReadImage(str(path))
    sx, sy = image.GetSpacing()[:2]
    return sitk.GetArrayFromImage(image)[0], (sy, sx)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_exam_dataset(tmp_path_factory.mktemp("exam_dataset"), 4, 500)
    data = json.loads((root / "classification.json").read_text())
    data["classification"] += [
        {"case": "CASE_0000", "view": "RCC", "label": "BI-RADS 3", "image": "imagesCls/CASE_0000_RCC.nii.gz",
         "chest_wall": "left"},  # not a label the model has: skipped and counted
        {"case": "CASE_0009", "view": "LCC", "label": "normal"},  # an old row: no image, skipped
    ]
    (root / "classification.json").write_text(json.dumps(data))
    return root


def test_finetune_writes_a_loadable_version_that_analyze_exam_runs(dataset, tmp_path):
    torch.set_num_threads(1)
    shipped = registry.find_model("mammo-exam")
    shipped_bytes = shipped.weights_path.read_bytes()
    records = []
    with pytest.raises(FinetuneError, match=r"'BI-RADS 3' is in the dataset \(1 view\) but not in model mammo-exam "
                       r"1\.0\.0 .*it would be ignored.*--ignore-extra-labels"):
        finetune(dataset, "mammo-exam", epochs=1, steps_per_epoch=2, out_dir=tmp_path)
    assert not list(tmp_path.glob("*.json"))
    card = finetune(dataset, "mammo-exam", epochs=1, steps_per_epoch=2, batch=2, val_fraction=0.5,
                    out_dir=tmp_path, progress=records.append, ignore_extra_labels=True)
    assert card.version == next_version(shipped) == "1.0.1"
    assert card.path == tmp_path and (tmp_path / "mammo-exam-1.0.1.json").is_file()
    assert len(records) == 1 and np.isfinite(records[0]["loss"])
    assert set(records[0]["val_auc"]) == {"suspicious"} and 0 <= records[0]["val_auc"]["suspicious"] <= 1
    assert 0 <= records[0]["val_accuracy"] <= 1
    m = card.metrics
    assert m["epochs"] == records and m["val_auc"] == records[-1]["val_auc"]
    assert set(m["val_auc_before"]) == {"suspicious"} and m["val_accuracy_before"] is not None
    assert m["n_train_views"] == 8 and m["n_val_views"] == 8  # 2 + 2 cases of 4 views
    assert m["skipped_rows"] == {"exam rows": 4, "label 'BI-RADS 3'": 1, "no image": 1}
    assert "fine-tuned from mammo-exam 1.0.0" in card.training_data and card.extra["parent"] == "mammo-exam 1.0.0"
    assert shipped.weights_path.read_bytes() == shipped_bytes  # the shipped model is untouched

    exam_model, exam_card = registry.load_model(tmp_path / "mammo-exam-1.0.1.json")  # checksum verified
    assert exam_card.sha256 == card.sha256
    patch_model, patch_card = registry.load_model(registry.find_model("mammo-patch"))
    images = {v: read_view(dataset / f"imagesCls/CASE_0001_{v}.nii.gz") for v in ("RCC", "RMLO")}
    result = analyze_exam(images, patch_model, patch_card, exam_model, exam_card, explain=False,
                          chest_walls={"RCC": "left", "RMLO": "left"})
    assert set(result.breast_scores) == {"R"} and 0 <= result.breast_scores["R"] <= 1
    assert result.models["exam"] == "mammo-exam 1.0.1"


def test_fine_tuning_learns_a_target_the_shipped_model_does_not_know(tmp_path):
    """MLO views "suspicious", CC views "normal": the shipped model ranks them at chance; after a
    few dozen steps on the training cases the held-out cases are ranked by view (the pectoral muscle
    tells them apart). Fails if the trained weights do not change or change the wrong way."""
    torch.set_num_threads(1)
    root = write_exam_dataset(tmp_path / "views", 6, 300,
                              lambda _c, view, _lesion: "suspicious" if view.endswith("MLO") else "normal")
    card = finetune(root, "mammo-exam", epochs=2, steps_per_epoch=10, batch=4, lr=3e-3, val_fraction=0.5,
                    out_dir=tmp_path / "models")
    before, after = card.metrics["val_auc_before"]["suspicious"], card.metrics["val_auc"]["suspicious"]
    assert before < 0.6 and after > 0.9, (before, after)
    assert card.metrics["val_accuracy"] > card.metrics["val_accuracy_before"]
    assert card.extra["activation"] == {"status": "better", "score": after, "parent_score": before,
                                        "metric": "AUC suspicious", "validation_cases": 3, "parent": "mammo-exam 1.0.0"}


def test_one_case_is_refused_without_validation_and_marked_unvalidated_when_allowed(tmp_path):
    torch.set_num_threads(1)
    root = write_exam_dataset(tmp_path / "one", 1, 900)
    with pytest.raises(FinetuneError, match="^1 case: nothing left to validate on"):
        finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()
    card = finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models",
                    allow_no_validation=True)
    assert card.extra["activation"]["status"] == "unvalidated" and card.extra["activation"]["validation_cases"] == 0


def test_labels_map_to_the_models_class():
    for text in ("suspicious", "Malignant", "ABNORMAL", "positive", "1", " malignant "):
        assert target_of(text, "suspicious") == 1.0
    for text in ("normal", "Benign", "negative", "0"):
        assert target_of(text, "suspicious") == 0.0
    for text in ("", "BI-RADS 3", "calcification", "2"):
        assert target_of(text, "suspicious") is None


def test_csv_is_read_when_there_is_no_json(dataset, tmp_path):
    root = tmp_path / "csv_only"
    shutil.copytree(dataset / "imagesCls", root / "imagesCls")
    rows = json.loads((dataset / "classification.json").read_text())["classification"]
    with open(root / "classification.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["case", "view", "label", "image", "chest_wall"], restval="")
        w.writeheader()
        w.writerows(rows)
    views, skipped = labelled_views(root, "suspicious")
    assert len(views) == 16 and skipped["exam rows"] == 4
    assert {v.target for v in views} == {0.0, 1.0} and all(v.chest_wall == "left" for v in views)
    assert all(v.target == float(lesion_in(int(v.case[-4:]), v.view)) for v in views)


def test_image_paths_outside_the_dataset_are_refused(dataset, tmp_path):
    for bad in ("../outside.nii.gz", "imagesCls/../../outside.nii.gz", str(dataset / "imagesCls/CASE_0000_RCC.nii.gz")):
        root = tmp_path / f"bad{abs(hash(bad))}"
        root.mkdir()
        (root / "classification.json").write_text(json.dumps({"classification": [
            {"case": "CASE_0000", "view": "RCC", "label": "normal", "image": bad, "chest_wall": "left"}]}))
        with pytest.raises(FinetuneError, match="outside the dataset folder"):
            finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_datasets_without_usable_labels_are_refused(dataset, tmp_path):
    root = tmp_path / "unusable"
    shutil.copytree(dataset / "imagesCls", root / "imagesCls")
    rows = json.loads((dataset / "classification.json").read_text())["classification"]

    def write(label_of):
        (root / "classification.json").write_text(json.dumps({"classification": [
            {**r, "label": label_of(r)} for r in rows if r.get("image")]}))

    write(lambda r: "BI-RADS 2")
    with pytest.raises(FinetuneError, match=r"no view with an image and a usable label \(17 label 'BI-RADS 2'\)"):
        finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models")
    write(lambda r: "benign")
    with pytest.raises(FinetuneError, match="all 17 usable views are negative"):
        finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models")
    (root / "classification.json").unlink()
    with pytest.raises(FinetuneError, match="no classification.json or classification.csv"):
        finetune(root, "mammo-exam", epochs=1, steps_per_epoch=1, out_dir=tmp_path / "models")


def test_split_is_by_case_seeded_and_keeps_both_classes_in_training():
    views = [LabelledView(f"C{c}", v, None, "left", float(c % 3 == 0 and v == "RCC"))
             for c in range(9) for v in MG_VIEWS]
    train, val, note = split_cases(views, 0.34, seed=4)
    assert not {views[i].case for i in train} & {views[i].case for i in val}
    assert len({views[i].case for i in val}) == 3 and sorted(train + val) == list(range(len(views)))
    assert {views[i].target for i in train} == {views[i].target for i in val} == {0.0, 1.0} and note == ""
    assert split_cases(views, 0.34, seed=4) == (train, val, note)
    # one positive case only: it must train, so validation holds one class and says why
    views = [LabelledView(c, v, None, None, float(c == "A" and v == "LCC")) for c in "AB" for v in MG_VIEWS]
    train, val, note = split_cases(views, 0.5, seed=0)
    assert {views[i].case for i in val} == {"B"} and "AUC undefined" in note


def test_a_classification_only_dataset_fine_tunes_the_exam_model_by_default(dataset, tmp_path):
    torch.set_num_threads(1)
    assert default_model(dataset) == "mammo-exam"
    card = finetune(dataset, epochs=1, steps_per_epoch=1, batch=1, out_dir=tmp_path, ignore_extra_labels=True)
    assert (card.name, card.task, card.version) == ("mammo-exam", "exam-classifier", "1.0.1")


def test_cancel_stops_between_steps_and_writes_nothing(dataset, tmp_path):
    from inference.finetune import Stopped

    torch.set_num_threads(1)
    calls = []

    def should_stop() -> bool:  # true once the views are prepared and the first step asks
        calls.append(1)
        return len(calls) > 16

    with pytest.raises(Stopped):
        finetune(dataset, "mammo-exam", epochs=3, steps_per_epoch=5, out_dir=tmp_path / "models",
                 should_stop=should_stop, ignore_extra_labels=True)
    assert len(calls) == 17 and not (tmp_path / "models").exists()


def test_views_exported_by_the_app_are_prepared_as_analyze_prepares_the_dicom(tmp_path, monkeypatch):
    """The contract with the app's export: a view written to imagesCls (pixels, spacing, chest wall) gives
    the shipped model exactly the probability that `lightbox analyze` gives the DICOM view."""
    from inference.classify import view_probability
    from inference.finetune_exam import load_view
    from viewer.cli import main
    from viewer.core.synthetic import write_mammo_exam

    torch.set_num_threads(1)
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "no-user-models"))
    write_mammo_exam(tmp_path / "MG", size=(444, 342), seed=5, lesion_side="R")
    classes = ["--class", "RCC=malignant", "--class", "LCC=normal", "--class", "RMLO=abnormal", "--class", "LMLO=0"]
    assert main(["export", str(tmp_path / "MG"), "--out", str(tmp_path / "export"), *classes]) == 0
    assert main(["analyze", str(tmp_path / "MG"), "--out", str(tmp_path / "analysis"), "--device", "cpu"]) == 0
    analysed = json.loads((tmp_path / "analysis" / "results.json").read_text())["results"][0]["series"]
    (root,) = [p.parent for p in (tmp_path / "export").rglob("classification.json")]
    views, _skipped = labelled_views(root, "suspicious")
    assert sorted((v.view, v.target) for v in views) == [("LCC", 0.0), ("LMLO", 0.0), ("RCC", 1.0), ("RMLO", 1.0)]
    net, card = registry.load_model(registry.find_model("mammo-exam"))
    for v in views:
        assert view_probability(net, load_view(v, card)) == pytest.approx(
            analysed[v.view]["scores"]["malignancy"], abs=1e-5), v.view


def test_finetune_exam_runs_as_two_ddp_processes_on_cpu(dataset, tmp_path):
    """torchrun, 2 CPU processes (gloo): gradients averaged, only rank 0 validates and writes."""
    from test_finetune import torchrun_finetune

    proc = torchrun_finetune(dataset, tmp_path, extra=["--ignore-extra-labels"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote mammo-exam" in proc.stderr and "validation AUC" in proc.stderr
    (path,) = tmp_path.glob("*.json")  # only rank 0 writes
    card = registry.load_card(path)
    assert card.extra["processes"] == 2
    registry.load_model(card)
