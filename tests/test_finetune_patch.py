"""Fine-tuning the mammography patch classifier (mammo-patch) from exported views with lesion masks:
patches labelled from the masks as train_mammo labels them, the whole network trained, validation
by patch AUC on held-out views, a new version that reloads and runs as a dense heatmap, and the
same activation rule as the other fine-tuners."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import activation, registry
from inference.finetune import FinetuneError, finetune, next_version, preflight
from inference.finetune_patch import LESION_SCORE
from inference.heatmap import dense_heatmap
from inference.phantoms import mammo_image, mammo_spacing
from inference.preprocess.mammo import prepare
from inference.train_mammo import CLASSES
from viewer.core.export.dataset import DatasetWriter
from viewer.core.volume import SourceInfo, Volume

MODEL = "mammo-patch"
SIZE = (416, 320)  # 0.56 mm pixels over the whole detector: cheap to render and train on
SPACING = mammo_spacing(SIZE)
NAMES = {1: "mass", 2: "calcification"}


def lesion_view(seed: int, mass: bool, calcs: bool, gain: float = 1.0):
    """(pixels uint16, labels 0/1 mass/2 calcification) of one phantom view."""
    lat, view = ("R", "L")[seed % 2], ("CC", "MLO")[(seed // 2) % 2]
    img, masks = mammo_image(lat, view, size=SIZE, seed=seed, mass=mass, calcifications=calcs)
    labels = np.where(masks["mass"], 1, np.where(masks["calcification"], 2, 0)).astype(np.uint8)
    return np.rint(img.astype(np.float32) * gain).astype(np.uint16), labels


def write_lesion_views(root, views, name="Dataset611_MammoPatch", names=NAMES):
    writer = DatasetWriter(root, name)
    for pixels, labels in views:
        volume = Volume(pixels[None], np.array([1.0, *SPACING]), info=SourceInfo(modality="MG"))
        writer.add_case(volume, labels[None], names)
    return writer.folder


def patch_dataset_views():
    """Six views: masses, calcifications, both, and normals (the cGAN's canvases)."""
    return [lesion_view(3100, True, False), lesion_view(3101, False, True), lesion_view(3102, True, True),
            lesion_view(3103, False, False), lesion_view(3104, False, False), lesion_view(3105, True, False)]


@pytest.fixture(scope="module")
def patch_dataset(tmp_path_factory):
    return write_lesion_views(tmp_path_factory.mktemp("patch_export"), patch_dataset_views())


def test_patch_classifier_fine_tunes_into_a_reloadable_version_with_its_verdict(patch_dataset, tmp_path):
    torch.set_num_threads(1)
    shipped = registry.find_model(MODEL)
    shipped_bytes = shipped.weights_path.read_bytes()
    checked = preflight(patch_dataset, MODEL, val_fraction=0.34, seed=0)
    assert checked.unit == "views" and len(checked.val_idx) == 2 and len(checked.train_idx) == 4
    assert not checked.labels.refusals() and not checked.labels.warnings()  # mass and calcification both known
    records = []
    card = finetune(patch_dataset, MODEL, epochs=2, steps_per_epoch=3, batch=4, val_fraction=0.34,
                    out_dir=tmp_path, progress=records.append)
    assert card.name == MODEL and card.task == "patch-classifier" and card.version == next_version(shipped)
    assert [r["epoch"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    assert set(records[-1]["val_auc"]) <= set(CLASSES) and "normal" in records[-1]["val_auc"]
    m = card.metrics
    assert m["n_train_views"] == 4 and m["n_val_views"] == 2 and m["n_synthetic_train_views"] == 0
    assert m["train_patches_per_class"]["mass"] > 0 and m["val_patch_metrics"]["n_patches"] > 0
    rec = card.extra["activation"]
    assert rec["status"] in ("better", "not better") and rec["validation_cases"] == 2
    assert rec["parent"] == f"{MODEL} {shipped.version}"
    if m["val_lesion_auc"] is not None:  # the verdict rests on the lesion AUC of both versions, same patches
        assert rec["metric"] == f"AUC {LESION_SCORE}"
        assert (rec["score"], rec["parent_score"]) == (m["val_lesion_auc"], m["val_lesion_auc_before"])
        assert rec["status"] == ("better" if m["val_lesion_auc"] >= m["val_lesion_auc_before"] else "not better")
    assert card.extra["augmentation"] == {"augment": "none", "n_synthetic": 0}
    assert activation.describe(card).startswith(rec["status"])
    # its own domain description: this network on the 6 exported views plus the demo subset it came from
    assert card.domain["kind"] == "embedding" and card.domain["fit"]["own_cases"] == 6
    assert "6 exported views of" in card.extra["domain_note"]

    net, loaded = registry.load_model(tmp_path / f"{MODEL}-{card.version}.json")  # checksum verified
    pixels, _ = lesion_view(3106, True, False)
    prep = prepare(pixels.astype(np.float32), SPACING, target_spacing=0.42, margin=26,
                   normalization=loaded.normalization)
    heat = dense_heatmap(net, prep.image, device="cpu")
    assert heat.shape[0] == len(CLASSES) and np.allclose(heat.sum(0), 1.0, atol=1e-4)
    assert shipped.weights_path.read_bytes() == shipped_bytes  # the shipped model is untouched


def test_a_few_steps_teach_the_patch_classifier_a_shifted_detector(tmp_path):
    """A detector at 0.45 of the signal: patch AUC of the lesions on held-out views must rise after
    fine-tuning on a few views of that detector. Fails if training does not learn, or learns labels
    misplaced against their pixels."""
    torch.set_num_threads(1)
    views = [lesion_view(s, mass=s % 3 != 1, calcs=s % 3 != 0, gain=0.45) for s in range(3200, 3206)]
    dataset = write_lesion_views(tmp_path / "shifted", views, "Dataset612_Shifted")
    card = finetune(dataset, MODEL, epochs=2, steps_per_epoch=8, batch=8, lr=1e-3, val_fraction=0.34,
                    out_dir=tmp_path / "m")
    before, after = card.metrics["val_lesion_auc_before"], card.metrics["val_lesion_auc"]
    assert after > before + 0.05, (before, after)
    assert card.extra["activation"]["status"] == "better"


def test_patch_fine_tuning_refuses_unknown_labels_and_other_modalities(tmp_path):
    pixels, labels = lesion_view(3110, True, False)
    dataset = write_lesion_views(tmp_path / "odd", [(pixels, labels), lesion_view(3111, True, False)],
                                 "Dataset613_Odd", {1: "architectural distortion"})
    with pytest.raises(FinetuneError, match="no dataset label .*architectural distortion.* is a class"):
        finetune(dataset, MODEL, epochs=1, steps_per_epoch=1, out_dir=tmp_path / "m")
    import json

    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "mass": 1}
    (dataset / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "CT"}}))
    with pytest.raises(FinetuneError, match=f"channel 0 is 'CT'.*{MODEL}"):
        finetune(dataset, MODEL, epochs=1, steps_per_epoch=1, out_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()
