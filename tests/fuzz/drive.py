"""Run the corpus through the app, one child process per folder and operation, and count.

Per folder: ``fuzz.child`` (scan + load_series of every series in one process, good-slice and
refusal checks, peak memory), then ``lightbox info --json``; on a sample of folders also
``lightbox analyze`` and ``lightbox export``. Each operation has a 60 s limit. Metrics and goals
(issue 16): crashes/tracebacks 0, hangs 0, good slices lost 0, files pydicom refuses that info
or the loader does not name 0, peak memory growth <= 2x the largest real volume in the corpus.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import Corpus, Folder

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
TIMEOUT_S = 60
MEMORY_GOAL = 2.0
ANALYZABLE = ("demo_ct", "demo_mr", "demo_mg")  # what the shipped models are for; small images


def default_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@dataclass
class Failure:
    metric: str
    folder: str
    file: str
    mutation: str
    error: str

    def __str__(self) -> str:
        what = f"{self.folder}/{self.file}" if self.file else self.folder
        first = self.error.strip().splitlines()[0] if self.error.strip() else ""
        return f"[{self.metric}] {what} ({self.mutation or '-'}): {first}"


@dataclass
class Report:
    seed: int
    folders: int = 0
    files: int = 0
    mutated: int = 0
    good: int = 0
    lost: int = 0
    misplaced: int = 0
    planted: int = 0  # files damaged as issue 16 reports (folders *_issue)
    planted_unnamed: int = 0
    refused: int = 0
    unnamed_info: int = 0
    unnamed_loader: int = 0
    crashes: int = 0
    hangs: int = 0
    peak_growth: int = 0
    peak_folder: str = ""
    peak_mutations: str = ""
    largest_volume: int = 1
    cli_runs: dict = field(default_factory=dict)
    by_mutation: dict = field(default_factory=dict)
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def memory_ratio(self) -> float:
        return self.peak_growth / max(1, self.largest_volume)

    def goals_met(self) -> bool:
        return (self.crashes == self.hangs == self.lost == self.unnamed_info == self.unnamed_loader == 0
                and self.memory_ratio <= MEMORY_GOAL)


def _env(state: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", QT_QPA_PLATFORM="offscreen",
               LIGHTBOX_CACHE_DIR=str(state / "cache"), XDG_CONFIG_HOME=str(state / "config"),
               PYTHONWARNINGS="ignore")
    return env


def _run(cmd: list[str], env: dict, timeout: float) -> tuple[int | None, str, str, float]:
    """(return code or None on timeout, stdout, stderr, seconds); the whole process group dies on timeout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO),
                            start_new_session=True, text=True, errors="replace")
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err, time.perf_counter() - t0


def _error_line(stderr: str) -> str:
    """The exception line of a traceback, else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if "Traceback (most recent call last)" in stderr:
        for ln in reversed(lines):
            if not ln.startswith(("File ", "^", "~")) and ":" in ln:
                return ln[:300]
    return lines[-1][:300]


def _crashed(rc: int | None, stderr: str) -> bool:
    return rc is not None and (rc not in (0, 2) or "Traceback (most recent call last)" in stderr)


def _mutation_of(folder: Folder, file: str) -> str:
    for b in folder.bad:
        if b["file"] == file:
            return f"{b['mutation']}: {b['detail']}"
    return "good slice" if any(g["file"] == file for g in folder.good) else ""


def _mutations(folder: Folder) -> str:
    return "folder has " + "; ".join(f"{b['file']} {b['mutation']}: {b['detail']}" for b in folder.bad)


def _file_in(folder: Folder, fdir: Path, text: str) -> str:
    """The folder's file an error message names (bad files first), or ''."""
    for b in folder.bad + folder.good:
        if str(fdir / b["file"]) in text or f"/{b['file']}" in text:
            return b["file"]
    return ""


