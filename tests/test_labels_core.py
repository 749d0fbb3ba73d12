"""LabelMap (table, notifications, dirty state, stats) and box-based undo (bit-exact, bounded)."""
import numpy as np
import pytest

from tests.conftest import OBLIQUE, ramp_volume
from viewer.core.colors import label_color
from viewer.core.editing import (
    fill_between_slices,
    fill_polygon,
    flood_fill,
    footprint,
    keep_largest_island,
    paint,
    remove_small_islands,
    stroke,
)
from viewer.core.editing.morphology import closing, opening
from viewer.core.labels import Label, LabelMap
from viewer.core.mpr import native_geometry, plane_geometry
from viewer.core.undo import Edit, LabelLocked, Step, UndoStack
from viewer.core.volume import SourceInfo, Volume


def small_volume(**kw):
    return ramp_volume(shape=(8, 36, 40), spacing=(2.5, 0.7, 0.9), series_uid="1.2.3", **kw)


# -- construction and table ------------------------------------------------------------
def test_construction_checks_the_grid_and_keeps_the_source():
    vol = small_volume(direction=OBLIQUE)
    lm = LabelMap(vol)
    assert lm.array.dtype == np.uint8 and lm.shape == vol.shape
    assert lm.source_series_uid == "1.2.3" and lm.grid.matches(vol)
    np.testing.assert_allclose(lm.as_volume().affine, vol.affine)
    with pytest.raises(ValueError, match="does not match"):
        LabelMap(vol, np.zeros((8, 36, 41), np.uint8))
    with pytest.raises(ValueError):
        LabelMap(vol, np.zeros(vol.shape, np.float32))
    other = ramp_volume(shape=(8, 36, 41))
    with pytest.raises(ValueError):
        paint(lm, other, native_geometry(other), 0, 0, 0, 1.0, 0)


def test_from_label_array_names_classes_and_widens_for_big_values():
    vol = small_volume()
    arr = np.zeros(vol.shape, np.int32)
    arr[1, 2:5, 2:5] = 1
    arr[2, 2:5, 2:5] = 2
    arr[3, 0, 0] = 7  # present but unnamed
    lm = LabelMap.from_label_array(arr, vol, ["background", "liver", "tumour"], algorithm_name="ct-seg v1")
    assert {v: lb.name for v, lb in lm.labels.items()} == {1: "liver", 2: "tumour", 7: "Label 7"}
    assert lm.label(1).algorithm == "AUTOMATIC" and lm.label(1).algorithm_name == "ct-seg v1"
    assert lm.array.dtype == np.uint8
    lm2 = LabelMap.from_label_array(arr, vol, {1: "a", 2: "a", 300: "big"})
    assert lm2.array.dtype == np.uint16 and lm2.label(2).name == "a 2"  # names stay unique
    events = []
    lm.subscribe(events.append)
    lm.add_label("huge", value=1000)
    assert lm.array.dtype == np.uint16 and events == [None] and lm.active == 1000


def test_table_operations_notify_and_keep_names_unique():
    lm = LabelMap(small_volume())
    events = []
    unsubscribe = lm.subscribe(events.append)
    a = lm.add_label("liver")
    b = lm.add_label()
    assert (a.value, b.value, b.name, lm.active) == (1, 2, "Label 2", 2)
    with pytest.raises(ValueError):
        lm.add_label("LIVER")
    with pytest.raises(ValueError):
        lm.rename(2, "Liver")
    lm.rename(2, "spleen")
    lm.set_color(2, (1, 2, 300))
    lm.set_opacity(2, 0.5)
    lm.set_visible(2, False)
    assert lm.label(2).color == (1, 2, 255) and lm.value_of("Spleen") == 2
    assert events == [None] * 6
    t = lm.rgba_table(opacity=0.5)
    assert t[0, 3] == 0 and t[1].tolist() == [*a.color, 128] and t[2, 3] == 0  # hidden: transparent
    assert t.shape == (256, 4) and t[7].tolist() == [*label_color(7), 128]  # any uint8 value indexes it
    unsubscribe()
    lm.rename(1, "liver 2")
    assert len(events) == 6
    with pytest.raises(ValueError):
        Label(0, "zero")


