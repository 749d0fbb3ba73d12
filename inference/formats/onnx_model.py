"""ONNX files: the graph says its input shape and output channels; the user says the rest.

An ONNX file is data: ONNX Runtime runs its own operators on the graph's tensors and no code
from the file. Two things would break that, so both are refused: operators from a custom domain
(they need a native library loaded into the runtime) and tensors kept in external files (the
file alone would not be the model; their paths could point anywhere).
"""
from __future__ import annotations

from pathlib import Path

from inference.formats import register
from inference.formats.base import FormatHandler, ImportPlan, NotImportable
from inference.formats.described import check_card

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.training",
                              "com.microsoft", "com.microsoft.nchwc"})


def _read(path: Path):
    """The ModelProto without external tensors; NotImportable naming the file otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError: not protobuf, truncated
        raise NotImportable(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise NotImportable(f"{path}: an ONNX file without a graph")
    return model


def detect(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".onnx"):
        return False
    try:
        _read(path)
    except NotImportable:
        return False
    return True


def _dims(value_info) -> list:
    """Dimensions of a tensor's declared shape: ints where fixed, names (or "?") where free."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _external_tensors(model) -> list[str]:
    from onnx import TensorProto

    names = [t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_location == TensorProto.EXTERNAL:
                names.append(attr.t.name or node.name)
    return names


def custom_domains(model) -> list[str]:
    """Operator domains outside ONNX's and ONNX Runtime's own (local functions count as own)."""
    own = STANDARD_DOMAINS | {f.domain for f in model.functions}
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sorted({n.domain for n in nodes if n.domain not in own})


def check(model, path: Path) -> None:
    """Refusals shared by plan and load: external tensors, custom operators, an invalid graph."""
    import onnx

    external = _external_tensors(model)
    if external:
        raise NotImportable(f"{path}: keeps {len(external)} tensor(s) in separate files ({external[0]}, ...); "
                            "save the model as one file (onnx.save with save_as_external_data=False) and import that")
    domains = custom_domains(model)
    if domains:
        raise NotImportable(f"{path}: uses operators from custom domain(s) {', '.join(domains)}, which need a "
                            "native library Lightbox will not load; export with standard ONNX operators")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError
        raise NotImportable(f"{path}: not a valid ONNX model: {str(exc).splitlines()[0]}") from exc


def graph_facts(model) -> dict:
    """Input name/shape, outputs, opset and producer: what the card's extra.graph records."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    last = {n.output[0]: n.op_type for n in model.graph.node if n.output}
    return {
        "format": "onnx",
        "inputs": [i.name for i in inputs],
        "input": inputs[0].name if inputs else None,
        "input_shape": _dims(inputs[0]) if inputs else [],
        "outputs": [o.name for o in outputs],
        "output": outputs[0].name if outputs else None,
        "output_shape": _dims(outputs[0]) if outputs else [],
        "output_op": last.get(outputs[0].name) if outputs else None,
        "opset": opset,
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
    }


def task_from_shapes(in_shape: list, out_shape: list) -> str | None:
    """What input and output ranks say: same rank = segmentation, (N, K) out = classifier."""
    if len(out_shape) == 2 and len(in_shape) in (4, 5):
        return "image-classifier"
    if len(in_shape) == len(out_shape) == 5:
        return "segmentation-3d"
    if len(in_shape) == len(out_shape) == 4:
        return "segmentation-2d"
    return None


def suggestions(facts: dict, task: str | None) -> dict:
    """Prefills for the fields the user must confirm: placeholder class names, the file's window."""
    in_shape, out_shape = facts["input_shape"], facts["output_shape"]
    k = out_shape[1] if len(out_shape) > 1 and isinstance(out_shape[1], int) else None
    classes = None
    if k:
        if task and task.startswith("segmentation"):
            classes = ["background"] + [f"class {i}" for i in range(1, max(k, 2))]
        else:
            classes = [f"class {i}" for i in range(k)]
    static = [d for d in in_shape[2:] if isinstance(d, int)]
    patch = static if static and len(static) == len(in_shape) - 2 else None
    output = "probabilities" if facts.get("output_op") in ("Softmax", "Sigmoid") else "logits"
    inp = {"spacing_mm": None, "patch_size": patch, "output": output, "overlap": 0.25}
    if len(in_shape) > 1 and isinstance(in_shape[1], int):
        inp["channels"] = in_shape[1]
    return {"classes": classes, "input": inp}  # no normalisation: the file cannot hint at it


def described_plan(fmt: str, path: Path, facts: dict, notes: list[str], runs_code: list[str] | None = None
                   ) -> ImportPlan:
    """The plan every described format shares: file facts in extra.graph, the rest needed."""
    in_shape, out_shape = facts["input_shape"], facts["output_shape"]
    task = task_from_shapes(in_shape, out_shape) if in_shape else None
    card = {"name": path.stem, "version": "1", "source": f"{fmt} file {path.name}", "licence": "",
            "extra": {"graph": facts, "suggested": suggestions(facts, task) if in_shape else {}}}
    needs = ["modality", "classes", "input", "normalization"]
    if task:
        card["task"] = task
    else:
        needs.insert(0, "task")
    if in_shape:
        patch = card["extra"]["suggested"]["input"]["patch_size"]
        notes.append(f"input {facts.get('input')!r} shape {in_shape}"
                     + ("" if patch else " (free spatial size: give a patch_size)"))
        notes.append(f"output {facts.get('output')!r} shape {out_shape}")
    return ImportPlan(format=fmt, source=path, card=card, needs=needs, runs_code=list(runs_code or []), notes=notes,
                      files=[])


def plan(path: Path) -> ImportPlan:
    model = _read(path)
    check(model, path)
    facts = graph_facts(model)
    notes = ["an ONNX graph is data: ONNX Runtime runs only its own operators, no code from the file"]
    if len(facts["inputs"]) != 1:
        raise NotImportable(f"{path}: the graph takes {len(facts['inputs'])} inputs "
                            f"({', '.join(facts['inputs']) or 'none'}); Lightbox feeds one image tensor")
    if len(facts["input_shape"]) not in (4, 5):
        raise NotImportable(f"{path}: input {facts['input']!r} has shape {facts['input_shape']}; Lightbox feeds "
                            "(batch, channels, rows, cols) or (batch, channels, z, y, x)")
    if len(facts["outputs"]) > 1:
        notes.append(f"the graph has {len(facts['outputs'])} outputs; Lightbox uses the first, {facts['output']!r}")
    if facts["opset"]:
        notes.append(f"opset {facts['opset']}" + (f", made by {facts['producer']}" if facts["producer"] else ""))
    return described_plan("onnx", path, facts, notes)


def load(card, path: Path, device):
    from inference.formats.described import DescribedRunner
    from inference.onnx_backend import OrtModule

    module = OrtModule(path, device)
    notes = []
    if module.providers[0] == "CUDAExecutionProvider":
        run_on = device
    else:
        run_on = "cpu"
        if str(device).startswith("cuda"):
            notes.append("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu): ran on the CPU")
    return DescribedRunner(card, module, run_on, notes)


HANDLER = register(FormatHandler("onnx", detect, plan, load, describe="an ONNX file (.onnx)",
                                   check=check_card))
