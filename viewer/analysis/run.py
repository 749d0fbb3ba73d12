"""Run the right models on a loaded study: the glue between Volumes and the inference engine.

The engine (``inference``) takes numpy arrays and spacings and knows nothing of
DICOM; this module picks the models for a modality from the registry, feeds them
the loaded pixels with the geometry facts they need (pixel spacing, laterality,
which side the chest wall is on), and hands back maps on the source grid.
Both the CLI (`lightbox analyze`) and the viewer's Analyze button call it.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inference import activation as _activation
from viewer.core.errors import Cancelled
from viewer.core.mammo import view_name
from viewer.core.study import Series
from viewer.core.volume import Volume

from .results import AnalysisResult, Overlay, SeriesResult

Progress = Callable[[float, str], None]  # fraction 0..1, what is happening
StopCheck = Callable[[], bool]

# Patch-classifier classes that are not findings: no heatmap is offered for them.
NOT_FINDINGS = {"background", "normal", "tissue", "normal tissue"}
_MODELS: dict[tuple, tuple[object, object]] = {}  # (name, version, sha256, device) -> (module, card)
_LOAD_LOCK = threading.RLock()


class NoModel(LookupError):
    """No model in the registry can analyse this kind of image."""


# model name -> version the user pinned (AI ▸ Models… "Use this version"), kept in the user model folder by
# inference.activation; a mapping for callers written when this was an in-memory dict
PREFERRED_VERSIONS = _activation.PinnedVersions()


def candidates(task: str, modality: str, problems: list | None = None) -> list:
    """Cards for a task and modality in the order Analyze tries them (inference.activation.ranked): per
    model the version the rule picks (pinned, else the newest not shown worse than its parent), then
    its other eligible versions newest first as fallbacks. Broken cards go to ``problems``."""
    from inference.activation import ranked
    from inference.registry import available_models

    return ranked(available_models(task=task, modality=modality, problems=problems))


def skip_note(card, exc: Exception) -> str:
    return f"model {card.name} {card.version} skipped: {exc}"


def _verified(task: str, modality: str, skipped: list[str] | None, broken: list | None = None):
    """:func:`candidates` whose weights verify, in order; each corrupt or tampered one is named in
    ``skipped`` (and each unreadable card in ``broken``) on the way."""
    from inference.registry import ModelError, check_model

    for card in candidates(task, modality, broken):
        try:
            check_model(card)
        except ModelError as exc:
            if skipped is not None:
                skipped.append(skip_note(card, exc))
            continue
        yield card


def pick_card(task: str, modality: str, skipped: list[str] | None = None):
    """The first of :func:`candidates` whose weights verify (a corrupt or tampered model is skipped
    and named in ``skipped``, so an older one, finally the shipped one, is used); None when none."""
    return next(_verified(task, modality, skipped), None)


def load(card, device: str):
    """A model loaded once per process and device (weights verified against the card on first load).

    Thread-safe: the start-up warm-up (viewer.analysis.warmup) and an early Analyze may ask for the
    same model at once; the second waits for the first instead of loading it again."""
    from inference.registry import load_model

    key = (card.name, card.version, card.sha256, str(device))
    with _LOAD_LOCK:
        if key not in _MODELS:
            module, card = load_model(card, device=device)
            if not card.imported:  # the layout, then the engine, this machine runs faster with the same outputs
                from inference.layout import fastest_layout
                from inference.onnx_backend import accelerate

                module = fastest_layout(module, card, device)
                module = accelerate(module, card, device, differentiable=card.task == "exam-classifier")
            _MODELS[key] = (module, card)
        return _MODELS[key]


def _afresh(attempt: Callable, *watches) -> Callable:
    """``attempt(device)`` that first forgets what ``watches`` collected from an attempt that failed
    (run_with_cpu_fallback redoes a GPU run that ran out of memory on the CPU)."""
    def run(device):
        for w in watches:
            w.clear()
        return attempt(device)
    return run


def domain_entry(result, card_or_name) -> dict:
    """A DomainResult as SeriesResult.domain / results.json keep it, with the model that judged."""
    name = card_or_name if isinstance(card_or_name, str) else model_id(card_or_name)
    return {**result.as_dict(), "model": name}


def domain_warning(title: str, entry: dict) -> str:
    from inference.domain import UNLIKE

    return (f"{title}: {UNLIKE} ({entry.get('model')}: score {entry.get('score')} above "
            f"threshold {entry.get('threshold')})")


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """'NAME' or 'NAME:VERSION' (as --model takes it) -> (name, version or None)."""
    name, sep, version = str(spec).strip().rpartition(":") if ":" in str(spec) else (str(spec).strip(), "", "")
    name, version = name.strip(), version.strip()
    if not name or (sep and not version):
        raise ValueError(f"--model {spec!r}: expected NAME or NAME:VERSION")
    return name, (version or None)


def resolve_models(specs: list[str] | None) -> list:
    """The cards --model names, each verified (weights match the card); ModelError naming the first
    spec that matches no installed model or whose weights fail."""
    from inference.registry import check_model, find_model

    cards = []
    for spec in specs or []:
        name, version = parse_model_spec(spec)
        card = find_model(name, version)
        check_model(card)
        cards.append(card)
    return cards


def _explicit(task: str, modality: str, chosen: list | None):
    return next((c for c in chosen or [] if c.task == task and c.modality.upper() == (modality or "").upper()), None)


def load_role(task: str, modality: str, device: str, notes: list[str], chosen: list | None = None):
    """(module, card) of the first candidate that verifies and loads; each one skipped on the way (and
    each broken card) is named once in ``notes``. None when no model does the task.

    A card in ``chosen`` (--model) for this task and modality is used as it is: when it fails, the
    analysis fails (the user asked for that model), it never falls back silently."""
    from inference.registry import ModelError

    picked = _explicit(task, modality, chosen)
    if picked is not None:
        return load(picked, device)
    problems: list[str] = []
    found = None
    for card in _verified(task, modality, problems, problems):
        try:
            found = load(card, device)
            break
        except ModelError as exc:
            problems.append(skip_note(card, exc))
    notes += [p if p.startswith("model ") else f"model card skipped: {p}" for p in problems]
    notes[:] = list(dict.fromkeys(notes))
    return found


def trust_notes(roles: dict[str, object]) -> tuple[dict[str, bool], list[str]]:
    """({role: verified}, a note per unverified model) for the cards an analysis used."""
    from inference.registry import is_verified

    verified = {role: is_verified(card) for role, card in roles.items()}
    notes = [f"{role} model {model_id(card)} is unverified: your own model ({card.path}); its weights match "
             "its card but are not ones shipped with Lightbox" for role, card in roles.items() if not verified[role]]
    return verified, notes


def model_id(card) -> str:
    return f"{card.name} {card.version}"


def card_facts(card) -> dict:
    """What results.json keeps of a model: enough to find the exact weights again."""
    return {"name": card.name, "version": str(card.version), "sha256": card.sha256,
            "format": card.architecture if card.imported else "lightbox", "task": card.task,
            "modality": card.modality}


def resolve_device(preference: str = "auto") -> str:
    from inference.device import pick_device

    _leave_a_core()
    return str(pick_device(preference))


_THREADS_SET = False


def _leave_a_core() -> None:
    """CPU inference on all cores but one: the UI thread (and the OS) keep one, and torch's threads
    stop waiting on each other. Measured on 2 cores: 1 thread 0.8 s vs 2 threads 3.2 s per
    full-field mammogram U-Net while another process was busy (benchmarks/bench_analyze.py --threads).
    LIGHTBOX_TORCH_THREADS overrides."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    wanted = os.environ.get("LIGHTBOX_TORCH_THREADS")
    n = int(wanted) if wanted and wanted.isdigit() else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    _THREADS_SET = True


