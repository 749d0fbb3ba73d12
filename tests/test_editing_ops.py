"""Segment-editor effects (viewer.core.editing): exact voxels on anisotropic, oblique and
flipped grids, checked against brute-force world-space computations."""
import numpy as np
import pytest

from tests.conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume
from viewer.core.editing import (
    Stroke,
    brush_footprint,
    disc_offsets,
    fill_between_slices,
    fill_polygon,
    flood_fill,
    footprint,
    keep_largest_island,
    paint,
    polygon_mask,
    remove_small_islands,
    scene_to_pixel,
    sphere_offsets,
    stroke,
)
from viewer.core.editing.brush import ball
from viewer.core.editing.morphology import closing, opening, smooth, structuring_element
from viewer.core.editing.plane import index_to_pixel, pixel_to_index
from viewer.core.labels import Label, LabelMap
from viewer.core.mpr import PLANES, extract_slice, native_geometry, pixel_to_world, plane_geometry
from viewer.core.undo import LabelLocked
from viewer.core.volume import Volume

DIRECTIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL, "oblique": OBLIQUE,
              "flipped": np.diag([-1.0, 1.0, -1.0]) @ AXIAL}  # slices run I->S... and rows R->L


def new_map(vol, *names):
    return LabelMap(vol, labels=[Label(i + 1, n) for i, n in enumerate(names or ("a", "b", "c"))])


def world_disc(vol, centre_zyx, radius, axis=None):
    """Brute force: voxels (on the slice through the centre when ``axis``) whose centre is within
    ``radius`` mm of the centre voxel's centre, in world coordinates."""
    idx = np.indices(vol.shape).reshape(3, -1).T
    d = np.linalg.norm(vol.index_to_world(idx) - vol.index_to_world(centre_zyx), axis=1)
    ok = d <= radius * (1 + 1e-9)
    if axis is not None:
        ok &= idx[:, axis] == centre_zyx[axis]
    return ok.reshape(vol.shape)


# -- footprints -------------------------------------------------------------------------
def test_disc_rule_on_anisotropic_pixels():
    fp = footprint(2.0, (0.5, 2.0))  # 9 rows x 3 cols box: rows +-4 on the centre column only
    expected = np.zeros((9, 3), bool)
    expected[:, 1] = True
    expected[4, :] = True
    np.testing.assert_array_equal(fp, expected)
    off = disc_offsets(2.0, (0.5, 2.0))
    assert len(off) == 11 and off[:, 0].min() == -4 and off[:, 0].max() == 4 and np.abs(off[:, 1]).max() == 1
    assert footprint(0.2, (1.0, 1.0)).tolist() == [[True]]  # below half a pixel: one pixel
    # r = 1.5 px square pixels: 3x3 without... the corners are at sqrt(2) < 1.5: all 9
    assert footprint(1.5, (1.0, 1.0)).all() and footprint(1.5, (1.0, 1.0)).shape == (3, 3)
    assert footprint(1.4, (1.0, 1.0)).sum() == 5


def test_sphere_offsets_follow_the_spacing():
    sp = (2.5, 0.7, 0.9)
    off = sphere_offsets(3.0, sp)
    d = np.sqrt(((off * sp) ** 2).sum(axis=1))
    assert np.all(d <= 3.0 + 1e-12)
    grid = np.indices((5, 11, 9)).reshape(3, -1).T - [2, 5, 4]
    inside = np.sqrt(((grid * sp) ** 2).sum(axis=1)) <= 3.0
    assert {tuple(o) for o in off} == {tuple(o) for o in grid[inside]}
    assert ball(3.0, sp).shape == (3, 9, 7)