def test_delete_label_is_one_undoable_step():
    vol = small_volume()
    lm = LabelMap(vol, labels=[Label(1, "a"), Label(2, "b")])
    lm.array[2, 3:6, 3:6] = 2
    lm.array[5, 0, 0] = 2
    lm.array[4, 1, 1] = 1
    before = lm.array.copy()
    lm.delete_label(2)
    assert 2 not in lm.labels and not (lm.array == 2).any() and (lm.array == 1).sum() == 1
    lm.undo()
    np.testing.assert_array_equal(lm.array, before)
    assert lm.label(2).name == "b"
    lm.redo()
    assert 2 not in lm.labels and not (lm.array == 2).any()
    lm.set_locked(1, True)
    with pytest.raises(LabelLocked):
        lm.delete_label(1)
    lm.set_locked(1, False)
    lm.delete_label(1, erase_voxels=False)
    assert (lm.array == 1).sum() == 1


# -- notifications, versions, dirty --------------------------------------------------------
def test_edits_notify_the_changed_box_and_track_dirty_state():
    vol = ramp_volume(shape=(4, 20, 20), spacing=(1, 1, 1))
    lm = LabelMap(vol, labels=[Label(1, "a")])
    boxes = []
    lm.subscribe(boxes.append)
    assert not lm.dirty
    v0 = lm.version
    paint(lm, vol, native_geometry(vol), 2, 10, 12, 2.0, 1)
    assert boxes == [(2, 3, 8, 13, 10, 15)] and lm.version > v0 and lm.dirty
    lm.mark_saved()
    assert not lm.dirty and lm.saved_version == lm.version
    paint(lm, vol, native_geometry(vol), 2, 0, 0, 1.0, 1)
    assert lm.dirty
    lm.undo()
    assert boxes[-1] == (2, 3, 0, 2, 0, 2) and not lm.dirty  # back to the saved content
    lm.undo()
    assert lm.dirty
    lm.redo()
    assert not lm.dirty
    # a paint that changes nothing is no step and no notification
    n = len(boxes)
    assert paint(lm, vol, native_geometry(vol), 2, 10, 12, 2.0, 1) == 0
    assert len(boxes) == n and lm.history.undo_name == "paint" and len(lm.history) == 1


def test_transactions_join_roll_back_and_refuse_undo_while_open():
    vol = ramp_volume(shape=(4, 20, 20), spacing=(1, 1, 1))
    lm = LabelMap(vol, labels=[Label(1, "a"), Label(2, "b")])
    g = native_geometry(vol)
    with lm.edit("macro") as e:
        paint(lm, vol, g, 1, 5, 5, 2.0, 1)  # joins the open transaction
        paint(lm, vol, g, 1, 15, 15, 2.0, 2)
        assert lm.editing and e.changed == 26
    assert len(lm.history) == 1 and lm.history.undo_name == "macro"
    before = lm.array.copy()
    with pytest.raises(RuntimeError, match="boom"), lm.edit("broken"):
        paint(lm, vol, g, 1, 10, 10, 4.0, 2)
        raise RuntimeError("boom")
    np.testing.assert_array_equal(lm.array, before)
    assert len(lm.history) == 1 and not lm.editing
    e = lm.begin_edit("drag")
    with pytest.raises(RuntimeError):
        lm.undo()
    with pytest.raises(RuntimeError):
        lm.begin_edit("another")
    e.commit()
    with pytest.raises(RuntimeError):
        e.write((0, 1, 0, 1, 0, 1), None, 1)


# -- undo -----------------------------------------------------------------------------
def snapshot(lm):
    return lm.array.copy(), {v: (lb.name, lb.color) for v, lb in lm.labels.items()}


def assert_state(lm, state):
    np.testing.assert_array_equal(lm.array, state[0])
    assert lm.array.dtype == state[0].dtype
    assert {v: (lb.name, lb.color) for v, lb in lm.labels.items()} == state[1]


