"""`lightbox models import/list` and `analyze --model` as a user runs them: an ONNX model imported for MR
(the first MR analysis: no MR demo model exists), listed, picked automatically and by name, and named
exactly in results.json."""
from __future__ import annotations

import json

import pytest
import torch

from inference import registry
from viewer.cli import main
from viewer.core.synthetic import write_ct_study, write_mr_study

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CT = "ct-organs-unet3d"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """The shipped CT U-Net exported to ONNX: a real third-party-format file with known outputs."""
    module, _card = registry.load_model(registry.find_model(CT))
    path = tmp_path_factory.mktemp("onnx") / "organs.onnx"
    example = torch.zeros(1, 2, 32, 64, 64)
    torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n", 2: "z", 3: "y", 4: "x"},
                                    "logits": {0: "n", 2: "z", 3: "y", 4: "x"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def mr_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mr")
    write_mr_study(out, shape=(24, 48, 48), spacing=(6.0, 4.8, 4.8))
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


IMPORT_MR = ("--modality", "MR", "--task", "segmentation-3d", "--name", "mr-organs", "--version", "2",
             "--classes", "background,lungs,liver,lesions", "--spacing", "3,3,3",
             "--set", 'normalization={"kind": "hu_windows", "windows": [[-1000, 1000], [-160, 240]]}',
             "--set", "input.patch_size=[32,64,64]", "--licence", "Apache-2.0 (test)")


def test_import_names_what_is_missing_then_installs_and_lists(capsys, models_dir, onnx_file):
    code, _, err = run(capsys, "models", "import", onnx_file)
    assert code == 2 and "fill in" in err and "modality" in err and "--modality" in err  # the file cannot say
    assert not models_dir.exists() or not list(models_dir.glob("*.json"))

    code, out, err = run(capsys, "models", "import", onnx_file, *IMPORT_MR)
    assert code == 0, err
    assert out.strip() == "mr-organs:2" and "onnx" in err
    card = registry.find_model("mr-organs")
    assert (card.architecture, card.modality, card.licence) == ("onnx", "MR", "Apache-2.0 (test)")
    assert card.sha256 == registry.sha256_bytes(card.weights_path.read_bytes())
    assert card.extra["import"]["from"] == str(onnx_file.resolve())

    code, out, _ = run(capsys, "models", "list", "--json")
    rows = {(r["name"], r["version"]): r for r in json.loads(out)["models"]}
    mine = rows[("mr-organs", "2")]
    assert mine["format"] == "onnx" and mine["trust"] == "unverified" and mine["active"] is True
    assert rows[(CT, "1")]["format"] == "lightbox" and rows[(CT, "1")]["trust"] == "verified"

    code, _, err = run(capsys, "models", "import", onnx_file, *IMPORT_MR)
    assert code == 2 and "already installed" in err  # never overwritten


def test_imported_model_analyses_mr_and_results_name_it(capsys, tmp_path, models_dir, onnx_file, mr_dir):
    assert run(capsys, "models", "import", onnx_file, *IMPORT_MR)[0] == 0
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "analyze", mr_dir, "--out", out, "--json", "--device", "cpu")
    assert code == 0, err
    (res,) = json.loads(stdout)["results"]
    assert res["kind"] == "mr" and res["models"] == {"segmentation": "mr-organs 2"}
    facts = res["model_cards"]["segmentation"]
    assert facts["format"] == "onnx" and facts["sha256"] == registry.find_model("mr-organs").sha256
    assert res["models_verified"] == {"segmentation": False}
    (series,) = res["series"].values()
    assert series["overlays"][0]["model"] == "mr-organs 2"
    assert (out / series["files"]["segmentation (NIfTI)"]).is_file()
    assert (out / series["files"]["segmentation (DICOM SEG)"]).is_file()  # SEG for the MR series, by this model