# -- brush on every plane and grid --------------------------------------------------------
@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("plane", [*PLANES, "native"])
def test_brush_paints_the_world_disc_on_the_shown_plane(name, plane):
    vol = ramp_volume(shape=(12, 30, 34), spacing=(2.5, 0.7, 0.9), direction=DIRECTIONS[name])
    g = native_geometry(vol) if plane == "native" else plane_geometry(vol, plane)
    lm = new_map(vol)
    k, r, c = g.n_slices // 2 - 1, g.n_rows // 2 + 2, g.n_cols // 2 - 3
    centre = pixel_to_index(g, k, r, c)
    # the plane pixel's voxel is where core.mpr says that pixel is in the world
    np.testing.assert_allclose(vol.index_to_world(centre), pixel_to_world(vol, g, k, r, c), atol=1e-9)
    assert index_to_pixel(g, centre) == (k, r, c)
    n = paint(lm, vol, g, k, r, c, 3.0, 2)
    expected = world_disc(vol, centre, 3.0, axis=g.axis)
    np.testing.assert_array_equal(lm.array == 2, expected)
    assert n == expected.sum()
    # on screen: the footprint preview centred on the clicked pixel
    shown = extract_slice(lm.array, g, k) == 2
    fp = brush_footprint(g, 3.0)
    a, b = fp.shape[0] // 2, fp.shape[1] // 2
    np.testing.assert_array_equal(shown[r - a:r + a + 1, c - b:c + b + 1], fp)
    assert shown.sum() == fp.sum()


@pytest.mark.parametrize("name", ["oblique", "flipped"])
def test_sphere_brush_is_a_world_ball(name):
    vol = ramp_volume(shape=(12, 30, 34), spacing=(2.5, 0.7, 0.9), direction=DIRECTIONS[name])
    g = plane_geometry(vol, "coronal")
    lm = new_map(vol)
    k, r, c = 15, 6, 17
    paint(lm, vol, g, k, r, c, 4.0, 1, sphere=True)
    np.testing.assert_array_equal(lm.array == 1, world_disc(vol, pixel_to_index(g, k, r, c), 4.0))


def test_brush_at_the_edge_is_clipped():
    vol = ramp_volume(shape=(3, 10, 10), spacing=(1, 1, 1))
    lm = new_map(vol)
    g = native_geometry(vol)
    assert paint(lm, vol, g, 1, 0, 0, 2.0, 1) == 6  # quarter disc r=2: (0,0),(0,1),(0,2),(1,0),(1,1),(2,0)
    assert paint(lm, vol, g, 1, -5, -5, 2.0, 1) == 0


def test_stroke_leaves_no_gaps_and_is_one_undo_step():
    vol = ramp_volume(shape=(4, 40, 80), spacing=(3.0, 0.8, 0.6), direction=OBLIQUE)
    g = plane_geometry(vol, "axial")
    lm = new_map(vol)
    pts = [(5, 5), (30, 70), (8.4, 60.6)]  # far apart: a dab per point would leave gaps
    k = 1
    stroke(lm, vol, g, k, pts, 1.7, 1)
    assert len(lm.history) == 1
    # brute force on the plane: distance (mm) from each pixel centre to the polyline of pixel centres
    ps = np.array(g.pixel_size)
    rr, cc = np.indices((g.n_rows, g.n_cols))
    p = np.stack([rr, cc], -1) * ps
    dmin = np.full(rr.shape, np.inf)
    snapped = [np.floor(np.array(q) + 0.5) * ps for q in pts]
    for a, b in zip(snapped[:-1], snapped[1:]):
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
        dmin = np.minimum(dmin, np.linalg.norm(p - (a + t[..., None] * ab), axis=-1))
    np.testing.assert_array_equal(extract_slice(lm.array, g, k) == 1, dmin <= 1.7 + 1e-9)
    lm.undo()
    assert not lm.array.any()


def test_stroke_object_joins_moves_into_one_step_and_cancel_restores():
    vol = ramp_volume(shape=(4, 30, 30), spacing=(1, 1, 1))
    g = native_geometry(vol)
    lm = new_map(vol)
    boxes = []
    lm.subscribe(boxes.append)
    s = Stroke(lm, vol, g, 2, 2.0, 1)
    s.add(5, 5)
    s.add(5, 15)
    assert boxes[0] == (2, 3, 3, 8, 3, 8) and len(boxes) == 2  # live redraw per move
    step = s.finish()
    assert step.box == (2, 3, 3, 8, 3, 18) and len(lm.history) == 1
    before = lm.array.copy()
    s2 = Stroke(lm, vol, g, 2, 2.0, 2)
    s2.add(20, 20)
    s2.cancel()
    np.testing.assert_array_equal(lm.array, before)
    assert len(lm.history) == 1


