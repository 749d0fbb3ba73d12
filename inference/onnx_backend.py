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
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from inference import measured
from inference.measured import atomic_target

log = logging.getLogger(__name__)

AGREEMENT = 1e-4  # max |diff| of probabilities for the two engines to count as the same model
EMBEDDING_AGREEMENT = 1e-3  # max |diff| of the pooled domain embedding, relative to its largest value
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


TAP_KEY = "lightbox.tap"  # ONNX metadata: the torch layer whose output the graph's second output is


class _Handle:
    def __init__(self, hooks: dict, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class LayerTap:
    """Stands in for the torch layer an exported graph also returns (the domain check's embedding):
    forward hooks registered on it see that output after every call, as on the torch layer."""

    def __init__(self, name: str):
        self.name = name
        self._hooks: dict[int, object] = {}
        self._next = 0

    def register_forward_hook(self, hook) -> _Handle:
        self._next += 1
        self._hooks[self._next] = hook
        return _Handle(self._hooks, self._next)

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def fire(self, x: torch.Tensor, output: torch.Tensor) -> None:
        for hook in list(self._hooks.values()):
            hook(self, (x,), output)


class OrtModule:
    """An ONNX model called like a torch module: (N, C, *spatial) tensor in, first output out.

    ``to``/``eval`` return the module itself (it holds no parameters), so code written for
    nn.Modules (``model.to(device).eval()``) runs it unchanged; outputs land on the device of the
    input. A graph whose batch size is fixed gets its batch one item at a time. A graph exported
    with ``export(..., tap=layer)`` also returns that layer's output, and ``get_submodule(layer)``
    gives a LayerTap whose hooks see it, so inference.domain's FeatureWatch works unchanged.
    """

    def __init__(self, model, device="cpu", threads: int | None = None, attributes: dict | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        source = str(model) if isinstance(model, (str, Path)) else model
        try:
            self.session = ort.InferenceSession(source, opts, providers=providers_for(device))
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph / NoSuchFile are plain Exceptions
            where = source if isinstance(source, str) else "the ONNX model"
            raise ValueError(f"{where}: ONNX Runtime cannot load it "
                             f"({str(exc).strip().splitlines()[-1][:300]})") from exc
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = outputs[0]
        tap = self.session.get_modelmeta().custom_metadata_map.get(TAP_KEY)
        self.tap = LayerTap(tap) if tap and len(outputs) > 1 else None
        self._tap_output = outputs[1] if self.tap else None
        self.fixed_batch = self.input_shape[0] if self.input_shape and isinstance(self.input_shape[0], int) else None
        self.device = torch.device(device)
        self.training = False
        for key, value in (attributes or {}).items():
            setattr(self, key, value)

    def _run(self, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
        try:
            return self._run_batches(x, names)
        except Exception as exc:  # onnxruntime's own errors derive from Exception only
            if type(exc).__module__.startswith("onnxruntime"):
                raise RuntimeError(f"ONNX Runtime failed on input {list(x.shape)}: "
                                   f"{str(exc).strip().splitlines()[-1][:300]}") from exc
            raise

    def _run_batches(self, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ValueError(f"the ONNX model takes batches of exactly {self.fixed_batch}, got {x.shape[0]}")
            parts = [self.session.run(names, {self.input_name: x[i:i + 1]}) for i in range(x.shape[0])]
            return [np.concatenate(p) for p in zip(*parts)]
        return self.session.run(names, {self.input_name: x})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        tapped = self.tap is not None and self.tap.active
        outs = self._run(arr, [self.output_name] + ([self._tap_output] if tapped else []))
        out = torch.from_numpy(np.asarray(outs[0], dtype=np.float32)).to(x.device)
        if tapped:
            self.tap.fire(x, torch.from_numpy(np.asarray(outs[1], dtype=np.float32)))
        return out

    forward = __call__

    def named_modules(self):
        yield "", self
        if self.tap is not None:
            yield self.tap.name, self.tap

    def get_submodule(self, name: str):
        if not name:
            return self
        if self.tap is not None and name == self.tap.name:
            return self.tap
        raise AttributeError(f"the ONNX Runtime model exposes no layer {name!r}"
                             + (f" (only {self.tap.name!r})" if self.tap else ""))

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
class _Tapped(torch.nn.Module):
    """``net`` returning (its output, the output of its layer ``name``) for export."""

    def __init__(self, net, name: str):
        super().__init__()
        self.net = net
        self._seen: list[torch.Tensor] = []
        net.get_submodule(name).register_forward_hook(lambda _m, _i, out: self._seen.append(out))

    def forward(self, x):
        self._seen.clear()
        y = self.net(x)
        return y, self._seen[-1]


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter logs a line per torchvision operator it cannot find; nothing a user can act on."""
    import logging

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export(module, example_input: torch.Tensor, path, *, tap: str | None = None, dynamo: bool = True,
           opset: int | None = None) -> Path:
    """Write ``module`` as ONNX with a free batch and free spatial sizes; the file appears whole or
    not at all. torch's current exporter (torch.export based) first; the TorchScript-based one when
    that fails. ``tap`` names a layer whose output the graph returns second (recorded in its
    metadata; see OrtModule). The result is checked by loading it with onnx."""
    import copy

    import onnx

    path = Path(path)
    module = module.eval()
    if tap:
        module = _Tapped(copy.deepcopy(module), tap).eval()
    names = ["output", "embedding"] if tap else ["output"]
    nd = example_input.ndim
    tmp = atomic_target(path)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporter():
            warnings.simplefilter("ignore")
            try:
                if not dynamo:
                    raise RuntimeError("TorchScript-based exporter asked for")
                shapes = {0: torch.export.Dim("batch", min=1, max=1024)}
                shapes.update({i: torch.export.Dim.AUTO for i in range(2, nd)})
                torch.onnx.export(module, (example_input,), str(tmp), input_names=["image"], output_names=names,
                                  dynamic_shapes=(shapes,), dynamo=True, opset_version=opset, verbose=False,
                                  optimize=True, external_data=False)
            except Exception as exc:
                if dynamo:
                    log.info("torch.export-based ONNX export failed (%s); using the TorchScript-based one", exc)
                with torch.inference_mode():
                    outs = module(example_input)
                outs = outs if isinstance(outs, tuple) else (outs,)
                axes = {"image": {0: "batch", **{i: f"in{i}" for i in range(2, nd)}}}
                for name, out in zip(names, outs):
                    axes[name] = {0: "batch", **{i: f"{name}{i}" for i in range(2, out.ndim)}}
                torch.onnx.export(module, (example_input,), str(tmp), input_names=["image"], output_names=names,
                                  dynamic_axes=axes, dynamo=False,
                                  opset_version=opset or 17)
        model = onnx.load(str(tmp), load_external_data=False)
        onnx.checker.check_model(model)
        if tap:
            entry = model.metadata_props.add()
            entry.key, entry.value = TAP_KEY, tap
            onnx.save(model, str(tmp))
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
    """Beside the app's other caches: $LIGHTBOX_CACHE_DIR/onnx, else $XDG_CACHE_HOME/lightbox/onnx."""
    return measured.cache_dir("onnx")


def wanted() -> bool:
    """LIGHTBOX_ONNXRUNTIME=0 keeps every model on torch (default: the measured choice)."""
    return os.environ.get("LIGHTBOX_ONNXRUNTIME", "auto").strip().lower() not in ("0", "no", "off", "false")


def cached_onnx(card) -> Path:
    return cache_dir() / f"{measured.model_stem(card)}.onnx"


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


def _pooled(output: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and spread over space: what the domain check keeps of an embedding."""
    o = output.detach().float().flatten(2)
    return torch.cat([o.mean(dim=2), o.std(dim=2) if o.shape[-1] > 1 else torch.zeros_like(o[..., 0])], dim=1)


def compare(module, ort_module: OrtModule, x: torch.Tensor, repeats: int = 3) -> dict:
    """{"torch_s", "ort_s", "ratio" (ort / torch), "max_diff" (probabilities), and with a tapped
    graph "embedding_diff" (pooled embedding, relative to its largest value)} on one input. Both
    engines are timed with the embedding watched, as an analysis with a domain check runs them."""
    seen: dict[str, list] = {"torch": [], "ort": []}
    handles = []
    if ort_module.tap is not None:
        handles = [module.get_submodule(ort_module.tap.name).register_forward_hook(
                       lambda _m, _i, out: seen["torch"].append(_pooled(out))),
                   ort_module.tap.register_forward_hook(lambda _m, _i, out: seen["ort"].append(_pooled(out)))]
    try:
        with torch.inference_mode():
            ref = as_probabilities(module(x))
            got = as_probabilities(ort_module(x))
            diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
            measure = {"max_diff": diff}
            if handles:
                a, b = seen["torch"][0], seen["ort"][0]
                measure["embedding_diff"] = (float((a - b).abs().max() / max(1.0, float(a.abs().max())))
                                             if a.shape == b.shape else float("inf"))
            t_torch = measured.median_seconds(module, x, repeats)
        t_ort = measured.median_seconds(ort_module, x, repeats)
    finally:
        for h in handles:
            h.remove()
    return {"torch_s": t_torch, "ort_s": t_ort, "ratio": t_ort / t_torch, **measure}


def prefer_ort(measure: dict) -> bool:
    """The rule: same probabilities (max |diff| < AGREEMENT), the same embedding for the domain
    check (EMBEDDING_AGREEMENT, relative) and clearly faster (SPEEDUP)."""
    return (measure["max_diff"] < AGREEMENT and measure.get("embedding_diff", 0.0) < EMBEDDING_AGREEMENT
            and measure["ort_s"] <= SPEEDUP * measure["torch_s"])


def _environment(module) -> dict:
    """What the measurement depends on; the torch side's layout too (inference.layout may have made it
    channels-last, which changes its speed)."""
    import onnxruntime as ort

    from inference.layout import layout_of

    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort.__version__,
            "torch_layout": layout_of(module)}


def _decision(card, module, onnx_path: Path, repeats: int) -> dict:
    """The cached measurement for this machine's thread count and library versions, else a new one."""
    record_path = onnx_path.with_suffix(".json")
    env = _environment(module)
    record = measured.read_record(record_path, env)
    if record is not None:
        return record
    x = probe_input(module, card)
    ort_module = OrtModule(onnx_path, "cpu")
    measure = compare(module, ort_module, x, repeats)
    record = {"model": f"{card.name} {card.version}", "environment": env, "probe_shape": list(x.shape),
              "tap": ort_module.tap.name if ort_module.tap else None,
              **measure, "backend": "onnxruntime" if prefer_ort(measure) else "torch"}
    measured.write_record(record_path, record)
    return record


def embedding_tap(card, module) -> str | None:
    """The layer the domain check watches (inference.domain), exported as a second output so the
    check runs on ONNX Runtime too; None when the model has none."""
    try:
        from inference.domain import embedding_layer_name

        name = embedding_layer_name(card, module)
        module.get_submodule(name)
        return name
    except Exception:  # noqa: BLE001 - DomainError, AttributeError: no embedding to watch
        return None


def exported_tap(path: Path) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == TAP_KEY), None)


def accelerate(module, card, device="cpu", *, differentiable: bool = False, repeats: int = 3):
    """``module`` or an ONNX Runtime equivalent, whichever this machine runs faster on the CPU with
    the same probabilities and the same domain-check embedding (the watched layer is exported as a
    second output; ``inference.domain.watch`` hooks it through OrtModule). The torch module stays
    for GPUs, for callers that need gradients (Grad-CAM: ``differentiable=True``), without
    onnxruntime, and on any error on the way. The first call per model version exports and measures
    (seconds to tens of seconds); later calls read the cached decision."""
    if (torch.device(device).type != "cpu" or differentiable or not wanted() or not available()
            or not isinstance(module, torch.nn.Module)):
        return module
    try:
        onnx_path = cached_onnx(card)
        tap = embedding_tap(card, module)
        if not onnx_path.exists() or exported_tap(onnx_path) != tap:
            export(module, probe_input(module, card)[:2], onnx_path, tap=tap)
            onnx_path.with_suffix(".json").unlink(missing_ok=True)
        record = _decision(card, module, onnx_path, repeats)
        if record.get("backend") != "onnxruntime":
            return module
        attributes = {k: getattr(module, k) for k in _KEPT_ATTRIBUTES if hasattr(module, k)}
        return OrtModule(onnx_path, "cpu", attributes=attributes)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional engine keeps torch
        log.warning("model %s %s: ONNX Runtime not used (%s: %s)", card.name, card.version,
                    exc.__class__.__name__, exc)
        return module
