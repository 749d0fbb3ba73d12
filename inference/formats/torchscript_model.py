"""TorchScript (.pt/.ts from torch.jit.save) and torch.export (.pt2 from torch.export.save) files.

TorchScript: the zip holds TorchScript code and tensors; torch.jit.load reads them with torch's
own restricted unpickler and runs the code in torch's interpreter, which knows torch operators
and nothing of Python - so importing one runs no code beyond the network (the registry already
loads shipped-style ``.pt`` weights the same way). The file says nothing of its input, so the
user describes it all.

torch.export: the graph and its shapes are JSON, readable without running anything, so the plan
prefills input and output shapes as for ONNX. But torch.export.load evaluates the shape
expressions written in the file with sympy (Python's eval) and unpickles some parts, so a crafted
file can run Python code. Lightbox refuses programs with pickled parts or calls outside torch's
operators, and still lists the load as code that runs: the import must be confirmed.
"""
from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from pathlib import Path

from inference.formats import register
from inference.formats.base import FormatHandler, ImportPlan, NotImportable
from inference.formats.described import check_card
from inference.formats.onnx_model import described_plan

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".jit")
_OWN_OP_NAMESPACES = {"aten", "prim", "prims", "quantized", "_quantized", "higher_order"}
_TARGET_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.", "torch.ops.higher_order.", "_operator.", "math.")


def _names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


# --------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------
def is_torchscript(path: Path) -> bool:
    """A torch.jit.save zip: a code/ folder or constants.pkl beside data.pkl (torch.save has neither)."""
    if not (path.is_file() and path.suffix.lower() in TORCHSCRIPT_SUFFIXES and zipfile.is_zipfile(path)):
        return False
    names = _names(path)
    has_data = any(n.endswith("/data.pkl") for n in names)
    return has_data and any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _custom_namespaces(path: Path) -> list[str]:
    """Operator namespaces the TorchScript code calls beyond torch's own (they need a library)."""
    found = set()
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if "/code/" in name and name.endswith(".py"):
                text = zf.read(name).decode("utf-8", "replace")
                found |= set(re.findall(r"\bops\.([A-Za-z_][A-Za-z0-9_]*)\.", text))
    return sorted(found - _OWN_OP_NAMESPACES)


def plan_torchscript(path: Path) -> ImportPlan:
    if not is_torchscript(path):
        raise NotImportable(f"{path}: not a TorchScript file (save it with torch.jit.save)")
    custom = _custom_namespaces(path)
    if custom:
        raise NotImportable(f"{path}: calls custom operators ({', '.join(custom)}) that need a library "
                            "Lightbox will not load")
    notes = ["TorchScript runs torch's operators in torch's own interpreter, no Python: importing it runs "
             "no code beyond the network",
             "a TorchScript file does not say its input: give task, patch size, spacing and normalisation"]
    facts = {"format": "torchscript", "input_shape": [], "output_shape": []}
    plan = described_plan("torchscript", path, facts, notes)
    plan.card["extra"]["suggested"] = {"input": {"spacing_mm": None, "patch_size": None, "output": "logits",
                                                 "overlap": 0.25}}
    return plan


def load_torchscript(card, path: Path, device):
    import torch

    from inference.device import pick_device
    from inference.formats.described import DescribedRunner

    dev = pick_device(device)
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, still what people export
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=dev)
    return DescribedRunner(card, module.eval(), dev)


# --------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------
def _pt2_root(names: list[str]) -> str | None:
    for n in names:
        if n.endswith("/archive_format") or n == "archive_format":
            return n[: -len("archive_format")]
    return None


def is_torch_export(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".pt2" and zipfile.is_zipfile(path)):
        return False
    names = _names(path)
    root = _pt2_root(names)
    return root is not None and any(n.startswith(root + "models/") and n.endswith(".json") for n in names)


def _size(s) -> int | str:
    """A fixed size, or a free one's symbol name ("s77"; the file writes sympy's srepr)."""
    if "as_int" in s:
        return int(s["as_int"])
    text = str((s.get("as_expr") or {}).get("expr_str", "?"))
    match = re.fullmatch(r"Symbol\('(\w+)'.*\)", text)
    return match.group(1) if match else text[:40]


