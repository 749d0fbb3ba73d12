"""A label map the user edited goes out (analyze outputs, Send results) as a SEG that says, per segment,
what is still the model's (AUTOMATIC), what was edited (SEMIAUTOMATIC) and what was drawn by hand (MANUAL)."""
import numpy as np
import pydicom

from viewer.analysis.outputs import write_seg
from viewer.analysis.results import Overlay, SeriesResult
from viewer.core.io import load_series, scan
from viewer.core.synthetic import write_ct_study


def test_edited_overlay_names_each_segment_by_how_it_was_made(tmp_path):
    write_ct_study(tmp_path / "src", shape=(6, 32, 32), seed=1)
    series = scan(tmp_path / "src").series[0]
    volume = load_series(series)
    model = np.zeros(volume.shape, np.uint8)
    model[1:3, 4:10, 4:10] = 1
    model[3:5, 20:26, 20:26] = 2
    edited = model.copy()
    edited[1, 4:6, 4:6] = 0  # the user trimmed the liver
    edited[5, 10:14, 10:14] = 3  # and drew a lesion the model never found
    sr = SeriesResult(series.key, series.uid, "CT", volume)
    classes = ["background", "liver", "spleen", "lesion"]
    ov = Overlay("organs", "labels", edited, "ct-organs-unet3d 1.0", classes, original=model)
    ds = pydicom.dcmread(write_seg(ov, sr, series, tmp_path / "edited.seg.dcm"))
    kinds = {d.SegmentLabel: (d.SegmentAlgorithmType, getattr(d, "SegmentAlgorithmName", "")) for d in ds.SegmentSequence}
    assert kinds["liver"][0] == "SEMIAUTOMATIC" and "ct-organs-unet3d" in kinds["liver"][1]
    assert kinds["spleen"] == ("AUTOMATIC", "ct-organs-unet3d")
    assert kinds["lesion"][0] == "MANUAL"
    assert "(edited)" in ds.SeriesDescription
    plain = pydicom.dcmread(write_seg(Overlay("organs", "labels", model, "ct-organs-unet3d 1.0", classes[:3]), sr,
                                      series, tmp_path / "model.seg.dcm"))
    assert {d.SegmentAlgorithmType for d in plain.SegmentSequence} == {"AUTOMATIC"}
