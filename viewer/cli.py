"""`lightbox` command line: view, demo, info, analyze, export, train, models, remote.

Exit codes: 0 success, 2 bad input (one-line reason on stderr). Qt is imported
only by `view`, so the headless commands work without a display.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .core.errors import LightboxError, describe

EXIT_BAD_INPUT = 2


def _fail(message: str) -> int:
    print(f"lightbox: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_view(args) -> int:
    from .ui.app import run  # lazy: Qt only for the GUI

    if args.path is not None and not Path(args.path).exists():
        return _fail(f"{args.path}: no such file or folder")
    return run(args.path, screenshot=args.screenshot)


def cmd_demo(args) -> int:
    from .core.synthetic import write_demo_studies

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        return _fail(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"{out}: cannot create folder ({exc.strerror or exc})")
    if not 0.05 <= args.scale <= 1.0:
        return _fail(f"--scale must be between 0.05 and 1, got {args.scale}")
    written = write_demo_studies(out, seed=args.seed, scale=args.scale)
    for name in written:
        print(f"wrote {name} study to {out / name}")
    return 0


def _format_series(s: dict) -> list[str]:
    head = f"    Series {s['number'] if s['number'] is not None else '-'} {s['modality'] or '??'} " \
           f"\"{s['description']}\""
    if s.get("part"):
        head += f" [{s['part']}]"
    if s.get("view"):
        v = s["view"]
        head += f" view {v.get('name') or (v['laterality'] + v['view_position'])}"
        if v.get("source"):
            head += f" ({v['source']})"
    lines = [head]
    if "dimensions" in s:
        dims = "x".join(str(v) for v in s["dimensions"])
        sp = "x".join(f"{v:.4g}" for v in s["spacing"])
        org = ", ".join(f"{v:.1f}" for v in s["origin"])
        lines.append(f"      {dims} voxels, spacing {sp} mm, {s['orientation']} ({s['orientation_code']}), "
                     f"origin ({org}) mm, {s['files']} file(s)")
    elif s["kind"] == "segmentation":
        refs = ", ".join(s["references"]) or "no series named"
        lines.append(f"      segmentation of {refs}: {', '.join(s['segments']) or 'no segments'}")
    elif s["kind"] == "non-image":
        lines.append(f"      non-image object, {s['files']} file(s)")
    for g in s.get("segmentations", []):
        lines.append(f"      segmentation \"{g['description']}\": {', '.join(g['segments'])}")
    lines += [f"      ! {p}" for p in s["problems"]]
    return lines


def _format_exam(exam: dict) -> list[str]:
    """One mammography exam: what is hung, why these images are one exam, what is kept beside it."""
    hung = " ".join(v for v, key in exam["views"].items() if key)
    missing = [v for v, key in exam["views"].items() if not key]
    who = " ".join(x for x in (exam.get("patient", ""), exam.get("date", "")) if x)
    name = exam["id"] if exam["id"].startswith("exam ") else f"exam {exam['id']}"
    head = (f"Mammography {name}" + (f" [{who}]" if who else "") +
            f" ({exam['role']}): {hung or 'no view hung'}" +
            (f" (missing: {' '.join(missing)})" if missing else " (complete)"))
    lines = [head, f"  grouped by {exam['reason']}"]
    lines += [f"  {v}: {why}" for v, why in exam.get("view_sources", {}).items() if why]
    lines += [f"  kept: {e['view']}: {e['why']}" for e in exam.get("extra", [])]
    if exam.get("priors"):
        lines.append(f"  priors: {' '.join(exam['priors'])}")
    return lines


def format_info(summary: dict) -> str:
    lines = []
    split = {uid for exam in summary.get("mammo_exams", []) if len(exam["studies"]) > 1 for uid in exam["studies"]}
    for exam in summary.get("mammo_exams", []):
        lines += _format_exam(exam)
    for p in summary["patients"]:
        lines.append(f"Patient {p['name'] or '(no name)'} [{p['id'] or 'no ID'}]")
        for st in p["studies"]:
            lines.append(f"  Study {st['date'] or '(no date)'} \"{st['description']}\" {st['uid']}")
            if "mammo_views" in st and st["uid"] not in split:  # an exam split over studies is listed above
                views = st["mammo_views"]
                missing = [v for v, uid in views.items() if uid is None]
                lines.append("    4-view exam: " + " ".join(v for v in views if views[v]) +
                             (f" (missing: {' '.join(missing)})" if missing else " (complete)"))
            for s in st["series"]:
                lines += _format_series(s)
    if summary["problems"]:
        lines.append(f"Problems ({len(summary['problems'])} file(s) skipped):")
        lines += [f"  {p['path']}: {p['reason']}" for p in summary["problems"]]
    if summary["ignored_files"]:
        lines.append(f"({summary['ignored_files']} non-DICOM file(s) ignored)")
    return "\n".join(lines)


def cmd_info(args) -> int:
    from .core.io.describe import scan_summary
    from .core.io.scan import scan

    path = Path(args.path)
    if not path.exists():
        return _fail(f"{path}: no such file or folder")
    result = scan(path)
    summary = scan_summary(result)
    if not result.series:
        why = str(result.problems[0]) if result.problems else f"{path}: no DICOM or image files found"
        if args.json:
            print(json.dumps(summary, indent=2))
        return _fail(why)
    print(json.dumps(summary, indent=2) if args.json else format_info(summary))
    for p in result.problems:
        print(f"lightbox: skipped {p}", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    import logging
    import time

    from .analysis.batch import analyze_scan
    from .analysis.outputs import OutputFolderError, prepare_output_folder, remove_empty_folders, write_outputs
    from .core.io.scan import scan

    path = Path(args.path)
    if not path.exists():
        return _fail(f"{path}: no such file or folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"{out}: exists and is not a folder")
    try:
        from inference.device import DeviceError, pick_device

        device = str(pick_device(args.device))
    except DeviceError as exc:
        return _fail(str(exc))
    try:  # before any model runs: minutes of analysis must not end in "cannot write"
        created = prepare_output_folder(out)
    except OutputFolderError as exc:
        return _fail(str(exc))
    # skipped model cards reach stderr once, as the analysis' warnings, not also through logging's fallback
    registry_log = logging.getLogger("inference.registry")
    if not any(isinstance(h, logging.NullHandler) for h in registry_log.handlers):
        registry_log.addHandler(logging.NullHandler())

    def report(msg: str) -> None:
        print(f"lightbox: {msg}", file=sys.stderr, flush=True)

    from inference.registry import ModelError

    from .analysis.run import resolve_models

    try:  # a model asked for by name must exist and verify before minutes of loading
        chosen = resolve_models(args.model)
    except (ModelError, ValueError) as exc:
        remove_empty_folders(created)
        return _fail(str(exc))
    client = None
    if args.send:  # the server must answer before minutes of analysis, not after
        from .cli_remote import client_for
        from .remote import RemoteError
        from .remote.servers import resolve

        try:
            client = client_for(args, resolve(args.send))
            client.echo()
        except (RemoteError, ValueError) as exc:
            remove_empty_folders(created)
            return _fail(f"--send: {exc}")
    t0 = time.perf_counter()
    result = scan(path)
    for p in result.problems:
        report(f"skipped {p}")
    tried: list[str] = []  # series a model takes that failed (unreadable, a model error), not "no model"
    analyses, skipped = analyze_scan(result, device, report, failures=tried, models=chosen)  # one bad series: a line
    for line in skipped:
        report(f"not analysed: {line}")
    for analysis in analyses:
        for line in analysis.warnings:
            report(f"warning: {line}")
    if not analyses and not tried:  # nothing any model takes: no run to record, no folder left behind
        remove_empty_folders(created)
        why = skipped[0] if skipped else (str(result.problems[0]) if result.problems
                                          else f"{path}: no DICOM or image files found")
        return _fail(f"nothing to analyse: {why}")
    series_by_key = {s.key: s for s in result.series}
    failed: list[dict] = []
    try:  # results.json is written even when nothing was analysed: it says why
        written = write_outputs(analyses, series_by_key, out, failed=failed,
                                extra={"source": str(path.resolve()), "device": device,
                                       "seconds": round(time.perf_counter() - t0, 3),
                                       "not_analysed": skipped,
                                       "skipped_files": [str(p) for p in result.problems]})
    except (OSError, LightboxError) as exc:
        return _fail(f"{out}: cannot write results.json ({describe(exc) if isinstance(exc, OSError) else exc})")
    for f in failed:
        report(f"not written: {f['series']}: {f['reason']}")
    for analysis in analyses:
        for sr in analysis.series.values():
            for line in sr.notes.get("not_written", []):
                report(f"not written: {sr.title}: {line}")
    report(f"wrote {written}")
    if args.json:
        print(written.read_text())
    n_written = sum(len(a.series) for a in analyses) - len(failed)
    if n_written <= 0:
        why = f"{failed[0]['series']}: {failed[0]['reason']}" if failed else tried[0]
        return _fail(f"nothing {'written' if failed else 'analysed'}: {why}")
    if client is not None:
        return _send_results(client, written)
    return 0


def _send_results(client, results_json: Path) -> int:
    """analyze --send: store the run's DICOM objects (SEG, Parametric Maps, SR) on the server."""
    from .cli_remote import result_files, send

    files = result_files(results_json)
    if not files:
        return _fail(f"--send: the analysis wrote no DICOM objects to send (see {results_json})")
    report = send(client, files)
    if report.failed:
        return _fail(f"--send: {len(report.failed)} of {len(files)} objects were not stored on "
                     f"{client.server.address}")
    return 0