def _stop_guard(should_stop: StopCheck | None) -> Callable[[], bool]:
    """The engine's cancel callable; also raises our Cancelled between stages."""
    def cancel() -> bool:
        return bool(should_stop and should_stop())
    return cancel


def _check(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("analysis cancelled")


def _engine_call(fn, *args, **kwargs):
    """Engine Cancelled -> ours, so callers catch one type."""
    from inference.segment import Cancelled as EngineCancelled

    try:
        return fn(*args, **kwargs)
    except EngineCancelled as exc:
        raise Cancelled("analysis cancelled") from exc


# --------------------------------------------------------------------------
# mammography: 4-view exam
# --------------------------------------------------------------------------
MAMMO_ROLES = (("patch", "patch-classifier"), ("exam", "exam-classifier"), ("segmentation", "segmentation-2d"))
NO_MAMMO = ("no mammography classifier installed (need a 'patch-classifier' and an 'exam-classifier' card for MG "
            "in resources/models or the user model folder)")


def _no_model(why: str, notes: list[str]) -> NoModel:
    return NoModel(why + "".join(f"; {n}" for n in notes))


def mammo_models():
    """role -> the card Analyze would use (verified weights; the segmentation may be None)."""
    skipped: list[str] = []
    cards = {role: pick_card(task, "MG", skipped) for role, task in MAMMO_ROLES}
    if cards["patch"] is None or cards["exam"] is None:
        raise _no_model(NO_MAMMO, skipped)
    return cards


def analyze_mammo_exam(views: dict[str, tuple[Series, Volume]], study_uid: str = "", device: str = "auto",
                       progress: Progress | None = None, should_stop: StopCheck | None = None,
                       exam: dict | None = None, models: list | None = None) -> AnalysisResult:
    """views: {"RCC": (series, volume (1, rows, cols)), ...}: 1 to 4 hung views and any extra views
    (keyed by their own name, e.g. "LXCCL" or "LCC spot"; the models see them as the CC or MLO
    they resemble). ``exam`` (the grouping's summary) is kept in the result.

    Per view: class heatmaps from the patch classifier (run fully convolutionally), the
    malignancy probability of the whole-image classifier and its Grad-CAM, and the
    lesion segmentation when a 2D segmentation model is installed; per breast: the exam
    score from its hung CC and MLO. A breast without a hung view gets no score, and the result
    says why. A view without PixelSpacing is analysed at an estimated spacing, named in the result.
    """
    from inference.classify import exam_scores
    from inference.preprocess.mammo import chest_wall_from_orientation

    from ..core.mammo import FOUR_VIEWS, bright_is_dense, estimate_spacing

    if not views:
        raise ValueError("no mammography views to analyse")
    model_names = {name: _model_view(name, series) for name, (series, _v) in views.items()}
    unknown = [n for n, m in model_names.items() if m is None]
    if unknown:
        raise ValueError(f"mammogram {', '.join(unknown)}: breast or view unknown, cannot be analysed")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    notes: list[str] = []
    loaded = {role: load_role(task, "MG", dev, notes, models) for role, task in MAMMO_ROLES}
    if loaded["patch"] is None or loaded["exam"] is None:
        raise _no_model(NO_MAMMO, notes)
    patch_card, exam_card, seg = loaded["patch"][1], loaded["exam"][1], loaded["segmentation"]
    used = {role: pair[1] for role, pair in loaded.items() if pair is not None}
    verified, unverified = trust_notes(used)
    result = AnalysisResult("mammo-exam", study_uid, {}, models={role: model_id(c) for role, c in used.items()},
                            device=dev, warnings=notes + unverified, verified=verified,
                            model_cards={role: card_facts(c) for role, c in used.items()})
    if seg is None:
        result.warnings.append("no 2D segmentation model for MG installed: no lesion masks")
    findings = [c for c in patch_card.classes if c.lower() not in NOT_FINDINGS]
    names = sorted(views, key=lambda n: ("RCC", "LCC", "RMLO", "LMLO").index(n) if n in
                   ("RCC", "LCC", "RMLO", "LMLO") else 9)
    inputs = {}
    for name in names:
        series, volume = views[name]
        image = bright_is_dense(volume, series)[0]  # MONOCHROME1 inverted: the models assume MONOCHROME2
        spacing = (float(volume.spacing[1]), float(volume.spacing[2]))
        estimate = estimate_spacing(series, volume.shape)
        if estimate is not None:  # never the loader's 1 mm: every model input would be wrong
            spacing = (estimate.mm, estimate.mm)
        chest_wall = chest_wall_from_orientation(_orientation_letters(volume.info.patient_orientation))
        inputs[name] = _ViewInput(series, volume, image, spacing, estimate, chest_wall, model_names[name])
    exam_run = _ExamRun(loaded, dev, findings, result.warnings, should_stop)
    with _DensityBeside(dev) as densities:  # on a GPU the host measures density while the models run
        for name in names:
            v = inputs[name]
            densities.start(name, v.image, v.spacing, v.model_name, v.chest_wall)
        for i, name in enumerate(names):
            _check(should_stop)
            stage = None if progress is None else (
                lambda f, what, i=i, name=name: progress((i + f) / len(names), f"{name}: {what}"))
            sr = exam_run.view(name, inputs[name], stage)
            sr.notes = {"density": densities.result(name), **sr.notes}
            result.series[name] = sr
    hung = {n: s.scores["malignancy"] for n, s in result.series.items() if n in FOUR_VIEWS}
    result.exam_scores = exam_scores(hung, exam_card.extra.get("exam_combine", "mean"))
    result.exam = dict(exam or {})
    no_score = {side: f"no {word} breast view (CC or MLO) in this exam: no score"
                for side, word in (("R", "right"), ("L", "left")) if side not in result.exam_scores}
    if no_score:
        result.exam["no_score"] = no_score
        result.warnings += [f"{side} breast: {why}" for side, why in no_score.items()]
    result.seconds = time.perf_counter() - t0
    if progress:
        progress(1.0, "done")
    return result


class _DensityBeside:
    """Breast density per view (numpy/SciPy on the host, no model): computed in the loop on a CPU, where
    every core already runs the models, but on host threads beside the models when they run on a GPU."""

    def __init__(self, device: str):
        import torch

        self.pool = None
        if torch.device(device).type != "cpu":
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 2) - 1)),
                                           thread_name_prefix="lightbox-density")
        self.jobs: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, name, *args) -> None:
        self.jobs[name] = self.pool.submit(density_entry, *args) if self.pool is not None else args

    def result(self, name) -> dict:
        job = self.jobs[name]
        return job.result() if self.pool is not None else density_entry(*job)


