"""Fine-tuning an imported nnU-Net v2 model: each fold's network, rebuilt from the plans, trained on the
exported cases preprocessed exactly as the runner preprocesses them for inference.

Preprocessing is the runner's own ``preprocess`` (nnU-Net's DefaultPreprocessor: transpose, crop to
nonzero, the plans' normalisation, resampling to the target spacing); the label map goes through
the same transpose and crop and is resampled to the same shape class by class (linear, then the
class with the largest share, as nnU-Net's resize_segmentation thresholds each label at 0.5).
Crops are the plans' patch size in nnU-Net's transposed axes (a 2d configuration: one slice of it),
padded with 0 as nnU-Net's data loader pads.

Every fold of the card is fine-tuned in turn with the same settings (nnU-Net trains its folds
apart); the verdict judges their ensemble, as Analyze runs it. A fold's new weights are written as
``fold_N/checkpoint_final.pth``: the parent's checkpoint dict (init_args, trainer_name, mirroring axes,
its log) with ``network_weights`` replaced, read back with ``torch.load(weights_only=True)`` by the
runner (and by nnU-Net itself).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch

from inference.finetune_common import FinetuneError
from inference.formats import nnunet as nn_format


def trainable(card) -> str | None:
    info = (card.extra or {}).get("nnunet") or {}
    if info.get("region_based"):
        return ("its labels are regions (one sigmoid per region, overlapping); Lightbox fine-tunes one softmax "
                "class per label")
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError:
        return ("nnU-Net models need the dynamic-network-architectures package: "
                "pip install dynamic-network-architectures")
    return None


def labels_on_grid(labels: np.ndarray, props: dict, shape, transpose_forward, n_classes: int) -> np.ndarray:
    """A (z, y, x) label map through the preprocessing's transpose, crop and resampling to ``shape``."""
    lab = np.asarray(labels).transpose(transpose_forward)
    lab = lab[tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])]
    shape = tuple(int(s) for s in shape)
    if lab.shape == shape:
        return lab.astype(np.uint8)
    shares = [nn_format.resize((lab == k).astype(np.float32), shape, order=1) for k in range(n_classes)]
    return np.argmax(np.stack(shares), axis=0).astype(np.uint8)


class Training:
    """nnU-Net's side of fine-tuning (see :class:`inference.finetune_imported.Training`)."""

    pad_value = 0.0

    def __init__(self, card, device):
        from inference import formats

        self.card = card
        self.device = device
        self.runner = formats.load(card, device)  # sha256 checked; plans, dataset.json, folds read
        r = self.runner
        info = (card.extra or {}).get("nnunet") or {}
        self.folds = [str(f) for f in (card.input or {}).get("folds") or list(info.get("checkpoints") or {})]
        self.model_dir = info.get("model_dir") or ""
        self.networks = []
        for fold, (path, state) in zip(self.folds, r.weights):
            net = nn_format.build_network(r.cfg, r.channels, r.labels.num_heads, path)
            net.load_state_dict(state, strict=True)
            self.networks.append((f"fold {fold}", net.to(device)))
        patch = tuple(int(p) for p in r.patch_size)
        self.squeeze = len(patch) == 2  # a 2d configuration: one slice of the 3D preprocessed data
        self.patch = (1, *patch) if self.squeeze else patch
        self.describe = (f"nnU-Net {r.configuration_name} preprocessing (transpose {r.transpose_forward}, crop to "
                         f"nonzero, {', '.join(r.cfg['normalization_schemes'])}, spacing {r.cfg['spacing']}), "
                         f"random crops of patch {list(patch)} padded with 0")

    def examples(self, cases) -> list[tuple[torch.Tensor, torch.Tensor]]:
        r = self.runner
        out = []
        for case in cases:
            try:
                data, props = r.preprocess(case.image.array, case.image.spacing)
            except ValueError as exc:
                raise FinetuneError(f"{case.name}: {exc}") from exc
            y = labels_on_grid(case.labels, props, data.shape[1:], r.transpose_forward, len(r.labels.classes))
            out.append((torch.from_numpy(data), torch.from_numpy(y)))
        return out

    def runner_with(self, index: int, net: torch.nn.Module):
        """The parent's runner with one network: ``net`` alone (predict_logits loads nothing for one)."""
        one = copy.copy(self.runner)
        one.weights = [self.runner.weights[index]]
        one.network = net
        return one

    def write_weights(self, folder: Path) -> dict:
        root = folder / self.model_dir
        info = copy.deepcopy((self.card.extra or {}).get("nnunet") or {})
        checkpoints = dict(info.get("checkpoints") or {})
        for fold, (path, _state), (_name, net) in zip(self.folds, self.runner.weights, self.networks):
            parent = folder / checkpoints[fold] if fold in checkpoints else root / f"fold_{fold}" / path.name
            ck = dict(nn_format.read_checkpoint(parent))
            ck["network_weights"] = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
            target = root / f"fold_{fold}" / nn_format.CHECKPOINT_NAMES[0]
            staged = target.with_name(f".{target.name}.tmp")
            torch.save(ck, str(staged))  # then renamed: the parent's file may be memory-mapped by ck
            os.replace(staged, target)
            if parent != target:
                parent.unlink()  # its checkpoint_best.pth: the fine-tuned weights replace it
            checkpoints[fold] = target.relative_to(folder).as_posix()
        info["checkpoints"] = checkpoints
        return {"nnunet": info}

    def load(self, card, path: Path):
        return nn_format.load(card, path, self.device)