def _program(path: Path) -> tuple[dict, list[str]]:
    """(model.json of the archive's one program, reasons to refuse it) - JSON only, nothing run."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = _pt2_root(names)
        if root is None or zf.read(root + "archive_format").strip() != b"pt2":
            raise NotImportable(f"{path}: not a torch.export archive (save it with torch.export.save)")
        programs = [n for n in names if n.startswith(root + "models/") and n.endswith(".json")]
        if len(programs) != 1:
            raise NotImportable(f"{path}: holds {len(programs)} programs; Lightbox imports one")
        stem = programs[0][len(root + "models/"):-len(".json")]
        try:
            program = json.loads(zf.read(programs[0]))
            configs = [json.loads(zf.read(root + f"data/{kind}/{stem}_{kind}_config.json"))
                       for kind in ("weights", "constants")]
        except (KeyError, ValueError) as exc:
            raise NotImportable(f"{path}: unreadable torch.export archive ({exc})") from exc
    refusals = []
    if any(n.startswith(root + "data/aotinductor/") for n in names):
        refusals.append("it carries compiled native code (AOTInductor)")
    if any(n.startswith(root + f"data/{kind}/{stem}.pt") for kind in ("weights", "constants") for n in names):
        refusals.append("its tensors are in the old pickled layout")
    for config in configs:
        for fqn, meta in (config.get("config") or {}).items():
            if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                refusals.append(f"{fqn} is a pickled object")
    graph = program.get("graph_module", {}).get("graph", {})
    targets = {n.get("target", "") for n in graph.get("nodes", [])}
    foreign = sorted(t for t in targets if not t.startswith(_TARGET_PREFIXES))
    if foreign:
        refusals.append(f"it calls {', '.join(foreign[:5])}, not torch operators")
    if graph.get("custom_obj_values"):
        refusals.append("it holds custom objects")
    return program, refusals


def _export_facts(program: dict) -> dict:
    gm = program["graph_module"]
    graph, sig = gm["graph"], gm.get("signature", {})
    tensors = graph.get("tensor_values", {})
    user_in = [s["user_input"]["arg"]["as_tensor"]["name"] for s in sig.get("input_specs", [])
               if "user_input" in s and "as_tensor" in s["user_input"].get("arg", {})]
    user_out = [s["user_output"]["arg"]["as_tensor"]["name"] for s in sig.get("output_specs", [])
                if "user_output" in s and "as_tensor" in s["user_output"].get("arg", {})]

    def shape(name):
        return [_size(s) for s in tensors.get(name, {}).get("sizes", [])]

    return {"format": "torch-export", "inputs": user_in, "input": user_in[0] if user_in else None,
            "input_shape": shape(user_in[0]) if user_in else [], "outputs": user_out,
            "output": user_out[0] if user_out else None, "output_shape": shape(user_out[0]) if user_out else [],
            "torch_version": program.get("torch_version")}


def plan_torch_export(path: Path) -> ImportPlan:
    program, refusals = _program(path)
    if refusals:
        raise NotImportable(f"{path}: Lightbox will not load this torch.export file: {'; '.join(refusals)}")
    facts = _export_facts(program)
    if len(facts["inputs"]) != 1 or len(facts["input_shape"]) not in (4, 5):
        raise NotImportable(f"{path}: the program takes {len(facts['inputs'])} tensor input(s) of shape "
                            f"{facts['input_shape']}; Lightbox feeds one (batch, channels, ...) image tensor")
    notes = [f"torch.export program made with torch {facts['torch_version'] or '?'}, calls torch operators only"]
    runs_code = [f"{path.name}: torch.export.load evaluates the shape expressions written in the file with "
                 "Python's eval (through sympy), so a crafted file can run code when it is loaded"]
    return described_plan("torch-export", path, facts, notes, runs_code)


def load_torch_export(card, path: Path, device):
    import torch

    from inference.device import pick_device
    from inference.formats.described import DescribedRunner

    _, refusals = _program(path)
    if refusals:
        raise NotImportable(f"{path}: {'; '.join(refusals)}")
    with zipfile.ZipFile(path) as zf:  # torch.export.load retries a failed weights_only load without it
        for name in zf.namelist():
            if "/data/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(zf.read(name)), weights_only=True)
                except Exception as exc:
                    raise NotImportable(f"{path}: its sample inputs are not plain tensors ({exc.__class__.__name__})"
                                        ) from exc
    dev = pick_device(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
        module = program.module()
    except Exception as exc:  # torch.export raises many kinds; the user needs the file and the reason
        raise NotImportable(f"{path}: torch.export cannot load it ({exc.__class__.__name__}: "
                            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''})") from exc
    if dev.type != "cpu":
        module = module.to(dev)
    return DescribedRunner(card, module, dev)


TORCHSCRIPT = register(FormatHandler("torchscript", is_torchscript, plan_torchscript, load_torchscript,
                                     describe="a TorchScript file (.pt/.ts from torch.jit.save)", check=check_card))
TORCH_EXPORT = register(FormatHandler("torch-export", is_torch_export, plan_torch_export, load_torch_export,
                                      describe="a torch.export file (.pt2 from torch.export.save)", check=check_card))