def test_threshold_paint_stays_in_range():
    vol = ramp_volume(shape=(6, 40, 48), spacing=(2.5, 0.7, 0.9), direction=SAGITTAL)
    g = plane_geometry(vol, "sagittal")
    lm = new_map(vol)
    lo, hi = -300, 250
    k = 3
    stroke(lm, vol, g, k, [(5, 5), (g.n_rows - 5, g.n_cols - 5)], 6.0, 1, threshold=(lo, hi))
    painted = lm.array == 1
    assert painted.any()
    assert vol.array[painted].min() >= lo and vol.array[painted].max() <= hi
    lm2 = new_map(vol)
    stroke(lm2, vol, g, k, [(5, 5), (g.n_rows - 5, g.n_cols - 5)], 6.0, 1)
    np.testing.assert_array_equal(painted, (lm2.array == 1) & (vol.array >= lo) & (vol.array <= hi))


def test_locked_labels_survive_paint_erase_and_fill():
    vol = ramp_volume(shape=(3, 30, 30), spacing=(1, 1, 1))
    vol.array[:] = 0
    g = native_geometry(vol)
    lm = new_map(vol)
    paint(lm, vol, g, 1, 15, 15, 4.0, 2)
    lm.set_locked(2, True)
    locked = lm.array == 2
    paint(lm, vol, g, 1, 15, 12, 6.0, 1)
    paint(lm, vol, g, 1, 15, 15, 10.0, 0, erase=True)
    flood_fill(lm, vol, g, 1, 0, 0, 3, three_d=True)
    np.testing.assert_array_equal(lm.array == 2, locked)
    with pytest.raises(LabelLocked):
        paint(lm, vol, g, 1, 3, 3, 2.0, 2)
    with pytest.raises(KeyError):
        paint(lm, vol, g, 1, 3, 3, 2.0, 9)  # not in the table


def test_erase_any_label_or_only_one():
    vol = ramp_volume(shape=(1, 20, 20), spacing=(1, 1, 1))
    g = native_geometry(vol)
    lm = new_map(vol)
    lm.array[0, :, :10] = 1
    lm.array[0, :, 10:] = 2
    paint(lm, vol, g, 0, 10, 10, 3.0, 1, erase=True, over=1)  # erase only label 1
    assert (lm.array == 2).sum() == 200 and (lm.array == 0).sum() == footprint(3.0, (1, 1))[:, :3].sum()
    paint(lm, vol, g, 0, 10, 10, 3.0, 1, erase=True)  # default eraser: any unlocked label
    assert (lm.array == 0).sum() == footprint(3.0, (1, 1)).sum()


def test_paint_over_unlabelled_only():
    vol = ramp_volume(shape=(1, 20, 20), spacing=(1, 1, 1))
    g = native_geometry(vol)
    lm = new_map(vol)
    lm.array[0, :, 10:] = 2
    paint(lm, vol, g, 0, 10, 10, 3.0, 1, over=0)
    assert (lm.array == 2).sum() == 200


# -- flood fill -------------------------------------------------------------------------
def blocks_volume():
    a = np.zeros((6, 30, 40), np.int16)
    a[1:5, 5:15, 5:15] = 100   # A: the seed's block
    a[1:5, 5:15, 15:25] = 108  # B: touches A, within tolerance 10
    a[1:5, 5:15, 25:30] = 130  # C: touches B only, out of tolerance
    a[1:5, 20:25, 5:15] = 100  # D: same value, not connected
    a[1:5, 15, 4] = 95         # E: touches A by an edge only (y 15, x 4 vs y 14, x 5)
    return Volume(a, spacing=(3.0, 0.8, 0.8))


