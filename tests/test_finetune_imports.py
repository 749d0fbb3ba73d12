"""The fine-tuners share one kit (inference/finetune_common.py) and never import their dispatcher
(inference/finetune.py) or each other: the import circle the architecture review found stays cut."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("finetune_common", "finetune_exam", "finetune_seg2d")


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_variants_do_not_import_the_dispatcher_or_each_other():
    for name in VARIANTS:
        mods = imported_modules(ROOT / "inference" / f"{name}.py")
        others = {f"inference.{v}" for v in VARIANTS if v not in (name, "finetune_common")}
        bad = {m for m in mods if m == "inference.finetune" or m in others}
        assert not bad, f"inference/{name}.py imports {sorted(bad)}"
    assert "inference.finetune_common" in imported_modules(ROOT / "inference" / "finetune_exam.py")


def test_dispatcher_still_offers_the_shared_names():
    import inference.finetune as ft
    import inference.finetune_common as common

    for name in ("FinetuneError", "Stopped", "read_dataset", "save_version", "start_run", "Plan"):
        assert getattr(ft, name) is getattr(common, name)
