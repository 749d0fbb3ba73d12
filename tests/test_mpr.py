"""MPR geometry: every view of every acquisition obeys the radiology display conventions."""
import numpy as np
import pytest

from viewer.core.geometry import axis_letter
from viewer.core.mpr import (PLANES, extract_slice, pixel_to_world, plane_geometry, slice_for_world,
                             world_to_pixel)
from tests.conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume

DIRECTIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL, "oblique": OBLIQUE}

# plane -> (LPS component and sign of moving right, of moving down); L=0, P=1, S=2.
CONVENTION = {
    "axial": ((0, +1), (1, +1)),  # right -> L, down -> P
    "coronal": ((0, +1), (2, -1)),  # right -> L, down -> I
    "sagittal": ((1, +1), (2, -1)),  # right -> P, down -> I
}
LETTERS = {
    "axial": dict(left="R", right="L", top="A", bottom="P"),
    "coronal": dict(left="R", right="L", top="S", bottom="I"),
    "sagittal": dict(left="A", right="P", top="S", bottom="I"),
}


@pytest.fixture(params=list(DIRECTIONS), ids=list(DIRECTIONS))
def vol(request):
    return ramp_volume(direction=DIRECTIONS[request.param])


def screen_vectors(v, g, k):
    r, c = g.n_rows // 2, g.n_cols // 2
    right = pixel_to_world(v, g, k, r, g.n_cols - 1) - pixel_to_world(v, g, k, r, 0)
    down = pixel_to_world(v, g, k, g.n_rows - 1, c) - pixel_to_world(v, g, k, 0, c)
    return right, down


