"""The on-disk AI results cache: exact round trips, keys that change with models and pixels,
damaged entries ignored and removed, least-recently-used eviction."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from viewer.analysis.cache import (
    AnalysisCache,
    analysis_cache_dir,
    cap_bytes,
    entry_key,
)
from viewer.analysis.results import AnalysisResult, Overlay, SeriesResult
from viewer.core.volume import SourceInfo, Volume

MG_CARDS = {"patch": "mammo-patch 1.0.0 aa11", "exam": "mammo-exam 1.0.0 bb22", "segmentation": "mammo-seg 1.0.0 cc33"}
CT_CARDS = {"segmentation": "ct-organs-unet3d 1.0.0 dd44"}


def mammo_volumes(seed=0) -> dict[str, Volume]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("RCC", "LCC", "RMLO", "LMLO"):
        info = SourceInfo(modality="MG", study_uid="1.2.3", series_uid=f"1.2.3.{name}", laterality=name[0],
                          view_position=name[1:], patient_orientation=("A", "R" if name[0] == "L" else "L"))
        out[name] = Volume(rng.integers(0, 4096, (1, 48, 40)).astype(np.uint16), (1.0, 0.1, 0.1), info=info)
    return out


def mammo_result(volumes: dict[str, Volume], seed=1) -> AnalysisResult:
    rng = np.random.default_rng(seed)
    result = AnalysisResult("mammo-exam", "1.2.3", {}, models={"patch": "mammo-patch 1.0.0",
                                                               "exam": "mammo-exam 1.0.0",
                                                               "segmentation": "mammo-seg 1.0.0"},
                            device="cpu", seconds=3.25, warnings=["CUDA out of memory: ran on the CPU"])
    for name, vol in volumes.items():
        sr = SeriesResult(f"{vol.info.series_uid}", vol.info.series_uid, name, vol,
                          scores={"malignancy": float(np.float32(rng.random())), "lesion area mm2": 12.34})
        sr.overlays.append(Overlay("mass", "probability", rng.random(vol.shape, dtype=np.float32), "mammo-patch 1.0.0"))
        sr.overlays.append(Overlay("Grad-CAM", "probability", rng.random(vol.shape, dtype=np.float32),
                                   "mammo-exam 1.0.0"))
        sr.overlays.append(Overlay("segmentation", "labels", rng.integers(0, 3, vol.shape).astype(np.uint8),
                                   "mammo-seg 1.0.0", ["background", "mass", "calcification"]))
        result.series[name] = sr
    result.exam_scores = {"R": 0.8125, "L": 0.1}
    return result


def ct_volume(seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    info = SourceInfo(modality="CT", study_uid="9.8", series_uid="9.8.7")
    return Volume(rng.integers(-1000, 1500, (6, 20, 24)).astype(np.int16), (5.0, 0.8, 0.8), info=info)


def ct_result(vol: Volume) -> AnalysisResult:
    rng = np.random.default_rng(2)
    sr = SeriesResult("9.8.7", "9.8.7", "CT 1", vol, scores={"liver mL": 1520.5, "lesion mL": 3.0})
    sr.overlays.append(Overlay("segmentation", "labels", rng.integers(0, 4, vol.shape).astype(np.uint8),
                               "ct-organs-unet3d 1.0.0", ["background", "liver", "spleen", "lesion"]))
    sr.overlays.append(Overlay("lesion probability", "probability", rng.random(vol.shape, dtype=np.float32),
                               "ct-organs-unet3d 1.0.0"))
    return AnalysisResult("ct", "9.8", {"9.8.7": sr}, models={"segmentation": "ct-organs-unet3d 1.0.0"},
                          device="cuda", seconds=1.5)


def sources(volumes: dict[str, Volume]) -> dict[str, tuple[str, Volume]]:
    return {name: (v.info.series_uid, v) for name, v in volumes.items()}


def reloaded(vol: Volume) -> Volume:
    """The same files loaded again in a new session: equal pixels, a new Volume."""
    return Volume(vol.array.copy(), vol.spacing.copy(), vol.origin.copy(), vol.direction.copy(), vol.info)


def assert_same(a: AnalysisResult, b: AnalysisResult) -> None:
    def facts(r):
        return r.kind, r.study_uid, r.models, r.device, r.warnings

    assert facts(a) == facts(b)
    assert a.exam_scores == b.exam_scores and a.seconds == b.seconds
    assert list(a.series) == list(b.series)
    for name, sa in a.series.items():
        sb = b.series[name]
        assert (sa.series_key, sa.series_uid, sa.title) == (sb.series_key, sb.series_uid, sb.title)
        assert sa.scores == sb.scores
        assert [(o.name, o.kind, o.model, o.classes) for o in sa.overlays] == \
            [(o.name, o.kind, o.model, o.classes) for o in sb.overlays]
        for oa, ob in zip(sa.overlays, sb.overlays, strict=True):
            assert oa.array.dtype == ob.array.dtype and oa.array.shape == ob.array.shape
            assert oa.array.tobytes() == ob.array.tobytes()  # bit-identical


@pytest.fixture
def store(tmp_path):
    return AnalysisCache(tmp_path / "analysis", cap=10**9)


def test_the_folder_is_under_the_app_cache_and_the_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path))
    assert analysis_cache_dir() == tmp_path / "analysis"
    monkeypatch.delenv("LIGHTBOX_ANALYSIS_CACHE_MB", raising=False)
    assert cap_bytes() == 2048 * 1024 * 1024
    monkeypatch.setenv("LIGHTBOX_ANALYSIS_CACHE_MB", "3")
    assert cap_bytes() == 3 * 1024 * 1024
    monkeypatch.setenv("LIGHTBOX_ANALYSIS_CACHE_MB", "lots")
    assert cap_bytes() == 2048 * 1024 * 1024


def test_a_mammography_exam_round_trips_bit_for_bit_onto_the_newly_loaded_views(store):
    volumes = mammo_volumes()
    result = mammo_result(volumes)
    key = entry_key("mammo-exam", "1.2.3", sources(volumes), MG_CARDS)
    store.save(key, result)
    again = {name: reloaded(v) for name, v in volumes.items()}
    assert entry_key("mammo-exam", "1.2.3", sources(again), MG_CARDS) == key  # same files, same key
    loaded = store.load(key, again)
    assert loaded is not None
    assert_same(result, loaded)
    for name, sr in loaded.series.items():
        assert sr.volume is again[name]  # bound to this session's volumes
    # only data in the files: the JSON is plain, the npz loads without pickle
    npz, meta = store.paths(key)
    facts = json.loads(meta.read_text())
    assert facts["exam_scores"] == {"R": 0.8125, "L": 0.1} and facts["models"] == result.models
    with np.load(npz, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_a_ct_result_round_trips_bit_for_bit(store):
    vol = ct_volume()
    result = ct_result(vol)
    key = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", vol)}, CT_CARDS)
    store.save(key, result)
    fresh = reloaded(vol)
    loaded = store.load(key, {"9.8.7": fresh})
    assert_same(result, loaded)
    assert loaded.series["9.8.7"].volume is fresh


def test_another_model_version_or_weights_or_changed_pixels_miss(store):
    vol = ct_volume()
    src = {"9.8.7": ("9.8.7", vol)}
    key = entry_key("ct", "9.8", src, CT_CARDS)
    store.save(key, ct_result(vol))
    newer = entry_key("ct", "9.8", src, {"segmentation": "ct-organs-unet3d 1.1.0 dd44"})
    retrained = entry_key("ct", "9.8", src, {"segmentation": "ct-organs-unet3d 1.0.0 ee55"})
    changed = reloaded(vol)
    changed.array[3, 10, 10] += 1
    edited = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", changed)}, CT_CARDS)
    respaced = reloaded(vol)
    respaced.spacing = np.array([2.5, 0.8, 0.8])
    other_spacing = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", respaced)}, CT_CARDS)
    other_series = entry_key("ct", "9.8", {"9.8.7": ("9.8.6", vol)}, CT_CARDS)
    misses = [newer, retrained, edited, other_spacing, other_series]
    assert len(set(misses) | {key}) == 6
    for miss in misses:
        assert store.load(miss, {"9.8.7": vol}) is None
    assert store.contains(key)  # a miss leaves the other entry alone


@pytest.mark.parametrize("damage", ["truncated npz", "bad json", "missing npz", "wrong shape", "json of another key"])
def test_a_damaged_entry_is_ignored_removed_and_reported(store, damage):
    vol = ct_volume()
    key = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", vol)}, CT_CARDS)
    store.save(key, ct_result(vol))
    npz, meta = store.paths(key)
    volumes = {"9.8.7": vol}
    if damage == "truncated npz":
        data = npz.read_bytes()
        npz.write_bytes(data[: len(data) // 2])
    elif damage == "bad json":
        meta.write_text('{"format": 1, "key": ')
    elif damage == "missing npz":
        npz.unlink()
    elif damage == "wrong shape":
        volumes = {"9.8.7": Volume(np.zeros((6, 20, 25), np.int16), info=vol.info)}
    else:
        facts = json.loads(meta.read_text())
        facts["key"] = "0" * 40
        meta.write_text(json.dumps(facts))
    said: list[str] = []
    assert store.load(key, volumes, said.append) is None
    assert len(said) == 1 and "damaged" in said[0]
    assert not npz.exists() and not meta.exists()
    assert store.size() == (0, 0)


def test_a_truncated_npz_of_the_same_size_is_caught_by_its_checksums(store):
    vol = ct_volume()
    key = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", vol)}, CT_CARDS)
    store.save(key, ct_result(vol))
    npz, _meta = store.paths(key)
    data = bytearray(npz.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # flipped bytes inside a compressed member
    npz.write_bytes(bytes(data))
    said: list[str] = []
    assert store.load(key, {"9.8.7": vol}, said.append) is None and said
    assert not store.contains(key)


def test_least_recently_used_entries_are_evicted_under_a_small_cap(tmp_path):
    store = AnalysisCache(tmp_path / "analysis", cap=10**9)
    keys, vols = [], []
    for i in range(3):
        vol = ct_volume(seed=i)
        key = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", vol)}, CT_CARDS)
        store.save(key, ct_result(vol))
        for path in store.paths(key):
            os.utime(path, (1000.0 + i, 1000.0 + i))  # saved in order 0, 1, 2
        keys.append(key)
        vols.append(vol)
    assert store.load(keys[0], {"9.8.7": vols[0]}) is not None  # 0 used just now: 1 is the oldest
    count, total = store.size()
    assert count == 3
    one = total // 3
    store.cap = total - one // 2  # room for two entries only
    assert store.evict() == [keys[1]]
    assert store.contains(keys[0]) and store.contains(keys[2]) and not store.contains(keys[1])
    store.cap = 1  # nothing fits
    store.evict()
    assert store.size() == (0, 0)


def test_saving_evicts_and_clear_says_what_it_removed(tmp_path):
    vol = ct_volume()
    first = ct_result(vol)
    probe = AnalysisCache(tmp_path / "probe", cap=10**9)
    probe.save("probe", first)
    _n, entry_bytes = probe.size()
    store = AnalysisCache(tmp_path / "analysis", cap=int(entry_bytes * 1.5))
    a = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", vol)}, CT_CARDS)
    store.save(a, first)
    for path in store.paths(a):
        os.utime(path, (1000.0, 1000.0))
    other = ct_volume(seed=5)
    b = entry_key("ct", "9.8", {"9.8.7": ("9.8.7", other)}, CT_CARDS)
    store.save(b, ct_result(other))
    assert not store.contains(a) and store.contains(b)  # the older one made room
    (store.root / ".x.partial.y.npz").write_bytes(b"half")  # a crashed writer's temp file
    count, size = store.clear()
    assert count == 1 and size > 0
    assert list(store.root.iterdir()) == []


def test_the_key_follows_the_model_version_analyze_would_use(tmp_path, monkeypatch):
    """Installing (or choosing) another version changes the planned cards, hence the key."""
    import shutil

    from inference.registry import shipped_models_dir
    from viewer.analysis import run
    from viewer.analysis.cache import card_id, planned_cards

    volumes = mammo_volumes()
    before = {role: card_id(c) for role, c in planned_cards("mammo-exam").items()}
    assert set(before) >= {"patch", "exam"}
    user = tmp_path / "my-models"
    user.mkdir()
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(user))
    card = json.loads((shipped_models_dir() / "mammo-exam.json").read_text())
    shipped_version = card["version"]
    card["version"] = "9.0.0"
    shutil.copy(shipped_models_dir() / card["weights"], user / card["weights"])
    (user / "mammo-exam.json").write_text(json.dumps(card))
    after = {role: card_id(c) for role, c in planned_cards("mammo-exam").items()}
    assert after["exam"].split()[1] == "9.0.0"
    assert entry_key("mammo-exam", "1.2.3", sources(volumes), before) != \
        entry_key("mammo-exam", "1.2.3", sources(volumes), after)
    monkeypatch.setitem(run.PREFERRED_VERSIONS, "mammo-exam", shipped_version)  # AI ▸ Models… "Use this version"
    chosen = {role: card_id(c) for role, c in planned_cards("mammo-exam").items()}
    assert chosen == before
