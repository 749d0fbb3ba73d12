"""Label maps / heatmaps exported as NIfTI and DICOM SEG land on the source image's voxels.

Every check compares against facts taken independently of the exporter: the
source files' own ImagePositionPatient read with pydicom, SimpleITK's view of
the volume, nibabel's affine. Series are written with shuffled file names and
reversed or oblique stacks so that any reliance on storage order shows.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from tests.conftest import AXIAL, OBLIQUE, ramp_volume
from viewer.core import synthetic
from viewer.core.export import (
    GridMismatch,
    MissingSliceWarning,
    Segment,
    read_dicom_seg,
    read_label_map,
    write_dicom_seg,
    write_heatmap,
    write_label_map,
)
from viewer.core.export.dicom_seg import property_codes
from viewer.core.io import load_series, plan_series, scan
from viewer.core.io.dicom_write import write_enhanced, write_series
from viewer.core.io.itk import to_sitk

REVERSED = AXIAL * np.array([-1.0, 1.0, 1.0])  # slice axis opposite the row x column normal
SEGMENTS = [
    Segment(1, "Liver", (220, 120, 40)),
    Segment(2, "mass", (0, 200, 0), "MANUAL"),
    Segment(3, "calcification", (30, 60, 250), "SEMIAUTOMATIC", "brush", "2.1"),
]


def load(folder):
    series = [s for s in scan(Path(folder)).series if s.kind == "dicom"]
    assert len(series) == 1, [s.label() for s in series]
    return series[0], load_series(series[0])


def some_labels(shape, seed=0) -> np.ndarray:
    """Blobs of labels 1..3 on different slices, plus one slice where two labels touch."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    nz, ny, nx = shape
    for value in (1, 2, 3):
        for _ in range(3):
            z = int(rng.integers(0, nz))
            y, x = int(rng.integers(0, ny - 3)), int(rng.integers(0, nx - 3))
            labels[z, y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] = value
    labels[nz // 2, :2, :2] = 1
    labels[nz // 2, :2, 2:4] = 2
    return labels


def source_positions(folder) -> dict[str, object]:
    """SOP Instance UID -> the source file's header, straight from pydicom."""
    out = {}
    for p in Path(folder).rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def frame_facts(seg):
    """Per SEG frame: (referenced SOP UID, referenced frame number, segment number, IPP or None)."""
    facts = []
    for fg in seg.PerFrameFunctionalGroupsSequence:
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frame_no = int(src.ReferencedFrameNumber) if "ReferencedFrameNumber" in src else None
        ipp = None
        if "PlanePositionSequence" in fg:
            ipp = np.array([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        facts.append((str(src.ReferencedSOPInstanceUID), frame_no, number, ipp))
    return facts


def z_at(volume, ipp) -> int:
    idx = volume.world_to_index(ipp)
    z = int(np.rint(idx[0]))
    assert np.allclose(idx, [z, 0, 0], atol=1e-3), idx
    return z


def check_frames(seg, volume, labels, source_ipp):
    """Each frame: its source's own IPP = its plane position = our slice z; pixels = labels[z] == number."""
    seen = set()
    for i, (uid, _, number, ipp) in enumerate(frame_facts(seg)):
        assert ipp is not None
        np.testing.assert_allclose(ipp, source_ipp(uid, i), atol=1e-4)
        z = z_at(volume, ipp)
        np.testing.assert_allclose(volume.index_to_world([z, 0, 0]), ipp, atol=1e-3)
        frame = seg.pixel_array[i]
        np.testing.assert_array_equal(frame, (labels[z] == number).astype(frame.dtype))
        seen.add((z, number))
    expected = {(z, n) for z in range(labels.shape[0]) for n in np.unique(labels[z]) if n}
    assert seen == expected


@pytest.mark.parametrize("direction,order", [(OBLIQUE, "shuffled"), (REVERSED, "shuffled"), (AXIAL, "index")],
                         ids=["oblique", "reversed", "axial"])
def test_seg_frames_reference_the_source_slice_at_their_z(tmp_path, direction, order):
    src = ramp_volume(shape=(7, 13, 11), direction=direction)  # 13x11: 1-bit frames start mid-byte
    write_series(src, tmp_path / "src", file_order=order, seed=3)
    series, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape)
    path = write_dicom_seg(labels, volume, series, SEGMENTS, tmp_path / "out" / "seg.dcm",
                           series_description="test seg", series_number=77, content_creator="Doe^Jane")

    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Liver", "mass", "calcification"]
    assert [s.SegmentAlgorithmType for s in seg.SegmentSequence] == ["AUTOMATIC", "MANUAL", "SEMIAUTOMATIC"]
    for item, want in zip(seg.SegmentSequence, SEGMENTS):
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(clip=True)
        assert np.abs(np.subtract(rgb, want.color)).max() <= 1
    liver = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (liver.CodeValue, liver.CodingSchemeDesignator) == ("10200004", "SCT")
    assert seg.SegmentSequence[2].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "2.1"

    headers = source_positions(tmp_path / "src")
    first = next(iter(headers.values()))
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert (seg.PatientID, str(seg.PatientName)) == (first.PatientID, str(first.PatientName))
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID and seg.SeriesNumber == 77
    assert seg.SeriesDescription == "test seg"
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(r.ReferencedSOPInstanceUID) for r in ref_series.ReferencedInstanceSequence} == set(headers)

    check_frames(seg, volume, labels,
                 lambda uid, i: [float(v) for v in headers[uid].ImagePositionPatient])

    back, segments = read_dicom_seg(path, volume, series)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    assert [(s.number, s.label, s.algorithm_type) for s in segments] == \
        [(s.number, s.label, s.algorithm_type) for s in SEGMENTS]
    assert segments[2].algorithm_name == "brush" and segments[2].type.value == "18115005"


def test_enhanced_multiframe_source_is_referenced_by_frame_number(tmp_path):
    src = ramp_volume(shape=(6, 12, 10), direction=OBLIQUE)
    order = [3, 0, 5, 1, 4, 2]  # storage order unrelated to position
    write_enhanced(src, tmp_path / "src" / "enhanced.dcm", frame_order=order)
    series, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape, seed=1)
    path = write_dicom_seg(labels, volume, series, SEGMENTS, tmp_path / "seg.dcm")

    seg = hd.seg.segread(path)
    source = pydicom.dcmread(tmp_path / "src" / "enhanced.dcm", stop_before_pixels=True)
    facts = frame_facts(seg)
    assert all(uid == source.SOPInstanceUID and number is not None for uid, number, _, _ in facts)

    def frame_ipp(uid, i):
        number = facts[i][1]
        per = source.PerFrameFunctionalGroupsSequence[number - 1]
        return [float(v) for v in per.PlanePositionSequence[0].ImagePositionPatient]

    check_frames(seg, volume, labels, frame_ipp)
    back, _ = read_dicom_seg(path, volume, series)
    np.testing.assert_array_equal(back, labels)


def test_missing_slice_labels_are_dropped_with_a_warning(tmp_path):
    src = ramp_volume(shape=(8, 12, 10))
    files = write_series(src, tmp_path / "src")
    files[4].unlink()  # a gap of one slice: kept as a blank slot
    series, volume = load(tmp_path / "src")
    plan = plan_series(series)
    gap = [k for k, f in enumerate(plan.slots) if f is None]
    assert len(gap) == 1 and volume.shape[0] == 8
    labels = some_labels(volume.shape, seed=2)
    labels[gap[0], 3:6, 3:6] = 2
    lost = np.count_nonzero(labels[gap[0]])

    with pytest.warns(MissingSliceWarning, match=rf"{lost} labelled voxel\(s\) on slice\(s\) \[{gap[0]}\]"):
        path = write_dicom_seg(labels, volume, series, SEGMENTS, tmp_path / "seg.dcm")
    back, _ = read_dicom_seg(path, volume, series)
    expected = labels.copy()
    expected[gap[0]] = 0
    np.testing.assert_array_equal(back, expected)

    labels[gap[0]] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingSliceWarning)
        write_dicom_seg(labels, volume, series, SEGMENTS, tmp_path / "seg2.dcm")


