"""Training-dataset export: nnU-Net v2 raw layout, MONAI datalist, provenance, atomic and contained."""
import csv
import functools
import gzip
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from viewer.core.errors import LightboxError
from viewer.core.export.dataset import DatasetWriter, ExportError, edit_summary
from viewer.core.io.itk import from_sitk
from viewer.core.synthetic import ct_phantom
from viewer.core.volume import SourceInfo, Volume


def _rotation(deg):
    t = np.radians(deg)
    c, s = np.cos(t), np.sin(t)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return rz @ np.eye(3)[:, ::-1]  # an oblique version of the standard axial (z, y, x) direction


@functools.cache
def _phantom(seed, shape):
    return ct_phantom(shape=shape, spacing=(2.5, 1.4, 1.2), seed=seed)


def ct_case(seed=0, shape=(10, 32, 28)):
    hu, masks = _phantom(seed, shape)
    hu = hu.copy()
    vol = Volume(hu, spacing=(2.5, 1.4, 1.2), origin=(-20.0 + seed, 13.5, -7.25), direction=_rotation(15 + seed),
                 info=SourceInfo(modality="CT", series_uid=f"1.2.3.{seed}", patient_id="SECRET-ID"))
    labels = np.zeros(shape, np.uint8)
    labels[masks["liver"] > 0] = 1
    labels[masks["bone"] > 0] = 2
    if not labels.any():  # tiny phantoms may miss an organ: make sure both labels exist
        labels[2:4, 5:9, 5:9] = 1
    labels[6:8, 20:24, 18:22] = 2
    return vol, labels


def read(path):
    return sitk.ReadImage(str(path))


def test_two_cases_make_an_nnunet_v2_dataset(tmp_path):
    w = DatasetWriter(tmp_path, task_labels={"liver": 1, "bone": 2})
    ids = []
    for seed in (0, 1):
        vol, lab = ct_case(seed)
        ids.append(w.add_case(vol, lab, {1: "liver", 2: "bone"}, {"model": {"name": "ct-seg", "version": "1.2"}}))
    assert ids == ["CASE_0001", "CASE_0002"]
    ds = tmp_path / "Dataset501_Lightbox"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "liver": 1, "bone": 2}
    assert meta["file_ending"] == ".nii.gz"
    label_files = sorted(p.name for p in (ds / "labelsTr").iterdir())
    assert label_files == ["CASE_0001.nii.gz", "CASE_0002.nii.gz"]
    assert meta["numTraining"] == len(label_files)
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == ["CASE_0001_0000.nii.gz", "CASE_0002_0000.nii.gz"]

    for seed, cid in zip((0, 1), ids):
        vol, lab = ct_case(seed)
        img, seg = read(ds / "imagesTr" / f"{cid}_0000.nii.gz"), read(ds / "labelsTr" / f"{cid}.nii.gz")
        for a, b in ((img, seg),):
            assert a.GetSize() == b.GetSize()
            np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin())
            np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
            np.testing.assert_allclose(a.GetDirection(), b.GetDirection())
        back = from_sitk(img)
        assert back.same_grid(vol, tol=1e-4)
        np.testing.assert_array_equal(back.array, vol.array)
        assert seg.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), lab)
        assert b"SECRET" not in (ds / "imagesTr" / f"{cid}_0000.nii.gz").read_bytes()

    datalist = json.loads((ds / "datalist.json").read_text())
    assert datalist["training"] == [{"image": f"imagesTr/{c}_0000.nii.gz", "label": f"labelsTr/{c}.nii.gz"}
                                    for c in ids]
    for entry in datalist["training"]:
        assert (ds / entry["image"]).is_file() and (ds / entry["label"]).is_file()
    lines = [json.loads(x) for x in (ds / "provenance.jsonl").read_text().splitlines()]
    assert [r["case"] for r in lines] == ids
    assert lines[0]["model"] == {"name": "ct-seg", "version": "1.2"}
    assert lines[0]["timestamp"].endswith("Z") and lines[0]["app_version"]
    assert not list(ds.rglob(".*"))  # no temp files


