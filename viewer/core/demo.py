"""The built-in demo studies: generated once into the user's cache folder."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

DEMO_VERSION = "1"  # bump when synthetic.py changes what it writes


def cache_dir() -> Path:
    base = os.environ.get("LIGHTBOX_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    root = Path(base).expanduser()
    return root if os.environ.get("LIGHTBOX_CACHE_DIR") else root / "lightbox"


def ensure_demo_studies(seed: int = 0) -> Path:
    """Folder with the demo CT, MR and 4-view MG; written atomically on first use."""
    target = cache_dir() / f"demo-v{DEMO_VERSION}"
    if (target / ".complete").exists():
        return target
    from .synthetic import write_demo_studies

    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        write_demo_studies(tmp, seed=seed)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
