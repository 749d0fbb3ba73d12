"""Where inference runs: pick CUDA / MPS / CPU, mixed precision on GPUs, fall back to CPU on OOM.

Kept apart from the models so every runner (heatmap, segmentation, classification)
makes the same choice and reports the same errors.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(preference: str | torch.device | None = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for "auto"; an explicit choice must exist or we say so."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = (preference or "auto").strip().lower()
    kind = pref.split(":")[0]
    if kind not in DEVICES:
        raise DeviceError(f"unknown device {preference!r}; choose one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but no CUDA GPU is available "
                          "(torch built without CUDA or no driver); use --device cpu or auto")
    if kind == "mps" and not _mps_available():
        raise DeviceError("device 'mps' requested but Apple Metal (MPS) is not available; use cpu or auto")
    return torch.device(pref)


def model_device(model, device=None) -> torch.device:
    """`device` if given, else where the model's weights already are (no surprise copies)."""
    if device is not None:
        return pick_device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_setting() -> str:
    """LIGHTBOX_PRECISION: "auto" (default), or "fp32", "bf16", "fp16" on every device, the CPU too (to
    see on a CPU what a GPU's reduced precision does to the outputs: benchmarks/gpu_agreement.py)."""
    value = os.environ.get("LIGHTBOX_PRECISION", "auto").strip().lower()
    return value if value in PRECISIONS else "auto"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """fp16 on GPUs, None (full precision) on the CPU; or what LIGHTBOX_PRECISION says.

    fp16, not bf16: tensor cores run both at one speed, and fp16's 10-bit mantissa keeps outputs about
    10x closer to fp32 than bf16's 7 bits (CPU emulation, `benchmarks/gpu_agreement.py --device cpu
    --precision fp16|bf16`: lesion masks' Dice with fp32 0.9997 against 0.9911, heat maps within
    1.5e-3 against 1.8e-2, CT organ labels 99.99 % against 99.94 % the same).
    It is also what nnU-Net, MONAI's examples and torch's CUDA autocast use. Its one risk, values past
    65504, is caught by `in_precision`, which reruns such a pass in fp32."""
    device = torch.device(device)
    chosen = precision_setting()
    if chosen != "auto":
        return PRECISIONS[chosen]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return None


def autocast(device: torch.device | str):
    """Mixed-precision context on GPUs; a no-op on CPU, where fp32 is both exact and fastest (unless
    LIGHTBOX_PRECISION asks for a reduced precision there)."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def in_precision(fn: Callable[[], T], device: torch.device | str) -> T:
    """fn() under the device's autocast; again in full precision when fp16 overflowed, i.e. the result
    (a tensor) holds inf or NaN. One check of the finished result, not one per network call: a GPU
    then synchronises once."""
    with autocast(device):
        out = fn()
    if autocast_dtype(torch.device(device)) == torch.float16 and not bool(torch.isfinite(out).all()):
        out = fn()
    return out


def free_bytes(device: torch.device | str) -> int | None:
    """Free memory on a CUDA device (driver's view, other processes included); None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_cpu_fallback(fn: Callable[[torch.device], T], device: torch.device | str,
                          notify: Callable[[str], None] | None = None) -> T:
    """Run fn(device); if the GPU runs out of memory, say so and run fn(cpu) instead.

    A large exam on a small GPU should be slower, not fail. `notify` receives a
    sentence for the user (the UI status bar, the CLI's stderr); without it a
    RuntimeWarning is issued.
    """
    device = torch.device(device)
    try:
        return fn(device)
    except Exception as exc:
        if device.type == "cpu" or not _is_oom(exc):
            raise
        _tell(f"{device.type.upper()} ran out of memory ({str(exc).splitlines()[0][:120]}); "
              "retrying on the CPU, which is slower", notify)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return fn(torch.device("cpu"))


def halving_batch(fn: Callable[[int], T], batch: int, device: torch.device | str,
                  notify: Callable[[str], None] | None = None) -> T:
    """fn(batch); when the accelerator runs out of memory, fn(batch // 2), down to 1, then the error
    goes up (run_with_cpu_fallback then moves to the CPU). Fewer windows at a time cost a GPU a little
    speed; the CPU costs it most of it, so that comes last."""
    device = torch.device(device)
    while True:
        try:
            return fn(batch)
        except Exception as exc:
            if batch <= 1 or not _is_oom(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2
            _tell(f"{device.type.upper()} ran out of memory; retrying with {batch} window(s) at a time", notify)


def _tell(message: str, notify: Callable[[str], None] | None) -> None:
    """A retry the user should know of: to `notify` (status bar, CLI stderr), else a RuntimeWarning
    pointing at the caller of the function that retried."""
    if notify is not None:
        notify(message)
    else:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