def random_operation(rng, lm, vol):
    planes = [native_geometry(vol), plane_geometry(vol, "coronal"), plane_geometry(vol, "sagittal")]
    g = planes[rng.integers(len(planes))]
    k = int(rng.integers(g.n_slices))
    r, c = rng.uniform(-2, g.n_rows + 2), rng.uniform(-2, g.n_cols + 2)
    values = [v for v, lb in lm.labels.items() if not lb.locked]
    value = int(rng.choice(values)) if values else 0
    op = rng.integers(11)
    if op == 0:
        paint(lm, vol, g, k, r, c, rng.uniform(0.3, 6), value, sphere=bool(rng.integers(2)))
    elif op == 1:
        pts = rng.uniform(0, [g.n_rows, g.n_cols], (int(rng.integers(2, 8)), 2))
        stroke(lm, vol, g, k, pts, rng.uniform(0.5, 4), value, threshold=(-500, 600) if rng.integers(2) else None)
    elif op == 2:
        paint(lm, vol, g, k, r, c, rng.uniform(1, 8), 0, erase=True, over=None if rng.integers(2) else value)
    elif op == 3:
        flood_fill(lm, vol, g, k, r, c, value, tolerance=rng.uniform(0, 400), three_d=bool(rng.integers(2)))
    elif op == 4:
        fill_polygon(lm, g, k, rng.uniform(-3, [g.n_rows + 3, g.n_cols + 3], (5, 2)), value)
    elif op == 5:
        remove_small_islands(lm, int(rng.integers(2, 30)))
    elif op == 6:
        keep_largest_island(lm, slice_axis=int(rng.integers(3)) if rng.integers(2) else None)
    elif op == 7:
        (opening if rng.integers(2) else closing)(lm, rng.uniform(0.8, 3), value if value else None)
    elif op == 8 and value:
        fill_between_slices(lm, value, axis=int(rng.integers(3)))
    elif op == 9 and len(lm.labels) > 1 and value:
        lm.delete_label(value)
    elif op == 10:
        lm.add_label()
        if rng.integers(3) == 0:
            lm.set_locked(int(rng.choice(list(lm.labels))), bool(rng.integers(2)))


def test_undo_redo_is_bit_exact_over_random_operations():
    rng = np.random.default_rng(5)
    vol = small_volume()
    lm = LabelMap(vol, labels=[Label(1, "a"), Label(2, "b"), Label(3, "c")])
    states = [snapshot(lm)]
    for _ in range(400):
        if len(lm.history) == 50:
            break
        n = len(lm.history)
        random_operation(rng, lm, vol)
        if len(lm.history) > n:
            states.append(snapshot(lm))
        else:  # non-undoable table change (add/lock) or no-op: it belongs to the current state
            states[-1] = snapshot(lm)
    assert len(lm.history) == len(states) - 1 == 50
    # undo everything (voxels and deleted labels come back), then redo everything
    for state in reversed(states[:-1]):
        lm.undo()
        np.testing.assert_array_equal(lm.array, state[0])
    assert not lm.history.can_undo
    for state in states[1:]:
        lm.redo()
        np.testing.assert_array_equal(lm.array, state[0])
    assert_state(lm, states[-1])
    # branching: undo a few, a new edit drops the redo steps
    for _ in range(5):
        lm.undo()
    np.testing.assert_array_equal(lm.array, states[-6][0])
    fresh = lm.add_label("fresh")
    locked = np.isin(lm.array, [v for v, lb in lm.labels.items() if lb.locked])
    paint(lm, vol, native_geometry(vol), 3, 5, 5, 2.0, fresh.value)
    fp = footprint(2.0, (0.7, 0.9))
    h, w = fp.shape[0] // 2, fp.shape[1] // 2
    expected = np.zeros(vol.shape, bool)
    expected[3, 5 - h:5 + h + 1, 5 - w:5 + w + 1] = fp
    assert not lm.history.can_redo
    np.testing.assert_array_equal(lm.array == fresh.value, expected & ~locked)


def test_steps_pick_the_smaller_form_and_restore_exactly():
    rng = np.random.default_rng(0)
    old = rng.integers(0, 4, (3, 40, 50)).astype(np.uint8)
    sparse_new = old.copy()
    sparse_new[1, 3, 4:9] = 9
    s = Step.from_boxes("x", (0, 3, 0, 40, 0, 50), old, sparse_new)
    assert s.sparse and s.new.size == 1 and s.nbytes < old.nbytes / 4
    dense_new = old + 1  # every voxel changes: the packed mask would not pay
    d = Step.from_boxes("y", (0, 3, 0, 40, 0, 50), old, dense_new)
    assert not d.sparse
    for step, new in ((s, sparse_new), (d, dense_new)):
        a = new.copy()
        step.write(a, undo=True)
        np.testing.assert_array_equal(a, old)
        step.write(a, undo=False)
        np.testing.assert_array_equal(a, new)


