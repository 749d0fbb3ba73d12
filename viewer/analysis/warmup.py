"""Make the first Analyze as fast as the second: load and run the models before the user asks.

A fresh process pays, on its first Analyze, for importing the network code (MONAI alone takes
seconds), reading and verifying the weights, starting CUDA and letting cuDNN pick its kernels.
None of that depends on the study, so the app does it in the background at start (a setting,
on by default) while the user is reading: every model Analyze would pick is loaded through
``run.load`` (its per-process cache, so the real run reuses it) and run once on the input the
app's calls resemble (``onnx_backend.probe_input``). Nothing here raises: a model that cannot be loaded is reported and
left for Analyze to explain.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

StopCheck = Callable[[], bool]


@dataclass
class WarmUp:
    """What a warm-up did: seconds per step, models made ready, problems met (none fatal)."""

    device: str = ""
    steps: dict[str, float] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def seconds(self) -> float:
        return float(sum(self.steps.values()))

    def summary(self) -> str:
        if self.stopped:
            return "AI warm-up stopped"
        if not self.ready:
            return "AI warm-up: no model to prepare" + (f" ({self.problems[0]})" if self.problems else "")
        return f"AI models ready on {self.device} in {self.seconds:.1f} s ({', '.join(self.ready)})"


def _timed(report: WarmUp, step: str, fn):
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        report.steps[step] = report.steps.get(step, 0.0) + time.perf_counter() - t0


def _run_once(module, card, device) -> None:
    """One forward pass at inference settings on the input the app's calls resemble (the one the
    layout and ONNX decisions time): CUDA kernels chosen, ONNX/oneDNN sessions primed."""
    import torch

    from inference.device import autocast
    from inference.onnx_backend import probe_input

    x = probe_input(module, card).to(device)
    with torch.inference_mode(), autocast(device):
        module(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synthetic_view(size=(3328, 2560)) -> np.ndarray:
    """A full-field detector-sized 'breast': a bright half-ellipse on the chest-wall edge, 12-bit."""
    rows, cols = np.ogrid[:size[0], :size[1]]
    inside = ((rows - size[0] / 2) / (0.42 * size[0])) ** 2 + (cols / (0.6 * size[1])) ** 2 < 1
    return np.where(inside, 2300, 300).astype(np.uint16)


def _first_view(loaded: dict, device) -> None:
    """One whole view at detector size through what Analyze does per view (classifiers, maps on the
    source grid, lesion U-Net, density): the first full-size allocations, ONNX Runtime's and oneDNN's
    plans for real sizes and the lazily imported SciPy are paid here, not by the user."""
    from inference.classify import analyze_view
    from inference.segment import segment_image

    from .run import NOT_FINDINGS, density_entry

    image, spacing = synthetic_view(), (0.07, 0.07)
    (patch, patch_card), exam = loaded["patch-classifier"], loaded["exam-classifier"][0]
    va = analyze_view("LCC", image, spacing, patch, patch_card, exam, "left", device, True)
    for cls in patch_card.classes:
        if cls.lower() not in NOT_FINDINGS:
            va.heatmap_on_source(cls)
    va.cam_on_source()
    seg = loaded.get("segmentation-2d")
    if seg is not None and not seg[1].imported:
        segment_image(seg[0], seg[1], image, spacing, "L", "CC", device=device, chest_wall="left",
                      prepared=va.prepared)
    density_entry(image, spacing, "LCC", "left")


def roles(modalities=("MG", "CT")) -> list[tuple[str, str]]:
    """(task, modality) of every model Analyze may pick for these modalities."""
    from .run import MAMMO_ROLES

    out: list[tuple[str, str]] = []
    for modality in modalities:
        if modality.upper() == "MG":
            out += [(task, "MG") for _role, task in MAMMO_ROLES]
        else:
            out.append(("segmentation-3d", modality.upper()))
    return out


def warm_up(device: str = "auto", modalities=("MG", "CT"), should_stop: StopCheck | None = None) -> WarmUp:
    """Load (once per process, through ``run.load``) and run once every model Analyze would pick."""
    from . import run

    report = WarmUp()
    try:
        dev = _timed(report, "device", lambda: run.resolve_device(device))
        report.device = dev
        if dev.startswith("cuda"):
            import torch

            _timed(report, "CUDA context", lambda: (torch.zeros(1, device=dev) + 1).cpu())
    except Exception as exc:  # noqa: BLE001 - a warm-up never stops the app; Analyze will say it
        report.problems.append(f"device: {exc}")
        return report
    mammo: dict = {}
    for task, modality in roles(modalities):
        if should_stop is not None and should_stop():
            report.stopped = True
            return report
        try:
            card = _timed(report, "choose models", lambda t=task, m=modality: run.pick_card(t, m))
            if card is None:
                continue
            module, card = _timed(report, "load weights", lambda c=card: run.load(c, dev))
            if not card.imported:  # imported runners take whole images, not a probe tensor
                _timed(report, "first pass", lambda: _run_once(module, card, dev))
            if modality == "MG":
                mammo[task] = (module, card)
            report.ready.append(run.model_id(card))
        except Exception as exc:  # noqa: BLE001 - reported; Analyze meets the same model and explains
            report.problems.append(f"{task} {modality}: {exc.__class__.__name__}: {exc}")
    if "patch-classifier" in mammo and "exam-classifier" in mammo and not (should_stop and should_stop()):
        try:
            _timed(report, "full-size view", lambda: _first_view(mammo, dev))
        except Exception as exc:  # noqa: BLE001 - as above
            report.problems.append(f"full-size mammogram pass: {exc.__class__.__name__}: {exc}")
    return report
