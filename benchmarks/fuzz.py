"""Fuzz the loader and the CLI with N corrupted files and print the goals table (issue 16).

    python benchmarks/fuzz.py N [--seed S] [--jobs J] [--cli-sample K] [--keep DIR]

Same seed, same corpus: a failure listed below is reproduced with the same command (add
--keep DIR to look at the files; corpus.json there records every folder's good slices and
mutations). Exit 0 when every goal is met, 1 otherwise.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # before benchmarks/: the package is tests/fuzz, not this file

from fuzz.corpus import build_corpus  # noqa: E402
from fuzz.drive import format_report, run_corpus  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, help="files in the corpus (good and corrupted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="folders driven at once")
    p.add_argument("--cli-sample", type=int, default=None,
                   help="folders that also run analyze and export (default: 1 per 500 files, at least 3)")
    p.add_argument("--keep", metavar="DIR", default=None, help="write the corpus here and keep it")
    args = p.parse_args(argv)
    sample = args.cli_sample if args.cli_sample is not None else max(3, args.n // 500)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lightbox-fuzz-"))
    if args.keep and root.exists() and any(root.iterdir()):
        p.error(f"{root} is not empty")
    try:
        corpus = build_corpus(root, args.n, seed=args.seed)
        print(f"corpus: {corpus.files} files in {len(corpus.folders)} folders under {root}", flush=True)

        def progress(n, total, report):
            if n % 20 == 0 or n == total:
                print(f"  {n}/{total} folders, {report.crashes} crashes, {report.lost} good slices lost",
                      file=sys.stderr, flush=True)

        report = run_corpus(corpus, jobs=args.jobs, cli_sample=sample, progress=progress)
        command = f"python benchmarks/fuzz.py {args.n} --seed {args.seed} --cli-sample {sample} --keep DIR"
        print(format_report(report, command, max_failures=200))
        return 0 if report.goals_met() else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
