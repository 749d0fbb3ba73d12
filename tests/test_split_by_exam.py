"""Fine-tuning splits an exported exam's views together: one woman's CC and MLO of the same lesion must
not sit on both sides of the training/validation split (validation would then be a look-up)."""
from __future__ import annotations

import numpy as np
import pytest

from inference.finetune import preflight
from inference.finetune_common import exam_of_pairs, read_dataset, split_by_exam, split_indices
from inference.phantoms import mammo_image, mammo_spacing
from viewer.core.export.training import export_exam
from viewer.core.volume import SourceInfo, Volume

SIZE = (208, 160)
VIEWS = ("RCC", "LCC", "RMLO", "LMLO")


def write_exams(root, n_exams: int):
    spacing = np.array([1.0, *mammo_spacing(SIZE)])
    folder = None
    for e in range(n_exams):
        views, classes, labels = {}, {}, {}
        for k, name in enumerate(VIEWS):
            lesion = name[0] == "R" and e % 2 == 0
            img, masks = mammo_image(name[0], name[1:], size=SIZE, seed=100 * e + k, mass=lesion)
            info = SourceInfo(modality="MG", series_uid=f"2.25.{e}{k}7", laterality=name[0], view_position=name[1:])
            views[name] = (Volume(img.astype(np.uint16)[None], spacing, info=info), None)
            classes[name] = "malignant" if lesion else "normal"
            labels[name] = ((masks["mass"] > 0).astype(np.uint8)[None], {1: "mass"}, None)
        classes["exam"] = "malignant" if e % 2 == 0 else "normal"
        folder = export_exam(root, views, classes, labels=labels, dataset_name="Dataset918_Exams")["dataset"]
    return folder


@pytest.fixture(scope="module")
def exams(tmp_path_factory):
    return write_exams(tmp_path_factory.mktemp("exams"), 5)


@pytest.mark.parametrize("model", ["mammo-patch", "mammo-lesion-unet2d", "mammo-infill-cgan"])
def test_an_exams_views_stay_on_one_side_of_the_split(exams, model):
    _meta, pairs = read_dataset(exams)
    exam = exam_of_pairs(exams, pairs)
    assert len(pairs) == 20 and len(set(exam)) == 5 and all(exam.count(e) == 4 for e in exam)
    for seed in range(6):
        checked = preflight(exams, model, val_fraction=0.4, seed=seed)
        train = {exam[i] for i in checked.train_idx}
        val = {exam[i] for i in checked.val_idx}
        assert not train & val, f"seed {seed}: exams {train & val} on both sides"
        assert len(val) == 2 and len(checked.val_idx) + len(checked.train_idx) == 20
        if model != "mammo-infill-cgan":  # the cGAN counts validation lesions instead
            assert checked.validation_cases == 2 and "(2 validation cases)" in checked.messages()[0]


def test_views_without_an_exam_split_exactly_as_before(tmp_path, exams):
    assert split_by_exam([f"c{i}" for i in range(9)], 0.3, 4)[:2] == split_indices(9, 0.3, 4)
    (tmp_path / "provenance.jsonl").write_text('{"case": "x"\nnot json\n')  # unreadable lines: own exams
    _meta, pairs = read_dataset(exams)
    assert exam_of_pairs(tmp_path, pairs) == [image.name.rsplit("_0000", 1)[0] for image, _ in pairs]


def test_a_single_exam_leaves_nothing_to_validate_on(tmp_path):
    folder = write_exams(tmp_path, 1)
    checked = preflight(folder, "mammo-patch", val_fraction=0.5, seed=0)
    assert checked.validation_cases == 0 and not checked.val_idx and len(checked.train_idx) == 4