@dataclass
class _ViewInput:
    """One view as the models see it: pixels with dense tissue bright, the spacing used (an estimate
    when the file had none), the chest wall side when the orientation says it, the view it is analysed as."""

    series: Series
    volume: Volume
    image: np.ndarray
    spacing: tuple[float, float]
    estimate: object | None
    chest_wall: str | None
    model_name: str


@dataclass
class _ExamRun:
    """What every view of one exam's analysis shares: the loaded models, the device, the finding classes,
    the result's warnings (a view retried on the CPU or out of domain adds one) and the stop check."""

    loaded: dict
    device: str
    findings: list
    warnings: list
    should_stop: StopCheck | None

    def view(self, name: str, v: _ViewInput, stage: Callable[[float, str], None] | None) -> SeriesResult:
        """Classifiers, maps and the lesion U-Net of one view, each model's domain judged on it."""
        from inference import domain
        from inference.classify import analyze_view
        from inference.device import run_with_cpu_fallback

        patch_model, patch_card = self.loaded["patch"]
        exam_model, exam_card = self.loaded["exam"]
        seg = self.loaded["segmentation"]
        if stage:
            stage(0.0, "heatmap and classification")
        if v.estimate is not None:
            self.warnings.append(f"{name}: {v.estimate.note}")
        with domain.watch(patch_card, patch_model) as patch_watch, domain.watch(exam_card, exam_model) as exam_watch:
            va = run_with_cpu_fallback(_afresh(
                lambda d: analyze_view(v.model_name, v.image, v.spacing, patch_model.to(d), patch_card,
                                       exam_model.to(d), v.chest_wall, d, True),
                patch_watch, exam_watch), self.device, self.warnings.append)
        judged = {model_id(patch_card): patch_watch.result(), model_id(exam_card): exam_watch.result()}
        sr = SeriesResult(v.series.key, v.series.uid, name, v.volume, scores={"malignancy": va.probability})
        if v.estimate is not None:
            sr.notes["spacing_estimated"] = v.estimate.summary()
        if v.model_name != name:
            sr.notes["analysed_as"] = v.model_name
        for cls in self.findings:
            sr.overlays.append(Overlay(cls, "probability", va.heatmap_on_source(cls)[np.newaxis],
                                       model_id(patch_card)))
        sr.overlays.append(Overlay("Grad-CAM", "probability", va.cam_on_source()[np.newaxis], model_id(exam_card)))
        if seg is not None:
            _check(self.should_stop)
            if stage:
                stage(0.5, "lesion segmentation")
            self._lesions(sr, v, va.prepared, judged)
        verdict = domain.combine(judged)
        sr.domain = {**verdict.as_dict(), "model": domain.furthest(judged) or ", ".join(judged),
                     "models": {m: r.as_dict() for m, r in judged.items()}}
        if sr.out_of_domain:
            self.warnings.append(domain_warning(name, sr.domain))
        return sr

    def _lesions(self, sr: SeriesResult, v: _ViewInput, prepared, judged: dict) -> None:
        """The lesion U-Net's labels and probability on the view (reusing the classifiers' preparation
        when it is the same), and the lesion area."""
        from inference import domain
        from inference.device import run_with_cpu_fallback
        from inference.segment import segment_image

        seg_model, seg_card = self.loaded["segmentation"]
        if seg_card.imported:  # a 2D model from another tool: it sees the view as stored
            labels, prob, judged[model_id(seg_card)] = _imported_2d(seg_model, v.image, v.spacing, self.should_stop)
        else:
            n = v.model_name
            with domain.watch(seg_card, seg_model) as seg_watch:
                labels, prob = run_with_cpu_fallback(_afresh(
                    lambda d: _engine_call(segment_image, seg_model, seg_card, v.image, v.spacing, n[0], n[1:],
                                           device=d, cancel=_stop_guard(self.should_stop), chest_wall=v.chest_wall,
                                           prepared=prepared),
                    seg_watch), self.device, self.warnings.append)
            judged[model_id(seg_card)] = seg_watch.result()
        sr.overlays.append(Overlay("segmentation", "labels", labels[np.newaxis], model_id(seg_card),
                                   list(seg_card.classes)))
        sr.overlays.append(Overlay("lesion probability", "probability", prob[np.newaxis], model_id(seg_card)))
        sr.scores["lesion area mm2"] = float((labels > 0).sum() * v.spacing[0] * v.spacing[1])