@pytest.mark.parametrize("window", [64, 2])
def test_flood_fill_3d_with_tolerance(window):
    vol = blocks_volume()
    lm = new_map(vol)
    g = native_geometry(vol)
    n = flood_fill(lm, vol, g, 2, 8, 8, 1, tolerance=10, three_d=True, window=window)
    expected = np.zeros(vol.shape, bool)
    expected[1:5, 5:15, 5:25] = True
    np.testing.assert_array_equal(lm.array == 1, expected)
    assert n == expected.sum() and len(lm.history) == 1
    lm.undo()
    flood_fill(lm, vol, g, 2, 8, 8, 1, tolerance=10, three_d=True, full_connectivity=True, window=window)
    expected[1:5, 15, 4] = True
    np.testing.assert_array_equal(lm.array == 1, expected)


def test_flood_fill_2d_in_a_reformatted_plane_and_walls():
    vol = blocks_volume()
    g = plane_geometry(vol, "coronal")  # axial stack: coronal slices are array y
    lm = new_map(vol)
    k, r, c = index_to_pixel(g, (2, 8, 8))
    flood_fill(lm, vol, g, k, r, c, 1, tolerance=10)
    expected = np.zeros(vol.shape, bool)
    expected[1:5, 8, 5:25] = True
    np.testing.assert_array_equal(lm.array == 1, expected)
    # another label is a wall with over=0; with tolerance 0 only A's part of the row
    lm2 = new_map(vol)
    lm2.array[:, 8, 12] = 2
    flood_fill(lm2, vol, g, k, r, c, 1, tolerance=10, over=0)
    expected2 = np.zeros(vol.shape, bool)
    expected2[1:5, 8, 5:12] = True
    np.testing.assert_array_equal(lm2.array == 1, expected2)
    lm3 = new_map(vol)
    flood_fill(lm3, vol, g, k, r, c, 1, tolerance=0)
    assert (lm3.array == 1).sum() == 4 * 10


# -- polygon -----------------------------------------------------------------------------
def pnpoly(vertices, y, x):
    inside = False
    n = len(vertices)
    for i in range(n):
        yi, xi = vertices[i]
        yj, xj = vertices[i - 1]
        if ((yi > y) != (yj > y)) and (x < (xj - xi) * (y - yi) / (yj - yi) + xi):
            inside = not inside
    return inside


def test_polygon_mask_equals_point_in_polygon():
    rng = np.random.default_rng(3)
    shape = (23, 31)
    polys = [rng.uniform(-3, 34, (n, 2)) for n in (3, 5, 9, 17)]  # random, self-intersecting, off the edge
    polys.append(np.array([[2, 2], [2, 20], [15, 20], [15, 2]], float))  # integer edges: ties on pixel centres
    polys.append(np.array([[3.5, 3.5], [3.5, 9.5], [9.5, 9.5]]))
    for v in polys:
        m = polygon_mask(v, shape)
        brute = np.array([[pnpoly(v, y, x) for x in range(shape[1])] for y in range(shape[0])])
        np.testing.assert_array_equal(m, brute)


@pytest.mark.parametrize("name", ["oblique", "flipped", "coronal"])
def test_fill_polygon_on_a_plane_writes_the_shown_pixels(name):
    vol = ramp_volume(shape=(12, 30, 34), spacing=(2.5, 0.7, 0.9), direction=DIRECTIONS[name])
    g = plane_geometry(vol, "sagittal")
    lm = new_map(vol)
    v = [(1.2, 2.0), (g.n_rows - 3, 5.5), (g.n_rows / 2, g.n_cols - 2.2)]
    fill_polygon(lm, g, 4, v, 3)
    np.testing.assert_array_equal(extract_slice(lm.array, g, 4) == 3, polygon_mask(v, (g.n_rows, g.n_cols)))
    assert (lm.array == 3).sum() == polygon_mask(v, (g.n_rows, g.n_cols)).sum()