@pytest.mark.parametrize("bare", [False, True], ids=["mg", "mg-without-frame-of-reference-and-pixel-spacing"])
def test_projection_seg_round_trips_without_plane_positions(tmp_path, bare):
    exam = synthetic.write_mammo_exam(tmp_path / "mg", size=(70, 54), views=("LCC",))
    if bare:  # common in the wild: only ImagerPixelSpacing, no Frame of Reference
        ds = pydicom.dcmread(exam["LCC"].files[0])
        del ds.FrameOfReferenceUID, ds.PixelSpacing
        ds.save_as(exam["LCC"].files[0])
    series, volume = load(tmp_path / "mg")
    assert series.is_projection and volume.shape == (1, 70, 54)
    labels = (exam["LCC"].masks["mass"] > 0).astype(np.uint8) * 2
    labels[0, 5:9, 40:45] = 1
    labels[0, 60:63, 3:5] = 3
    path = write_dicom_seg(labels, volume, series, SEGMENTS, tmp_path / "out" / "mg-seg.dcm")

    seg = hd.seg.segread(path)
    source = pydicom.dcmread(exam["LCC"].files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.get("FrameOfReferenceUID") == source.get("FrameOfReferenceUID")
    facts = frame_facts(seg)
    assert sorted(n for _, _, n, _ in facts) == [1, 2, 3]
    for i, (uid, frame_no, number, ipp) in enumerate(facts):
        assert uid == source.SOPInstanceUID and frame_no is None and ipp is None
        np.testing.assert_array_equal(seg.pixel_array[i], (labels[0] == number).astype(np.uint8))
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" not in shared
    if bare:
        assert "PixelMeasuresSequence" not in shared
    else:
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
        np.testing.assert_allclose([float(v) for v in spacing], volume.spacing[1:], rtol=1e-5)

    back, segments = read_dicom_seg(path, volume, series)
    np.testing.assert_array_equal(back, labels)
    assert [s.label for s in segments] == ["Liver", "mass", "calcification"]

    nii = write_label_map(labels, volume, tmp_path / "mg-labels.nii.gz")
    np.testing.assert_array_equal(read_label_map(nii, volume), labels)


def test_seg_from_another_tool_loads_by_reference_not_order(tmp_path):
    """Another writer lists the sources in file-name order; one more drops frame references."""
    src = ramp_volume(shape=(6, 12, 10), direction=REVERSED)
    write_series(src, tmp_path / "src", file_order="shuffled", seed=5)
    series, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape, seed=4)
    plan = plan_series(series)
    z_of = {f.instance.path.name: k for k, f in enumerate(plan.slots)}
    names = sorted(z_of)
    assert [z_of[n] for n in names] != sorted(z_of.values())  # file names really are out of order
    sources = [pydicom.dcmread(tmp_path / "src" / n) for n in names]
    descriptions = [hd.seg.SegmentDescription(
        s.number, s.label, *property_codes(s.label), "MANUAL") for s in SEGMENTS]
    foreign = hd.seg.Segmentation(
        sources, labels[[z_of[n] for n in names]], "BINARY", descriptions, hd.UID(), 9, hd.UID(), 1,
        "Other", "OtherTool", "1", "1")
    foreign.save_as(tmp_path / "foreign.dcm")
    back, _ = read_dicom_seg(tmp_path / "foreign.dcm", volume, series)
    np.testing.assert_array_equal(back, labels)

    positions = [fg.PlanePositionSequence for fg in foreign.PerFrameFunctionalGroupsSequence]
    for fg in foreign.PerFrameFunctionalGroupsSequence:  # references alone must do
        del fg.PlanePositionSequence
    foreign.save_as(tmp_path / "references-only.dcm")
    back, _ = read_dicom_seg(tmp_path / "references-only.dcm", volume, series)
    np.testing.assert_array_equal(back, labels)

    for fg, pos in zip(foreign.PerFrameFunctionalGroupsSequence, positions):
        fg.PlanePositionSequence = pos
    for fg in foreign.PerFrameFunctionalGroupsSequence:  # no references: plane positions must do
        del fg.DerivationImageSequence
    foreign.save_as(tmp_path / "positions-only.dcm")
    back, _ = read_dicom_seg(tmp_path / "positions-only.dcm", volume, series)
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("kind", ["LABELMAP", "FRACTIONAL"])
def test_labelmap_and_fractional_segs_read_as_labels(tmp_path, kind):
    src = ramp_volume(shape=(5, 12, 10), direction=OBLIQUE)
    write_series(src, tmp_path / "src", file_order="shuffled", seed=7)
    series, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape, seed=6)
    labels[labels == 2] = 0  # a described segment with no voxels
    descriptions = [hd.seg.SegmentDescription(
        s.number, s.label, *property_codes(s.label), "MANUAL") for s in SEGMENTS]
    sources = [pydicom.dcmread(f.instance.path) for f in plan_series(series).slots]
    seg = hd.seg.Segmentation(sources, labels, kind, descriptions, hd.UID(), 9, hd.UID(), 1,
                              "Other", "OtherTool", "1", "1")
    seg.save_as(tmp_path / "seg.dcm")
    back, segments = read_dicom_seg(tmp_path / "seg.dcm", volume, series)
    np.testing.assert_array_equal(back, labels)
    assert [s.number for s in segments] == [1, 2, 3]


