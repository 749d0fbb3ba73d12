"""viewer.core.atomic: the target is replaced only by a complete file; no temp file is ever left."""
from __future__ import annotations

import pytest

from viewer.core.atomic import replacing, temp_beside, write_bytes


def test_a_failing_writer_leaves_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "case.nii.gz"
    write_bytes(target, b"first")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full halfway")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["case.nii.gz"]


def test_replacing_writes_whole_files_with_shared_permissions_and_folders(tmp_path):
    target = tmp_path / "new" / "deep" / "results.json"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.name.endswith("results.json")
        tmp.write_text("{}")
    assert target.read_text() == "{}" and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]
    assert write_bytes(target, b"x", mode=0o600).stat().st_mode & 0o777 == 0o600


def test_temp_names_keep_the_ending_itk_reads_the_format_from(tmp_path):
    tmp = temp_beside(tmp_path / "CASE_0001_0000.nii.gz")
    assert tmp.exists() and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