# -- islands ------------------------------------------------------------------------------
def islands_map():
    vol = ramp_volume(shape=(5, 20, 20), spacing=(1, 1, 1))
    lm = new_map(vol)
    a = lm.array
    a[1:4, 2:5, 2:5] = 1          # 27 voxels
    a[2, 10, 10:12] = 1           # 2 voxels
    a[2, 15, 15] = 1              # 1 voxel
    a[2, 16, 16] = 1              # touches the previous only diagonally
    a[0:2, 15:18, 2:6] = 2        # label 2: 24 voxels
    a[4, 0, 0] = 2                # 1 voxel of label 2
    return vol, lm


def test_remove_small_islands_and_keep_largest():
    _, lm = islands_map()
    before = lm.array.copy()
    n = remove_small_islands(lm, 3)
    exp = before.copy()
    exp[2, 10, 10:12] = 0
    exp[2, 15, 15] = exp[2, 16, 16] = 0
    exp[4, 0, 0] = 0
    np.testing.assert_array_equal(lm.array, exp)
    assert n == 5 and len(lm.history) == 1
    lm.undo()
    remove_small_islands(lm, 2, full_connectivity=True, value=1)  # the diagonal pair is one piece of 2
    exp = before.copy()
    np.testing.assert_array_equal(lm.array, exp)
    keep_largest_island(lm, 1)
    exp[2, 10, 10:12] = 0
    exp[2, 15, 15] = exp[2, 16, 16] = 0
    np.testing.assert_array_equal(lm.array, exp)


def test_keep_largest_per_slice_and_locked_skipped():
    _, lm = islands_map()
    lm.set_locked(2, True)
    before = lm.array.copy()
    keep_largest_island(lm, slice_axis=0)
    exp = before.copy()
    exp[2, 10, 10:12] = 0  # slice 2: the 3x3 piece (9) wins over 2, 1, 1
    exp[2, 15, 15] = exp[2, 16, 16] = 0
    np.testing.assert_array_equal(lm.array, exp)
    with pytest.raises(LabelLocked):
        keep_largest_island(lm, 2)


# -- morphology ------------------------------------------------------------------------------
def test_structuring_element_in_mm():
    se = structuring_element(2.0, (2.5, 0.7, 0.9))
    assert se.shape == (1, 5, 5)
    flat = structuring_element(1.5, (1.0, 1.0, 1.0), slice_axis=0)
    assert flat.shape == (1, 3, 3) and flat.all()


def test_opening_removes_spurs_and_closing_fills_holes_per_slice():
    vol = ramp_volume(shape=(3, 20, 24), spacing=(1, 1, 1))
    lm = new_map(vol)
    rect = np.zeros(vol.shape, bool)
    rect[1, 5:11, 4:12] = True
    lm.array[rect] = 1
    lm.array[1, 7, 12:15] = 1  # spur
    lm.array[1, 2, 2] = 1      # speck
    lm.array[0, 0:5, 20:24] = 2
    opening(lm, 1.5, 1, slice_axis=0)
    np.testing.assert_array_equal(lm.array == 1, rect)
    assert (lm.array == 2).sum() == 20
    lm.array[1, 7, 7] = 0   # hole
    lm.array[1, 5, 8] = 0   # notch on the edge
    lm.array[1, 8, 4] = 2   # another label inside the edge: closing must not take it
    smooth(lm, "close", 1.5, 1, slice_axis=0)
    exp = rect.copy()
    exp[1, 8, 4] = False
    np.testing.assert_array_equal(lm.array == 1, exp)
    assert lm.array[1, 8, 4] == 2


def test_box_at_the_volume_corner_closing_keeps_it_opening_rounds_it():
    vol = ramp_volume(shape=(6, 10, 10), spacing=(1, 1, 1))
    lm = new_map(vol)
    lm.array[0:3, 0:4, 0:4] = 1
    assert closing(lm, 1.0, 1) == 0  # a box is closed already; the volume edge is background, not a wall
    opening(lm, 1.0, 1)  # 6-neighbour cross: eroded core z=1, y,x in 1..2, grown back by the cross
    core = np.zeros(vol.shape, bool)
    core[1, 1:3, 1:3] = True
    exp = core.copy()
    for a in range(3):
        for s in (-1, 1):
            exp |= np.roll(core, s, axis=a)
    assert exp.sum() == 20
    np.testing.assert_array_equal(lm.array == 1, exp)