def run_folder(folder: Folder, root: Path, python: str, timeout: float, cli_ops: tuple[str, ...],
               state: Path) -> dict:
    """Every operation on one folder; returns the child's findings plus the CLI outcomes."""
    fdir = (root / folder.name).resolve()
    env = _env(state)
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=state) as tmp:
        tmp = Path(tmp)
        record = tmp / "record.json"
        record.write_text(json.dumps({"good": folder.good, "bad": folder.bad}))
        found = tmp / "found.json"
        rc, _out, err, secs = _run([python, "-m", "fuzz.child", str(fdir), str(record), str(found)], env, timeout)
        res = {"child": {"rc": rc, "stderr": err, "seconds": secs}}
        res["found"] = json.loads(found.read_text()) if rc in (0, None) and found.exists() else None
        if rc is None and res["found"] is not None and res["found"].get("phase") != "loaded":
            res["found"] = None
        cli = {}
        rc, out, err, secs = _run([python, "-m", "viewer.cli", "info", "--json", str(fdir)], env, timeout)
        cli["info"] = {"rc": rc, "stderr": err, "text": out + err, "seconds": secs}
        if "analyze" in cli_ops:
            rc, out, err, secs = _run([python, "-m", "viewer.cli", "analyze", str(fdir), "--out", str(tmp / "an"),
                                       "--device", "cpu"], env, timeout)
            cli["analyze"] = {"rc": rc, "stderr": err, "seconds": secs}
        if "export" in cli_ops:
            cmd = [python, "-m", "viewer.cli", "export", str(fdir), "--out", str(tmp / "ds")]
            labels = sorted(p for p in (tmp / "an").rglob("*.nii.gz") if not p.name.startswith("heatmap_")) \
                if (tmp / "an").is_dir() else []
            if folder.source == "demo_mg":
                cmd += ["--class", "exam=normal"]
            elif labels:
                cmd += ["--labels", str(labels[0])]
            else:
                cmd = None  # nothing to export without a label map
            if cmd is not None:
                rc, out, err, secs = _run(cmd, env, timeout)
                cli["export"] = {"rc": rc, "stderr": err, "seconds": secs}
        res["cli"] = cli
    return res


def _tally(report: Report, folder: Folder, fdir: Path, res: dict) -> None:
    fail = report.failures.append
    report.folders += 1
    report.mutated += len(folder.bad)
    for b in folder.bad:
        report.by_mutation[b["mutation"]] = report.by_mutation.get(b["mutation"], 0) + 1
    report.good += len(folder.good)
    child = res["child"]
    found = res["found"]
    if child["rc"] is None and found is not None and found.get("phase") == "loaded":
        fail(Failure("harness", folder.name, "", "", "scan and load finished; the pydicom checks ran past the limit"))
    elif child["rc"] is None:
        report.hangs += 1
        fail(Failure("hang", folder.name, "", _mutations(folder), f"scan/load child ran past {TIMEOUT_S} s"))
    elif found is None:
        report.crashes += 1
        fail(Failure("crash", folder.name, "", _mutations(folder),
                     f"scan/load child exit {child['rc']}: {_error_line(child['stderr'])}"))
    if found is not None:
        for c in found["crashes"]:
            report.crashes += 1  # a whole-series failure: any of the folder's mutations may be the cause
            fail(Failure("crash", folder.name, "", _mutations(folder), f"{c['op']}: {c['error']} (at {c['at']})"))
        for g in found["good"]:
            if g["status"] == "lost":
                report.lost += 1
                fail(Failure("good slice lost", folder.name, g["file"], _mutations(folder), g["why"]))
            elif g["status"] == "misplaced":
                report.misplaced += 1
                fail(Failure("good slice misplaced", folder.name, g["file"], _mutations(folder), g["why"]))
        if found["rss_growth"] > report.peak_growth:
            report.peak_growth, report.peak_folder = found["rss_growth"], folder.name
            report.peak_mutations = _mutations(folder)
    if found is not None and folder.name.endswith("_issue"):
        for b in folder.bad:
            report.planted += 1
            if not found.get("bad_named", {}).get(b["file"], False):
                report.planted_unnamed += 1
                fail(Failure("planted case not named by loader", folder.name, b["file"],
                             f"{b['mutation']}: {b['detail']}", "loaded or skipped without a message naming it"))
    refused = found["refused"] if found is not None else []
    info = res["cli"]["info"]
    for r in refused:
        report.refused += 1
        mutation = _mutation_of(folder, r["file"])
        if not r["named_by_loader"]:
            report.unnamed_loader += 1
            fail(Failure("refused, not named by loader", folder.name, r["file"], mutation,
                         f"pydicom: {r['why']}"))
        if info["rc"] is not None and str(fdir / r["file"]) not in info["text"]:
            report.unnamed_info += 1
            fail(Failure("refused, not named by info", folder.name, r["file"], mutation, f"pydicom: {r['why']}"))
    for op, r in res["cli"].items():
        runs = report.cli_runs.setdefault(op, [0, 0])
        runs[0] += 1
        runs[1] += r["rc"] in (0, 2) and "Traceback" not in r["stderr"]
        if r["rc"] is None:
            report.hangs += 1
            fail(Failure("hang", folder.name, "", _mutations(folder), f"lightbox {op} ran past {TIMEOUT_S} s"))
        elif _crashed(r["rc"], r["stderr"]):
            report.crashes += 1
            name = _file_in(folder, fdir, r["stderr"])
            fail(Failure("crash", folder.name, name, _mutation_of(folder, name) if name else _mutations(folder),
                         f"lightbox {op} exit {r['rc']}: {_error_line(r['stderr'])}"))


