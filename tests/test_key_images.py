"""Key images (issue 14): mark, list, remove, persist and restore per study; PNG export with the
overlays burned in and a caption without PHI; file names that cannot leave the chosen folder."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from conftest import ramp_volume
from PIL import Image
from qt_helpers import shown

from viewer.core.key_images import (KeyImage, KeyImageError, KeyImageStore, caption, caption_allows, inside,
                                    png_name, read_study, study_file, study_key, write_study)
from viewer.ui.key_images import KeyImagesPanel, key_from_view, render_key_image
from viewer.ui.overlays import LabelLayer
from viewer.ui.slice_view import SliceView

PATIENT = "DOE^JANE"
PATIENT_ID = "MRN-778899"
STUDY = "1.2.3.4.5.6"
RED = (255, 0, 0)


def phi_volume():
    return ramp_volume(shape=(10, 60, 80), spacing=(3.0, 1.0, 1.0), patient_name=PATIENT, patient_id=PATIENT_ID,
                       study_uid=STUDY, study_date="20240131", series_uid="1.2.3.4.5.6.7",
                       series_description=f"{PATIENT} chest")


# -- the Qt-free store -------------------------------------------------------------------------------
def key(k=3, **kw) -> KeyImage:
    return KeyImage(series_uid="1.2.3", slice_index=k, slice_count=10, window=(40, 400), modality="CT", **kw)


def test_store_mark_list_remove_persist_restore(tmp_path):
    store = KeyImageStore(tmp_path)
    a, b = key(3, view="axial", note="nodule"), key(7, position_mm=21.0)
    assert store.add(STUDY, a) and store.add(STUDY, b)
    assert not store.add(STUDY, key(3, view="axial")), "the same slice of the same view is marked once"
    assert store.add(STUDY, key(3, view="coronal")), "another plane's slice 3 is another image"
    assert [k.slice_index for k in store.images(STUDY)] == [3, 7, 3]
    assert store.remove(STUDY, store.images(STUDY)[2].uid) and not store.remove(STUDY, "nope")
    path = store.save(STUDY)
    assert path == tmp_path / f"{STUDY}.key-images.json" and not list(tmp_path.glob(".*partial*"))

    again = KeyImageStore(tmp_path).images(STUDY)  # a new session
    assert [k.to_json() for k in again] == [a.to_json(), b.to_json()]
    assert again[0].window == (40.0, 400.0) and again[0].note == "nodule"
    assert KeyImageStore(tmp_path).images("9.9.9") == []

    store.remove(STUDY, a.uid)
    store.remove(STUDY, b.uid)
    store.save(STUDY)
    assert not path.exists(), "a study left without key images loses its file"


def test_bad_file_is_named(tmp_path):
    path = study_file(tmp_path, STUDY)
    path.write_text("{not json")
    with pytest.raises(KeyImageError, match=str(path.name)):
        read_study(path)
    path.write_text('{"format": "something else", "images": []}')
    with pytest.raises(KeyImageError, match="not a lightbox-key-images file"):
        read_study(path)


def test_study_keys_and_file_names(tmp_path):
    assert study_key(STUDY, "/x/y.dcm") == STUDY
    folder_key = study_key("", tmp_path / "scan.nii.gz")
    assert folder_key == f"folder:{tmp_path.resolve()}"
    odd = study_file(tmp_path, folder_key)
    assert odd.parent == tmp_path and odd.name.startswith("study-") and "/" not in odd.name[:-5]
    assert study_file(tmp_path, "../../etc/passwd").parent == tmp_path


def test_caption_follows_the_deid_profile():
    assert caption_allows("modality") and caption_allows("laterality") and caption_allows("view_position")
    assert not caption_allows("series_description"), "the basic profile removes Series Description"
    text = caption(key(4, view="coronal", position_mm=12.0, laterality="", note=" left lower lobe "))
    assert text == "CT  ·  Coronal  ·  Im 5/10  ·  +12.0 mm  ·  W/L 400/40  ·  left lower lobe"
    mg = KeyImage(series_uid="1", slice_index=0, slice_count=1, view="LMLO", window=(2000.5, 3000),
                  modality="MG", laterality="L", view_position="MLO")
    assert caption(mg) == "MG  ·  LMLO  ·  Im 1/1  ·  W/L 3000/2000"


@pytest.mark.parametrize("name", ["../x.png", "..", "a/b.png", "/etc/x.png", "", "a\\..\\b.png", "x\x00.png"])
def test_names_cannot_leave_the_folder(tmp_path, name):
    with pytest.raises(ValueError):
        inside(tmp_path, name)


def test_png_names_carry_no_uids_or_paths(tmp_path):
    evil = KeyImage(series_uid="1.2.840.99", slice_index=11, slice_count=40, view="../../axial",
                    modality="C/T..\\", window=(0, 1))
    name = png_name(3, evil)
    assert name == "key-03-CT-axial-im012.png"
    assert inside(tmp_path, name) == (tmp_path / name).resolve()


# -- the panel --------------------------------------------------------------------------------------
@pytest.fixture
def panel_with_view(qtbot, tmp_path):
    view = SliceView()
    shown(qtbot, view, (420, 360))
    view.set_volume(phi_volume(), window=(40.0, 400.0))
    messages = []
    panel = KeyImagesPanel(lambda: view, lambda: [view], message=lambda t, lvl="info": messages.append((lvl, t)),
                           folder=tmp_path / "store")
    qtbot.addWidget(panel)
    yield view, panel, messages
    panel.shutdown()


def test_mark_list_jump_remove_restore(panel_with_view, tmp_path):
    view, panel, messages = panel_with_view
    view.set_slice(2)
    first = panel.mark()
    assert first is not None and first.slice_index == 2 and first.view == "native" and first.window == (40.0, 400.0)
    assert first.position_mm == pytest.approx(6.0) and first.sop_uid == ""  # a volume without files: no SOP
    assert panel.mark() is None, "marking the same slice twice keeps one"
    view.set_slice(7)
    view.set_window(-600, 1500)
    panel.mark_action.trigger()
    assert panel.list.count() == 2 and "Im 8/10" in panel.list.item(1).text()
    assert panel.mark_action.shortcut().toString() == "K"

    assert panel.jump(first.uid) and view.slice_index == 2 and view.window == (40.0, 400.0)
    panel.list.setCurrentRow(0)
    assert panel.remove_selected() and panel.list.count() == 1
    panel.flush()

    reopened = KeyImagesPanel(lambda: view, lambda: [view], folder=tmp_path / "store")
    try:
        assert [k.slice_index for k in reopened.keys()] == [7] and reopened.list.count() == 1
        assert reopened.keys()[0].window == (-600.0, 1500.0)
    finally:
        reopened.shutdown()
        reopened.deleteLater()


def test_key_image_keeps_the_sop_instance(qtbot, tmp_path):
    from viewer.core.io.dicom import load_series, plan_series
    from viewer.core.io.scan import scan
    from viewer.core.synthetic import write_ct_study

    write_ct_study(tmp_path / "ct", shape=(6, 32, 32), spacing=(2.5, 1.4, 1.4))
    series = next(s for s in scan(tmp_path / "ct").series if s.kind == "dicom")
    plan = plan_series(series)
    view = SliceView()
    shown(qtbot, view, (300, 300))
    view.set_volume(load_series(series))
    view.set_slice(4)
    k = key_from_view(view, plan)
    assert k.sop_uid == plan.slots[4].instance.sop_uid and k.sop_uid and k.frame is None
    assert k.series_uid == series.uid
    coronal = SliceView(plane="coronal")
    shown(qtbot, coronal, (300, 300))
    coronal.set_volume(view.volume)
    assert key_from_view(coronal, plan).sop_uid == "", "a reformat is no acquired image"


def test_export_burns_overlays_and_has_no_phi(panel_with_view, qtbot, tmp_path):
    view, panel, messages = panel_with_view
    vol = view.volume
    lab = np.zeros(vol.shape, np.uint8)
    lab[:, 20:40, 30:50] = 1
    view.add_layer("seg", LabelLayer(lab, colors={1: RED}, opacity=1.0))
    view.set_slice(5)
    marked = panel.mark()
    panel.set_note(marked.uid, "index lesion")
    assert PATIENT.split("^")[0] in view._tl.text(), "the corner text on screen does name the patient"

    out = tmp_path / "export"
    worker = panel.export_to(out)
    assert worker is not None
    qtbot.waitUntil(lambda: bool(panel.last_export), timeout=10000)
    [png] = panel.last_export
    assert png.parent == out.resolve() and png.name == "key-01-CT-native-im006.png"
    assert view.corner_text_visible and view.slice_index == 5, "the view is put back after rendering"

    img = Image.open(png)
    img.load()
    text = " ".join(f"{k}={v}" for k, v in img.info.items() if isinstance(v, str))
    assert "W/L 400/40" in text and "index lesion" in text
    raw = png.read_bytes()
    for phi in (PATIENT, "DOE", "JANE", PATIENT_ID, "20240131", "2024-01-31", STUDY):
        assert phi not in text and phi.encode() not in raw
    cap = caption(panel.keys()[0])
    for phi in ("DOE", "JANE", PATIENT_ID, "2024", "chest"):
        assert phi not in cap

    rgb = np.asarray(img.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 40) & (rgb[..., 2] < 40)
    assert red.sum() > 200, "the red label region is burned into the PNG"
    strip = rgb[-20:]
    assert (strip.max(axis=2) > 200).any(), "the caption strip carries text"

    # the corner text is not in the picture: a render without the label has no red, and the caption
    # strip is the only text. Compare with the view grabbed with its corner text on.
    with_text = np.asarray(Image.fromqimage(view.canvas.grab().toImage()).convert("RGB")).astype(int)
    shown_img = rgb[:with_text.shape[0]]
    tl = (slice(0, 40), slice(0, 120))
    assert (np.abs(with_text[tl] - shown_img[tl]).sum(axis=2) > 60).sum() > 20, "patient text was hidden"


def test_export_skips_series_not_shown(panel_with_view, tmp_path):
    view, panel, messages = panel_with_view
    panel.mark()
    view.set_volume(replace(phi_volume(), info=replace(phi_volume().info, series_uid="9.9")))
    panel.follow_active()
    assert panel.export_to(tmp_path / "out") is None
    assert any("skipped" in t for _lvl, t in messages)
    assert not list((tmp_path / "out").glob("*.png"))


def test_render_key_image_size(panel_with_view):
    view, panel, _ = panel_with_view
    k = panel.mark()
    image = render_key_image(view, k)
    assert image.width() == view.canvas.width() and image.height() > view.canvas.height()
    assert image.text("Description") == caption(k)


def test_write_study_is_atomic(tmp_path, monkeypatch):
    path = study_file(tmp_path, STUDY)
    write_study(path, STUDY, [key(1)])
    import json as _json

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_json, "dumps", boom)
    with pytest.raises(RuntimeError):
        write_study(path, STUDY, [key(1), key(2)])
    assert [k.slice_index for k in read_study(path)] == [1], "the previous list survives a failed write"
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]


# -- DICOM Key Object Selection --------------------------------------------------------------------
def test_key_object_document_is_valid_and_references_the_slices(tmp_path):
    import shutil
    import subprocess

    import pydicom

    from viewer.core.export.key_object import KeyObjectError, write_key_object
    from viewer.core.io.dicom import plan_series
    from viewer.core.io.scan import scan
    from viewer.core.synthetic import write_ct_study

    write_ct_study(tmp_path / "ct", shape=(6, 32, 32), spacing=(2.5, 1.4, 1.4))
    series = next(s for s in scan(tmp_path / "ct").series if s.kind == "dicom")
    plan = plan_series(series)
    files = {i.sop_uid: i.path for i in series.instances}
    keys = [KeyImage(series_uid=series.uid, slice_index=k, slice_count=6, sop_uid=plan.slots[k].instance.sop_uid,
                     window=(40, 400), note="lesion" if k == 1 else "") for k in (1, 4)]
    reformat = KeyImage(series_uid=series.uid, slice_index=10, slice_count=32, view="coronal", window=(40, 400))
    out = write_key_object([*keys, reformat], files, tmp_path / "ko" / "keys.dcm")

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and ds.Modality == "KO"
    assert ds.StudyInstanceUID == series.info.study_uid
    refs = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for item in ds.ContentSequence if item.ValueType == "IMAGE"]
    assert refs == [k.sop_uid for k in keys]
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert any(getattr(i, "TextValue", "") == "lesion" for i in ds.ContentSequence)

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; `bash scripts/system_deps.sh` installs it")
    proc = subprocess.run([tool, str(out)], capture_output=True, text=True, timeout=60)
    assert [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")] == []

    with pytest.raises(KeyObjectError, match="nothing to write"):
        write_key_object([reformat], files, tmp_path / "none.dcm")
    with pytest.raises(KeyObjectError, match="not open"):
        write_key_object(keys, {}, tmp_path / "none.dcm")
    assert not (tmp_path / "none.dcm").exists()


def test_panel_saves_kos_from_the_shown_series(qtbot, tmp_path):
    import pydicom

    from viewer.core.io.dicom import load_series, plan_series
    from viewer.core.io.scan import scan
    from viewer.core.synthetic import write_ct_study

    write_ct_study(tmp_path / "ct", shape=(6, 32, 32), spacing=(2.5, 1.4, 1.4))
    series = next(s for s in scan(tmp_path / "ct").series if s.kind == "dicom")
    plan = plan_series(series)
    view = SliceView()
    shown(qtbot, view, (300, 300))
    view.set_volume(load_series(series))
    messages = []
    panel = KeyImagesPanel(lambda: view, lambda: [view], message=lambda t, lvl="info": messages.append((lvl, t)),
                           plan_of=lambda v: plan, folder=tmp_path / "store")
    qtbot.addWidget(panel)
    try:
        assert panel.save_kos(tmp_path / "k.dcm") is None, "no key image yet"
        view.set_slice(2)
        panel.mark()
        done = []
        panel.save_kos(tmp_path / "k.dcm", on_done=done.append)
        qtbot.waitUntil(lambda: bool(done), timeout=20000)
        ds = pydicom.dcmread(done[0])
        (ref,) = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in ds.ContentSequence
                  if i.ValueType == "IMAGE"]
        assert ref == plan.slots[2].instance.sop_uid and ds.PatientName == series.info.patient_name
    finally:
        panel.runner.shutdown()
        panel.shutdown()


def test_write_pngs_stops_between_files_on_cancel(tmp_path):
    from PySide6.QtGui import QColor, QImage

    from viewer.core.errors import Cancelled
    from viewer.ui.key_images import write_pngs

    img = QImage(8, 8, QImage.Format.Format_RGB32)
    img.fill(QColor("red"))
    jobs = [(tmp_path / f"{i}.png", img) for i in range(3)]
    calls = []
    with pytest.raises(Cancelled):
        write_pngs(jobs, lambda d, t: calls.append(d), lambda: len(calls) >= 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png"], "one whole file, no partial ones"
    assert write_pngs(jobs, lambda d, t: None, lambda: False).value == [p for p, _ in jobs]


# -- in the real window -----------------------------------------------------------------------------
def test_in_the_main_window_k_marks_and_reopen_restores(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import Qt as _Qt
    from PySide6.QtTest import QTest
    from qt_helpers import close_quietly, editor_window, open_and_wait

    from viewer.core.synthetic import write_ct_study

    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    ct = tmp_path / "ct"
    write_ct_study(ct, shape=(12, 48, 48), spacing=(3.0, 1.5, 1.5), seed=2, file_order="shuffled")
    w = editor_window(qtbot)
    panel = w.key_images  # the window installs the panel (K, the dock, the File menu exports)
    try:
        open_and_wait(qtbot, w, ct)
        view = w.slice_view
        view.set_slice(3)
        view.setFocus()
        QTest.keyClick(view.canvas, _Qt.Key.Key_K)
        assert panel.dock.isVisible() and panel.list.count() == 1
        key = panel.keys()[0]
        store = w.measurement_store
        plan = store.plan_of(store.series_of(view))
        assert key.sop_uid == plan.slots[3].instance.sop_uid, "the right file on a shuffled series"
        study = view.volume.info.study_uid
        panel.flush()
    finally:
        panel.shutdown()
        close_quietly(w)
    assert (tmp_path / "cache" / "measurements" / f"{study}.key-images.json").exists()

    w2 = editor_window(qtbot)
    panel2 = w2.key_images
    try:
        open_and_wait(qtbot, w2, ct)
        assert [k.sop_uid for k in panel2.keys()] == [key.sop_uid] and panel2.list.count() == 1
        assert panel2.jump(key.uid) and w2.slice_view.slice_index == 3
    finally:
        panel2.shutdown()
        close_quietly(w2)


def test_mammo_cell_and_non_dicom_study(qtbot, tmp_path):
    view = SliceView()
    shown(qtbot, view, (300, 300))
    vol = ramp_volume(shape=(1, 40, 30), modality="MG", laterality="L", view_position="MLO", study_uid="1.2.9")
    view.set_volume(vol)
    k = key_from_view(view)
    assert (k.view, k.slice_count, k.position_mm) == ("LMLO", 1, None)
    assert caption(k).startswith("MG  ·  LMLO  ·  Im 1/1")

    nifti = ramp_volume(shape=(4, 20, 20), study_uid="", files=(str(tmp_path / "a" / "scan.nii.gz"),))
    view.set_volume(nifti)
    panel = KeyImagesPanel(lambda: view, lambda: [view], folder=tmp_path / "store")
    qtbot.addWidget(panel)
    try:
        assert panel.study == study_key("", tmp_path / "a" / "x") and panel.mark() is not None
        panel.flush()
        assert [p.name.startswith("study-") for p in (tmp_path / "store").iterdir()] == [True]
    finally:
        panel.shutdown()


def test_unreadable_file_is_reported_and_replaced_by_new_marks(qtbot, tmp_path):
    bad = study_file(tmp_path / "store", STUDY)
    bad.parent.mkdir(parents=True)
    bad.write_text("garbage")
    view = SliceView()
    shown(qtbot, view, (300, 300))
    view.set_volume(phi_volume())
    messages = []
    panel = KeyImagesPanel(lambda: view, lambda: [view], message=lambda t, lvl="info": messages.append((lvl, t)),
                           folder=tmp_path / "store")
    qtbot.addWidget(panel)
    try:
        assert panel.list.count() == 0 and any(bad.name in t and lvl == "warning" for lvl, t in messages)
        assert panel.mark() is not None
        panel.flush()
        assert [k.slice_index for k in read_study(bad)] == [view.slice_index]
    finally:
        panel.shutdown()