def test_model_flag_picks_by_name_and_refuses_unknown_names(capsys, tmp_path, models_dir, onnx_file):
    ct = tmp_path / "ct"
    write_ct_study(ct, shape=(24, 48, 48), spacing=(6.25, 7.4, 7.4), seed=5)
    code, _, err = run(capsys, "analyze", ct, "--out", tmp_path / "o1", "--model", "no-such-model")
    assert code == 2 and "no model named 'no-such-model'" in err
    assert not (tmp_path / "o1").exists()
    code, _, err = run(capsys, "analyze", ct, "--out", tmp_path / "o2", "--model", f"{CT}:9")
    assert code == 2 and "version 9" in err

    # the same network imported for CT as version 5: automatic choice vs --model
    assert run(capsys, "models", "import", onnx_file, *[a if a != "MR" else "CT" for a in IMPORT_MR],
               "--name", "ct-onnx")[0] == 0
    code, stdout, err = run(capsys, "analyze", ct, "--out", tmp_path / "o3", "--json", "--model", f"{CT}:1")
    assert code == 0, err
    (res,) = json.loads(stdout)["results"]
    assert res["models"] == {"segmentation": f"{CT} 1"} and res["model_cards"]["segmentation"]["format"] == "lightbox"
    code, stdout, err = run(capsys, "analyze", ct, "--out", tmp_path / "o4", "--json", "--model", "ct-onnx")
    assert code == 0, err
    (res2,) = json.loads(stdout)["results"]
    assert res2["models"] == {"segmentation": "ct-onnx 2"}
    # same network, same volume: ONNX Runtime and torch give the same organ volumes
    for key, value in res["series"][next(iter(res["series"]))]["scores"].items():
        other = res2["series"][next(iter(res2["series"]))]["scores"][key]
        assert other == pytest.approx(value, rel=0.02, abs=0.5), key


def test_a_tampered_explicit_model_fails_instead_of_falling_back(capsys, tmp_path, models_dir, onnx_file):
    assert run(capsys, "models", "import", onnx_file, *IMPORT_MR)[0] == 0
    card = registry.find_model("mr-organs")
    data = bytearray(card.weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    card.weights_path.write_bytes(bytes(data))
    mr = tmp_path / "mr"
    write_mr_study(mr, shape=(12, 24, 24), spacing=(6.0, 4.8, 4.8))
    code, _, err = run(capsys, "analyze", mr, "--out", tmp_path / "o", "--model", "mr-organs:2")
    assert code == 2 and "sha256" in err and card.weights_path.name in err
    assert not (tmp_path / "o").exists()  # refused before any model ran


def test_an_imported_2d_bundle_segments_the_mammography_exam(capsys, tmp_path, models_dir):
    """MG with an imported model: a MONAI bundle made with MONAI's own tools takes the exam's lesion
    segmentation role when --model names it; the classifiers stay the demo ones."""
    from model_fixtures.monai_bundle import make_bundle

    from viewer.core.synthetic import write_mammo_exam

    bundle = make_bundle(tmp_path, name="tiny_mammo_lesion", spatial_dims=2)
    code, out, err = run(capsys, "models", "import", bundle, "--yes")
    assert code == 0, err
    name, version = out.strip().split(":")
    mg = tmp_path / "mg"
    write_mammo_exam(mg, (416, 320), seed=3, lesion_side="L")
    code, stdout, err = run(capsys, "analyze", mg, "--out", tmp_path / "o", "--json", "--model", name)
    assert code == 0, err
    (res,) = json.loads(stdout)["results"]
    assert res["models"]["segmentation"] == f"{name} {version}"
    assert res["model_cards"]["segmentation"]["format"] == "monai-bundle"
    assert res["models"]["patch"].startswith("mammo-patch")
    for view in ("RCC", "LCC", "RMLO", "LMLO"):
        seg = next(o for o in res["series"][view]["overlays"] if o["name"] == "segmentation")
        assert seg["model"] == f"{name} {version}"
        assert res["series"][view]["domain"]["models"][f"{name} {version}"]["in_domain"] is None  # no description