# -- fill between slices ----------------------------------------------------------------------
def test_fill_between_two_discs_gives_intermediate_discs():
    vol = ramp_volume(shape=(30, 48, 48), spacing=(2.0, 1.0, 1.0))
    lm = new_map(vol)
    yy, xx = np.indices((48, 48))
    r0, r1 = 4.0, 14.0
    lm.array[10][np.hypot(yy - 24, xx - 24) <= r0] = 1
    lm.array[20][np.hypot(yy - 24, xx - 24) <= r1] = 1
    lm.array[25, 0, 0] = 2
    key10, key20 = lm.array[10].copy(), lm.array[20].copy()
    n = fill_between_slices(lm, 1, axis=0)
    assert len(lm.history) == 1 and n > 0
    areas = []
    for k in range(11, 20):
        t = (k - 10) / 10
        r = (1 - t) * r0 + t * r1
        m = lm.array[k] == 1
        d = np.hypot(yy - 24, xx - 24)
        assert m[d <= r - 1].all() and not m[d > r + 1].any(), k
        areas.append(m.sum())
    assert np.all(np.diff(areas) > 0)
    np.testing.assert_array_equal(lm.array[10], key10)
    np.testing.assert_array_equal(lm.array[20], key20)
    assert not (lm.array[:10] == 1).any() and not (lm.array[21:] == 1).any()


def test_fill_between_slices_follows_an_overlapping_shift_in_a_reformatted_axis():
    """Overlapping shapes glide (centroid on the straight line); disjoint ones would morph in place,
    as any signed-distance interpolation does."""
    vol = ramp_volume(shape=(20, 40, 30), spacing=(1.0, 1.0, 1.0), direction=CORONAL)
    g = plane_geometry(vol, "coronal")  # coronal stack: the coronal slider is array axis 0
    lm = new_map(vol)
    yy, xx = np.indices((40, 30))
    lm.array[4][np.hypot(yy - 14, xx - 12) <= 8] = 1
    lm.array[12][np.hypot(yy - 20, xx - 16) <= 8] = 1
    fill_between_slices(lm, 1, axis=g.axis)
    key_area = (lm.array[4] == 1).sum()
    for k in range(5, 12):
        t = (k - 4) / 8
        m = lm.array[k] == 1
        cy, cx = np.argwhere(m).mean(axis=0)
        assert abs(cy - (14 + 6 * t)) < 0.75 and abs(cx - (12 + 4 * t)) < 0.75
        assert 0.85 * key_area < m.sum() <= key_area


# -- plane helpers -------------------------------------------------------------------------------
def test_scene_to_pixel_inverts_the_view_mapping():
    vol = ramp_volume(shape=(12, 30, 34), spacing=(2.5, 0.7, 0.9), direction=OBLIQUE)
    g = plane_geometry(vol, "coronal")
    w, h = g.n_cols * g.pixel_size[1], g.n_rows * g.pixel_size[0]
    for flips in [(False, False), (True, False), (False, True), (True, True)]:
        r, c = 7, 11  # SliceView.pixel_center(r, c) with these flips:
        x, y = (c + 0.5) * g.pixel_size[1], (r + 0.5) * g.pixel_size[0]
        x, y = (w - x if flips[0] else x), (h - y if flips[1] else y)
        np.testing.assert_allclose(scene_to_pixel(g, x, y, flips), (r, c))