def density_entry(image: np.ndarray, spacing_yx, model_name: str, chest_wall: str | None) -> dict:
    """Area-based percent density of one view (inference.density, no model needed) as the results keep it,
    with its time; {"error": reason} when the image cannot give one (the analysis goes on)."""
    from inference.density import DensityError, view_density

    t0 = time.perf_counter()
    try:
        est = view_density(image, spacing_yx, mlo=model_name[1:] == "MLO", chest_wall=chest_wall)
    except DensityError as exc:
        return {"error": str(exc), "estimate": True}
    return {**est.as_dict(), "seconds": round(time.perf_counter() - t0, 3)}


def mammo_density(views: dict[str, tuple[Series, Volume]]) -> dict[str, dict]:
    """{view name: density entry} for mammography views without running any model (an exam can get its
    density where no classifier is installed); same inputs as :func:`analyze_mammo_exam`."""
    from inference.preprocess.mammo import chest_wall_from_orientation

    from ..core.mammo import bright_is_dense, estimate_spacing

    out = {}
    for name, (series, volume) in views.items():
        model_name = _model_view(name, series) or name
        estimate = estimate_spacing(series, volume.shape)
        spacing = (estimate.mm, estimate.mm) if estimate is not None else (float(volume.spacing[1]),
                                                                          float(volume.spacing[2]))
        chest_wall = chest_wall_from_orientation(_orientation_letters(volume.info.patient_orientation))
        out[name] = density_entry(bright_is_dense(volume, series)[0], spacing, model_name, chest_wall)
    return out


