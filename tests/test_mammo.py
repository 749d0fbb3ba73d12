"""Mammography: views recognised from tags, 4-view assembly, flips for the hanging protocol."""
import random
from dataclasses import replace

import numpy as np
import pytest
from pydicom.uid import generate_uid

from viewer.core.io import load_series, scan
from viewer.core.io.dicom_write import write_projection
from viewer.core.mammo import FOUR_VIEWS, display_flips, four_view, is_mammo_study, view_name
from viewer.core.volume import SourceInfo

RAW_ORIENTATION = {"RCC": ("A", "L"), "LCC": ("A", "R"), "RMLO": ("A", "F"), "LMLO": ("A", "FR")}


def breast_image(chest_wall_left: bool, rows=96, cols=64) -> np.ndarray:
    """A bright half-disc attached to one edge: enough to tell where the chest wall is."""
    y, x = np.mgrid[:rows, :cols]
    dist = x if chest_wall_left else cols - 1 - x
    inside = (dist / (cols * 0.8)) ** 2 + ((y - rows / 2) / (rows * 0.45)) ** 2 < 1
    return np.where(inside, 2000, 30).astype(np.uint16)


def write_exam(folder, views=FOUR_VIEWS, tags=True, shuffle_seed=None):
    study = SourceInfo(patient_id="MG-1", patient_name="TEST^MAMMO", study_uid=generate_uid(), modality="MG",
                       study_description="MAMMO SCREENING")
    names = list(views)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(names)
    for number, name in enumerate(names, 1):
        info = replace(study, series_uid=generate_uid(), series_number=number, series_description=name,
                       laterality=name[0] if tags else "", view_position=name[1:] if tags else "",
                       patient_orientation=RAW_ORIENTATION[name])
        # File names unrelated to the view, so nothing but tags can identify it.
        write_projection(breast_image(True), folder / f"{generate_uid()[-12:]}.dcm", pixel_spacing=(0.1, 0.1),
                         info=info, bits_stored=12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_view_assembled_from_tags_in_any_file_order(tmp_path, seed):
    write_exam(tmp_path, shuffle_seed=seed)
    result = scan(tmp_path)
    assert len(result.studies) == 1 and is_mammo_study(result.studies[0])
    views = four_view(result.studies[0])
    assert all(views[v] is not None for v in FOUR_VIEWS)
    for name, series in views.items():
        assert series.info.series_description == name
        assert series.is_projection


def test_missing_view_is_none(tmp_path):
    write_exam(tmp_path, views=("RCC", "LCC", "RMLO"))
    views = four_view(scan(tmp_path).studies[0])
    assert views["LMLO"] is None and views["RMLO"] is not None


def test_flips_bring_chest_walls_together(tmp_path):
    """All raw images have the chest wall on the left: right views must be mirrored."""
    write_exam(tmp_path)
    views = four_view(scan(tmp_path).studies[0])
    for name, series in views.items():
        vol = load_series(series)
        flips = display_flips(vol.info, vol.array[0])
        assert flips.left_right == (name[0] == "R"), name
        assert not flips.up_down
        shown = flips.apply(vol.array[0])
        wall_left = shown[:, :4].mean() > shown[:, -4:].mean()
        assert wall_left == (name[0] == "L")  # R breast on the viewer's left: its chest wall is on the right


def test_flips_from_pixels_when_orientation_tag_missing(tmp_path):
    info = SourceInfo(modality="MG", laterality="R", view_position="CC")
    assert display_flips(info, breast_image(True)).left_right
    assert not display_flips(info, breast_image(False)).left_right
    assert display_flips(replace(info, laterality="L"), breast_image(False)).left_right


def test_view_names():
    assert view_name(SourceInfo(laterality="R", view_position="MLO")) == "RMLO"
    assert view_name(SourceInfo(laterality="L", view_position="XCCL")) == "LCC"
    assert view_name(SourceInfo(laterality="", view_position="CC")) is None
    assert view_name(SourceInfo(laterality="L", view_position="ML")) is None
    # Upside-down MLO (column toward the head) is flipped vertically.
    assert display_flips(SourceInfo(laterality="L", view_position="MLO", patient_orientation=("A", "H"))).up_down
