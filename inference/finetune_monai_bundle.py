"""Fine-tuning an imported MONAI bundle: its network_def with the weights of models/model.pt, trained on
what the bundle's own inference preprocessing makes of the exported cases.

The training preprocessing IS the inference config's ``preprocessing``, parsed by MONAI's
ConfigParser as the runner parses it, with one change: steps that move pixels (loading, channel
first, orientation, spacing, crops and pads, type conversion) get the label map as a second key,
resampled with "nearest" where the step interpolates; intensity steps stay on the image alone. A
step that is neither (a Lambda, the bundle's own scripts) could do anything to a label map, so the
run is refused, naming it. Images and labels reach LoadImaged as NIfTI written by the runner's own
``write_input``, so training sees the grid inference sees.

The new weights replace models/model.pt in the parent's own checkpoint layout (a bare state dict,
or one under "model"/"state_dict"/..., "module." prefixes kept), which is what the bundle's
``checkpoint``/``initialize`` (and Lightbox's runner) load.
"""
from __future__ import annotations

import copy
import inspect
import pydoc
import tempfile
from pathlib import Path

import numpy as np
import torch

from inference.finetune_common import FinetuneError
from inference.formats import monai_bundle as mb
from inference.formats.base import NotImportable, VolumeImage

LABEL_KEY = "lightbox_label"
TRAINING_KEY = "lightbox_training_preprocessing"
# utility steps that only change the array's container or layout, never values or positions
LAYOUT_STEPS = {"EnsureChannelFirstd", "EnsureTyped", "ToTensord", "ToNumpyd", "CastToTyped", "AsChannelFirstd",
                "AsChannelLastd", "AddChanneld", "SqueezeDimd", "Identityd", "ToDeviced", "ToMetaTensord",
                "FromMetaTensord", "EnsureChannelFirstD", "EnsureTypeD", "ToTensorD"}


def trainable(card) -> str | None:
    info = (card.extra or {}).get("monai_bundle") or {}
    if str(info.get("weights", "")).endswith(".ts"):
        return ("the bundle ships its network as TorchScript (models/model.ts) without a network_def and "
                "state dict to train; fine-tune a bundle that has models/model.pt")
    return None


# --------------------------------------------------------------------------
# the bundle's preprocessing, with the label map carried along
# --------------------------------------------------------------------------
def _component(target: str):
    """The class a ``_target_`` names (short MONAI name or dotted path), or None."""
    if "." in target:
        return pydoc.locate(target)
    modules = mb._locator().get_component_module_name(target)
    if isinstance(modules, list):
        modules = modules[0] if modules else None
    return pydoc.locate(f"{modules}.{target}") if modules else None


def step_kind(target: str) -> str | None:
    """"intensity" (image only), "spatial" (both, interpolating), "layout" (both) or None (unknown)."""
    cls = _component(str(target))
    module = getattr(cls, "__module__", "") or ""
    name = mb._short(target)
    if module.startswith("monai.transforms.intensity"):
        return "intensity"
    if module.startswith("monai.transforms.spatial"):
        return "spatial"
    if module.startswith(("monai.transforms.croppad", "monai.transforms.io")):
        return "layout"
    if module.startswith("monai.transforms.utility") and name in LAYOUT_STEPS:
        return "layout"
    return None


def _mode_default(cls) -> object:
    try:
        param = inspect.signature(cls.__init__).parameters.get("mode")
    except (TypeError, ValueError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def training_steps(config: dict, input_key: str, where) -> list[dict]:
    """The preprocessing transforms of ``config`` rewritten to carry ``LABEL_KEY`` where pixels move."""
    out = []
    for step in mb.transforms_of(config, "preprocessing"):
        target = str(step.get("_target_"))
        if mb._short(target) in mb.SAVE_TRANSFORMS:
            continue
        keys = mb._literal(config, step.get("keys"))
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list):
            raise FinetuneError(f"{where}: preprocessing step {mb._short(target)} names no literal keys; Lightbox "
                                "cannot tell whether it must also move the label map")
        step = copy.deepcopy(step)
        if input_key in keys:
            kind = step_kind(target)
            if kind is None:
                shown = target if "." in target else mb.qualified_name(target)
                raise FinetuneError(f"{where}: preprocessing step {shown} "
                                    "is neither an intensity nor a spatial MONAI transform; Lightbox cannot tell "
                                    "what it would do to a label map, so it cannot make training data the way the "
                                    "bundle's inference prepares images")
            if kind != "intensity":
                step["keys"] = [*keys, LABEL_KEY]
                default = _mode_default(_component(target))
                if kind == "spatial" and default is not None:
                    mode = step.get("mode", default)
                    modes = list(mode) if isinstance(mode, (list, tuple)) and len(keys) > 1 else [mode] * len(keys)
                    step["mode"] = [*modes, "nearest"]
        out.append(step)
    return out


