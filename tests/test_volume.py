import numpy as np
import pytest

from viewer.core.geometry import orientation_code, plane_name, slice_normal
from viewer.core.volume import Volume

from conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume


@pytest.mark.parametrize("direction", [AXIAL, CORONAL, SAGITTAL, OBLIQUE])
def test_world_index_round_trip(direction):
    v = ramp_volume(direction=direction)
    idx = np.array([[0, 0, 0], [3.5, 10.25, 7], [11, 39, 47]])
    world = v.index_to_world(idx)
    assert np.allclose(v.world_to_index(world), idx)
    # One step along array axis a moves spacing[a] mm along direction[:, a].
    for a in range(3):
        step = np.zeros(3)
        step[a] = 1
        assert np.allclose(v.index_to_world(step) - v.index_to_world([0, 0, 0]), v.direction[:, a] * v.spacing[a])


def test_affine_matches_index_to_world():
    v = ramp_volume(direction=OBLIQUE)
    p = np.array([2.0, 5.0, 7.0])
    assert np.allclose((v.affine @ np.append(p, 1))[:3], v.index_to_world(p))


def test_itk_order_views():
    v = ramp_volume(spacing=(3.0, 0.5, 0.8))
    assert v.itk_spacing == (0.8, 0.5, 3.0)
    assert np.allclose(np.array(v.itk_direction).reshape(3, 3), np.eye(3))


def test_plane_names_and_codes():
    assert plane_name(AXIAL) == "axial" and orientation_code(AXIAL) == "LPS"
    assert plane_name(CORONAL) == "coronal" and orientation_code(CORONAL) == "LIP"
    assert plane_name(SAGITTAL) == "sagittal"
    assert plane_name(OBLIQUE) == "oblique"


def test_slice_normal_is_row_cross_column():
    assert np.allclose(slice_normal([1, 0, 0, 0, 1, 0]), [0, 0, 1])
    assert np.allclose(slice_normal([1, 0, 0, 0, 0, -1]), [0, 1, 0])
    with pytest.raises(ValueError):
        slice_normal([1, 0, 0, 1, 0, 0])


def test_volume_rejects_bad_input():
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    assert Volume(np.zeros((4, 5))).shape == (1, 4, 5)