def test_seg_of_other_images_is_refused(tmp_path):
    for name, origin in (("a", (0.0, 0.0, 0.0)), ("b", (0.0, 0.0, 500.0))):
        write_series(ramp_volume(shape=(4, 10, 8), origin=origin), tmp_path / name)
    series_a, volume_a = load(tmp_path / "a")
    series_b, volume_b = load(tmp_path / "b")
    labels = some_labels(volume_a.shape)
    path = write_dicom_seg(labels, volume_a, series_a, SEGMENTS, tmp_path / "seg.dcm")
    with pytest.raises(ValueError, match="none of its frames refers to an image of series"):
        read_dicom_seg(path, volume_b, series_b)


def test_nifti_label_map_and_heatmap_keep_the_volume_geometry(tmp_path):
    src = ramp_volume(shape=(5, 12, 9), spacing=(3.0, 0.8, 0.6), direction=OBLIQUE)
    write_series(src, tmp_path / "src", file_order="shuffled")
    _, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape).astype(np.int64) * 100  # 300: needs uint16
    prob = np.random.default_rng(0).random(volume.shape).astype(np.float32)
    lpath = write_label_map(labels, volume, tmp_path / "out" / "labels.nii.gz")
    hpath = write_heatmap(prob, volume, tmp_path / "out" / "heat.nii.gz")
    ref = to_sitk(volume)
    for path, want, dtype in ((lpath, labels, np.uint16), (hpath, prob, np.float32)):
        image = sitk.ReadImage(str(path))
        np.testing.assert_allclose(image.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), ref.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), ref.GetDirection(), atol=1e-5)
        array = sitk.GetArrayFromImage(image)
        assert array.dtype == dtype
        np.testing.assert_array_equal(array, want)
        # nibabel's RAS affine on (i, j, k) = (x, y, z) indices is our LPS geometry with L, P flipped
        affine = nib.load(path).affine
        corner = np.array([2, 3, 4])  # (z, y, x)
        ras = affine @ np.array([*corner[::-1], 1.0])
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], volume.index_to_world(corner), atol=1e-3)
        assert volume.info.series_uid in str(nib.load(path).header["descrip"].astype(str))
    back = read_label_map(lpath, volume)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_nifti_refuses_other_shapes_and_grids(tmp_path):
    volume = ramp_volume(shape=(4, 10, 8))
    with pytest.raises(ValueError, match=r"shape \(4, 8, 10\).*\(4, 10, 8\)"):
        write_label_map(np.zeros((4, 8, 10), np.uint8), volume, tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="integers"):
        write_label_map(np.zeros(volume.shape, np.float32), volume, tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match=".nii"):
        write_heatmap(np.zeros(volume.shape), volume, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())

    path = write_label_map(np.ones(volume.shape, np.uint8), volume, tmp_path / "ok.nii.gz")
    shifted = volume.with_array(volume.array)
    shifted.origin = volume.origin + [0.0, 2.5, 0.0]
    with pytest.raises(GridMismatch, match="origin"):
        read_label_map(path, shifted)
    other = ramp_volume(shape=(4, 10, 9))
    with pytest.raises(GridMismatch, match=r"size"):
        read_label_map(path, other)
    write_heatmap(np.full(volume.shape, 0.5, np.float32), volume, tmp_path / "p.nii.gz")
    with pytest.raises(ValueError, match="non-integer"):
        read_label_map(tmp_path / "p.nii.gz", volume)


