"""AI results kept on disk between sessions, so re-opening an analysed study does not re-run the models.

One entry per key: ``<key>.npz`` (the maps, compressed; read with ``allow_pickle=False``, an
untrusted file never runs code) and ``<key>.json`` (scores, model ids, classes, warnings: the
Volume-free facts). The key hashes what decides the output: the study/series UIDs, the names
under which the maps are listed, the exact model cards that run (name, version, weights
checksum: a new or switched version never reuses old maps) and a fingerprint of the pixels and
the geometry the models read (changed files never reuse old maps). The npz is written first and
the JSON last, both atomically, so an entry is either whole or ignored. A damaged entry is removed
with a message, never a crash. Least-recently-used entries are evicted above a size cap
(``LIGHTBOX_ANALYSIS_CACHE_MB``, 2 GB by default); a hit refreshes the JSON's mtime.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from viewer.core.atomic import replacing, write_bytes
from viewer.core.demo import cache_dir
from viewer.core.volume import Volume

from .results import AnalysisResult, Overlay, SeriesResult

FORMAT = 1
DEFAULT_CAP_MB = 2048
STALE_TEMP_SECONDS = 3600  # a temp file this old was left by a crashed writer
DAMAGE = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile, zlib.error)

Report = Callable[[str], None]


def analysis_cache_dir() -> Path:
    return cache_dir() / "analysis"


def cap_bytes() -> int:
    wanted = os.environ.get("LIGHTBOX_ANALYSIS_CACHE_MB", "")
    try:
        mb = float(wanted) if wanted else DEFAULT_CAP_MB
    except ValueError:
        mb = DEFAULT_CAP_MB
    return max(0, int(mb * 1024 * 1024))


# -- keys -------------------------------------------------------------------------------------------
def pixel_fingerprint(volume: Volume) -> str:
    """Hash of the loaded pixels and of the header facts the models read (spacing, photometric,
    orientation, laterality, view): a changed file gives another fingerprint."""
    h = hashlib.blake2b(digest_size=20)
    array = np.ascontiguousarray(volume.array)
    info = volume.info
    h.update(json.dumps([array.dtype.str, list(array.shape), [float(s) for s in volume.spacing],
                         info.photometric, list(info.patient_orientation or ()), info.laterality,
                         info.view_position, info.modality]).encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def card_id(card) -> str:
    """A model card as the key sees it: name, version and the weights' checksum."""
    return f"{card.name} {card.version} {card.sha256}"


def entry_key(kind: str, study_uid: str, sources: dict[str, tuple[str, Volume]], cards: dict[str, str]) -> str:
    """sources: result-series name (view or series key) -> (series UID, Volume); cards: role -> card_id."""
    facts = {"format": FORMAT, "kind": kind, "study_uid": study_uid, "models": dict(sorted(cards.items())),
             "series": [[name, uid, pixel_fingerprint(vol)] for name, (uid, vol) in sorted(sources.items())]}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:40]


def planned_cards(kind: str) -> dict:
    """role -> the card Analyze would run now (same choice as viewer.analysis.run)."""
    from . import run

    if kind == "mammo-exam":
        return {role: c for role, c in run.mammo_models().items() if c is not None}
    return {"segmentation": run.volume_model(kind.upper())}