def _parse_classes(items: list[str] | None) -> tuple[dict[str, str], str | None]:
    """--class VIEW=LABEL items -> ({view: label}, None), or ({}, the reason one is malformed)."""
    classes = {}
    for item in items or []:
        view, sep, label = item.partition("=")
        if not sep or not view.strip() or not label.strip():
            return {}, f"--class {item!r}: expected VIEW=LABEL, e.g. LCC=suspicious or exam=normal"
        classes[view.strip()] = label.strip()
    return classes, None


def _read_labels(labels_path: Path, volume, series, names_arg: str | None, provenance: bool = False):
    """(label map on ``volume``'s grid, {value: name}) from a DICOM SEG, an RTSTRUCT or a NIfTI/NRRD
    (names from --names).

    With ``provenance``, also (model "name version" or "", the model's own map or None, opened): a
    SEG's AUTOMATIC segments of one algorithm are that model's untouched output, so an export keeps
    them AUTOMATIC with their algorithm instead of calling them MANUAL; ``opened`` = (voxels as read,
    {value: Segment}) lets the exported SEG keep the file's segment codes. A NIfTI says nothing of that.
    """
    model, original, opened = "", None, None
    if labels_path.suffix.lower() == ".dcm":
        from .core.io.label_files import read_label_file

        read = read_label_file(labels_path, volume, series)
        labels, segments = read.array, read.segments
        for note in read.notes:
            print(f"lightbox: {labels_path.name}: {note}", file=sys.stderr)
        auto = [s for s in segments if str(s.algorithm_type).upper() == "AUTOMATIC" and s.algorithm_name]
        if auto:
            first = (auto[0].algorithm_name, auto[0].algorithm_version)
            model = " ".join(first).strip()
            mine = [s.number for s in auto if (s.algorithm_name, s.algorithm_version) == first]
            original = np.where(np.isin(labels, mine), labels, 0).astype(labels.dtype, copy=False)
        names = {s.number: s.label for s in segments}
        opened = (labels.copy(), {s.number: s for s in segments})
    else:
        from .core.export.nifti import read_label_map

        labels = read_label_map(labels_path, volume)
        given = [n.strip() for n in (names_arg or "").split(",") if n.strip()]
        names = {v: (given[v - 1] if v - 1 < len(given) else f"label {v}")
                 for v in sorted({int(x) for x in np.unique(labels)} - {0})}
    return (labels, names, model, original, opened) if provenance else (labels, names)


