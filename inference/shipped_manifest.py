"""Write the package's list of shipped model weights (``inference/shipped_models.json``).

    python -m inference.shipped_manifest          # rewrite it from resources/models
    python -m inference.shipped_manifest --check  # exit 1 when it is stale

The registry refuses a shipped model whose weights differ from this list, so run it after
retraining a shipped model (the tests fail while the list is stale: it cannot go stale silently).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inference import registry


def build(folder: Path | None = None) -> dict:
    """{"models": [{name, version, weights, sha256}, ...]} of every card in the shipped folder,
    hashed from the weights files themselves (not copied from the cards)."""
    folder = Path(folder) if folder is not None else registry.shipped_models_dir()
    models = []
    for json_path in sorted(folder.glob("*.json")):
        card = registry.load_card(json_path)
        models.append({"name": card.name, "version": str(card.version), "weights": card.weights,
                       "sha256": registry.sha256_bytes(card.weights_path.read_bytes())})
    return {"about": "sha256 of the weights shipped with Lightbox; written by python -m inference.shipped_manifest",
            "models": models}


def render(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.shipped_manifest", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when the list is stale")
    args = ap.parse_args(argv)
    text = render(build())
    current = registry.MANIFEST.read_text(encoding="utf-8") if registry.MANIFEST.is_file() else ""
    if args.check:
        if current != text:
            print(f"{registry.MANIFEST}: stale; run python -m inference.shipped_manifest", file=sys.stderr)
            return 1
        return 0
    if current != text:
        registry._atomic_write(registry.MANIFEST, text.encode())
    print(f"wrote {registry.MANIFEST}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
