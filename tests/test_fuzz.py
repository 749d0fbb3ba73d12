"""A small seeded slice of the fuzz run (issue 16): ~100 files, the planted issue cases, most codecs,
one analyze/export.

Each goal is its own test, on one shared run, so a failure names the goal and lists the folder,
file, mutation and first error line. Reproduce a failure outside pytest, and look at the files:
``python benchmarks/fuzz.py 100 --seed 16 --cli-sample 1 --keep /tmp/fuzz16``.
"""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from fuzz.child import check_good
from fuzz.corpus import MUTATIONS, build_corpus, elements
from fuzz.drive import MEMORY_GOAL, _crashed, _error_line, format_report, run_corpus

SEED = 16
FILES = 100


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # Huge zero-filled files are sparse; 256 MB keeps them small where a file system is not.
    corpus = build_corpus(tmp_path_factory.mktemp("fuzz"), FILES, seed=SEED, huge_zero=256 << 20)
    return run_corpus(corpus, jobs=2, cli_sample=1)


def _failures(report, metric: str) -> str:
    command = f"python benchmarks/fuzz.py {FILES} --seed {SEED} --cli-sample 1 --keep DIR"
    listed = [str(f) for f in report.failures if f.metric.startswith(metric)]
    return "\n".join([format_report(report, command, max_failures=0)] + listed)


def test_the_slice_covers_every_codec_and_mutation_kind(report):
    assert report.files >= FILES and report.good > 0 and report.mutated >= 10
    assert set(report.cli_runs) == {"info", "analyze", "export"}, report.cli_runs


def test_no_crash_or_traceback(report):
    assert report.crashes == 0, _failures(report, "crash")


def test_no_hang(report):
    assert report.hangs == 0, _failures(report, "hang")


def test_no_good_slice_lost(report):
    assert report.lost == 0, _failures(report, "good slice lost")


def test_every_file_pydicom_refuses_is_named_by_info(report):
    assert report.unnamed_info == 0, _failures(report, "refused, not named by info")


def test_every_file_pydicom_refuses_is_named_by_the_loader(report):
    assert report.unnamed_loader == 0, _failures(report, "refused, not named by loader")


def test_peak_memory_within_twice_the_largest_real_volume(report):
    assert report.memory_ratio <= MEMORY_GOAL, _failures(report, "-")


# -- the harness itself -------------------------------------------------------------
def test_same_seed_same_corpus(tmp_path):
    a = build_corpus(tmp_path / "a", 30, seed=3, big_ct_shape=None, huge_zero=0)
    b = build_corpus(tmp_path / "b", 30, seed=3, big_ct_shape=None, huge_zero=0)
    assert [(f.name, f.good, f.bad) for f in a.folders] == [(f.name, f.good, f.bad) for f in b.folders]
    for f in a.folders:
        for p in sorted((a.root / f.name).iterdir()):
            assert p.read_bytes() == (b.root / f.name / p.name).read_bytes(), p


def test_mutations_change_the_file_and_offsets_point_at_elements(tmp_path):
    corpus = build_corpus(tmp_path, 10, seed=1, big_ct_shape=None, huge_zero=0)
    src = sorted((tmp_path / "_sources" / "demo" / "CT").iterdir())[0]
    data = src.read_bytes()
    for el in elements(data)[:10]:
        assert int.from_bytes(data[el.header:el.header + 2], "little") == el.tag >> 16
    rng = np.random.default_rng(0)
    for name, (fn, _kind) in MUTATIONS.items():
        if name == "cut_stream":  # applies to compressed files only
            continue
        done = fn(rng, data)
        assert done is not None and done[0] != data, name
    assert corpus.folders and all(f.good for f in corpus.folders)


def test_check_good_tells_kept_from_lost(tmp_path):
    from viewer.core.io import load_series, scan

    build_corpus(tmp_path, 10, seed=2, big_ct_shape=None, huge_zero=0)
    ct = tmp_path / "_sources" / "demo" / "CT"
    vol = load_series(scan(ct).series[0])
    first = sorted(ct.iterdir())[3]
    assert check_good(first, vol)[0] == "kept"
    ipp = np.array([float(v) for v in pydicom.dcmread(first).ImagePositionPatient])
    k = int(np.rint(vol.world_to_index(ipp)[0]))
    blanked = vol.with_array(vol.array.copy())
    blanked.array[k] = blanked.array.min() - 1
    assert check_good(first, blanked)[0] == "lost"


def test_crash_and_error_line_classification():
    tb = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\n'
          'NotImplementedError: Unknown Value Representation \'Di\'\n')
    assert _crashed(1, tb) and _crashed(-11, "") and _crashed(0, tb)
    assert not _crashed(2, "lightbox: a.dcm: not a DICOM file") and not _crashed(0, "") and not _crashed(None, "")
    assert _error_line(tb) == "NotImplementedError: Unknown Value Representation 'Di'"
    assert _error_line("lightbox: skipped x\nlightbox: a.dcm: bad\n") == "lightbox: a.dcm: bad"