def _referenced_series(labels_path: Path) -> list[str]:
    """Series UIDs a DICOM SEG / RTSTRUCT names (header only); [] for anything else."""
    if labels_path.suffix.lower() != ".dcm":
        return []
    import pydicom

    from .core.io.label_files import referenced_series

    try:
        return referenced_series(pydicom.dcmread(labels_path, stop_before_pixels=True, force=True))
    except Exception:  # noqa: BLE001 - reading the labels later names the problem
        return []

def _mammo_exam(result):
    """The scan's one current mammography exam (mammo_exams: views grouped across studies and IDs the
    way datasets split them; priors left aside) when every image in it is MG; None otherwise."""
    from .core.mammo_exams import group_exams

    exams = [e for e in group_exams(result) if e.role == "current" and e.hung]
    images = [s for s in result.series if s.kind in ("dicom", "file")]
    if len(exams) != 1 or any(s.modality != "MG" for s in images):
        return None
    return exams[0]


def cmd_export(args) -> int:
    from .core.export.pixel_safety import CLI_OPT_IN, check_sources
    from .core.export.training import export_case
    from .core.io import load_series
    from .core.io.scan import scan

    path = Path(args.path)
    if not path.exists():
        return _fail(f"{path}: no such file or folder")
    if args.labels is not None and not Path(args.labels).exists():
        return _fail(f"{args.labels}: no such file or folder")
    classes, problem = _parse_classes(args.cls)
    if problem:
        return _fail(problem)
    result = scan(path)
    exam = _mammo_exam(result)
    if exam is not None:
        return _export_exam(args, exam, classes)
    if args.labels is None:
        return _fail(f"{path}: not a single mammography exam: --labels (the corrected segmentation) is required")
    candidates = [s for s in result.series if s.kind in ("dicom", "file")
                  and (args.series is None or args.series in (s.uid, s.key))]
    if not candidates:
        return _fail(f"{path}: no image series" + (f" with UID {args.series}" if args.series else ""))
    referenced = [s for s in candidates if s.uid in _referenced_series(Path(args.labels))]
    series = max(referenced or candidates, key=lambda s: len(s.frames))  # a SEG's own series first
    check_sources([(None, series)], args.allow_unverified_pixels, CLI_OPT_IN)  # before loading pixels
    volume = load_series(series)
    labels, names, model, original, opened = _read_labels(Path(args.labels), volume, series, args.names,
                                                          provenance=True)
    out = export_case(args.out, volume, labels, names, series, dataset_name=args.dataset, model=model,
                      original_labels=original, opened=opened,
                      keep_mapping=args.keep_mapping, classes=classes,
                      allow_unverified_pixels=args.allow_unverified_pixels)
    print(f"lightbox: exported {out['case']} to {out['dataset']}" + (f" (SEG {out['seg'].name})" if out["seg"] else ""),
          file=sys.stderr)
    return 0