class Training:
    """The bundle's side of fine-tuning (see :class:`inference.finetune_imported.Training`)."""

    squeeze = False

    def __init__(self, card, device):
        from inference import formats

        self.card = card
        self.runner = formats.load(card, device)  # sha256 checked; network_def + models/model.pt
        self.device = device
        info = dict((card.extra or {}).get("monai_bundle") or {})
        self.weights = info.get("weights") or "models/model.pt"
        parser, _meta, config_path = mb.read_bundle(card.weights_path, info.get("config"))
        config = {k: v for k, v in parser.get().items() if k != parser.meta_key}
        self._check_outputs(config, info, config_path)
        steps = training_steps(config, self.runner.input_key, config_path.name)
        parser["bundle_root"] = str(card.weights_path)
        if "device" in config:
            parser["device"] = torch.device(device)
        parser[TRAINING_KEY] = {"_target_": "Compose", "transforms": steps}
        try:
            with mb._bundle_importable(card.weights_path):
                self.preprocessing = parser.get_parsed_content(TRAINING_KEY)
        except Exception as exc:  # the bundle's own code failing while being built
            raise FinetuneError(f"{config_path}: cannot build its preprocessing for training data: "
                                f"{exc.__class__.__name__}: {exc}") from exc
        self.networks = [("network", self.runner.network)]
        patch = (card.input or {}).get("patch_size")
        self.patch = tuple(int(p) for p in reversed(patch)) if patch else None  # MONAI's axes (x, y, z)
        self.pad_value = 0.0
        self.describe = ("the bundle's inference preprocessing (" + ", ".join(mb._short(s["_target_"]) for s in steps)
                         + "), label map carried by its spatial steps; random crops of the inferer's roi_size")

    def _check_outputs(self, config: dict, info: dict, where: Path) -> None:
        """Softmax over one channel per class is what Dice + cross-entropy trains."""
        n_classes = len(self.card.classes)
        out_channels = mb._literal(config, (config.get("network_def") or {}).get("out_channels"))
        if isinstance(out_channels, int) and out_channels != n_classes:
            raise FinetuneError(f"{where}: network_def has {out_channels} output channel(s) for {n_classes} classes; "
                                "Lightbox fine-tunes one softmax channel per class")
        for step in mb.transforms_of(config, "postprocessing"):
            if mb._short(step.get("_target_")) in ("Activationsd", "Activations") and \
                    mb._literal(config, step.get("sigmoid")) is True:
                raise FinetuneError(f"{where}: the bundle's outputs are sigmoids (one per region); Lightbox "
                                    "fine-tunes one softmax channel per class")

    def examples(self, cases) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        with tempfile.TemporaryDirectory(prefix="lightbox-finetune-") as tmp:
            for i, case in enumerate(cases):
                folder = Path(tmp) / str(i)
                folder.mkdir()
                image = self.runner.write_input(case.image, folder, "image")
                label = VolumeImage(case.labels.astype(np.float32), case.image.spacing, case.image.origin,
                                    case.image.direction)
                (label_path,) = self.runner.write_input(label, folder, "label")
                try:
                    data = self.preprocessing({self.runner.input_key: image[0] if len(image) == 1 else image,
                                               LABEL_KEY: label_path})
                except Exception as exc:  # a transform failing on this case: name it and the innermost reason
                    inner = exc
                    while inner.__cause__ is not None:
                        inner = inner.__cause__
                    raise FinetuneError(f"{case.name}: the bundle's preprocessing failed on it: "
                                        f"{inner.__class__.__name__}: {inner}") from exc
                x = torch.as_tensor(np.asarray(data[self.runner.input_key]), dtype=torch.float32)
                y = torch.as_tensor(np.rint(np.asarray(data[LABEL_KEY])[0])).clamp_(0, len(self.card.classes) - 1)
                out.append((x, y.to(torch.uint8)))
        return out

    def runner_with(self, index: int, net: torch.nn.Module):
        self.runner.network = net  # the runner's own network is the one being trained
        return self.runner

    def write_weights(self, folder: Path) -> dict:
        path = folder / self.weights
        try:
            original = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FinetuneError(f"{path}: cannot read the parent's checkpoint ({exc})") from exc
        state = {k: v.detach().to("cpu").clone() for k, v in self.runner.network.state_dict().items()}
        torch.save(with_state(original, state, path), str(path))
        return {}

    def load(self, card, path: Path):
        return mb.load(card, path, self.device)


def with_state(original, state: dict, path: Path):
    """``original`` (a checkpoint) with its network weights replaced by ``state``, in its own layout."""
    for key in ("model", "state_dict", "network", "net", "model_state_dict"):
        if isinstance(original, dict) and isinstance(original.get(key), dict):
            return {**original, key: with_state(original[key], state, path)}
    try:
        old = mb.state_dict_of(original, path)
    except NotImportable as exc:
        raise FinetuneError(str(exc)) from exc
    if set(old) != set(state):
        raise FinetuneError(f"{path}: the trained network's weights do not match the parent's checkpoint")
    prefix = "module." if original and all(str(k).startswith("module.") for k in original) else ""
    return {prefix + k: v for k, v in state.items()}
