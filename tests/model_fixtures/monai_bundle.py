"""A real MONAI bundle, tiny and randomly initialised, made with MONAI's own bundle tools.

Laid out like MONAI's spleen_ct_segmentation bundle (LoadImaged, EnsureChannelFirstd, Orientationd
RAS, Spacingd, ScaleIntensityRanged, SlidingWindowInferer, Activationsd softmax, Invertd,
AsDiscreted argmax, SaveImaged), written by ``monai.bundle.init_bundle``; the TorchScript variant
is exported by ``monai.bundle.ckpt_export``. Its ``run`` section needs no pytorch-ignite (the model
zoo's evaluator does), so ``monai.bundle.run`` executes it here as the reference runner.
"""
from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import torch

PIXDIM = [1.5, 1.5, 2.0]  # x, y, z (RAS) as in the spleen bundle
ROI_SIZE = [16, 16, 16]
CLASSES = {"0": "background", "1": "spleen"}

METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20220324.json",
    "version": "0.3.1",
    "changelog": {"0.3.1": "tiny random test bundle"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "1.26.0",
    "required_packages_version": {"nibabel": "5.0.0"},
    "name": "Tiny spleen CT segmentation",
    "task": "Decathlon spleen segmentation",
    "description": "A randomly initialised 3D UNet laid out like the model zoo's spleen bundle",
    "authors": "Lightbox tests",
    "copyright": "Copyright (c) Lightbox tests",
    "license": "Apache-2.0",
    "data_source": "Task09_Spleen.tar from http://medicaldecathlon.com/",
    "data_type": "nibabel",
    "image_classes": "single channel data, intensity scaled to [0, 1]",
    "label_classes": "single channel data, 1 is spleen, 0 is everything else",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": ROI_SIZE, "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True, "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "spatial_shape": ROI_SIZE, "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True, "channel_def": CLASSES}},
    },
}

NETWORK_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
               "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"}

INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": NETWORK_DEF,
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": PIXDIM, "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164,
             "b_min": 0, "b_max": 1, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                   "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": ROI_SIZE, "sw_batch_size": 2, "overlap": 0.25},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "resample": False,
             "squeeze_end_dims": True, "separate_folder": False},
        ],
    },
    "checkpoint": "$torch.load(@bundle_root + '/models/model.pt', map_location=@device, weights_only=True)",
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$@network.load_state_dict(@checkpoint)",
                   "$@network.eval()"],
    # what SupervisedEvaluator does per batch (inferer, decollate, postprocessing), without pytorch-ignite
    "run": ["$[@postprocessing(d) for b in @dataloader for d in monai.data.decollate_batch("
            "{**b, 'pred': @inferer(b['image'].to(@device), @network)})]"],
}


def tiny_network(seed: int = 0, network_def: dict | None = None) -> torch.nn.Module:
    """NETWORK_DEF built by MONAI's config parser, with random weights and non-trivial norm statistics."""
    from monai.bundle import ConfigParser

    torch.manual_seed(seed)
    network_def = copy.deepcopy(network_def or NETWORK_DEF)
    net = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    with torch.no_grad():  # random running stats: eval-mode BatchNorm then does more than the identity
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        net.eval()
        # a confident last layer whose bias is centred, so both classes occur with clear probabilities
        # (a random net is unsure everywhere, or picks one class everywhere)
        last = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd) and m.bias is not None][-1]
        last.weight *= 20
        last.bias *= 20
        gen = torch.Generator().manual_seed(seed)
        logits = net(torch.rand((1, 1) + (16,) * network_def["spatial_dims"], generator=gen))[0]
        shift = float(torch.median(logits[1] - logits[0])) / 2
        last.bias[1] -= shift
        last.bias[0] += shift
    return net


def make_bundle(parent, name: str = "tiny_spleen_ct_segmentation", torchscript: bool = False,
                seed: int = 0, spatial_dims: int = 3) -> Path:
    """``parent/name``: configs/metadata.json, configs/inference.json, models/model.pt, docs/, LICENSE.

    ``torchscript``: the weights as ``models/model.ts`` only (ckpt_export), loaded by the config
    with torch.jit.load instead of the network definition and the state dict.
    """
    from monai.bundle import ckpt_export, init_bundle

    bundle = Path(parent) / name
    inference, metadata = copy.deepcopy(INFERENCE), copy.deepcopy(METADATA)
    if spatial_dims == 2:  # a 2D mammography lesion model of the same layout
        _two_d(inference, metadata)
    if torchscript:
        inference["network"] = "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)"
        inference.pop("checkpoint")
        inference["initialize"] = ["$monai.utils.set_determinism(seed=123)", "$@network.eval()"]
    init_bundle(bundle, network=tiny_network(seed, inference["network_def"]), metadata_str=metadata,
                inference_str=inference)
    (bundle / "LICENSE").write_text("Apache License 2.0 (test bundle)\n")
    # something the import must leave behind: an earlier run's outputs
    (bundle / "eval").mkdir()
    (bundle / "eval" / "old_output.nii.gz").write_bytes(b"not needed")
    if torchscript:
        configs = bundle / "configs"
        ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "model.ts"),
                    ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                    config_file=str(configs / "inference.json"), bundle_root=str(bundle))
        (bundle / "models" / "model.pt").unlink()
    return bundle


def _two_d(inference: dict, metadata: dict) -> None:
    inference["network_def"]["spatial_dims"] = 2
    inference["inferer"]["roi_size"] = ROI_SIZE[:2]
    for t in inference["preprocessing"]["transforms"]:
        if t["_target_"] == "Orientationd":
            t["axcodes"] = "RA"
        if t["_target_"] == "Spacingd":
            t["pixdim"] = [0.3, 0.3]
        if t["_target_"] == "ScaleIntensityRanged":
            t.update(a_min=0, a_max=4095)
    fmt = metadata["network_data_format"]
    fmt["inputs"]["image"].update(modality="MG", format="magnitude", spatial_shape=ROI_SIZE[:2])
    fmt["outputs"]["pred"].update(spatial_shape=ROI_SIZE[:2], channel_def={"0": "background", "1": "lesion"})


def zip_bundle(bundle: Path, zip_path, extra_members: dict[str, bytes] | None = None) -> Path:
    """The bundle as the model zoo ships it: one top folder inside a zip (plus any ``extra_members``)."""
    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(bundle).rglob("*")):
            if p.is_file():
                zf.write(p, f"{bundle.name}/{p.relative_to(bundle).as_posix()}")
        for member, data in (extra_members or {}).items():
            zf.writestr(member, data)
    return zip_path


def probability_config(bundle: Path, dest) -> Path:
    """The bundle's inference config with postprocessing that saves the softmax probabilities
    (no argmax), for comparing probabilities with MONAI's own run."""
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text())
    transforms = config["postprocessing"]["transforms"]
    config["postprocessing"]["transforms"] = [t for t in transforms if t["_target_"] != "AsDiscreted"]
    config["postprocessing"]["transforms"][-1]["output_postfix"] = "prob"
    dest = Path(dest)
    dest.write_text(json.dumps(config, indent=2))
    return dest
