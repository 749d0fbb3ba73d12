"""ONNX Runtime as a second engine: run an ONNX graph where a torch module is expected.

`OrtModule` takes torch tensors and returns torch tensors, so inference.segment.sliding_window,
inference.heatmap and inference.classify use it unchanged. `accelerate` swaps a shipped demo
model's torch module for an ONNX Runtime one on the CPU only when a measurement on this machine
says it is faster and gives the same probabilities; the export and the measurement are cached
per model version and weights (``$XDG_CACHE_HOME/lightbox/onnx``), and any failure leaves the
torch module in place: a faster engine must never cost a result.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

AGREEMENT = 1e-4  # max |diff| of probabilities for the two engines to count as the same model
SPEEDUP = 0.9  # ONNX Runtime must take at most this fraction of torch's time to be chosen
_KEPT_ATTRIBUTES = ("patch_size", "stride", "num_classes")  # what heatmap/classify read off a module


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def providers_for(device) -> list[str]:
    """CUDA first when the device is a CUDA GPU and this onnxruntime build has it; CPU always."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtModule:
    """An ONNX model called like a torch module: (N, C, *spatial) tensor in, first output out.

    ``to``/``eval`` return the module itself (it holds no parameters), so code written for
    nn.Modules (``model.to(device).eval()``) runs it unchanged; outputs land on the device of the
    input. A graph whose batch size is fixed gets its batch one item at a time.
    """

    def __init__(self, model, device="cpu", threads: int | None = None, attributes: dict | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        source = str(model) if isinstance(model, (str, Path)) else model
        self.session = ort.InferenceSession(source, opts, providers=providers_for(device))
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.output_name = self.session.get_outputs()[0].name
        self.fixed_batch = self.input_shape[0] if self.input_shape and isinstance(self.input_shape[0], int) else None
        self.device = torch.device(device)
        self.training = False
        for key, value in (attributes or {}).items():
            setattr(self, key, value)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        if self.fixed_batch is not None and arr.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ValueError(f"the ONNX model takes batches of exactly {self.fixed_batch}, got {arr.shape[0]}")
            out = np.concatenate([self._run(arr[i:i + 1]) for i in range(arr.shape[0])])
        else:
            out = self._run(arr)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    forward = __call__

    def to(self, *args, **kwargs) -> OrtModule:
        return self

    def eval(self) -> OrtModule:
        return self

    def train(self, mode: bool = True) -> OrtModule:
        if mode:
            raise RuntimeError("an ONNX Runtime model cannot be trained; fine-tune the torch model")
        return self

    def parameters(self):
        return iter(())

    def __repr__(self) -> str:
        return f"OrtModule({self.input_name}{self.input_shape}, providers={self.providers})"


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def export(module, example_input: torch.Tensor, path, *, dynamo: bool = True, opset: int | None = None) -> Path:
    """Write ``module`` as ONNX with a free batch and free spatial sizes; the file appears whole or
    not at all. torch's current exporter (torch.export based) first; the TorchScript-based one when
    that fails. Both are checked by loading the result with onnx."""
    import onnx

    path = Path(path)
    module = module.eval()
    nd = example_input.ndim
    tmp = _atomic_target(path)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                if not dynamo:
                    raise RuntimeError("TorchScript-based exporter asked for")
                shapes = {0: torch.export.Dim("batch", min=1, max=1024)}
                shapes.update({i: torch.export.Dim.AUTO for i in range(2, nd)})
                torch.onnx.export(module, (example_input,), str(tmp), input_names=["image"], output_names=["output"],
                                  dynamic_shapes=(shapes,), dynamo=True, opset_version=opset, verbose=False,
                                  optimize=True, external_data=False)
            except Exception as exc:
                if dynamo:
                    log.info("torch.export-based ONNX export failed (%s); using the TorchScript-based one", exc)
                with torch.inference_mode():
                    out_nd = module(example_input).ndim
                axes = {"image": {0: "batch", **{i: f"in{i}" for i in range(2, nd)}},
                        "output": {0: "batch", **{i: f"out{i}" for i in range(2, out_nd)}}}
                torch.onnx.export(module, (example_input,), str(tmp), input_names=["image"], output_names=["output"],
                                  dynamic_axes=axes, dynamo=False,
                                  opset_version=opset or 17)
        onnx.checker.check_model(onnx.load(str(tmp), load_external_data=False))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


# --------------------------------------------------------------------------
# the measured choice
# --------------------------------------------------------------------------
def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lightbox" / "onnx"


def cached_onnx(card) -> Path:
    safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in f"{card.name}-{card.version}")
    return cache_dir() / f"{safe}-{(card.sha256 or 'nosha')[:12]}.onnx"