def test_undo_stack_is_bounded_by_steps_and_bytes():
    def step(nbytes):
        return Step("s", (0, 1, 0, 1, 0, nbytes), np.zeros(nbytes, np.uint8), np.zeros(0, np.uint8))
    stack = UndoStack(max_steps=3, max_bytes=10_000)
    for _ in range(5):
        stack.push(step(10))
    assert len(stack) == 3
    stack = UndoStack(max_steps=100, max_bytes=1000)
    for _ in range(5):
        stack.push(step(300))
    assert len(stack) == 3 and stack.nbytes <= 1000
    stack.push(step(5000))  # bigger than the budget alone: still undoable, the rest goes
    assert len(stack) == 1


def test_a_hundred_strokes_on_a_ct_sized_map_cost_far_less_than_one_volume():
    shape = (300, 512, 512)
    vol = Volume(np.broadcast_to(np.int16(0), shape), spacing=(1.0, 0.7, 0.7))  # no pixel memory needed
    lm = LabelMap(vol, labels=[Label(1, "a"), Label(2, "b")])
    g = plane_geometry(vol, "axial")
    rng = np.random.default_rng(1)
    for i in range(100):
        start = rng.uniform(60, 450, 2)
        path = start + np.cumsum(rng.normal(0, 6, (30, 2)), axis=0)  # ~30 mouse moves
        stroke(lm, vol, g, int(rng.integers(300)), path, 20 * 0.7, 1 + i % 2)  # 20-px radius
    assert len(lm.history) == 100
    volume_bytes = lm.array.nbytes
    print(f"100 strokes: {lm.history.nbytes / 1e6:.2f} MB of undo vs {volume_bytes / 1e6:.1f} MB volume")
    assert lm.history.nbytes < 0.05 * volume_bytes
    assert Edit.BLOCK[0] * Edit.BLOCK[1] * Edit.BLOCK[2] < volume_bytes


# -- stats -------------------------------------------------------------------------------
def test_stats_volume_area_and_mean():
    vol = small_volume()
    lm = LabelMap(vol, labels=[Label(1, "a"), Label(2, "b"), Label(5, "empty")])
    lm.array[1:4, 2:9, 3:7] = 1
    lm.array[6, 20:30, 5] = 2
    lm.array[0, 0, 0] = 9  # not in the table: still counted
    st = lm.stats(vol)
    voxel_ml = 2.5 * 0.7 * 0.9 / 1000
    assert st[1]["voxels"] == 84 and st[1]["volume_ml"] == pytest.approx(84 * voxel_ml)
    assert st[1]["mean"] == pytest.approx(vol.array[lm.array == 1].mean())
    assert st[2]["voxels"] == 10 and st[2]["mean"] == pytest.approx(vol.array[lm.array == 2].mean())
    assert st[5] == {"name": "empty", "voxels": 0, "volume_ml": 0.0, "mean": None}
    assert st[9]["voxels"] == 1 and st[9]["name"] == "Label 9"
    assert lm.stats()[1]["mean"] is None
    lm.set_visible(1, False)  # hidden labels are still data
    assert lm.stats(vol)[1] == st[1]
    lm.labels[1].locked = True  # the table hands out copies: only the methods change it
    assert not lm.label(1).locked
    flat = Volume(np.arange(20 * 30, dtype=np.int16).reshape(1, 20, 30), spacing=(1.0, 0.5, 0.25),
                  info=SourceInfo(modality="MG"))
    lm2 = LabelMap(flat, labels=[Label(1, "mass")])
    lm2.array[0, 2:6, 3:8] = 1
    st2 = lm2.stats(flat)[1]
    assert st2["area_mm2"] == pytest.approx(20 * 0.125) and "volume_ml" not in st2
    assert st2["mean"] == pytest.approx(flat.array[0, 2:6, 3:8].mean())
