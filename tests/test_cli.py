"""The `lightbox` command line: demo, info, exit codes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from viewer.cli import main
from viewer.core.io.dicom_write import write_series

from conftest import ramp_volume


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "viewer.cli", *map(str, args)], capture_output=True, text=True)


def test_info_lists_series_with_geometry(tmp_path, capsys):
    truth = ramp_volume(shape=(6, 20, 30), spacing=(3.0, 0.6, 0.8), series_description="abdomen")
    write_series(truth, tmp_path, intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "abdomen" in out and "30x20x6 voxels" in out and "spacing 0.8x0.6x3 mm" in out and "axial (LPS)" in out
    assert main(["info", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    s = data["patients"][0]["studies"][0]["series"][0]
    assert s["dimensions"] == [30, 20, 6] and s["spacing"] == [0.8, 0.6, 3.0]
    assert np.allclose(s["origin"], truth.origin) and s["orientation"] == "axial"


def test_info_with_some_bad_files_lists_good_series_and_names_bad(tmp_path, capsys):
    write_series(ramp_volume(shape=(3, 16, 16)), tmp_path, intercept=-1024, stored_dtype=np.uint16,
                 bits_stored=12)
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 10)
    assert main(["info", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "16x16x3 voxels" in captured.out
    assert "broken.dcm" in captured.out and "broken.dcm" in captured.err


@pytest.mark.parametrize("make", ["missing", "empty_dir", "junk_file"])
def test_bad_input_exits_2_with_one_line(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty_dir":
        target.mkdir()
    elif make == "junk_file":
        target = tmp_path / "x.dcm"
        target.write_text("not dicom")
    proc = run_cli("info", target)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0], proc.stderr


def test_help_runs_without_qt():
    proc = subprocess.run([sys.executable, "-c", "import sys, viewer.cli as c; c.build_parser();"
                           "print('PySide6' in sys.modules)"], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"


def test_demo_then_info_reports_true_geometry(tmp_path):
    """`lightbox demo DIR && lightbox info DIR --json`: CT, MR and a complete 4-view MG."""
    from viewer.core.synthetic import write_demo_studies

    truth = write_demo_studies(tmp_path / "truth", scale=0.25)
    proc = run_cli("demo", tmp_path / "d", "--scale", "0.25")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("info", tmp_path / "d", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["problems"] == []
    by_modality = {}
    for p in info["patients"]:
        for st in p["studies"]:
            for s in st["series"]:
                by_modality.setdefault(s["modality"], []).append((st, s))
    for mod in ("CT", "MR"):
        (_, s), = by_modality[mod]
        vol = truth[mod].volume
        assert s["dimensions"] == list(vol.shape[::-1])
        assert np.allclose(s["spacing"], vol.spacing[::-1], atol=1e-4)
        assert np.allclose(s["origin"], vol.origin, atol=1e-3)
        assert s["orientation"] == "axial" and s["problems"] == []
    mg = by_modality["MG"]
    assert len(mg) == 4
    study = mg[0][0]
    assert all(study["mammo_views"][v] for v in ("RCC", "LCC", "RMLO", "LMLO"))
    for _, s in mg:
        name = s["view"]["laterality"] + s["view"]["view_position"]
        assert s["dimensions"] == list(truth["MG"][name].volume.shape[::-1])
        assert s["orientation"] == "projection"
    text = run_cli("info", tmp_path / "d").stdout
    assert "4-view exam: RCC LCC RMLO LMLO (complete)" in text


# -- train: bad settings are refused before anything is read or written -------------------------------------
@pytest.fixture(scope="module")
def train_dataset(tmp_path_factory):
    from test_finetune import write_dataset

    return write_dataset(tmp_path_factory.mktemp("Dataset503_Lightbox"), 2, 3100)


def test_train_on_a_missing_gpu_exits_2_with_one_line(train_dataset, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    models = tmp_path / "models"
    assert main(["train", str(train_dataset), "--device", "cuda", "--epochs", "1", "--steps", "1",
                 "--out", str(models)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cuda" in lines[0].lower() and "Traceback" not in lines[0], lines
    assert not models.exists()


@pytest.mark.parametrize("option,value", [("--epochs", "-1"), ("--epochs", "0"), ("--steps", "-1"),
                                          ("--steps", "0")])
def test_train_refuses_epochs_or_steps_below_one_and_writes_nothing(train_dataset, tmp_path, capsys, option,
                                                                    value):
    models = tmp_path / "models"
    argv = {"--epochs": "1", "--steps": "1", option: value}
    code = main(["train", str(train_dataset), "--epochs", argv["--epochs"], "--steps", argv["--steps"],
                 "--device", "cpu", "--out", str(models)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and value in lines[0] and "at least 1" in lines[0], lines
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"steps_per_epoch": -1}, {"batch": 0}, {"lr": float("nan")},
                                 {"val_fraction": 1.0}])
def test_the_finetune_api_refuses_settings_that_train_nothing(train_dataset, tmp_path, bad):
    from inference.finetune import FinetuneError, finetune

    models = tmp_path / "models"
    with pytest.raises(FinetuneError, match=r"must be"):
        finetune(train_dataset, **{"epochs": 1, "steps_per_epoch": 1, "device": "cpu", **bad}, out_dir=models)
    assert not models.exists()


# -- analyze: an unwritable --out is found before any model runs ---------------------------------------------
def test_analyze_into_a_path_under_a_file_fails_before_analysing(tmp_path, capsys, monkeypatch):
    import viewer.analysis.batch as batch

    study = tmp_path / "ct"
    write_series(ramp_volume(shape=(4, 16, 16)), study, intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "sub"
    ran = []
    monkeypatch.setattr(batch, "analyze_scan", lambda *a, **k: ran.append(1) or ([], []))
    assert main(["analyze", str(study), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert not ran, "the analysis ran before the output folder was checked"
    assert len(lines) == 1 and str(out) in lines[0] and "cannot write" in lines[0], lines


def test_analyze_into_a_folder_without_write_permission_fails_before_analysing(tmp_path):
    """As an unprivileged user (root ignores permissions): a read-only folder, and a new folder in one."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from test_export_permissions import _as_unprivileged

    prefix = _as_unprivileged()
    root = Path(tempfile.mkdtemp(prefix="lightbox-analyze-perm-"))
    try:
        root.chmod(0o755)
        study = root / "empty-study"  # empty: without the check the run would end in "nothing to analyse"
        study.mkdir()
        locked = root / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        for out in (locked, locked / "new"):
            env = {**os.environ, "HOME": str(root), "XDG_CONFIG_HOME": str(root), "LIGHTBOX_CACHE_DIR": str(root)}
            proc = subprocess.run([*prefix, sys.executable, "-m", "viewer.cli", "analyze", str(study), "--out",
                                   str(out)], capture_output=True, text=True, env=env, timeout=300,
                                  cwd=Path(__file__).resolve().parents[1])
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1, proc.stderr
            assert str(out) in lines[0] and "cannot write" in lines[0], lines
            assert not (locked / "new").exists() and list(locked.iterdir()) == []
    finally:
        shutil.rmtree(root)


def test_analyze_leaves_no_empty_folder_when_there_is_nothing_to_analyse(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "new" / "results"
    assert main(["analyze", str(empty), "--out", str(out)]) == 2
    assert "nothing to analyse" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