def density_only(views: dict[str, tuple[Series, Volume]], study_uid: str = "", why: str = NO_MAMMO,
                 exam: dict | None = None) -> AnalysisResult:
    """The exam's density without any model, for when no mammography classifier is installed: per view a
    SeriesResult with only its density entry, and a warning saying why there are no scores or maps."""
    t0 = time.perf_counter()
    entries = mammo_density(views)
    result = AnalysisResult("mammo-exam", study_uid, {}, device="cpu",
                            warnings=[f"{why.splitlines()[0]}: breast density only, no scores or maps"])
    for name, (series, volume) in views.items():
        result.series[name] = SeriesResult(series.key, series.uid, name, volume, notes={"density": entries[name]})
    result.exam = dict(exam or {})
    result.seconds = time.perf_counter() - t0
    return result


def _imported_2d(runner, image: np.ndarray, spacing_yx, should_stop):
    """(labels, probability of any foreground class, domain verdict) of an imported 2D segmentation
    model on one view."""
    from inference import domain
    from inference.formats import VolumeImage

    view = VolumeImage(image[np.newaxis].astype(np.float32, copy=False),
                       (1.0, float(spacing_yx[0]), float(spacing_yx[1])), modality="MG")
    pred = _engine_call(runner.predict, view, None, _stop_guard(should_stop))
    labels = np.asarray(pred.labels)[0]
    if pred.probabilities is not None:
        prob = 1.0 - np.asarray(pred.probabilities[0], dtype=np.float32)[0]
    else:
        prob = (labels > 0).astype(np.float32)
    return labels, np.clip(prob, 0.0, 1.0), domain.check(runner.card, image=view, labels=pred.labels)