def run_corpus(corpus: Corpus, jobs: int = 2, cli_sample: int = 1, timeout: float = TIMEOUT_S,
               python: str | None = None, progress=None) -> Report:
    """Drive every folder; ``cli_sample`` folders (demo CT/MR/MG) also get analyze and export."""
    python = python or default_python()
    report = Report(corpus.seed, largest_volume=corpus.largest_volume_bytes)
    candidates = [f for f in corpus.folders if f.source in ANALYZABLE]  # sources take turns: CT, MR, MG, ...
    sample = {f.name for f in candidates[:cli_sample]}
    t0 = time.perf_counter()
    root = corpus.root.resolve()
    with tempfile.TemporaryDirectory(prefix="fuzz-state-") as state:
        state = Path(state)

        def one(folder: Folder):
            ops = ("info", "analyze", "export") if folder.name in sample else ("info",)
            return folder, run_folder(folder, root, python, timeout, ops, state)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for n, (folder, res) in enumerate(pool.map(one, corpus.folders), 1):
                _tally(report, folder, root / folder.name, res)
                if progress is not None:
                    progress(n, len(corpus.folders), report)
    report.files = corpus.files
    report.seconds = time.perf_counter() - t0
    if report.memory_ratio > MEMORY_GOAL:
        report.failures.append(Failure("peak memory", report.peak_folder, "", report.peak_mutations,
                                       f"scan + load grew {report.peak_growth / 2**20:.1f} MiB, "
                                       f"{report.memory_ratio:.2f}x the largest real volume"))
    return report


def format_report(report: Report, command: str = "", max_failures: int = 60) -> str:
    """The goals table, then every failure with its folder, file, mutation and first error line."""
    def row(name, value, goal, ok):
        return f"  {name:<56} {value:>10}  {goal:>6}  {'ok' if ok else 'FAIL'}"

    cli = ", ".join(f"{op} {ok}/{n} clean" for op, (n, ok) in sorted(report.cli_runs.items()))
    lines = [
        f"fuzz: seed {report.seed}, {report.files} files in {report.folders} folders "
        f"({report.mutated} mutated, {report.good} good slices), {report.seconds:.0f} s; {cli}",
        "  mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(report.by_mutation.items())),
        f"  {'metric':<56} {'value':>10}  {'goal':>6}",
        row("crashes or tracebacks", report.crashes, "0", report.crashes == 0),
        row(f"hangs (> {TIMEOUT_S} s)", report.hangs, "0", report.hangs == 0),
        row("good slices lost", f"{report.lost} / {report.good}", "0", report.lost == 0),
        row("files pydicom refuses, not named by info", f"{report.unnamed_info} / {report.refused}", "0",
            report.unnamed_info == 0),
        row("files pydicom refuses, not named by loader", f"{report.unnamed_loader} / {report.refused}", "0",
            report.unnamed_loader == 0),
        row("peak memory / largest real volume", f"{report.memory_ratio:.2f}x", "<= 2x",
            report.memory_ratio <= MEMORY_GOAL),
        f"  (peak growth {report.peak_growth / 2**20:.1f} MiB in {report.peak_folder or '-'}; largest real volume "
        f"{report.largest_volume / 2**20:.1f} MiB)",
        "  also checked (not among the fuzz goals):",
        row("good slices misplaced (pixels away from their position)", f"{report.misplaced} / {report.good}", "0",
            report.misplaced == 0),
        row("issue-16 cases not named by the loader", f"{report.planted_unnamed} / {report.planted}", "0",
            report.planted_unnamed == 0),
    ]
    if report.failures:
        lines.append(f"failures ({len(report.failures)}){': reproduce with ' + command if command else ''}")
        lines += [f"  {f}" for f in report.failures[:max_failures]]
        if len(report.failures) > max_failures:
            lines.append(f"  ... {len(report.failures) - max_failures} more")
    return "\n".join(lines)