def test_append_with_a_new_label_remaps_and_keeps_earlier_cases(tmp_path):
    vol, lab = ct_case(0)
    DatasetWriter(tmp_path, task_labels={"liver": 1, "bone": 2}).add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    ds = tmp_path / "Dataset501_Lightbox"
    before = {p: p.read_bytes() for p in ds.rglob("*.nii.gz")}

    # a second export, in another session: its map uses 1 = lesion (new), 2 = liver, 3 = bone
    vol2, lab2 = ct_case(1)
    src = np.zeros_like(lab2)
    src[lab2 == 1] = 2
    src[lab2 == 2] = 3
    src[0, :3, :3] = 1
    w = DatasetWriter(tmp_path)
    cid = w.add_case(vol2, src, {1: "lesion", 2: "liver", 3: "bone"}, {})
    assert cid == "CASE_0002"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "bone": 2, "lesion": 3}
    assert meta["numTraining"] == 2
    out = sitk.GetArrayFromImage(read(ds / "labelsTr" / "CASE_0002.nii.gz"))
    expect = np.zeros_like(src)
    expect[src == 2] = 1
    expect[src == 3] = 2
    expect[src == 1] = 3
    np.testing.assert_array_equal(out, expect)
    for p, data in before.items():
        assert p.read_bytes() == data  # earlier case untouched
    assert [e["label"] for e in json.loads((ds / "datalist.json").read_text())["training"]] == \
        ["labelsTr/CASE_0001.nii.gz", "labelsTr/CASE_0002.nii.gz"]

    with pytest.raises(ExportError, match="already exists"):
        w.add_case(vol2, src, {1: "lesion", 2: "liver", 3: "bone"}, {}, case_id="CASE_0001")
    with pytest.raises(ExportError, match="channel 0"):
        DatasetWriter(tmp_path, channel_names={"0": "MR"})
    with pytest.raises(ExportError, match="liver"):
        DatasetWriter(tmp_path, task_labels={"liver": 2})
    mr = Volume(vol.array, vol.spacing, vol.origin, vol.direction, SourceInfo(modality="MR"))
    with pytest.raises(ExportError, match="channel 0 is 'CT'"):
        w.add_case(mr, lab, {1: "liver", 2: "bone"}, {})
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2


def test_provenance_records_the_users_edits(tmp_path):
    vol, original = ct_case(0)
    edited = original.copy()
    liver = np.argwhere(original == 1)
    assert len(liver) >= 5
    for z, y, x in liver[:5]:
        edited[z, y, x] = 0  # 5 liver voxels erased
    bg = np.argwhere(original == 0)[:7]
    for z, y, x in bg:
        edited[z, y, x] = 2  # 7 bone voxels painted on background
    edited[tuple(liver[5])] = 2  # one liver voxel relabelled as bone
    names = {1: "liver", 2: "bone"}
    summary = edit_summary(original, edited, names)
    assert summary["voxels_changed"] == 13
    assert summary["labels"]["liver"] == {"value": 1, "added": 0, "removed": 6}
    assert summary["labels"]["bone"] == {"value": 2, "added": 8, "removed": 0}

    w = DatasetWriter(tmp_path, task_labels={"bone": 1, "liver": 2}, uid_mapper=lambda uid: "anon-" + uid[-1])
    w.add_case(vol, edited, names, {"model_name": "ct-seg", "model_version": "3", "reader": "dr x"},
               original_labels=original)
    rec = json.loads((tmp_path / "Dataset501_Lightbox" / "provenance.jsonl").read_text().splitlines()[0])
    assert rec["edits"] == summary
    assert rec["model"] == {"name": "ct-seg", "version": "3"}
    assert rec["source_series_uid"] == "anon-0"
    assert rec["extra"] == {"reader": "dr x"}
    assert rec["labels"] == {"bone": 1, "liver": 2}
    assert "SECRET" not in json.dumps(rec)


def test_add_labelmap_takes_names_from_the_table(tmp_path):
    from viewer.core.labels import Label, LabelMap

    vol, lab = ct_case(0)
    lm = LabelMap(vol, lab, [Label(1, "liver"), Label(2, "bone")])
    w = DatasetWriter(tmp_path, task_labels={"bone": 1})
    cid = w.add_labelmap(vol, lm, {"model": "ct-organs 1.2"})
    out = sitk.GetArrayFromImage(read(tmp_path / "Dataset501_Lightbox" / "labelsTr" / f"{cid}.nii.gz"))
    assert w.labels == {"background": 0, "bone": 1, "liver": 2}
    np.testing.assert_array_equal(out, np.choose(lab, [0, 2, 1]))
    rec = json.loads((tmp_path / "Dataset501_Lightbox" / "provenance.jsonl").read_text())
    assert rec["model"] == {"name": "ct-organs", "version": "1.2"}