def _model_view(name: str, series: Series) -> str | None:
    """The standard view ('LCC', 'RMLO') the models see a view as: its own name when it is one,
    else what its tags and text say it resembles (an LXCCL is seen as an LCC)."""
    from viewer.core.mammo import FOUR_VIEWS
    from viewer.core.mammo_views import identify_series

    if name in FOUR_VIEWS:
        return name
    return identify_series(series).model_name


def _orientation_letters(orientation):
    """PatientOrientation only when it holds direction letters (CBIS-DDSM writes 'CC'/'MLO' there)."""
    if orientation and all(set(str(p).upper()) <= set("APLRHF") for p in orientation):
        return orientation
    return None


# --------------------------------------------------------------------------
# volumes (CT, MR): 3D segmentation
# --------------------------------------------------------------------------
VOLUME_MODALITIES = ("CT", "MR")


def no_volume_model(modality: str) -> str:
    return (f"no model for {modality or 'unknown modality'} images (no 'segmentation-3d' model for "
            f"{modality or 'this modality'} installed: import one with AI > Import model... or `lightbox models import`)")


def volume_model(modality: str, models: list | None = None):
    """The card Analyze would use for a volume of this modality (the --model choice first)."""
    chosen = _explicit("segmentation-3d", modality, models)
    if chosen is not None:
        return chosen
    skipped: list[str] = []
    card = pick_card("segmentation-3d", modality, skipped)
    if card is None:
        raise _no_model(no_volume_model(modality), skipped)
    return card


def ct_model():
    return volume_model("CT")


def volume_image(volume: Volume):
    """The engine's view of a Volume (inference never imports viewer)."""
    from inference.formats import VolumeImage

    return VolumeImage(volume.array, tuple(float(v) for v in volume.spacing), tuple(float(v) for v in volume.origin),
                       np.asarray(volume.direction, float), (volume.info.modality or "").upper())


