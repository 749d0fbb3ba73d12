"""The layering rules of DESIGN.md, checked on the source: arrows only point down."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6")


def imported_modules(package: str):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


def test_core_remote_analysis_and_inference_never_import_qt():
    for package in ("viewer/core", "viewer/remote", "viewer/analysis", "inference"):
        bad = [(str(p), m) for p, m in imported_modules(package) if m.split(".")[0] in QT]
        assert not bad, bad


def test_remote_never_imports_the_ui():
    """The PACS layer serves the CLI and the UI alike: it sits below viewer.ui."""
    bad = [(str(p), m) for p, m in imported_modules("viewer/remote") if m.startswith("viewer.ui")]
    for path in (ROOT / "viewer/remote").rglob("*.py"):
        bad += [(str(path), "relative ui import") for line in path.read_text().splitlines()
                if line.lstrip().startswith(("from ..ui", "from ...ui"))]
    assert not bad, bad


def test_inference_never_imports_viewer():
    bad = [(str(p), m) for p, m in imported_modules("inference") if m.split(".")[0] == "viewer"]
    assert not bad, bad


def test_loading_a_study_headless_loads_no_qt(tmp_path):
    code = ("import sys; from viewer.core.io import scan, load_series; from viewer.core import synthetic, mammo;"
            "import viewer.cli, viewer.cli_remote, viewer.remote.cache, viewer.remote.servers; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (QT,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _relative_imports(package: str):
    """(file, module) for every import in ``package``, relative ones resolved to dotted names."""
    for path in (ROOT / package).rglob("*.py"):
        dotted = path.relative_to(ROOT).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = list(dotted[:len(dotted) - node.level]) if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
                yield path, names
            elif isinstance(node, ast.Import):
                yield path, [a.name for a in node.names]


def test_only_app_imports_the_main_window():
    """Controllers get a narrow interface (ui/host.py), not the window: no circle through main_window."""
    bad = [str(p.relative_to(ROOT)) for p, names in _relative_imports("viewer/ui")
           if p.name not in ("app.py", "main_window.py") and any(n.startswith("viewer.ui.main_window") for n in names)]
    assert not bad, bad


def test_no_package_imports_back_up_into_the_ui():
    """viewer/core, viewer/analysis, viewer/remote and inference sit below viewer.ui."""
    bad = []
    for package in ("viewer/core", "viewer/analysis", "viewer/remote", "inference"):
        bad += [(str(p.relative_to(ROOT)), n) for p, names in _relative_imports(package)
                for n in names if n.startswith("viewer.ui")]
    assert not bad, bad


def test_main_window_stays_small():
    """The window wires parts together; the parts live in their own modules (issue 14)."""
    lines = len((ROOT / "viewer/ui/main_window.py").read_text().splitlines())
    assert lines < 400, lines
