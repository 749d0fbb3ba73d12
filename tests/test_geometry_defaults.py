"""Geometry and defaults on real-world series (issue 11 item 6): gantry tilt resampled to a
regular grid with true positions, sparse series opening on an image, orientation letters on
single images, localizer parts named by plane, absurd radiograph windows replaced."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import AXIAL, CORONAL, SAGITTAL, ramp_volume
from viewer.core.io import load_series, plan_series, scan
from viewer.core.io.dicom_write import write_series
from viewer.core.volume import SourceInfo, Volume
from viewer.core.windowing import default_window

CT12 = dict(intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
TILT = np.radians(15.0)
STEP, PIX = 3.0, 0.5  # mm between slices, mm per pixel


def only(folder):
    result = scan(folder)
    assert len(result.series) == 1, [s.label() for s in result.series]
    return result.series[0]


# -- gantry tilt ------------------------------------------------------------------------------
def _blobs():
    """(slice, row, col) of bright single pixels in a 6 x 40 x 40 stack of -1000 HU."""
    return [(0, 6, 8), (5, 22, 30), (3, 12, 17)]


def _write_tilted(root, kind: str):
    """A tilted head-CT-like stack, one file per slice; returns the true LPS of each blob.

    'sheared': axial IOP, positions step along Y as Z grows (as most scanners write a tilt).
    'tilted_iop': the image plane itself tilted about L, positions straight along Z.
    """
    n, rows, cols = 6, 40, 40
    arr = np.full((n, rows, cols), -1000, np.int16)
    for k, i, j in _blobs():
        arr[k, i, j] = 1000
    row_cos = np.array([1.0, 0.0, 0.0])
    if kind == "sheared":
        col_cos = np.array([0.0, 1.0, 0.0])
        positions = [np.array([0.0, k * STEP * np.tan(TILT), k * STEP]) for k in range(n)]
    else:
        col_cos = np.array([0.0, np.cos(TILT), -np.sin(TILT)])
        positions = [np.array([0.0, 0.0, k * STEP / np.cos(TILT)]) for k in range(n)]
    normal = np.cross(row_cos, col_cos)
    direction = np.column_stack([normal, col_cos, row_cos])
    info = SourceInfo(modality="CT", series_uid=generate_uid(), study_uid=generate_uid(),
                      frame_of_reference_uid=generate_uid(), patient_id="TILT", patient_name="TILT")
    for k in range(n):
        one = Volume(arr[k:k + 1], (STEP, PIX, PIX), positions[k], direction, info)
        for f in write_series(one, root / f"s{k:03d}", **CT12):  # a UID of its own per slice, as scanners write
            ds = pydicom.dcmread(f)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(f)])
            ds.save_as(f)
    truth = [positions[k] + j * PIX * row_cos + i * PIX * col_cos for k, i, j in _blobs()]
    return truth, arr


def _centroid(vol, k):
    """Intensity-weighted (z, y, x) centroid of the bright pixel on axis-0 slice k."""
    w = np.clip(vol.array[k].astype(float) + 1000, 0, None)
    ii, jj = np.indices(w.shape)
    return np.array([k, (w * ii).sum() / w.sum(), (w * jj).sum() / w.sum()])


@pytest.mark.parametrize("kind", ["sheared", "tilted_iop"])
def test_gantry_tilt_resampled_with_true_positions(tmp_path, kind):
    truth, arr = _write_tilted(tmp_path, kind)
    vol = load_series(only(tmp_path))
    assert any("gantry tilt 15.0 degrees: resampled to a regular grid" in p for p in vol.problems), vol.problems
    # a point at a known patient position is at the right voxel of the resampled volume
    for (k, _, _), world in zip(_blobs(), truth):
        idx = vol.world_to_index(world)
        assert abs(idx[0] - k) < 1e-3
        found = _centroid(vol, k)
        assert np.abs(found - idx).max() <= 0.5, (kind, k, found, idx)
        near = tuple(int(v) for v in np.rint(idx))
        assert vol.array[near] == vol.array[k].max()
    # distances measured between two known points stay true within half a voxel
    for a in range(len(truth)):
        for b in range(a + 1, len(truth)):
            measured = np.linalg.norm(vol.index_to_world(_centroid(vol, _blobs()[b][0]))
                                      - vol.index_to_world(_centroid(vol, _blobs()[a][0])))
            true = np.linalg.norm(truth[b] - truth[a])
            assert abs(measured - true) <= 0.5 * PIX, (a, b, measured, true)
    # nothing of the image is cut off (the grid grows): each slice keeps its intensity above the background
    for k in range(arr.shape[0]):
        above = np.clip(vol.array[k].astype(float) + 1000, 0, None).sum()
        assert np.isclose(above, 2000 * sum(b[0] == k for b in _blobs()), rtol=1e-2), (k, above)
    # the resampled volume is a regular grid the MPR views can slice
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-9)
    # the plan (what `lightbox info` shows) gives the same grid as the loaded volume
    plan = plan_series(only(tmp_path))
    assert tuple(plan.shape) == vol.shape and np.allclose(plan.origin, vol.origin)


def test_small_position_noise_is_not_a_tilt(tmp_path):
    truth = ramp_volume(shape=(5, 16, 16))
    info = replace(truth.info, series_uid=generate_uid(), study_uid=generate_uid(),
                   frame_of_reference_uid=generate_uid())
    for k in range(5):
        pos = truth.origin + np.array([0.0, 0.001 * (k % 2), k * truth.spacing[0]])
        write_series(replace(truth, array=truth.array[k:k + 1], origin=pos, info=info), tmp_path / f"s{k}", **CT12)
    vol = load_series(only(tmp_path))
    assert vol.shape == truth.shape
    assert np.array_equal(vol.array, truth.array)
    assert not any("tilt" in p for p in vol.problems)


def test_shear_beyond_any_gantry_tilt_is_not_resampled(tmp_path):
    truth = ramp_volume(shape=(4, 16, 16))
    info = replace(truth.info, series_uid=generate_uid(), study_uid=generate_uid(),
                   frame_of_reference_uid=generate_uid())
    for k in range(4):
        pos = truth.origin + np.array([k * 30.0, 0.0, k * truth.spacing[0]])  # 85 degrees off the normal
        write_series(replace(truth, array=truth.array[k:k + 1], origin=pos, info=info), tmp_path / f"s{k}", **CT12)
    vol = load_series(only(tmp_path))
    assert vol.shape == truth.shape and np.array_equal(vol.array, truth.array)
    assert any("too far for a gantry tilt" in p for p in vol.problems), vol.problems


# -- sparse series ----------------------------------------------------------------------------
def _sparse(tmp_path, modality="CT"):
    truth = ramp_volume(shape=(10, 20, 24), modality=modality)
    paths = write_series(truth, tmp_path, **CT12)
    for k in (4, 5, 6):  # the middle slices are missing
        paths[k].unlink()
    return truth, load_series(only(tmp_path))


def test_sparse_series_knows_its_blank_slices_and_fills_air(tmp_path):
    truth, vol = _sparse(tmp_path)
    assert vol.blank_slices == (4, 5, 6)
    assert (vol.array[[4, 5, 6]] == -1024).all()


def test_sparse_series_with_one_close_pair_is_not_given_a_negative_gap(tmp_path):
    """Gaps 1.25, 98.75, 100 mm: the median step once made the short gap "-1 missing slices"
    and put the second image 98.75 mm from the first."""
    truth = ramp_volume(shape=(4, 16, 16))
    info = replace(truth.info, series_uid=generate_uid(), study_uid=generate_uid(),
                   frame_of_reference_uid=generate_uid())
    for k, z in enumerate([0.0, 1.25, 100.0, 200.0]):
        one = replace(truth, array=truth.array[k:k + 1], origin=(0.0, 0.0, z), info=info)
        write_series(one, tmp_path / f"s{k}", **CT12)
    vol = load_series(only(tmp_path))
    assert not any("-1 missing" in p for p in vol.problems), vol.problems
    assert any("non-uniform slice spacing" in p for p in vol.problems), vol.problems
    assert np.array_equal(vol.array, truth.array)


def test_sparse_series_opens_on_an_image_in_every_view(qtbot, tmp_path):
    from viewer.ui.mpr_layout import MprLayout
    from viewer.ui.slice_view import SliceView

    truth, vol = _sparse(tmp_path)
    view = SliceView()
    qtbot.addWidget(view)
    view.set_volume(vol)
    assert view.slice_index not in vol.blank_slices
    assert abs(view.slice_index - 5) == 2  # the nearest image to the middle
    assert np.array_equal(vol.array[view.slice_index], truth.array[view.slice_index])
    mpr = MprLayout()
    qtbot.addWidget(mpr)
    mpr.set_volume(vol)
    k = int(np.rint(vol.world_to_index(mpr.crosshair_world)[0]))
    assert k not in vol.blank_slices
    assert mpr.views["axial"].slice_index not in vol.blank_slices


# -- orientation letters on single images ----------------------------------------------------
@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_single_image_with_orientation_gets_letters(qtbot, name):
    from viewer.ui.slice_view import SliceView

    vol = load_series(only(get_testdata_file(name)))
    assert vol.shape[0] == 1 and vol.oriented
    view = SliceView()
    qtbot.addWidget(view)
    view.set_volume(vol)
    letters = {side: lab.text() for side, lab in view._edge.items()}
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}, letters


def test_localizer_parts_get_letters_of_their_plane(qtbot, tmp_path):
    from viewer.ui.slice_view import SliceView

    uid = generate_uid()
    for name, direction in (("cor", CORONAL), ("sag", SAGITTAL)):
        v = ramp_volume(shape=(1, 16, 16), direction=direction, series_uid=uid, study_uid="1.2.3",
                        frame_of_reference_uid="1.2.3.4")
        write_series(v, tmp_path / name, **CT12)
    view = SliceView()
    qtbot.addWidget(view)
    seen = {}
    for series in scan(tmp_path).series:
        view.set_volume(load_series(series))
        seen[series.part] = {side: lab.text() for side, lab in view._edge.items()}
    assert all(v["top"] and v["left"] for v in seen.values()), seen
    assert {seen["coronal"]["top"], seen["coronal"]["bottom"]} == {"S", "I"}
    assert {seen["sagittal"]["left"], seen["sagittal"]["right"]} == {"A", "P"}


def test_single_image_without_orientation_gets_no_letters(qtbot, tmp_path):
    from viewer.ui.slice_view import SliceView

    view = SliceView()
    qtbot.addWidget(view)
    view.set_volume(Volume(np.zeros((1, 8, 8), np.int16)))
    assert all(not lab.text() for lab in view._edge.values())


# -- localizer parts named by plane ----------------------------------------------------------
def test_localizer_parts_named_by_plane(tmp_path):
    uid = generate_uid()
    oblique = np.column_stack([[0.0, np.sin(0.6), np.cos(0.6)], [0.0, np.cos(0.6), -np.sin(0.6)], [1.0, 0, 0]])
    for name, direction in (("ax", AXIAL), ("cor", CORONAL), ("sag", SAGITTAL), ("obl", oblique)):
        v = ramp_volume(shape=(1, 16, 16), direction=direction, series_uid=uid, study_uid="1.2.3",
                        frame_of_reference_uid="1.2.3.4")
        write_series(v, tmp_path / name, **CT12)
    parts = sorted(s.part for s in scan(tmp_path).series)
    assert parts == ["axial", "coronal", "oblique", "sagittal"]
    assert any(s.label().endswith("[coronal]") for s in scan(tmp_path).series)


def test_two_parts_in_one_plane_are_numbered(tmp_path):
    uid = generate_uid()
    tilted = np.column_stack([[0.0, np.sin(0.1), np.cos(0.1)], [0.0, np.cos(0.1), -np.sin(0.1)], [1.0, 0, 0]])
    for name, direction in (("ax", AXIAL), ("ax2", tilted)):
        v = ramp_volume(shape=(1, 16, 16), direction=direction, series_uid=uid, study_uid="1.2.3",
                        frame_of_reference_uid="1.2.3.4")
        write_series(v, tmp_path / name, **CT12)
    assert sorted(s.part for s in scan(tmp_path).series) == ["axial 1/2", "axial 2/2"]


# -- radiograph windows ------------------------------------------------------------------------
def _radiograph(tmp_path, window, modality="CR"):
    rng = np.random.default_rng(1)
    img = np.zeros((1, 64, 80), np.int16)  # collimator background 0
    img[0, 8:56, 10:70] = rng.integers(800, 3200, (48, 60))  # 12-bit anatomy
    info = SourceInfo(modality=modality, series_uid=generate_uid(), study_uid=generate_uid(),
                      patient_id="CR", patient_name="CR", window=window)
    write_series(Volume(img, (1.0, 0.2, 0.2), info=info), tmp_path, stored_dtype=np.uint16, bits_stored=12)
    return load_series(only(tmp_path))


@pytest.mark.parametrize("window", [(30000.0, 15000.0), (-5000.0, 200.0), (2000.0, 400000.0)])
def test_absurd_radiograph_window_replaced_by_histogram(tmp_path, window):
    vol = _radiograph(tmp_path, window)
    c, w = default_window(vol)
    assert 800 <= c - w / 2 <= 900 and 3100 <= c + w / 2 <= 3200, (c, w)  # anatomy 800..3200, not the collimator 0
    assert any("header window" in p and "histogram" in p for p in vol.problems), vol.problems


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_sensible_radiograph_window_kept(tmp_path, modality):
    vol = _radiograph(tmp_path, (2000.0, 2600.0), modality)
    assert default_window(vol) == (2000.0, 2600.0)
    assert not any("header window" in p for p in vol.problems)


def test_checked_header_window_leaves_ct_windows_alone():
    from viewer.core.windowing import checked_header_window

    arr = np.linspace(-1000, 1000, 4096).reshape(1, 64, 64)
    assert checked_header_window((40.0, 400.0), arr) == ((40.0, 400.0), None)


@pytest.mark.parametrize("kind", ["sheared", "tilted_iop"])
def test_dicom_seg_of_a_tilted_series_is_written_on_the_resampled_grid_and_reads_back(tmp_path, kind):
    """The labels of a tilt-resampled volume lie on the regular grid, not on the source pixels: the
    SEG carries each frame's own position, references the sources, and reads back voxel for voxel."""
    import highdicom as hd

    from viewer.core.export.dicom_seg import Segment, write_dicom_seg
    from viewer.core.io.label_files import read_label_file

    _write_tilted(tmp_path / "src", kind)
    series = only(tmp_path / "src")
    vol = load_series(series)
    labels = np.zeros(vol.shape, np.uint8)
    for k in range(vol.shape[0]):
        labels[k][vol.array[k] > 0] = 1  # the blob wherever the resampling put it
    labels[2, 5:9, 5:9] = 2
    path = write_dicom_seg(labels, vol, series, [Segment(1, "blob"), Segment(2, "box")], tmp_path / "tilt.seg.dcm")
    seg = hd.seg.segread(path)
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {series.uid}
    back = read_label_file(path, vol, series)
    np.testing.assert_array_equal(back.array, labels)