def test_classification_csv_and_json(tmp_path):
    w = DatasetWriter(tmp_path)
    w.add_classification("exam1", "LCC", "malignant")
    w.add_classification("exam1", "RCC", "normal")
    w.add_classification("exam1", "LCC", "benign")  # a correction replaces
    ds = tmp_path / "Dataset501_Lightbox"
    with open(ds / "classification.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"case": "exam1", "view": "LCC", "label": "benign", "image": "", "chest_wall": ""},
                    {"case": "exam1", "view": "RCC", "label": "normal", "image": "", "chest_wall": ""}]
    assert json.loads((ds / "classification.json").read_text())["classification"] == rows


def mg_view(seed=0, shape=(24, 18), orientation=("A", "R")):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4095, size=(1, *shape)).astype(np.uint16)
    return Volume(pixels, spacing=(1.0, 0.21, 0.17), origin=(0.0, 0.0, 0.0),
                  info=SourceInfo(modality="MG", series_uid=f"1.2.840.9.{seed}", study_uid="1.2.840.9",
                                  patient_id="SECRET-ID", patient_orientation=orientation))


def test_classified_view_images_go_to_imagescls_with_their_rows(tmp_path):
    w = DatasetWriter(tmp_path)
    lcc = mg_view(1)
    assert w.add_classification("CASE_0003", "LCC", "suspicious", image=lcc, chest_wall="left") == "CASE_0003"
    ds = tmp_path / "Dataset501_Lightbox"
    image = sitk.ReadImage(str(ds / "imagesCls" / "CASE_0003_LCC.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), lcc.array)  # exactly the viewer's pixels
    np.testing.assert_allclose(from_sitk(image).spacing, lcc.spacing)
    raw = (ds / "imagesCls" / "CASE_0003_LCC.nii.gz").read_bytes()
    assert b"1.2.840.9" not in gzip.decompress(raw)  # no UID in the header
    with open(ds / "classification.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"case": "CASE_0003", "view": "LCC", "label": "suspicious",
                     "image": "imagesCls/CASE_0003_LCC.nii.gz", "chest_wall": "left"}]
    assert json.loads((ds / "classification.json").read_text())["classification"] == rows
    assert json.loads((ds / "dataset.json").read_text())["channel_names"] == {"0": "MG"}
    # a correction without the image keeps the image and the side
    w.add_classification("CASE_0003", "LCC", "normal")
    assert w.classifications() == [{**rows[0], "label": "normal"}]
    # a case that exists only as classification rows still takes its number
    assert w.next_case_id() == "CASE_0004"
    w.add_classification("CASE_0009", "exam", "normal")
    assert w.next_case_id() == "CASE_0010"
    with pytest.raises(ExportError, match="chest_wall"):
        w.add_classification("CASE_0004", "RCC", "normal", image=mg_view(2), chest_wall="top")
    with pytest.raises(ExportError, match="exam"):
        w.add_classification("CASE_0004", "exam", "normal", image=mg_view(2))
    with pytest.raises(ExportError, match="2D"):
        w.add_classification("CASE_0004", "RCC", "normal", image=ct_case(0)[0])


def test_several_views_of_a_case_in_one_commit_with_provenance(tmp_path):
    from viewer.core.export.dataset import ClassifiedView

    w = DatasetWriter(tmp_path, uid_mapper=lambda uid: "2.25.1" + uid[-1])
    views = [ClassifiedView("RCC", "", mg_view(1, orientation=("P", "L")), "right"),
             ClassifiedView("LCC", "suspicious", mg_view(2), "left"), ClassifiedView("exam", "suspicious")]
    w.add_classifications("CASE_0001", views, {"model": "mammo-exam 1.1"})
    ds = tmp_path / "Dataset501_Lightbox"
    assert sorted(p.name for p in (ds / "imagesCls").iterdir()) == ["CASE_0001_LCC.nii.gz", "CASE_0001_RCC.nii.gz"]
    assert [(r["view"], r["label"], r["image"]) for r in w.classifications()] == [
        ("LCC", "suspicious", "imagesCls/CASE_0001_LCC.nii.gz"), ("exam", "suspicious", "")]  # RCC: no label
    record = json.loads((ds / "provenance.jsonl").read_text())
    assert record["case"] == "CASE_0001" and record["model"] == {"name": "mammo-exam", "version": "1.1"}
    assert [v["view"] for v in record["views"]] == ["RCC", "LCC", "exam"]
    assert record["views"][0]["source_series_uid"] == "2.25.11"  # through the uid mapper
    assert b"SECRET-ID" not in (ds / "provenance.jsonl").read_bytes()


def test_old_three_column_classification_files_still_read(tmp_path):
    ds = tmp_path / "Dataset501_Lightbox"
    ds.mkdir()
    (ds / "classification.csv").write_text("case,view,label\nexam1,LCC,malignant\n")
    w = DatasetWriter(tmp_path)
    assert w.classifications() == [{"case": "exam1", "view": "LCC", "label": "malignant", "image": "",
                                    "chest_wall": ""}]
    (ds / "classification.json").write_text(json.dumps({"classification": [
        {"case": "exam1", "view": "LCC", "label": "malignant"}]}))
    w.add_classification("exam1", "RCC", "normal")
    rows = json.loads((ds / "classification.json").read_text())["classification"]
    assert rows == [{"case": "exam1", "view": "LCC", "label": "malignant", "image": "", "chest_wall": ""},
                    {"case": "exam1", "view": "RCC", "label": "normal", "image": "", "chest_wall": ""}]


def test_a_failing_classification_write_leaves_no_image(tmp_path, monkeypatch):
    import viewer.core.export.dataset as mod

    w = DatasetWriter(tmp_path)
    w.add_classification("CASE_0001", "exam", "normal")
    ds = tmp_path / "Dataset501_Lightbox"
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    real = mod._stage_bytes

    def failing(data, final):
        if final.name == "classification.json":
            raise mod._os_error(OSError(28, "No space left on device"), final.parent, final.name)
        return real(data, final)

    monkeypatch.setattr(mod, "_stage_bytes", failing)
    with pytest.raises(ExportError, match="disk is full"):
        w.add_classification("CASE_0002", "LCC", "suspicious", image=mg_view(1), chest_wall="left")
    assert {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before


def test_a_ct_dataset_refuses_mammography_images(tmp_path):
    vol, lab = ct_case(0)
    w = DatasetWriter(tmp_path)
    w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    with pytest.raises(ExportError, match="channel 0 is 'CT'"):
        w.add_classification("CASE_0002", "LCC", "suspicious", image=mg_view(1))
    assert not (tmp_path / "Dataset501_Lightbox" / "imagesCls" / "CASE_0002_LCC.nii.gz").exists()


def test_case_ids_cannot_escape_root(tmp_path):
    root = tmp_path / "root"
    vol, lab = ct_case(0)
    w = DatasetWriter(root, name="../../evil")
    cid = w.add_case(vol, lab, {1: "liver", 2: "bone"}, {}, case_id="../../x")
    assert "/" not in cid and not cid.startswith(".")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(root.resolve() in p.resolve().parents for p in written)
    w.add_classification("../../../y", "../LCC", "normal")
    assert all(root.resolve() in p.resolve().parents for p in tmp_path.rglob("*") if p.is_file())


def _chmod_works(path):
    os.chmod(path, 0o555)
    return not os.access(path, os.W_OK)


def test_read_only_folder_fails_cleanly(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    try:
        if not _chmod_works(ro):
            pytest.skip("running as root: chmod does not stop writes")
        with pytest.raises(ExportError, match="permission denied") as exc:
            DatasetWriter(ro)
        assert str(ro) in str(exc.value) and isinstance(exc.value, LightboxError)
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o755)

    # an existing dataset whose labelsTr became read-only: the image must not be left behind
    vol, lab = ct_case(0)
    w = DatasetWriter(tmp_path / "ok")
    w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    ds = tmp_path / "ok" / "Dataset501_Lightbox"
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    try:
        os.chmod(ds / "labelsTr", 0o555)
        with pytest.raises(ExportError, match="labelsTr"):
            w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    finally:
        os.chmod(ds / "labelsTr", 0o755)
    after = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    assert after == before  # no second image, no temp files, metadata unchanged


def test_a_failing_label_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """Works as root too: the label write fails after the image was staged."""
    import viewer.core.export.dataset as mod

    vol, lab = ct_case(0)
    w = DatasetWriter(tmp_path)
    w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    ds = tmp_path / "Dataset501_Lightbox"
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    real = mod._stage_image

    def failing(volume, final, note):
        if final.parent.name == "labelsTr":
            raise mod._os_error(OSError(28, "No space left on device"), final.parent, final.name)
        return real(volume, final, note)

    monkeypatch.setattr(mod, "_stage_image", failing)
    with pytest.raises(ExportError, match="disk is full"):
        w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    assert {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before

    # a rename failing half-way through the commit rolls back the files already moved
    monkeypatch.setattr(mod, "_stage_image", real)
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("datalist.json"):
            raise OSError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(mod.os, "replace", replace)
    with pytest.raises(ExportError, match="permission denied"):
        w.add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    monkeypatch.setattr(mod.os, "replace", real_replace)
    assert {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before
    assert w.add_case(vol, lab, {1: "liver", 2: "bone"}, {}) == "CASE_0002"


def test_bad_inputs_are_refused(tmp_path):
    vol, lab = ct_case(0)
    w = DatasetWriter(tmp_path)
    with pytest.raises(ExportError, match="no name"):
        w.add_case(vol, lab, {1: "liver"}, {})
    with pytest.raises(ExportError, match="grid"):
        w.add_case(vol, lab[:-1], {1: "liver", 2: "bone"}, {})
    with pytest.raises(ExportError, match="consecutive"):
        DatasetWriter(tmp_path / "b", task_labels={"liver": 1, "bone": 3})
    assert not (tmp_path / "Dataset501_Lightbox" / "dataset.json").exists()


def test_summary_and_refusal_read_without_writing(tmp_path):
    from viewer.core.export.dataset import existing_datasets

    new = DatasetWriter(tmp_path, "Dataset502_New", create=False)
    assert not new.exists and not (tmp_path / "Dataset502_New").exists()
    assert new.refusal(mg_view(1)) is None
    assert new.summary() == {"segmentation_cases": 0, "classified_cases": 0, "labels": [], "channel": ""}
    vol, lab = ct_case(0)
    DatasetWriter(tmp_path).add_case(vol, lab, {1: "liver", 2: "bone"}, {})
    DatasetWriter(tmp_path).add_classification("CASE_0007", "exam", "normal")
    assert existing_datasets(tmp_path) == ["Dataset501_Lightbox"]
    ct = DatasetWriter(tmp_path, create=False)
    assert ct.summary() == {"segmentation_cases": 1, "classified_cases": 1, "labels": ["liver", "bone"],
                            "channel": "CT"}
    assert ct.refusal(vol, {1: "liver", 3: "spleen"}) is None
    assert "channel 0 is 'CT'" in ct.refusal(mg_view(1))
    assert "background" in ct.refusal(vol, {1: "background"})


def test_a_label_with_no_voxels_is_not_listed_and_leaves_no_gap(tmp_path):
    """Issue 14: an exported dataset listed an empty label ("Label 5", 0 voxels) in dataset.json. A label
    that is only in the table is left out; when a later case paints it, it takes the next value."""
    from viewer.core.labels import Label, LabelMap

    vol, lab = ct_case(0)
    lm = LabelMap(vol, lab, [Label(1, "liver"), Label(2, "bone"), Label(5, "Label 5")])  # 5: added, never painted
    ds = tmp_path / "Dataset501_Lightbox"
    w = DatasetWriter(tmp_path)
    original = lab.copy()
    original[0, 0, :2] = 5  # the model had two voxels of it; the user erased them
    w.add_labelmap(vol, lm, {}, original_labels=original)
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "bone": 2}
    rec = json.loads((ds / "provenance.jsonl").read_text())
    assert rec["labels"] == {"liver": 1, "bone": 2}
    assert rec["edits"]["labels"]["Label 5"] == {"value": 5, "added": 0, "removed": 2}  # the erase is still told

    vol2, lab2 = ct_case(1)
    lab2[0, :3, :3] = 5  # now painted: the next consecutive value, as nnU-Net wants
    cid = DatasetWriter(tmp_path).add_case(vol2, lab2, {1: "liver", 2: "bone", 5: "Label 5", 7: "spare"}, {})
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "bone": 2, "Label 5": 3}
    assert sorted(meta["labels"].values()) == list(range(4))
    out = sitk.GetArrayFromImage(read(ds / "labelsTr" / f"{cid}.nii.gz"))
    np.testing.assert_array_equal(out[lab2 == 5], 3)
    np.testing.assert_array_equal(out[lab2 == 1], 1)
