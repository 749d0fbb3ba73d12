"""Channels-last weights where this machine runs a network faster with them, measured, not assumed.

Whether NHWC beats NCHW depends on the device, the library build and the network: on a 2-core CPU
the mammography classifiers run about 2.5x faster channels-last and the U-Nets no faster; cuDNN's
tensor-core kernels usually want channels-last under bf16/fp16. So, as inference.onnx_backend
does for ONNX Runtime, the choice is measured once per model version, device and library versions
(in the precision the app runs, on the probe input the app's calls resemble), cached, and taken only
when the outputs are the same in full precision and it is clearly faster. Only the weights change
layout: a convolution with channels-last weights makes channels-last outputs from any input.

LIGHTBOX_CHANNELS_LAST: "auto" (default, the measured choice), "0" (never), "1" (always, where the
network has convolutions of one dimensionality).
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn

from inference import measured
from inference.device import autocast

log = logging.getLogger(__name__)

SPEEDUP = 0.9  # channels-last must take at most this fraction of the contiguous time to be chosen
AGREEMENT = 1e-4  # max |diff| of probabilities between the layouts, in full precision
_CONV_2D = (nn.Conv2d, nn.ConvTranspose2d)
_CONV_3D = (nn.Conv3d, nn.ConvTranspose3d)


def setting() -> str:
    value = os.environ.get("LIGHTBOX_CHANNELS_LAST", "auto").strip().lower()
    if value in ("0", "no", "off", "false"):
        return "never"
    if value in ("1", "yes", "on", "true", "always"):
        return "always"
    return "auto"


def channels_last_format(module) -> torch.memory_format | None:
    """channels_last for a network of 2D convolutions, channels_last_3d for 3D ones; None for anything
    else (no convolutions, both kinds, TorchScript, an ONNX Runtime stand-in)."""
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return None
    convs = [m for m in module.modules() if isinstance(m, _CONV_2D + _CONV_3D)]
    two = any(isinstance(m, _CONV_2D) for m in convs)
    three = any(isinstance(m, _CONV_3D) for m in convs)
    if two == three:
        return None
    return torch.channels_last if two else torch.channels_last_3d


def layout_of(module) -> str:
    """'channels_last' when the module's convolution weights are, else 'contiguous'."""
    fmt = channels_last_format(module)
    if fmt is None:
        return "contiguous"
    weights = [m.weight for m in module.modules() if isinstance(m, _CONV_2D + _CONV_3D)]
    # a weight with size-1 dimensions is both at once: the others say which layout it is
    last = any(w.is_contiguous(memory_format=fmt) and not w.is_contiguous() for w in weights)
    return "channels_last" if last else "contiguous"


def _full_precision(device: torch.device):
    """fp32 without TF32 on CUDA: the layouts' outputs are compared where only summation order differs."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)
    return contextlib.nullcontext()


def measure(module: nn.Module, card, device, repeats: int = 3) -> dict:
    """{"contiguous_s", "channels_last_s", "ratio", "max_diff"} of ``module`` on ``device`` (timed under
    the app's autocast, compared in full precision). Leaves the module contiguous."""
    from inference.onnx_backend import as_probabilities, probe_input

    dev = torch.device(device)
    fmt = channels_last_format(module)
    x = probe_input(module, card).to(dev)
    module = module.to(dev).eval()

    def run(inp):
        with autocast(dev):
            return module(inp)

    try:
        with torch.inference_mode():
            with _full_precision(dev):
                ref = as_probabilities(module(x))
            t_contiguous = measured.median_seconds(run, x, repeats, dev)
            module.to(memory_format=fmt)
            with _full_precision(dev):
                got = as_probabilities(module(x))
            t_last = measured.median_seconds(run, x, repeats, dev)
    finally:
        module.to(memory_format=torch.contiguous_format)
    diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
    return {"contiguous_s": t_contiguous, "channels_last_s": t_last, "ratio": t_last / t_contiguous,
            "max_diff": diff}


def prefer_channels_last(record: dict) -> bool:
    """The rule: the same probabilities (AGREEMENT) and clearly faster (SPEEDUP)."""
    return record["max_diff"] < AGREEMENT and record["channels_last_s"] <= SPEEDUP * record["contiguous_s"]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _environment(device: torch.device, probe_shape) -> dict:
    env = {"device": _device_name(device), "torch": torch.__version__, "probe_shape": list(probe_shape)}
    if device.type == "cpu":
        env["threads"] = torch.get_num_threads()
    return env


def decision(module: nn.Module, card, device, repeats: int = 3) -> dict:
    """The cached measurement for this model, device and library versions, else a new one."""
    from inference.onnx_backend import probe_input

    dev = torch.device(device)
    env = _environment(dev, probe_input(module, card).shape)
    tag = "".join(c if c.isalnum() else "-" for c in env["device"])
    path = measured.cache_dir("layout") / f"{measured.model_stem(card)}-{tag}.json"
    record = measured.read_record(path, env)
    if record is None:
        m = measure(module, card, dev, repeats)
        record = {"model": f"{card.name} {card.version}", "environment": env, **m,
                  "layout": "channels_last" if prefer_channels_last(m) else "contiguous"}
        measured.write_record(path, record)
    return record


def fastest_layout(module, card, device="cpu", repeats: int = 3):
    """``module`` with channels-last weights where that is this machine's faster layout (see the module
    docstring); otherwise, and on any error on the way, unchanged. CPU and CUDA only (MPS's support
    of channels-last is partial)."""
    dev = torch.device(device)
    fmt = channels_last_format(module)
    how = setting()
    if fmt is None or how == "never" or dev.type not in ("cpu", "cuda"):
        return module
    try:
        if how == "always" or decision(module, card, dev, repeats)["layout"] == "channels_last":
            module.to(memory_format=fmt)
    except Exception as exc:  # noqa: BLE001 - a faster layout must never cost a result
        log.warning("model %s %s: channels-last not measured (%s: %s); kept contiguous",
                    getattr(card, "name", "?"), getattr(card, "version", "?"), exc.__class__.__name__, exc)
        module.to(memory_format=torch.contiguous_format)
    return module