def test_failed_seg_write_leaves_no_file(tmp_path, monkeypatch):
    src = ramp_volume(shape=(4, 10, 8))
    write_series(src, tmp_path / "src")
    series, volume = load(tmp_path / "src")
    labels = some_labels(volume.shape)
    out = tmp_path / "out"
    out.mkdir()
    bad = [Segment(1, "a"), Segment(2, "b", algorithm_type="ROBOT"), Segment(3, "c")]
    with pytest.raises(ValueError, match="segment 2 'b'.*ROBOT"):  # highdicom refuses the algorithm type
        write_dicom_seg(labels, volume, series, bad, out / "seg.dcm")
    bad = [Segment(1, "a"), Segment(2, "b", color=(300, 0, 0)), Segment(3, "c")]
    with pytest.raises(ValueError, match="segment 2 'b'"):
        write_dicom_seg(labels, volume, series, bad, out / "seg.dcm")
    with pytest.raises(ValueError, match=r"label values \[3\]"):
        write_dicom_seg(labels, volume, series, SEGMENTS[:2], out / "seg.dcm")
    with pytest.raises(ValueError, match="1..N"):
        write_dicom_seg(np.minimum(labels, 1), volume, series, [Segment(2, "x")], out / "seg.dcm")

    def broken_init(self, *args, **kwargs):
        raise ValueError("Source images must have a shared orientation.")

    with monkeypatch.context() as patch:
        patch.setattr(hd.seg.Segmentation, "__init__", broken_init)
        with pytest.raises(ValueError, match="cannot build a DICOM SEG .*shared orientation"):
            write_dicom_seg(labels, volume, series, SEGMENTS, out / "seg.dcm")

    def broken_save(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(labels, volume, series, SEGMENTS, out / "seg.dcm")
    assert list(out.iterdir()) == []


def test_property_codes_name_common_structures():
    assert property_codes("Liver")[1].value == "10200004"
    assert property_codes("lungs")[1].value == "39607008"
    assert property_codes("left_kidney")[1].value == "64033007"
    assert property_codes("Mass")[0].value == "49755003"
    assert property_codes("calcifications")[1].value == "18115005"
    assert property_codes("suspicious lesion 2") == property_codes("lesion")
    assert property_codes("lesions")[1].value == "52988006"
    assert property_codes("whatever")[1].value == "85756007"
    explicit = Segment(1, "x", category=property_codes("mass")[0], type=property_codes("cyst")[1])
    assert explicit.codes()[1].meaning == "Cyst"


def test_compact_segments_renumbers_values_in_use():
    from viewer.core.export.dicom_seg import Segment, compact_segments

    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, 0, 0], labels[1, 2, 2] = 3, 7
    segs = [Segment(1, "lungs"), Segment(3, "liver"), Segment(7, "lesions")]
    out, renumbered = compact_segments(labels, segs)
    assert [(s.number, s.label) for s in renumbered] == [(1, "liver"), (2, "lesions")]
    assert out[0, 0, 0] == 1 and out[1, 2, 2] == 2 and out.sum() == 3
    with pytest.raises(ValueError, match="no Segment"):
        compact_segments(labels, segs[:2])