def _in_channels(module, card) -> int:
    for m in getattr(module, "modules", lambda: [])():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return int(m.in_channels)
    return int((card.arch_kwargs or {}).get("in_channels") or (card.input or {}).get("channels") or 1)


def probe_input(module, card, seed: int = 0) -> torch.Tensor:
    """An input the size the app feeds this model: a batch of sliding windows for a U-Net, a
    prepared breast (512 x 384 px at model spacing) for the mammography patch and exam networks."""
    g = torch.Generator().manual_seed(seed)
    c = _in_channels(module, card)
    patch = (card.input or {}).get("patch_size")
    if card.task in ("segmentation-3d", "segmentation-2d") and isinstance(patch, (list, tuple)):
        return torch.randn((4, c, *(int(p) for p in patch)), generator=g)
    return torch.randn((1, c, 512, 384), generator=g)


def as_probabilities(y: torch.Tensor) -> torch.Tensor:
    """What the app reads from an output: softmax over classes, sigmoid of a single logit."""
    y = y.float()
    if y.ndim >= 2 and y.shape[1] > 1:
        return torch.softmax(y, dim=1)
    return torch.sigmoid(y)


def _median_seconds(fn, x, repeats: int) -> float:
    fn(x)  # warm-up: first calls allocate and (ONNX Runtime) plan
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(module, ort_module: OrtModule, x: torch.Tensor, repeats: int = 3) -> dict:
    """{"torch_s", "ort_s", "ratio" (ort / torch), "max_diff" (probabilities)} on one input."""
    with torch.inference_mode():
        ref = as_probabilities(module(x))
        got = as_probabilities(ort_module(x))
        diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
        t_torch = _median_seconds(module, x, repeats)
    t_ort = _median_seconds(ort_module, x, repeats)
    return {"torch_s": t_torch, "ort_s": t_ort, "ratio": t_ort / t_torch, "max_diff": diff}


def prefer_ort(measure: dict) -> bool:
    """The rule: same probabilities (max |diff| < AGREEMENT) and clearly faster (SPEEDUP)."""
    return measure["max_diff"] < AGREEMENT and measure["ort_s"] <= SPEEDUP * measure["torch_s"]


def _environment() -> dict:
    import onnxruntime as ort

    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort.__version__}


def _decision(card, module, onnx_path: Path, repeats: int) -> dict:
    """The cached measurement for this machine's thread count and library versions, else a new one."""
    record_path = onnx_path.with_suffix(".json")
    env = _environment()
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("environment") == env:
            return record
    x = probe_input(module, card)
    ort_module = OrtModule(onnx_path, "cpu")
    measure = compare(module, ort_module, x, repeats)
    record = {"model": f"{card.name} {card.version}", "environment": env, "probe_shape": list(x.shape),
              **measure, "backend": "onnxruntime" if prefer_ort(measure) else "torch"}
    tmp = _atomic_target(record_path)
    try:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, record_path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return record


def accelerate(module, card, device="cpu", *, differentiable: bool = False, repeats: int = 3):
    """``module`` or an ONNX Runtime equivalent, whichever this machine runs faster on the CPU with
    the same probabilities. The torch module stays for GPUs, for callers that need gradients
    (Grad-CAM: ``differentiable=True``), without onnxruntime, and on any error on the way."""
    if torch.device(device).type != "cpu" or differentiable or not available() or not isinstance(module, torch.nn.Module):
        return module
    try:
        onnx_path = cached_onnx(card)
        if not onnx_path.exists():
            export(module, probe_input(module, card)[:2], onnx_path)
        record = _decision(card, module, onnx_path, repeats)
        if record.get("backend") != "onnxruntime":
            return module
        attributes = {k: getattr(module, k) for k in _KEPT_ATTRIBUTES if hasattr(module, k)}
        return OrtModule(onnx_path, "cpu", attributes=attributes)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional engine keeps torch
        log.warning("model %s %s: ONNX Runtime not used (%s: %s)", card.name, card.version,
                    exc.__class__.__name__, exc)
        return module