@pytest.mark.parametrize("plane", PLANES)
def test_screen_edges_follow_convention(vol, plane):
    g = plane_geometry(vol, plane)
    right, down = screen_vectors(vol, g, g.n_slices // 2)
    (rc, rs), (dc, ds) = CONVENTION[plane]
    assert np.sign(right[rc]) == rs and np.sign(down[dc]) == ds
    # the slice axis is the one closest to the plane normal, not shown on screen
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    assert {g.axis, g.row_axis, g.col_axis} == {0, 1, 2}
    assert abs(vol.direction[normal, g.axis]) == pytest.approx(np.abs(vol.direction[normal]).max())
    assert g.edge_letters == LETTERS[plane]
    assert g.edge_letters["right"] == axis_letter(right)
    assert g.edge_letters["bottom"] == axis_letter(down)
    assert extract_slice(vol, g, 0).shape == (g.n_rows, g.n_cols)


def test_standard_axial_volume_layout():
    v = ramp_volume()
    ax, co, sa = (plane_geometry(v, p) for p in PLANES)
    assert (ax.axis, ax.row_axis, ax.col_axis, ax.flip_rows, ax.flip_cols) == (0, 1, 2, False, False)
    assert (co.axis, co.row_axis, co.col_axis, co.flip_rows, co.flip_cols) == (1, 0, 2, True, False)
    assert (sa.axis, sa.row_axis, sa.col_axis, sa.flip_rows, sa.flip_cols) == (2, 0, 1, True, False)
    assert np.array_equal(extract_slice(v, ax, 3), v.array[3])
    assert np.array_equal(extract_slice(v, co, 5), v.array[::-1, 5, :])


@pytest.mark.parametrize("plane", PLANES)
def test_pixels_sample_the_voxel_they_claim(vol, plane):
    g = plane_geometry(vol, plane)
    rng = np.random.default_rng(1)
    for _ in range(25):
        k, r, c = rng.integers(0, g.n_slices), rng.integers(0, g.n_rows), rng.integers(0, g.n_cols)
        img = extract_slice(vol, g, k)
        w = pixel_to_world(vol, g, k, r, c)
        idx = np.rint(vol.world_to_index(w)).astype(int)
        assert img[r, c] == vol.array[tuple(idx)]
        assert world_to_pixel(vol, g, w) == pytest.approx((k, r, c), abs=1e-6)
        assert slice_for_world(vol, g, w) == k


@pytest.mark.parametrize("plane", PLANES)
def test_round_trip_with_fractional_pixels(vol, plane):
    g = plane_geometry(vol, plane)
    k, r, c = g.n_slices - 1, 3.25, 7.6
    w = pixel_to_world(vol, g, k, r, c)
    assert world_to_pixel(vol, g, w) == pytest.approx((k, r, c), abs=1e-9)
    assert np.allclose(pixel_to_world(vol, g, *world_to_pixel(vol, g, w)), w)


def test_slice_for_world_rounds_and_clamps():
    v = ramp_volume()
    g = plane_geometry(v, "axial")
    z = lambda k: v.index_to_world([k, 0, 0])  # noqa: E731
    assert slice_for_world(v, g, z(4.4)) == 4
    assert slice_for_world(v, g, z(4.6)) == 5
    assert slice_for_world(v, g, z(-3)) == 0
    assert slice_for_world(v, g, z(g.n_slices + 5)) == g.n_slices - 1


def test_crosshair_links_axial_pick_into_other_views(vol):
    ax = plane_geometry(vol, "axial")
    pick = pixel_to_world(vol, ax, ax.n_slices // 3, ax.n_rows * 0.43, ax.n_cols * 0.71)
    for plane in ("coronal", "sagittal"):
        g = plane_geometry(vol, plane)
        k, r, c = world_to_pixel(vol, g, pick)
        assert 0 <= r <= g.n_rows - 1 and 0 <= c <= g.n_cols - 1
        shown = pixel_to_world(vol, g, k, round(r), round(c))  # the voxel centre the crosshair sits on
        assert np.all(np.abs(vol.world_to_index(shown) - vol.world_to_index(pick)) <= 0.5 + 1e-9)
        # the crosshair itself differs from the pick only across the slice, by under half a voxel
        offset = vol.world_to_index(pixel_to_world(vol, g, k, r, c)) - vol.world_to_index(pick)
        assert abs(offset[g.axis]) <= 0.5 + 1e-9
        assert np.allclose(np.delete(offset, g.axis), 0)


def test_pixel_size_follows_shown_axes_anisotropic():
    v = ramp_volume(spacing=(3.0, 0.5, 0.8))
    assert plane_geometry(v, "axial").pixel_size == (0.5, 0.8)
    assert plane_geometry(v, "coronal").pixel_size == (3.0, 0.8)
    assert plane_geometry(v, "sagittal").pixel_size == (3.0, 0.5)
    s = ramp_volume(spacing=(3.0, 0.5, 0.8), direction=SAGITTAL)  # axes: R, I, P
    assert plane_geometry(s, "axial").pixel_size == (0.8, 3.0)
    assert plane_geometry(s, "sagittal").pixel_size == (0.5, 0.8)


@pytest.mark.parametrize("plane", PLANES)
def test_label_map_slices_align_and_are_views(vol, plane):
    g = plane_geometry(vol, plane)
    labels = (vol.array % 7).astype(np.uint8)
    k = g.n_slices // 2
    lab = extract_slice(labels, g, k)
    assert lab.dtype == np.uint8 and np.shares_memory(lab, labels)
    assert np.array_equal(lab, extract_slice(vol, g, k) % 7)
    assert np.array_equal(extract_slice(vol.with_array(labels), g, k), lab)


def test_bad_arguments():
    v = ramp_volume()
    with pytest.raises(ValueError):
        plane_geometry(v, "oblique")
    with pytest.raises(IndexError):
        extract_slice(v, plane_geometry(v, "axial"), v.shape[0])


def test_native_geometry_is_the_stored_stack():
    from viewer.core.mpr import native_geometry

    vol = ramp_volume(shape=(5, 6, 7), spacing=(3.0, 0.5, 0.8), direction=CORONAL)
    g = native_geometry(vol)
    assert (g.axis, g.row_axis, g.col_axis, g.flip_rows, g.flip_cols) == (0, 1, 2, False, False)
    assert g.pixel_size == (0.5, 0.8) and (g.n_slices, g.n_rows, g.n_cols) == (5, 6, 7)
    assert g.edge_letters == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert np.array_equal(extract_slice(vol, g, 2), vol.array[2])
