"""Fine-tuning an imported TorchScript file whose card the user described (task, spacing, patch,
normalisation): its parameters trained on the exported cases prepared as its runner prepares them.

TorchScript keeps parameters trainable unless the file was frozen (``torch.jit.freeze`` turns them
into constants): such a file, or one whose network ends in a softmax (card ``input.output``
"probabilities": Dice + cross-entropy trains logits), is refused by :func:`trainable`.

Preprocessing is :class:`inference.formats.described.DescribedRunner`'s own ``model_grid`` and
``model_input`` (resampling to the card's spacing, its normalisation); the label map is resampled
to that grid class by class (the largest share wins), as the demo models' fine-tuning does. The new
version is the trained module written with ``torch.jit.save``, read back by the TorchScript loader.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from inference.finetune_common import FinetuneError


def _read(path: Path):
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still what people export
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def trainable(card) -> str | None:
    if str((card.input or {}).get("output", "logits")) == "probabilities":
        return ("its card says the network outputs probabilities (a softmax inside the file); fine-tuning needs "
                "a network that outputs logits")
    try:
        module = _read(card.weights_path)
    except Exception as exc:  # torch.jit raises many kinds; name the file and why
        return f"{card.weights}: cannot be read as TorchScript ({exc.__class__.__name__})"
    if not any(p.requires_grad for p in module.parameters()):
        return ("the TorchScript file holds no trainable parameters (its weights are constants, as torch.jit.freeze "
                "leaves them); fine-tune the model where it was made and import it again")
    return None


class Training:
    """The described TorchScript side of fine-tuning (see :class:`inference.finetune_imported.Training`)."""

    pad_value = 0.0

    def __init__(self, card, device):
        from inference import formats

        self.card = card
        self.device = device
        self.runner = formats.load(card, device)  # sha256 checked; DescribedRunner around the module
        spec = self.runner.spec
        self.networks = [("network", self.runner.net)]
        patch = tuple(int(p) for p in spec.patch)
        self.squeeze = spec.dims == 2  # a 2D network: one slice of the (z, y, x) grid
        self.patch = (1, *patch) if self.squeeze else patch
        self.describe = (f"the card's preprocessing (spacing {list(spec.spacing) if spec.spacing else 'as given'}, "
                         f"normalisation {(card.normalization or {}).get('kind', 'none')}), random crops of "
                         f"{list(patch)}")

    def examples(self, cases) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from inference.preprocess import ct as ctp

        out = []
        n = len(self.card.classes)
        for case in cases:
            grid = self.runner.model_grid(case.image)
            try:
                x, _notes = self.runner.model_input(case.image, grid)
            except ValueError as exc:
                raise FinetuneError(f"{case.name}: {exc}") from exc
            onehot = torch.nn.functional.one_hot(torch.from_numpy(case.labels).long(), n)
            y = ctp.resample(onehot.permute(3, 0, 1, 2).to(torch.uint8), tuple(grid)).argmax(0).to(torch.uint8)
            out.append((x.float().cpu(), y))
        return out

    def runner_with(self, index: int, net: torch.nn.Module):
        self.runner.net = net
        return self.runner

    def write_weights(self, path: Path) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(self.runner.net.cpu(), str(path))
        self.runner.net.to(self.runner.device)
        return {}

    def load(self, card, path: Path):
        from inference.formats.torchscript_model import load_torchscript

        return load_torchscript(card, path, self.device)