def test_segment_algorithm_type_says_how_each_label_was_made(tmp_path):
    """Untouched model output: AUTOMATIC with the model as algorithm; edited: SEMIAUTOMATIC; a label
    the model never made: MANUAL (no algorithm). Read back from the written SEG with highdicom."""
    from viewer.core.export.dicom_seg import compact_segments, edited_segments

    src = ramp_volume(shape=(6, 12, 12))
    write_series(src, tmp_path / "src")
    series, volume = load(tmp_path / "src")
    model = np.zeros(volume.shape, np.uint8)
    model[1:3, 2:6, 2:6] = 1  # liver, kept as the model made it
    model[3:5, 6:9, 6:9] = 2  # lesion, to be corrected
    edited = model.copy()
    edited[4, 6:9, 6:9] = 0  # the user erased a slice of the lesion
    edited[5, 1:3, 1:3] = 3  # and drew a cyst
    names = {1: "liver", 2: "lesion", 3: "cyst"}
    colors = {v: (200, 10 * v, 0) for v in names}
    segs = edited_segments(edited, names, colors, model, "ct-organs-unet3d 1.1")
    assert [(s.label, s.algorithm_type) for s in segs] == [("liver", "AUTOMATIC"), ("lesion", "SEMIAUTOMATIC"),
                                                           ("cyst", "MANUAL")]
    assert [s.algorithm_type for s in edited_segments(edited, names, colors)] == ["MANUAL"] * 3  # no model map
    labels, segs = compact_segments(edited, segs)
    path = write_dicom_seg(labels, volume, series, segs, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    got = {seg.get_segment_description(n).SegmentLabel: seg.get_segment_description(n) for n in (1, 2, 3)}
    assert {k: d.SegmentAlgorithmType for k, d in got.items()} == {"liver": "AUTOMATIC", "lesion": "SEMIAUTOMATIC",
                                                                   "cyst": "MANUAL"}
    assert got["liver"].SegmentAlgorithmName == "ct-organs-unet3d"
    assert got["liver"].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "1.1"
    assert "SegmentationAlgorithmIdentificationSequence" not in got["cyst"]