# -- planned changes (what the UI computes off its thread) -----------------------------------
def _blobs(seed=3):
    vol = ramp_volume((12, 24, 20), spacing=(2.5, 1.0, 1.5))
    rng = np.random.default_rng(seed)
    arr = np.zeros(vol.shape, np.uint8)
    for _ in range(14):
        z, y, x = (rng.integers(0, s) for s in vol.shape)
        arr[z:z + rng.integers(1, 5), y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = rng.integers(1, 4)
    lm = LabelMap(vol, arr, [Label(1, "a"), Label(2, "b"), Label(3, "c", locked=True)])
    return vol, lm


def _plans(vol):
    from viewer.core.editing import (
        plan_fill_between_slices,
        plan_flood_fill,
        plan_keep_largest_island,
        plan_remove_small_islands,
        plan_smooth,
    )

    g = plane_geometry(vol, "axial")
    return {
        "fill 3d": lambda lm: plan_flood_fill(lm, vol, g, 5, 3, 3, 1, 1e6, three_d=True),
        "fill 3d over labels": lambda lm: plan_flood_fill(lm, vol, g, 5, 3, 3, 2, 1e6, three_d=True, over=None),
        "islands": lambda lm: plan_remove_small_islands(lm, 20),
        "largest per slice": lambda lm: plan_keep_largest_island(lm, slice_axis=1),
        "open": lambda lm: plan_smooth(lm, "open", 2.0),
        "close over labels": lambda lm: plan_smooth(lm, "close", 3.0, over=None),
        "between": lambda lm: plan_fill_between_slices(lm, 2, 0),
    }


@pytest.mark.parametrize("name", list(_plans(ramp_volume((2, 2, 2))).keys()))
def test_prepared_change_equals_the_transaction_and_undoes_bit_for_bit(name):
    vol, a = _blobs()
    _, b = _blobs()
    plan = _plans(vol)[name]
    change = plan(a)
    assert not change.empty
    prepared = change.prepare(a, a._writable_lut())  # reads only
    np.testing.assert_array_equal(a.array, b.array)
    n_fast, n_edit = prepared.apply(a), plan(b).apply(b)
    assert n_fast == n_edit > 0
    np.testing.assert_array_equal(a.array, b.array)
    assert (a.array[_blobs()[1].array == 3] == 3).all()  # the locked label stays
    sa, sb = a.history._done[-1], b.history._done[-1]
    assert len(a.history) == len(b.history) == 1 and sa.name == sb.name and sa.box == sb.box
    for x, y in ((sa.old, sb.old), (sa.new, sb.new), (sa.packed, sb.packed)):
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    a.undo()
    np.testing.assert_array_equal(a.array, _blobs()[1].array)
    assert not a.dirty
    a.redo()
    np.testing.assert_array_equal(a.array, b.array)


def test_closing_every_label_over_others_sees_the_earlier_labels_writes():
    """Planned on a scratch copy: label 2's closing sees what label 1's closing wrote, as when each
    label is closed in turn. Here label 1's closing bridges its two bars across label 2's bar, and
    label 2's closing then closes its bar again over that bridge."""
    vol = ramp_volume((3, 16, 20), spacing=(2.5, 1.0, 1.5))
    arr = np.zeros(vol.shape, np.uint8)
    arr[1, :13, 8] = 2  # a vertical bar of 2
    arr[1, 5:8, 2:8] = arr[1, 5:8, 9:15] = 1  # two bars of 1 either side of it
    a, b = (LabelMap(vol, arr.copy(), [Label(1, "a"), Label(2, "b")]) for _ in range(2))
    n = smooth(a, "close", 2.0, over=None, slice_axis=0)
    with b.edit("closing"):
        for v in (1, 2):
            smooth(b, "close", 2.0, v, over=None, slice_axis=0)
    assert n > 0 and (b.array[1, 5:8, 8] == 2).all()  # label 2 had the last word
    np.testing.assert_array_equal(a.array, b.array)


def test_a_plan_stops_when_asked():
    from viewer.core.editing import plan_flood_fill
    from viewer.core.errors import Cancelled

    vol, lm = _blobs()
    with pytest.raises(Cancelled):
        plan_flood_fill(lm, vol, plane_geometry(vol, "axial"), 5, 3, 3, 1, 1e6, three_d=True,
                        should_stop=lambda: True)
