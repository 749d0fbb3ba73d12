"""Prior finding (no Qt): same patient (and issuer), earlier date/time, same modality family, newest first;
the matching CT prior series, and the shift that lines up two stacks without a shared frame of reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prior_fixtures import ct_study, mg_exam, two_mg_exams_and_a_stranger
from viewer.core.io import load_series, scan
from viewer.core.priors import (find_priors, is_earlier, mammo_priors, modality_family, pick_prior_series,
                                prior_for_series, prior_slice, current_slice, stack_offset_mm, study_facts,
                                StudyFacts)


def by_date(result, date):
    return next(st for st in result.studies if st.date == date)


def test_mg_prior_found_for_the_patient_and_never_from_another_patient(tmp_path):
    result = scan(two_mg_exams_and_a_stranger(tmp_path))
    current = by_date(result, "20240301")
    priors = find_priors(result, current)
    assert [p.study.date for p in priors] == ["20220214"]  # not P2's 2023 exam, though the name is the same
    exam, older = mammo_priors(result, current)
    assert exam.date == "20240301" and [e.date for e in older] == ["20220214"]
    assert set(older[0].hung) == {"RCC", "LCC", "RMLO"}  # the prior's LMLO is missing
    again, older_again = mammo_priors(result, exam.as_study())  # the browser's grouped exam row hangs as_study()
    assert again is not None and again.date == exam.date and [e.date for e in older_again] == ["20220214"]
    stranger = by_date(result, "20230505")
    assert find_priors(result, stranger) == [] and mammo_priors(result, stranger)[1] == []
    assert find_priors(result, by_date(result, "20220214")) == []  # the oldest exam has no prior


def test_newest_prior_first_and_same_day_ordered_by_time(tmp_path):
    for i, (date, time) in enumerate([("20200101", "080000"), ("20230101", "080000"), ("20240101", "070000"),
                                      ("20240101", "160000")]):
        ct_study(tmp_path / f"s{i}", "C1", date, time=time, seed=i)
    result = scan(tmp_path)
    afternoon, morning = (next(st for st in result.studies if study_facts(st).when == ("20240101", t))
                          for t in ("160000", "070000"))
    found = find_priors(result, afternoon)
    assert [p.facts.when for p in found] == [("20240101", "070000"), ("20230101", "080000"),
                                             ("20200101", "080000")]  # the morning scan of the same day first
    assert found[0].study is morning
    assert [p.study.date for p in find_priors(result, morning)] == ["20230101", "20200101"]


def test_no_prior_without_a_date_or_another_issuer_or_modality(tmp_path):
    ct_study(tmp_path / "cur", "C1", "20240101")
    ct_study(tmp_path / "undated", "C1", "")
    ct_study(tmp_path / "other-hospital", "C1", "20200101", issuer="HOSP-B")
    mg_exam(tmp_path / "mg", "C1", "20190101")
    result = scan(tmp_path)
    assert find_priors(result, by_date(result, "20240101")) == []
    assert not is_earlier(StudyFacts("C1", "", "20240101", ""), StudyFacts("C1", "", "20240101", ""))
    assert not is_earlier(StudyFacts("C1", "", "", ""), StudyFacts("C1", "", "20240101", ""))
    assert modality_family("CR") == modality_family("DX") != modality_family("CT")


def write_prior_ct(tmp_path: Path, shift_mm: float):
    """Current CT (24 slices of 5 mm) and a prior of the same body on another table position (its own frame of
    reference), missing its first 5 slices, plus a second prior series that is another kind of image."""
    ct_study(tmp_path / "cur", "C1", "20240101", time="101500")
    prior = ct_study(tmp_path / "pri", "C1", "20230101", shift_mm=shift_mm,
                     drop=tuple(f"IM{i:05d}" for i in range(1, 6)))
    import pydicom

    study_uid = pydicom.dcmread(next(prior.glob("*.dcm"))).StudyInstanceUID
    ct_study(tmp_path / "pri-thin", "C1", "20230101", shape=(6, 40, 40), spacing=(1.0, 8.0, 8.0), seed=5,
             description="Scout", study_uid=study_uid)
    return scan(tmp_path)


def test_ct_prior_series_is_the_matching_axial_series(tmp_path):
    result = write_prior_ct(tmp_path, 137.0)
    current = by_date(result, "20240101")
    found = prior_for_series(result, current.series[0], current)
    assert not isinstance(found, str), found
    prior, series = found
    assert prior.study.date == "20230101" and len(prior.study.series) == 2
    assert series.info.series_description == current.series[0].info.series_description
    assert pick_prior_series(current.series[0], by_date(result, "20240101")) is current.series[0]
    lonely = by_date(scan(tmp_path / "cur"), "20240101")
    assert "No earlier CT study" in prior_for_series(scan(tmp_path / "cur"), lonely.series[0], lonely)


@pytest.mark.parametrize("shift", [137.0, -42.5])
def test_stacks_without_a_shared_frame_line_up_by_anatomy(tmp_path, shift):
    result = write_prior_ct(tmp_path, shift)
    current = by_date(result, "20240101")
    prior, series = prior_for_series(result, current.series[0], current)
    a, b = load_series(current.series[0]), load_series(series)
    assert a.info.frame_of_reference_uid != b.info.frame_of_reference_uid
    offset = stack_offset_mm(a, b)
    # the prior lost its first 5 slices: current slice k is prior slice k - 5 (same body, moved by `shift`)
    hits = [(k, prior_slice(a, k, b, offset)) for k in range(a.shape[0])]
    assert all(j == k - 5 for k, j in hits if j is not None) and sum(j is not None for _, j in hits) == 19
    assert all(current_slice(b, j, a, offset) == j + 5 for j in range(b.shape[0]))
    assert abs(abs(offset) - abs(shift)) < 1e-6
    np.testing.assert_array_equal(a.array[10], b.array[prior_slice(a, 10, b, offset)])


def test_stacks_of_one_frame_of_reference_need_no_shift(tmp_path):
    result = write_prior_ct(tmp_path, 137.0)
    current = by_date(result, "20240101")
    a = load_series(current.series[0])
    assert stack_offset_mm(a, a) == 0.0
    assert all(prior_slice(a, k, a, 0.0) == k for k in range(a.shape[0]))


def test_series_without_a_comparable_prior_series_says_so(tmp_path):
    result = write_prior_ct(tmp_path, 0.0)
    current = by_date(result, "20240101")
    prior = next(st for st in result.studies if st.date == "20230101")
    prior.series = [s for s in prior.series if s.info.series_description == "Scout"]
    assert pick_prior_series(current.series[0], prior) is prior.series[0]  # still a CT stack: the best there is
    prior.series[0].info.modality = "MR"
    text = prior_for_series(result, current.series[0], current)
    assert isinstance(text, str) and "No earlier CT study" in text  # an MR study is not a CT prior
