"""Segmentations made by other tools open as label maps on their image (issue 11, item 5).

Every SEG / RTSTRUCT here is written by someone else's code: highdicom (binary,
fractional and label-map SEGs), pydicom's own test RTSTRUCT, and rt-utils (an
RTSTRUCT writer from PyPI, run in a child process so its OpenCV stays out of the
Qt process). Expected voxels come from what was drawn on known slices and rows
of the source, never from our own reader.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

from tests.conftest import AXIAL, ramp_volume
from viewer.core.errors import LoadError
from viewer.core.io import load_series, plan_series, scan
from viewer.core.io.dicom_write import write_series
from viewer.core.io.itk import to_sitk
from viewer.core.io.label_files import (
    fill_polygon,
    label_files_for,
    read_label_file,
    segmentation_summary,
)
from viewer.core.volume import SourceInfo, Volume

LIVER = (codes.SCT.Organ, codes.SCT.Liver)
TUMOR = (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm)
COLORS = {1: (200, 40, 40), 2: (30, 180, 60)}


def load(folder):
    series = [s for s in scan(Path(folder)).series if s.kind == "dicom"]
    assert len(series) == 1, [s.label() for s in series]
    return series[0], load_series(series[0])


def drawn(shape) -> np.ndarray:
    """What the other tool was given: 'Liver' on slices 1-2 rows 3-8, 'Tumor' on slice 4 rows 10-13."""
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 3:9, 2:7] = 1
    labels[4, 10:14, 8:12] = 2
    return labels


def descriptions():
    out = []
    for number, name, (category, kind) in ((1, "Liver", LIVER), (2, "Tumor", TUMOR)):
        out.append(hd.seg.SegmentDescription(
            number, name, category, kind, "MANUAL",
            display_color=hd.color.CIELabColor.from_rgb(*COLORS[number])))
    return out


@pytest.fixture
def ct(tmp_path):
    """A small CT written with pydicom, file names shuffled (frame order must not matter)."""
    src = ramp_volume(shape=(6, 16, 14), direction=AXIAL)
    write_series(src, tmp_path / "ct", file_order="shuffled", seed=11)
    series, volume = load(tmp_path / "ct")
    return series, volume, tmp_path / "ct"


def highdicom_seg(series, labels, kind, path, **kw):
    """A SEG written by highdicom over the source files listed in file-name order (not z order)."""
    plan = plan_series(series)
    slots = sorted(((f.instance.path, k) for k, f in enumerate(plan.slots)), key=lambda t: t[0].name)
    sources = [pydicom.dcmread(p) for p, _ in slots]
    array = labels[[k for _, k in slots]]
    if kind == "FRACTIONAL" and array.dtype != np.float32:
        array = np.stack([(array == 1), (array == 2)], axis=-1).astype(np.float32) * 0.7 + \
            np.stack([(array == 0)] * 2, axis=-1).astype(np.float32) * 0.3
    seg = hd.seg.Segmentation(sources, array, kind, descriptions(), hd.UID(), 5, hd.UID(), 1,
                              "OtherVendor", "OtherTool", "9.9", "42", **kw)
    seg.save_as(path)
    return path


# -- DICOM SEG -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_highdicom_seg_lands_on_its_slices_with_names_colours_and_codes(ct, tmp_path, kind):
    series, volume, _ = ct
    labels = drawn(volume.shape)
    path = highdicom_seg(series, labels, kind, tmp_path / f"{kind}.dcm")
    opened = read_label_file(path, volume, series)
    np.testing.assert_array_equal(opened.array, labels)
    assert opened.kind == f"DICOM SEG ({kind})"
    assert [s.label for s in opened.segments] == ["Liver", "Tumor"]
    for s in opened.segments:
        assert np.abs(np.subtract(s.color, COLORS[s.number])).max() <= 1
    liver, tumor = opened.segments
    assert (liver.category.value, liver.type.value) == (codes.SCT.Organ.value, codes.SCT.Liver.value)
    assert tumor.type.meaning == "Neoplasm"


def test_fractional_seg_is_cut_at_half_the_maximum(ct, tmp_path):
    series, volume, _ = ct
    prob = np.zeros(volume.shape, np.float32)
    prob[2, 4:8, 4:8] = 0.49  # just under half: outside
    prob[2, 5:7, 5:7] = 0.51  # just over: inside
    plan = plan_series(series)
    sources = [pydicom.dcmread(f.instance.path) for f in plan.slots]
    seg = hd.seg.Segmentation(sources, prob, "FRACTIONAL", descriptions()[:1], hd.UID(), 5, hd.UID(), 1,
                              "OtherVendor", "OtherTool", "9.9", "42", fractional_type="OCCUPANCY")
    seg.save_as(tmp_path / "frac.dcm")
    opened = read_label_file(tmp_path / "frac.dcm", volume, series)
    want = np.zeros(volume.shape, np.uint8)
    want[2, 5:7, 5:7] = 1
    np.testing.assert_array_equal(opened.array, want)
    assert any("half the maximum" in n for n in opened.notes)


def test_overlapping_binary_segments_later_wins_with_a_note(ct, tmp_path):
    series, volume, _ = ct
    plan = plan_series(series)
    sources = [pydicom.dcmread(f.instance.path) for f in plan.slots]
    masks = np.zeros((*volume.shape, 2), bool)
    masks[3, 2:8, 2:8, 0] = True
    masks[3, 5:10, 5:10, 1] = True  # overlaps 3x3 voxels of the first
    seg = hd.seg.Segmentation(sources, masks, "BINARY", descriptions(), hd.UID(), 5, hd.UID(), 1,
                              "OtherVendor", "OtherTool", "9.9", "42")
    seg.save_as(tmp_path / "overlap.dcm")
    opened = read_label_file(tmp_path / "overlap.dcm", volume, series)
    assert opened.array[3, 6, 6] == 2 and opened.array[3, 2, 2] == 1 and opened.array[3, 9, 9] == 2
    assert any("overlap on 9 voxel(s)" in n for n in opened.notes)


def test_seg_of_another_series_is_refused_in_words(ct, tmp_path):
    series, volume, _ = ct
    path = highdicom_seg(series, drawn(volume.shape), "BINARY", tmp_path / "seg.dcm")
    write_series(ramp_volume(shape=(6, 16, 14), origin=(0, 0, 300.0)), tmp_path / "other")
    other_series, other = load(tmp_path / "other")
    with pytest.raises(LoadError, match="was made on series .* not on the open series"):
        read_label_file(path, other, other_series)


def test_segmentation_summary_of_seg_and_rtstruct_headers(ct, tmp_path):
    series, volume, _ = ct
    path = highdicom_seg(series, drawn(volume.shape), "LABELMAP", tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert segmentation_summary(ds) == {"kind": "segmentation", "references": [series.uid],
                                        "segments": ["Liver", "Tumor"]}
    rt = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True, stop_before_pixels=True)
    assert segmentation_summary(rt) == {
        "kind": "segmentation", "references": ["1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"],
        "segments": ["patient", "Isocenter 1", "Isocenter 2"]}
    with pytest.raises(ValueError, match="not a DICOM SEG or RT Structure Set"):
        segmentation_summary(pydicom.dcmread(plan_series(series).slots[0].instance.path))


def test_label_files_beside_a_series_are_found_by_reference(ct, tmp_path):
    series, volume, folder = ct
    highdicom_seg(series, drawn(volume.shape), "BINARY", folder / "seg_binary.dcm")
    highdicom_seg(series, drawn(volume.shape), "LABELMAP", folder / "seg_labelmap.dcm")
    write_series(ramp_volume(shape=(3, 8, 8), origin=(0, 0, 300.0)), folder / "other")
    result = scan(folder)
    ct_series = next(s for s in result.series if s.uid == series.uid)
    found = label_files_for(ct_series, result.series)
    assert sorted(p.name for p in found) == ["seg_binary.dcm", "seg_labelmap.dcm"]
    other = next(s for s in result.series if s.kind == "dicom" and s.uid != series.uid)
    assert label_files_for(other, result.series) == []


# -- RTSTRUCT ------------------------------------------------------------------------------------
def test_pydicom_rtstruct_contours_fill_their_slices():
    """pydicom's rtstruct.dcm: a 400x300 mm rectangle on z = -200, -190, -180 and two POINT ROIs."""
    rt = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    info = SourceInfo(modality="CT", series_uid="1.2.826.0.1.3680043.8.498.2010020400001.2.1.1",
                      frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2010020400001.2")
    volume = Volume(np.zeros((5, 21, 21), np.int16), (10.0, 25.0, 25.0), (-250.0, -250.0, -210.0), AXIAL, info)
    assert str(rt.ROIContourSequence[0].ContourSequence[0].ContourData[2]) == "-200.0"
    opened = read_label_file(get_testdata_file("rtstruct.dcm"), volume)
    want = np.zeros(volume.shape, np.uint8)
    want[1:4, 4:17, 2:19] = 1  # x -200..200 -> columns 2..18, y -150..150 -> rows 4..16, z -200..-180
    np.testing.assert_array_equal(opened.array, want)
    (patient,) = opened.segments
    assert (patient.label, patient.color) == ("patient", (220, 160, 120))
    assert any("Isocenter 1" in n and "not closed planar" in n for n in opened.notes)


def test_rtstruct_of_another_frame_of_reference_is_refused():
    info = SourceInfo(modality="CT", series_uid="1.2.3", frame_of_reference_uid="1.2.3.4")
    volume = Volume(np.zeros((5, 21, 21), np.int16), (10.0, 25.0, 25.0), (-250.0, -250.0, -210.0), AXIAL, info)
    with pytest.raises(LoadError, match="shares no frame of reference"):
        read_label_file(get_testdata_file("rtstruct.dcm"), volume)


def test_fill_polygon_even_odd_and_centres_on_the_contour():
    square = fill_polygon((8, 8), [1, 1, 6, 6], [1, 6, 6, 1])  # through pixel centres: edges included
    want = np.zeros((8, 8), bool)
    want[1:7, 1:7] = True
    np.testing.assert_array_equal(square, want)
    # a self-crossing star: the even-odd rule leaves its centre pentagon empty
    t = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = fill_polygon((41, 41), 20 - 18 * np.sin(t), 20 + 18 * np.cos(t))
    assert not star[20, 20] and star[6, 20] and star[4, 20]  # centre empty, a point's tip filled


RT_UTILS_WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from rt_utils import RTStructBuilder
    src, out, labels_path, spec = sys.argv[1:5]
    spec = json.loads(spec)
    labels = np.load(labels_path)
    rt = RTStructBuilder.create_new(dicom_series_path=src)
    z_of = lambda ds: int(round((float(ds.ImagePositionPatient[2]) - spec["z0"]) / spec["dz"]))
    for value, name, color in spec["rois"]:
        mask = np.stack([labels[z_of(ds)] == value for ds in rt.series_data], axis=-1)
        rt.add_roi(mask=mask, color=color, name=name)
    rt.save(out)
""")


def rt_utils_rtstruct(folder, labels, volume, out, rois):
    """An RTSTRUCT written by rt-utils (in a child process: its OpenCV never meets Qt here)."""
    if importlib.util.find_spec("rt_utils") is None:  # found, not imported: OpenCV stays out of this process
        pytest.skip("rt-utils is not installed (pip install --no-deps rt-utils opencv-python-headless)")
    images = out.parent / f"{out.stem}_images"  # the image files only (rt-utils reads every .dcm there)
    images.mkdir()
    for p in Path(folder).glob("*.dcm"):
        if str(pydicom.dcmread(p, stop_before_pixels=True).Modality) != "SEG":
            shutil.copy(p, images / p.name)
    folder = images
    np.save(out.with_suffix(".npy"), labels)
    spec = {"z0": float(volume.origin[2]), "dz": float(volume.spacing[0]), "rois": rois}
    done = subprocess.run([sys.executable, "-c", RT_UTILS_WRITER, str(folder), str(out),
                           str(out.with_suffix(".npy")), json.dumps(spec)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_rt_utils_rtstruct_lands_on_the_drawn_voxels(tmp_path):
    # square pixels: rt-utils 1.2.7 scales columns by PixelSpacing[0] (the row spacing), so on
    # non-square pixels its contours are off by the spacing ratio (the standard is what we follow)
    write_series(ramp_volume(shape=(6, 16, 14), spacing=(2.5, 0.8, 0.8), direction=AXIAL), tmp_path / "ct",
                 file_order="shuffled", seed=12)
    folder = tmp_path / "ct"
    series, volume = load(folder)
    labels = drawn(volume.shape)
    labels[4, 10:14, 8:12] = 0
    labels[4, 9:15, 7:13] = 2
    labels[4, 11:13, 9:11] = 0  # a hole: the inner contour must cut it out
    path = rt_utils_rtstruct(folder, labels, volume, tmp_path / "rt.dcm",
                             [[1, "Liver", [200, 40, 40]], [2, "Tumor ring", [30, 180, 60]]])
    assert segmentation_summary(pydicom.dcmread(path))["references"] == [series.uid]
    opened = read_label_file(path, volume, series)
    np.testing.assert_array_equal(opened.array, labels)
    assert [(s.label, s.color) for s in opened.segments] == [("Liver", (200, 40, 40)),
                                                            ("Tumor ring", (30, 180, 60))]


# -- NIfTI / NRRD --------------------------------------------------------------------------------
def test_nifti_on_the_grid_is_taken_and_one_on_another_grid_resampled(ct, tmp_path):
    series, volume, _ = ct
    labels = drawn(volume.shape)
    sitk.WriteImage(to_sitk(volume.with_array(labels)), str(tmp_path / "same.nii.gz"))
    opened = read_label_file(tmp_path / "same.nii.gz", volume, series)
    np.testing.assert_array_equal(opened.array, labels)
    assert [s.label for s in opened.segments] == ["Label 1", "Label 2"] and not opened.notes

    fine = Volume(np.repeat(labels, 2, axis=2), volume.spacing * [1, 1, 0.5],  # columns at half the spacing
                  volume.index_to_world([0, 0, -0.25]), volume.direction)
    sitk.WriteImage(to_sitk(fine), str(tmp_path / "fine.nrrd"))
    opened = read_label_file(tmp_path / "fine.nrrd", volume, series)
    np.testing.assert_array_equal(opened.array, labels)
    assert any("resampled nearest-neighbour" in n for n in opened.notes)

    far = Volume(labels, volume.spacing, volume.origin + [0, 0, 900.0], volume.direction)
    sitk.WriteImage(to_sitk(far), str(tmp_path / "far.nii.gz"))
    with pytest.raises(LoadError, match="does not overlap the open image"):
        read_label_file(tmp_path / "far.nii.gz", volume, series)


def test_slicer_seg_nrrd_keeps_segment_names_and_colours(ct, tmp_path):
    series, volume, _ = ct
    image = to_sitk(volume.with_array(drawn(volume.shape)))
    for i, (name, color, value) in enumerate((("Liver", "0.8 0.2 0.2", 1), ("Tumor", "0 0.5 1", 2))):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_Color", color)
        image.SetMetaData(f"Segment{i}_LabelValue", str(value))
    sitk.WriteImage(image, str(tmp_path / "labels.seg.nrrd"))
    opened = read_label_file(tmp_path / "labels.seg.nrrd", volume, series)
    assert [(s.number, s.label, s.color) for s in opened.segments] == [(1, "Liver", (204, 51, 51)),
                                                                      (2, "Tumor", (0, 128, 255))]


def test_not_a_label_file_is_named(tmp_path, ct):
    series, volume, folder = ct
    some_ct_file = plan_series(series).slots[0].instance.path
    with pytest.raises(LoadError, match="not a label file"):
        read_label_file(some_ct_file, volume, series)


# -- in the app ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_with_seg(tmp_path_factory):
    """A phantom CT with a SEG written by highdicom beside it ('Liver' and 'Lesion' from the phantom)."""
    from viewer.core.synthetic import write_ct_study

    out = tmp_path_factory.mktemp("study")
    ph = write_ct_study(out / "ct", shape=(16, 96, 96), spacing=(5.0, 3.5, 3.5), seed=1, file_order="shuffled")
    series, volume = load(out / "ct")
    labels = np.zeros(volume.shape, np.uint8)
    labels[ph.masks["liver"] > 0] = 1
    labels[ph.masks["lesions"] > 0] = 2
    assert np.array_equal(volume.array, ph.volume.array)  # the phantom's own grid: its masks are ours
    highdicom_seg(series, labels, "BINARY", out / "ct" / "seg_other_tool.dcm")
    return out / "ct", labels


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("pytestqt")
    from qt_helpers import close_quietly, editor_window

    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    w = editor_window(qtbot)
    yield w
    close_quietly(w)


def test_seg_beside_the_series_is_offered_opened_edited_and_saved_with_its_codes(
        qtbot, window, phantom_with_seg, tmp_path):
    from qt_helpers import open_and_wait

    folder, labels = phantom_with_seg
    w = window
    open_and_wait(qtbot, w, folder)
    panel = w.editor.panel
    assert panel.found_box.isVisible() and panel.found_combo.currentText() == "seg_other_tool.dcm"
    assert "1 segmentation file(s) beside it" in w.message.text()
    with qtbot.waitSignal(w.editor.labels_opened, timeout=30000) as opened:
        panel.open_found_button.click()
    lm = opened.args[0]
    view = w.slice_view
    got = w.editor.session.lookup(view, create=False)
    assert got is not None and got[0] is lm
    np.testing.assert_array_equal(lm.array, labels)
    assert [lb.name for lb in lm.labels.values()] == ["Liver", "Tumor"]
    for value, lb in lm.labels.items():
        assert np.abs(np.subtract(lb.color, COLORS[value])).max() <= 1
    assert not lm.dirty and view.layer("edit:labels").labelmap is lm

    # every tool edits it: brush (label 2 on an empty spot), erase, fill, undo
    k = 6
    view.set_slice(k)
    w.set_tool("brush")
    lm.set_active(2)
    view.tool.click(*view.pixel_center(10, 10))
    assert lm.array[k, 10, 10] == 2 and lm.dirty
    w.set_tool("erase")
    liver_voxel = tuple(int(i) for i in np.argwhere(labels[k] == 1)[len(np.argwhere(labels[k] == 1)) // 2])
    view.tool.click(*view.pixel_center(*liver_voxel))
    assert lm.array[k][liver_voxel] == 0
    w.editor.undo()
    assert lm.array[k][liver_voxel] == 1
    w.set_tool("fill")
    w.editor.panel.tolerance.setValue(30)
    before = int((lm.array == 2).sum())
    view.tool.click(*view.pixel_center(2, 2))  # air outside the body, label 2
    assert int((lm.array == 2).sum()) > before

    # saved as DICOM SEG: names and the file's codes kept; the untouched Liver keeps its algorithm
    path = w.editor.save(tmp_path / "edited.dcm")
    seg = hd.seg.segread(path)
    by_name = {seg.get_segment_description(i).SegmentLabel: seg.get_segment_description(i)
               for i in range(1, seg.number_of_segments + 1)}
    assert set(by_name) == {"Liver", "Tumor"}
    liver = by_name["Liver"]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.Organ.value
    tumor = by_name["Tumor"]
    assert tumor.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Neoplasm.value
    assert liver.SegmentAlgorithmType == "MANUAL" and tumor.SegmentAlgorithmType == "MANUAL"
    back = read_label_file(path, view.volume, w.shown_series)
    np.testing.assert_array_equal(back.array, lm.array)


def test_file_open_labels_reads_an_rtstruct_and_refuses_another_series(
        qtbot, window, phantom_with_seg, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog
    from qt_helpers import open_and_wait

    folder, labels = phantom_with_seg
    w = window
    open_and_wait(qtbot, w, folder)
    assert w.editor.open_labels_action in w.file_menu.actions()
    rt = rt_utils_rtstruct(folder, labels, w.slice_view.volume, tmp_path / "rt.dcm",
                           [[1, "Liver RT", [10, 20, 250]]])
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(rt), ""))
    with qtbot.waitSignal(w.editor.labels_opened, timeout=30000) as opened:
        w.editor.open_labels_action.trigger()
    lm = opened.args[0]
    np.testing.assert_array_equal(lm.array, (labels == 1).astype(np.uint8))
    assert [(lb.name, lb.color) for lb in lm.labels.values()] == [("Liver RT", (10, 20, 250))]

    write_series(ramp_volume(shape=(4, 12, 12), origin=(0, 0, 900.0)), tmp_path / "elsewhere")
    other_series, _ = load(tmp_path / "elsewhere")
    foreign = highdicom_seg(other_series, np.ones((4, 12, 12), np.uint8), "BINARY", tmp_path / "foreign.dcm")
    with qtbot.waitSignal(w.task_failed, timeout=30000) as failed:
        w.editor.open_labels(foreign)
    assert "was made on series" in failed.args[0] and "open that series first" in failed.args[0]
    assert w.editor.session.lookup(w.slice_view, create=False)[0] is lm  # the open map is kept


def test_screenshot_of_an_opened_seg_over_its_ct(qtbot, window, phantom_with_seg):
    from qt_helpers import open_and_wait

    folder, _ = phantom_with_seg
    w = window
    open_and_wait(qtbot, w, folder)
    with qtbot.waitSignal(w.editor.labels_opened, timeout=30000):
        w.editor.panel.open_found_button.click()
    w.editor.dock.raise_()
    w.slice_view.set_slice(6)
    qtbot.wait(200)
    out = Path(os.environ.get("LIGHTBOX_SCREENSHOT", "/tmp/open_labels.png"))
    assert w.grab().save(str(out))
    layer = w.slice_view.layer("edit:labels")
    assert layer is not None and (layer.image[..., 3] > 0).any()


# -- lightbox info --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_info_lists_a_seg_as_a_segmentation_under_the_series_it_references(ct, tmp_path, kind):
    """A SEG from another tool is a "segmentation" (never an image, even as a label map), with its
    references and segment names; the CT it references lists it."""
    from viewer.cli import main

    series, volume, folder = ct
    highdicom_seg(series, drawn(volume.shape), kind, folder / "seg.dcm")
    summary = _info_json(main, folder)
    (study,) = [st for p in summary["patients"] for st in p["studies"]]
    by_kind = {s["kind"]: s for s in study["series"]}
    assert set(by_kind) == {"dicom", "segmentation"}
    seg = by_kind["segmentation"]
    assert seg["references"] == [series.uid] and seg["segments"] == ["Liver", "Tumor"]
    assert not any("not an image" in p for p in seg["problems"])
    assert by_kind["dicom"]["segmentations"] == [
        {"uid": seg["uid"], "description": seg["description"], "segments": ["Liver", "Tumor"]}]


def test_info_lists_an_rtstruct_as_a_segmentation(tmp_path):
    from viewer.cli import main

    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")
    summary = _info_json(main, tmp_path)
    (rt,) = [s for p in summary["patients"] for st in p["studies"] for s in st["series"]]
    assert rt["kind"] == "segmentation"
    assert rt["references"] == ["1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"]
    assert rt["segments"] == ["patient", "Isocenter 1", "Isocenter 2"]


def _info_json(main, folder) -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["info", str(folder), "--json"]) == 0
    return json.loads(buf.getvalue())


# -- export keeps another tool's codes ------------------------------------------------------------
def test_cli_export_of_another_tools_seg_keeps_its_names_codes_and_series(ct, tmp_path):
    """`lightbox export STUDY --labels THEIR.seg.dcm`: the exported (de-identified) SEG keeps the
    file's segment names and codes, and the SEG's own series is the one exported."""
    from viewer.cli import main

    series, volume, folder = ct
    write_series(ramp_volume(shape=(9, 16, 14), origin=(0, 0, 300.0), seed=3), folder / "bigger")  # more slices
    seg_path = highdicom_seg(series, drawn(volume.shape), "BINARY", tmp_path / "theirs.seg.dcm")
    assert main(["export", str(folder), "--labels", str(seg_path), "--out", str(tmp_path / "ds")]) == 0
    (exported,) = sorted((tmp_path / "ds").glob("*/segTr/*.seg.dcm"))
    read = hd.seg.segread(exported)
    got = {d.SegmentLabel: (d.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                            d.SegmentedPropertyTypeCodeSequence[0].CodeValue) for d in read.SegmentSequence}
    assert got == {"Liver": (LIVER[0].value, LIVER[1].value), "Tumor": (TUMOR[0].value, TUMOR[1].value)}
    (label,) = sorted((tmp_path / "ds").glob("*/labelsTr/*.nii.gz"))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(label))).shape == volume.shape