def analyze_volume(series: Series, volume: Volume, device: str = "auto", progress: Progress | None = None,
                   should_stop: StopCheck | None = None, models: list | None = None) -> AnalysisResult:
    """Segmentation of a CT or MR volume by the model Analyze picks for its modality (or the matching one
    of ``models``, as --model chose): a Lightbox model or one imported from nnU-Net, MONAI, ONNX or
    TorchScript. Volumes in mL per class, and a lesion/tumour probability as a heatmap."""
    from inference import domain
    from inference.device import run_with_cpu_fallback
    from inference.segment import segment_volume

    modality = (volume.info.modality or series.modality or "").upper()
    if min(volume.shape) < 2:
        raise ValueError(f"{series.label()}: a 3D segmentation needs a volume, got shape {volume.shape}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    warnings: list[str] = []
    found = load_role("segmentation-3d", modality, dev, warnings, models)
    if found is None:
        raise _no_model(no_volume_model(modality), warnings)
    net, card = found
    verified, unverified = trust_notes({"segmentation": card})
    warnings += unverified
    _check(should_stop)

    def engine_progress(f: float) -> None:
        if progress:
            progress(0.95 * float(f), f"{modality} segmentation ({model_id(card)})")

    classes = list(card.classes)
    if card.imported:
        image = volume_image(volume)
        pred = _engine_call(net.predict, image, engine_progress, _stop_guard(should_stop))
        labels = pred.labels
        probs = pred if pred.probabilities is not None else None  # Prediction.channel() like GridProbabilities
        classes = list(pred.classes) or classes
        warnings += pred.notes
        verdict = domain.check(card, image=image, labels=labels)
    else:
        with domain.watch(card, net) as watch:  # the network's own features, collected during the real pass
            labels, probs = run_with_cpu_fallback(_afresh(
                lambda d: _engine_call(segment_volume, net, card, volume.array, tuple(volume.spacing), d,
                                       engine_progress, _stop_guard(should_stop), probabilities="lazy"),
                watch), dev, warnings.append)
        verdict = watch.result()
    sr = SeriesResult(series.key, series.uid, series.label(), volume, domain=domain_entry(verdict, card))
    if sr.out_of_domain:
        warnings.append(domain_warning(series.label(), sr.domain))
    sr.overlays.append(Overlay("segmentation", "labels", labels, model_id(card), classes))
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=len(classes))
    for i, name in enumerate(classes):
        if i == 0:
            continue
        sr.scores[f"{name} mL"] = float(counts[i] * voxel_ml)
    lesion = next((c for c in classes if any(w in c.lower() for w in ("lesion", "tumor", "tumour"))), None)
    if lesion is not None and probs is not None:
        _check(should_stop)
        sr.overlays.append(Overlay(f"{lesion} probability", "probability", probs.channel(lesion), model_id(card)))
    result = AnalysisResult(modality.lower() or "volume", volume.info.study_uid, {series.key: sr},
                            models={"segmentation": model_id(card)}, device=dev,
                            seconds=time.perf_counter() - t0, warnings=warnings, verified=verified,
                            model_cards={"segmentation": card_facts(card)})
    if progress:
        progress(1.0, "done")
    return result


def analyze_ct(series: Series, volume: Volume, device: str = "auto", progress: Progress | None = None,
               should_stop: StopCheck | None = None, models: list | None = None) -> AnalysisResult:
    """Organ and lesion segmentation of a CT volume (:func:`analyze_volume`)."""
    return analyze_volume(series, volume, device, progress, should_stop, models=models)


# --------------------------------------------------------------------------
# choosing what to run
# --------------------------------------------------------------------------
def mammo_views(volumes: dict[str, tuple[Series, Volume] | None]) -> dict[str, tuple[Series, Volume]]:
    """The present views of a four_view()-style mapping, named from their tags."""
    out = {}
    for name, pair in volumes.items():
        if pair is None:
            continue
        series, volume = pair
        out[view_name(volume.info) or name] = (series, volume)
    return out


def can_analyze(modality: str) -> bool:
    """Whether some installed model handles this modality (MG exams, CT and MR volumes)."""
    modality = (modality or "").upper()
    if modality == "MG":
        return pick_card("patch-classifier", "MG") is not None and pick_card("exam-classifier", "MG") is not None
    if modality in VOLUME_MODALITIES:
        return pick_card("segmentation-3d", modality) is not None
    return False
