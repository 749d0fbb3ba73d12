#!/usr/bin/env python3
"""Save a screenshot of the viewer: ``screenshot.py OUT.png [PATH]``.

Runs the app offscreen (no display needed) on PATH, or on the built-in demo
studies when PATH is omitted, waits for the first series to show, saves the
window as PNG and exits (0 on success, 1 if nothing could be shown).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a source tree too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("path", nargs="?", default=None, help="folder or file to open (default: demo studies)")
    args = parser.parse_args(argv)
    if args.path is not None and not Path(args.path).exists():
        print(f"screenshot: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    from viewer.ui.app import run

    rc = run(args.path, screenshot=args.out)
    if rc == 0:
        print(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