# -- the store --------------------------------------------------------------------------------------
class AnalysisCache:
    """The on-disk entries under one folder (``<cache>/analysis`` unless told)."""

    def __init__(self, root: Path | None = None, cap: int | None = None):
        self.root = Path(root) if root is not None else analysis_cache_dir()
        self.cap = cap_bytes() if cap is None else int(cap)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npz", self.root / f"{key}.json"

    def contains(self, key: str) -> bool:
        npz, meta = self.paths(key)
        return npz.exists() and meta.exists()

    # -- writing ------------------------------------------------------------------------------------
    def save(self, key: str, result: AnalysisResult) -> None:
        """Store ``result`` under ``key`` (maps in the npz, the rest in the JSON), then evict."""
        arrays: dict[str, np.ndarray] = {}
        series = []
        for name, sr in result.series.items():
            overlays = []
            for o in sr.overlays:
                ref = f"a{len(arrays)}"
                arrays[ref] = np.ascontiguousarray(o.array)
                overlays.append({"name": o.name, "kind": o.kind, "model": o.model, "classes": list(o.classes),
                                 "array": ref, "dtype": arrays[ref].dtype.str, "shape": list(o.array.shape)})
            series.append({"name": name, "series_key": sr.series_key, "series_uid": sr.series_uid,
                           "title": sr.title, "shape": list(sr.volume.shape),
                           "scores": {k: float(v) for k, v in sr.scores.items()}, "overlays": overlays,
                           "domain": dict(sr.domain), "notes": dict(sr.notes)})
        npz, meta = self.paths(key)
        with replacing(npz) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        facts = {"format": FORMAT, "key": key, "kind": result.kind, "study_uid": result.study_uid,
                 "exam_scores": {k: float(v) for k, v in result.exam_scores.items()},
                 "models": dict(result.models), "device": result.device, "seconds": float(result.seconds),
                 "warnings": list(result.warnings), "verified": dict(result.verified), "series": series,
                 "model_cards": dict(result.model_cards),
                 "npz_bytes": npz.stat().st_size, "saved": time.time()}
        write_bytes(meta, json.dumps(facts, indent=1).encode())
        self.evict()

    # -- reading ------------------------------------------------------------------------------------
    def load(self, key: str, volumes: dict[str, Volume], report: Report | None = None) -> AnalysisResult | None:
        """The stored result with every SeriesResult bound to ``volumes[name]`` (the shapes must
        match); None on a miss. A damaged entry is removed and reported."""
        npz, meta = self.paths(key)
        if not meta.exists():
            return None
        try:
            result = self._read(key, npz, meta, volumes)
        except DAMAGE as exc:
            self.remove(key)
            if report is not None:
                report(f"a damaged cached analysis was removed ({type(exc).__name__}: {exc})")
            return None
        if result is not None:
            try:
                os.utime(meta)  # most recently used: evicted last
            except OSError:
                pass  # a read-only cache still serves hits
        return result

    @staticmethod
    def _read(key: str, npz: Path, meta: Path, volumes: dict[str, Volume]) -> AnalysisResult | None:
        facts = json.loads(meta.read_text())
        if facts.get("format") != FORMAT or facts.get("key") != key:
            raise ValueError("not an entry of this format or key")
        if npz.stat().st_size != int(facts["npz_bytes"]):
            raise ValueError("the map file has another size than when it was written")
        if sorted(s["name"] for s in facts["series"]) != sorted(volumes):
            return None  # another set of views: not this entry
        result = AnalysisResult(str(facts["kind"]), str(facts["study_uid"]), {},
                                exam_scores={str(k): float(v) for k, v in facts["exam_scores"].items()},
                                models={str(k): str(v) for k, v in facts["models"].items()},
                                device=str(facts["device"]), seconds=float(facts["seconds"]),
                                warnings=[str(w) for w in facts["warnings"]],
                                verified={str(k): bool(v) for k, v in facts.get("verified", {}).items()},
                                model_cards=dict(facts.get("model_cards") or {}))
        with np.load(npz, allow_pickle=False) as data:
            for s in facts["series"]:
                volume = volumes[s["name"]]
                if tuple(s["shape"]) != volume.shape:
                    raise ValueError(f"{s['name']}: stored for shape {tuple(s['shape'])}, loaded {volume.shape}")
                sr = SeriesResult(str(s["series_key"]), str(s["series_uid"]), str(s["title"]), volume,
                                  scores={str(k): float(v) for k, v in s["scores"].items()},
                                  notes=dict(s.get("notes") or {}), domain=dict(s.get("domain") or {}))
                for o in s["overlays"]:
                    array = data[o["array"]]
                    if array.shape != volume.shape or array.dtype.str != o["dtype"]:
                        raise ValueError(f"{s['name']}/{o['name']}: map {array.shape} {array.dtype} does not "
                                         f"fit the volume {volume.shape}")
                    sr.overlays.append(Overlay(str(o["name"]), str(o["kind"]), array, str(o["model"]),
                                               [str(c) for c in o["classes"]]))
                result.series[s["name"]] = sr
        return result

    # -- housekeeping -------------------------------------------------------------------------------
    def remove(self, key: str) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)

    def entries(self) -> list[tuple[float, str, int]]:
        """(last used, key, bytes) per entry, oldest first; a lone npz or JSON counts as an entry."""
        if not self.root.is_dir():
            return []
        sizes: dict[str, int] = {}
        used: dict[str, float] = {}
        for path in self.root.iterdir():
            if path.name.startswith(".") or path.suffix not in (".npz", ".json"):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            sizes[path.stem] = sizes.get(path.stem, 0) + st.st_size
            if path.suffix == ".json" or path.stem not in used:  # a hit touches the JSON
                used[path.stem] = st.st_mtime
        found = {key: (used[key], sizes[key]) for key in sizes}
        return sorted((used, key, size) for key, (used, size) in found.items())

    def size(self) -> tuple[int, int]:
        """(entries, bytes)."""
        entries = self.entries()
        return len(entries), sum(e[2] for e in entries)

    def evict(self) -> list[str]:
        """Remove least-recently-used entries until the folder fits the cap; also old temp files."""
        self._remove_stale_temps(STALE_TEMP_SECONDS)
        entries = self.entries()
        total = sum(e[2] for e in entries)
        removed = []
        for _used, key, size in entries:
            if total <= self.cap:
                break
            self.remove(key)
            total -= size
            removed.append(key)
        return removed

    def clear(self) -> tuple[int, int]:
        """Delete every entry (and temp files); returns (entries, bytes) removed."""
        count, total = self.size()
        for _used, key, _size in self.entries():
            self.remove(key)
        self._remove_stale_temps(0)
        return count, total

    def _remove_stale_temps(self, older_than: float) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for path in self.root.glob(".*.partial.*"):
            try:
                if now - path.stat().st_mtime >= older_than:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