def _export_exam(args, exam, classes: dict[str, str]) -> int:
    """A 4-view mammography exam: the classes with every hung view's image (imagesCls), and with
    --labels the corrected map of the view it belongs to (--series VIEW or UID when several fit)."""
    from .core.errors import LightboxError
    from .core.export.pixel_safety import CLI_OPT_IN, check_sources
    from .core.export.training import export_exam
    from .core.io import load_series
    if not classes and args.labels is None:
        return _fail("nothing to export: give --class VIEW=LABEL (e.g. LCC=suspicious, exam=suspicious) "
                     "or --labels")
    hung = {name: ev.series for name, ev in exam.hung.items()}
    check_sources([(None, s) for s in hung.values()], args.allow_unverified_pixels, CLI_OPT_IN)
    views = {name: (load_series(series), series) for name, series in hung.items()}
    labels, seg_models = {}, {}
    if args.labels is not None:
        wanted = [n for n, (_v, s) in views.items()
                  if args.series is None or args.series.upper() == n or args.series in (s.uid, s.key)]
        fits, why = {}, []
        for name in wanted:
            volume, series = views[name]
            try:
                fits[name] = _read_labels(Path(args.labels), volume, series, args.names, provenance=True)
            except (LightboxError, ValueError) as exc:
                why.append(f"{name}: {exc}")
        if len(fits) != 1:
            return _fail(f"{args.labels}: fits " + (f"several views ({', '.join(fits)}): name one with --series VIEW"
                                                     if fits else f"no view of the exam ({'; '.join(why)})"))
        (name, (label_map, names, model, original, _opened)), = fits.items()
        labels[name] = (label_map, names, original)
        if model:  # the SEG's untouched AUTOMATIC segments stay the model's, as in cmd_export
            seg_models[name] = model
    out = export_exam(args.out, views, classes, labels=labels, dataset_name=args.dataset,
                      keep_mapping=args.keep_mapping, allow_unverified_pixels=args.allow_unverified_pixels,
                      seg_models=seg_models)
    what = [f"{len(out['images'])} view image(s), {out['rows']} class row(s)"] if out["images"] else []
    what += [f"segmentation {v} as {o['case']}" for v, o in out["segmentations"].items()]
    print(f"lightbox: exported {out['case']} to {out['dataset']} ({'; '.join(what)})", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from inference.finetune import main as finetune_main

    if not Path(args.dataset).is_dir():
        return _fail(f"{args.dataset}: no such dataset folder")
    argv = [args.dataset, "--epochs", str(args.epochs), "--steps", str(args.steps), "--device", args.device,
            "--seed", str(args.seed)] + (["--out", args.out] if args.out else []) \
        + (["--model", args.model] if args.model else []) \
        + (["--allow-no-validation"] if args.allow_no_validation else []) \
        + (["--ignore-extra-labels"] if args.ignore_extra_labels else []) \
        + ["--augment", args.augment] \
        + (["--augment-count", str(args.augment_count)] if args.augment_count is not None else [])
    return finetune_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightbox",
        description="Lightbox radiology workstation (research software, not a medical device).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("view", help="open the viewer (no PATH: the built-in demo studies)")
    p.add_argument("path", nargs="?", default=None)
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot once the first image shows, then quit")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("demo", help="write the synthetic demo studies (CT, MR, 4-view MG) as DICOM")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="shrink image sizes (same field of view), 0.05-1")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="list patients/studies/series with geometry and problems")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("analyze", help="run the AI models headless: heatmaps, segmentations (NIfTI, DICOM SEG), "
                                       "results.json")
    p.add_argument("path")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results (created if needed)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", action="store_true", help="also print results.json to stdout")
    p.add_argument("--model", action="append", metavar="NAME[:VERSION]",
                   help="use this model for its task and modality instead of the automatic choice (repeatable; "
                        "`lightbox models list` names them)")
    p.add_argument("--send", metavar="SERVER", default=None,
                   help="store the DICOM results (SEG, Parametric Maps, SR) on this server (a configured name, "
                        "http(s)://.../dicom-web or dicom://AET@host:port)")
    from .cli_remote import connection_options
    connection_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("export", help="append a corrected segmentation (nnU-Net v2 raw layout + MONAI datalist + "
                                      "DICOM SEG) or a mammography exam's classes (imagesCls + classification.csv) "
                                      "to a de-identified retraining dataset")
    p.add_argument("path", help="the study (folder or file) the segmentation or the classes belong to")
    p.add_argument("--labels", default=None, help="label map: NIfTI on the image grid, or a DICOM SEG (required "
                                                  "unless the study is a mammography exam exported by --class)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset root (created or appended to)")
    p.add_argument("--dataset", default="Dataset501_Lightbox")
    p.add_argument("--names", default=None, help="comma-separated label names for values 1, 2, ... (NIfTI)")
    p.add_argument("--series", default=None, help="series UID when the study has several (a mammography "
                                                  "view name such as LCC also works)")
    p.add_argument("--keep-mapping", action="store_true", help="also write the de-identification mapping")
    p.add_argument("--class", dest="cls", action="append", metavar="VIEW=LABEL",
                   help="confirmed/corrected class per view (RCC, LCC, RMLO, LMLO) or exam for the classifiers "
                        "(repeatable); without --labels a mammography exam exports every view's image with them")
    p.add_argument("--allow-unverified-pixels", action="store_true",
                   help="export images where burned-in patient text is common (US, SC, OT, XC, secondary "
                        "captures) that lack BurnedInAnnotation, after checking them yourself; an image "
                        "marked BurnedInAnnotation=YES is never exported")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="fine-tune a model on an exported dataset (segmentation: nnU-Net layout; "
                                     "exam classifier: classification.json); writes a new model version to "
                                     "the user's model folder")
    p.add_argument("dataset")
    p.add_argument("--model", default=None, help="default: by the dataset (CT -> ct-organs-unet3d, MG masks -> "
                                                 "mammo-lesion-unet2d, classification only -> mammo-exam); MG "
                                                 "masks also train mammo-patch and mammo-infill-cgan; imported "
                                                 "models by name")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="model folder (default: the user's model folder)")
    p.add_argument("--allow-no-validation", action="store_true",
                   help="train even with no validation case; the version is written 'unvalidated' and Analyze "
                        "never uses it unless you pin it")
    p.add_argument("--ignore-extra-labels", action="store_true",
                   help="train even when the dataset has labels the model lacks (they become background)")
    from inference.augment import METHODS as AUGMENT_METHODS  # numpy only: no torch for `lightbox info`

    p.add_argument("--augment", choices=AUGMENT_METHODS, default="none",
                   help="add synthetic positives to the training views (mammography lesion U-Net, exam and patch "
                        "classifiers): classic = flips, rotations, zoom, intensity jitter of the training "
                        "positives; cgan = lesions infilled into the training normals by mammo-infill-cgan; "
                        "recorded in the new card, with a real-vs-synthetic grid PNG beside its weights")
    p.add_argument("--augment-count", type=int, default=None, metavar="N",
                   help="how many synthetic positives (default: enough to bring positives to about a third of "
                        "the training views, at most 64)")
    p.set_defaults(func=cmd_train)

    from .cli_models import add_parser as add_models_parser
    from .cli_remote import add_parser as add_remote_parser

    add_models_parser(sub)
    add_remote_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LightboxError as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:
        return _fail(describe(exc))


if __name__ == "__main__":
    sys.exit(main())
