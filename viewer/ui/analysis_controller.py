"""The Analyze button: run the models on what is shown, list the scores, overlay the maps.

Runs viewer.analysis on the window's worker (progress bar + Cancel), keeps every
result per study/series for the session so showing it again is instant, and on
disk (viewer.analysis.cache) so a later session shows it without re-running the
models: the worker looks the entry up before running and stores it after, and
every image shown is looked up there at once (on a worker, no model runs), so a
reopened study shows its results before A is pressed. An MG exam with no
classifier installed still gets its breast density (no model needed). It
puts the maps on every view that shows the analysed image (the 1x1 viewport,
the three MPR planes, the four mammography cells) as overlay layers named
``ai:heatmap`` (the map chosen in the panel) and ``ai:labels``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget

from ..analysis.cache import AnalysisCache, card_id, entry_key, planned_cards
from ..analysis.results import AnalysisResult, SeriesResult
from ..analysis.run import NoModel
from .analysis_panel import NO_HEATMAP, OUT_OF_DOMAIN, AnalysisPanel, domain_detail
from .overlays import EDIT_LAYER_NAME, HEAT_LAYER, LABEL_LAYER, LabelLayer, ProbabilityLayer
from .settings import remember_warm_up, settings, warm_up_enabled
from .workers import TaskRunner

if TYPE_CHECKING:
    from .host import WindowHost
    from .slice_view import SliceView

PREFERRED_HEATMAPS = ("mass", "lesion probability", "lesions probability", "calcification", "Grad-CAM")


class AnalysisController(QObject):
    analysis_finished = Signal(object)  # AnalysisResult (also when taken from the cache)
    stored_checked = Signal(object)  # the disk look-up for a shown image ended: its AnalysisResult or None

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.cache: dict[str, AnalysisResult] = {}
        self.current: AnalysisResult | None = None
        self.chosen_heatmap: str | None = None
        self.lookups = TaskRunner(self)  # disk look-ups for shown images: beside the main task, never cancel it
        self.lookup_generation = 0  # a look-up's answer is shown only while it is the newest question
        window.image_shown.connect(self.show_stored)

        self.action = QAction("Analyze", window)
        self.action.setShortcut(QKeySequence("A"))
        self.action.setToolTip("Run the AI models on the shown CT series or mammography exam (A)")
        self.action.triggered.connect(self.analyze)

        self.panel = AnalysisPanel(window)
        self.dock = QDockWidget("AI results", window)
        self.dock.setObjectName("ai-dock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.models_action = QAction("Models…", window)
        self.models_action.setToolTip("Installed AI models, their training data and metrics; add your own")
        self.models_action.triggered.connect(self.show_models)
        self.models_dialog = None
        self.train_action = QAction("Train…", window)
        self.train_action.setToolTip("Fine-tune a model (CT or mammography segmentation, patch or exam classifier, "
                                     "an imported model) on an exported dataset, optionally with synthetic "
                                     "lesions; writes a new version")
        self.train_action.triggered.connect(self.show_train)
        self.train_dialog = None
        self.import_action = QAction("Import model…", window)
        self.import_action.setToolTip("Bring in a model made with another tool: an nnU-Net v2 folder, a MONAI "
                                      "bundle, an ONNX, TorchScript or torch.export file")
        self.import_action.triggered.connect(self.show_import)
        self.import_dialog = None
        self.clear_cache_action = QAction("Clear cached results", window)
        self.clear_cache_action.setToolTip("Delete the AI results kept on disk (Analyze runs the models again)")
        self.clear_cache_action.triggered.connect(self.clear_disk_cache)
        self.warm_action = QAction("Prepare models at start", window)
        self.warm_action.setCheckable(True)
        self.warm_action.setChecked(warm_up_enabled())
        self.warm_action.setToolTip("Load the AI models and start the GPU in the background when Lightbox "
                                    "starts, so the first Analyze is as fast as the next ones")
        self.warm_action.toggled.connect(remember_warm_up)
        self.warmers = TaskRunner(self)  # the start-up warm-up: beside the main task, never blocks it
        self.warm_report = None  # viewer.analysis.warmup.WarmUp once it ended
        self._load_preferred_versions()
        self.panel.heatmap_chosen.connect(self._heatmap_chosen)
        self.panel.heatmap_style_changed.connect(self._restyle)
        self.panel.labels_style_changed.connect(self._restyle)

    def show_models(self):
        from .models_dialog import ModelsDialog

        if self.models_dialog is None:
            self.models_dialog = ModelsDialog(self.window)
            self.models_dialog.controller = self
        else:
            self.models_dialog.reload()
        self.models_dialog.show()
        return self.models_dialog

    def clear_disk_cache(self) -> tuple[int, int]:
        """Forget every stored result, on disk and in this session; (entries, bytes) removed."""
        count, size = AnalysisCache().clear()
        self.forget()
        self.window.show_message(f"Cleared {count} cached AI result{'s' if count != 1 else ''} "
                                 f"({size / 1e6:.1f} MB)")
        return count, size

    def show_train(self):
        from .train_dialog import TrainDialog

        if self.train_dialog is None:
            self.train_dialog = TrainDialog(self.window)
            self.train_dialog.finished_training.connect(self._trained)
        self.train_dialog.reload_models()
        self.train_dialog.show()
        return self.train_dialog

    def show_import(self):
        from .import_model_dialog import ImportModelDialog

        if self.import_dialog is None:
            self.import_dialog = ImportModelDialog(self.window)
            self.import_dialog.imported.connect(self._imported)
        self.import_dialog.show()
        self.import_dialog.raise_()
        return self.import_dialog

    def _imported(self, card) -> None:
        """A new model may change what Analyze runs: forget this session's results, relist the models."""
        self.forget()
        if self.models_dialog is not None:
            self.models_dialog.reload()
        if self.train_dialog is not None:
            self.train_dialog.reload_models()
        self.window.show_message(self.import_dialog.message if self.import_dialog is not None
                                 else f"Imported {card.name} {card.version}")

    def start_warm_up(self) -> bool:
        """Prepare the models in the background (viewer.analysis.warmup) when the setting is on and
        LIGHTBOX_WARMUP is not 0 (tests, scripts); True when it started."""
        if not self.warm_action.isChecked() or os.environ.get("LIGHTBOX_WARMUP", "1").strip() == "0":
            return False
        from ..analysis.warmup import warm_up

        self.warmers.start(lambda _progress, should_stop: warm_up("auto", should_stop=should_stop), "warm-up",
                           on_finished=self._warmed,
                           on_failed=lambda message: self._warmed(None, message))
        return True

    def _warmed(self, report, failure: str | None = None) -> None:
        self.warm_report = report
        if self.window.busy:  # the user's own task keeps the status line
            return
        if report is None:
            self.window.show_message(f"AI warm-up failed: {failure}; Analyze will load the models itself",
                                     "warning")
        elif not report.stopped:
            self.window.show_message(report.summary(), "warning" if report.problems else "info")

    def shutdown(self) -> None:
        """Wait for the look-ups and the dialogs' workers (no thread may outlive the window)."""
        self.warmers.shutdown()
        self.lookups.shutdown()
        for dialog in (self.train_dialog, self.import_dialog):
            if dialog is not None:
                dialog.shutdown()

    def _trained(self, card) -> None:
        if card is not None:
            self.forget()  # results of the old version no longer describe what Analyze would do
            from inference import activation

            self.window.show_message(f"New model version {card.name} {card.version}: {activation.outcome(card)}")

    # -- which version of a model Analyze uses ----------------------------------------------------
    def _load_preferred_versions(self) -> None:
        """Pins kept by older versions in the Qt settings move once into the model folder's
        state/active.json (the one place the CLI and the app both read), then leave the settings."""
        from inference import activation

        s = settings()
        s.beginGroup("models/preferred")
        old = {k: str(s.value(k)) for k in s.childKeys()}
        s.endGroup()
        if not old:
            return
        pinned = activation.pins()
        for name, version in old.items():
            if name not in pinned:
                activation.pin(name, version)
        s.remove("models/preferred")
        s.sync()

    def use_version(self, name: str, version: str | None) -> None:
        """Analyze uses ``version`` of model ``name`` (None: the rule again); remembered across sessions
        in the model folder (inference.activation), so `lightbox analyze` agrees."""
        from inference import activation

        if version is None:
            activation.unpin(name)
        else:
            activation.pin(name, version)
        self.forget()

    def forget(self) -> None:
        """This session's results no longer describe what Analyze would run: drop them, and the answer of
        any disk look-up still running (it was asked under the old models or before the cache was cleared)."""
        self.cache.clear()
        self.lookup_generation += 1

    # -- what can be analysed ----------------------------------------------------------------------
    def target(self):
        """('mammo', study_uid, {view: (series, volume)}) or ('volume', series, volume) for a CT or MR volume
        some installed model segments; else (None, reason)."""
        w = self.window
        if w.hanging_shown():
            views = {name: (w.mammo_layout.series[name], cell.volume)
                     for name, cell in w.mammo_layout.cells.items()
                     if cell.volume is not None and w.mammo_layout.series.get(name) is not None}
            return ("mammo", w.shown_mammo.uid, views) if views else (None, "no mammography view loaded")
        series, volume = w.shown_series, w.slice_view.volume
        if series is None or volume is None:
            return None, "nothing to analyse: open a CT series or a mammography exam"
        modality = (volume.info.modality or "").upper()
        if modality == "MG":  # a single mammogram shown on its own: a one-view exam
            return self._single_mammogram(series, volume)
        from ..analysis import run

        if not run.can_analyze(modality):
            how = (f"AI ▸ Import model… brings in one for {modality}" if modality in run.VOLUME_MODALITIES
                   else "Analyze handles CT and MR volumes and mammograms")
            return None, f"no model for {modality or 'these'} images ({how})"
        if min(volume.shape) < 2:
            return None, f"the {modality} model needs a 3D series"
        return "volume", series, volume

    @staticmethod
    def _single_mammogram(series, volume):
        """('mammo', study_uid, {name: (series, volume)}) for one shown mammogram, named by its hanging
        slot or, for an extra view (XCCL, spot, ...), its own label; (None, why) when its breast or
        view is unknown."""
        from ..core.mammo_views import identify_series

        vid = identify_series(series)
        if vid.model_name is None:
            why = vid.not_a_view or f"breast or view unknown ({vid.why() or 'no tag or text names it'})"
            return None, f"this mammogram cannot be analysed: {why}"
        return "mammo", volume.info.study_uid, {vid.hanging or vid.label: (series, volume)}

    @staticmethod
    def cache_key(target) -> str:
        if target[0] == "mammo":  # one shown mammogram and its whole exam are different analyses
            return f"study:{target[1]}:" + ",".join(sorted(s.key for s, _v in target[2].values()))
        return f"series:{target[1].key}"

    # -- running -------------------------------------------------------------------------------------
    def analyze(self) -> None:
        target = self.target()
        if target[0] is None:
            self.window.show_message(f"Analyze: {target[1]}", "warning")
            return
        key = self.cache_key(target)
        if key in self.cache:
            self.show_result(self.cache[key], cached=True)
            return
        self.lookup_generation += 1  # a look-up still running for the shown image: the job below reads it too
        from ..analysis import run

        kind, study_uid, sources = self.sources(target)

        def job(progress, should_stop):
            def report(fraction: float, _what: str) -> None:
                progress(int(round(fraction * 1000)), 1000)

            notes: list[str] = []
            store = AnalysisCache()
            try:
                planned = planned_cards(kind)
            except NoModel as exc:
                if target[0] != "mammo":
                    raise
                return key, self._density_only(target, exc, notes), False, notes
            disk_key = entry_key(kind, study_uid, sources, {role: card_id(c) for role, c in planned.items()})
            hit = store.load(disk_key, {name: vol for name, (_uid, vol) in sources.items()}, notes.append)
            if hit is not None:
                return key, hit, True, notes
            if target[0] == "mammo":
                try:
                    result = run.analyze_mammo_exam(target[2], target[1], "auto", report, should_stop)
                except NoModel as exc:  # every classifier failed to load
                    return key, self._density_only(target, exc, notes), False, notes
            else:
                result = run.analyze_volume(target[1], target[2], device="auto", progress=report,
                                            should_stop=should_stop)
            if result.models == {role: run.model_id(c) for role, c in planned.items()}:  # what the key says
                try:
                    store.save(disk_key, result)
                except OSError as exc:
                    notes.append(f"not cached on disk: {exc}")
            return key, result, False, notes

        label = "Analyzing the mammography exam" if target[0] == "mammo" else f"Analyzing {target[1].label()}"
        self.window.tasks.start(label, job, self._finished)

    @staticmethod
    def sources(target) -> tuple[str, str, dict]:
        """(result kind, study UID, {result-series name: (series UID, Volume)}) of an analysis target: what
        the disk cache's key is made of."""
        if target[0] == "mammo":
            return "mammo-exam", target[1], {name: (series.uid, volume) for name, (series, volume) in target[2].items()}
        kind = (target[2].info.modality or "").lower()  # what analyze_volume calls its result
        return kind, target[2].info.study_uid, {target[1].key: (target[1].uid, target[2])}

    @staticmethod
    def _density_only(target, exc: Exception, notes: list[str]) -> AnalysisResult:
        """No mammography classifier: the exam's density still needs none (worker thread)."""
        from ..analysis import run

        result = run.density_only(target[2], target[1], str(exc))
        notes += result.warnings
        return result

    # -- results kept on disk, shown when their image is ---------------------------------------------
    def show_stored(self) -> bool:
        """Show at once what Analyze would show for the image now on screen when the disk cache holds it
        for exactly the models Analyze would run now (their versions and weights are in the key). The
        look-up (pixel fingerprints, the npz) runs on a worker and never runs a model; its answer is
        dropped when another image, study or model took over meanwhile. True when a look-up started."""
        target = self.target()
        if target[0] is None:
            return False
        key = self.cache_key(target)
        if key in self.cache:
            return False  # refresh_overlays shows it
        kind, study_uid, sources = self.sources(target)
        volumes = {name: vol for name, (_uid, vol) in sources.items()}
        self.lookup_generation += 1
        generation = self.lookup_generation

        def job(_progress, _should_stop):
            try:
                planned = planned_cards(kind)
            except NoModel:
                return None, []  # nothing was ever stored for a model that is not there
            notes: list[str] = []
            disk_key = entry_key(kind, study_uid, sources, {role: card_id(c) for role, c in planned.items()})
            return AnalysisCache().load(disk_key, volumes, notes.append), notes

        self.lookups.start(job, "stored AI results",
                           on_finished=lambda got: self._stored_found(generation, key, volumes, *got),
                           on_failed=lambda _msg: self.stored_checked.emit(None))
        return True

    def _stored_found(self, generation: int, key: str, volumes: dict, result, notes: list[str]) -> None:
        target = self.target()
        still = (generation == self.lookup_generation and target[0] is not None and self.cache_key(target) == key
                 and all(vol is volumes.get(name) for name, (_uid, vol) in self.sources(target)[2].items()))
        if not still or result is None:
            self.stored_checked.emit(None)
            return
        self.cache[key] = result
        self.show_result(result, cached=True, notes=notes)
        self.stored_checked.emit(result)

    def _finished(self, payload) -> None:
        key, result, cached, notes = payload
        self.cache[key] = result
        self.show_result(result, cached=cached, notes=notes)

    def show_result(self, result: AnalysisResult, cached: bool = False, notes: list[str] | None = None) -> None:
        """List ``result`` in the panel and put its maps on every view of the analysed image."""
        self.current = result
        self.dock.show()
        self.panel.show_result(result, cached)
        names = self.heatmap_names(result)
        if self.chosen_heatmap not in names:
            self.chosen_heatmap = next((n for n in PREFERRED_HEATMAPS if n in names), names[0] if names else None)
        self.panel.set_heatmaps(names, self.chosen_heatmap)
        self.refresh_overlays()
        scores = (", ".join(f"{s} {p:.2f}" for s, p in result.exam_scores.items()) if result.exam_scores
                  else "; ".join(f"{k} {v:.0f}" for sr in result.series.values() for k, v in sr.scores.items()))
        if not scores and result.kind == "mammo-exam":  # no classifier: the density is what there is
            scores = "density (estimate) " + ", ".join(
                f"{side} {d['percent']:.0f} % ({d['category']})" for side, d in result.breast_density().items()
                if isinstance(d, dict) and "percent" in d)
        estimated = [w for w in result.warnings if "spacing estimated" in w]  # never silently 1 mm
        extra = f" ({'; '.join((notes or []) + estimated)})" if notes or estimated else ""
        out = [sr.title for sr in result.series.values() if sr.out_of_domain]
        warning = f" — {', '.join(out)}: {OUT_OF_DOMAIN}" if out else ""
        self.window.show_message(f"Analysis {'(cached) ' if cached else ''}done{warning}: {scores}{extra}",
                                 "warning" if notes or out else "info")
        self.analysis_finished.emit(result)

    @staticmethod
    def heatmap_names(result: AnalysisResult) -> list[str]:
        names: list[str] = []
        for sr in result.series.values():
            names += [o.name for o in sr.overlays if o.kind == "probability" and o.name not in names]
        return names

    # -- overlays -----------------------------------------------------------------------------------
    def match(self, view: SliceView) -> tuple[AnalysisResult, SeriesResult] | None:
        """The cached analysis of the image shown in ``view``: the same Volume, or the same series
        loaded again on the same grid (re-opening a series shows its results at once)."""
        vol = view.volume
        if vol is None:
            return None
        results = ([self.current] if self.current else []) + [r for r in self.cache.values() if r is not self.current]
        for result in results:
            for sr in result.series.values():
                if sr.volume is vol:
                    return result, sr
        for result in results:
            for sr in result.series.values():
                if sr.series_uid == vol.info.series_uid and sr.volume.same_grid(vol):
                    return result, sr
        return None

    def result_for(self, view: SliceView) -> SeriesResult | None:
        found = self.match(view)
        return None if found is None else found[1]

    def refresh_overlays(self) -> None:
        """Put the AI layers on every view that shows an analysed image (after loads and layout changes)."""
        shown = [self.match(v) for v in self.window.shown_views()]
        on_screen = next((found[0] for found in shown if found is not None), None)
        if on_screen is not self.current:  # the panel lists what is on screen (or says there is nothing)
            self.current = on_screen
            self.panel.show_result(on_screen, cached=True)
            self.panel.set_heatmaps(self.heatmap_names(on_screen) if on_screen else [], self.chosen_heatmap)
        for view in self.window.all_views():
            found = self.match(view)
            if found is not None:
                self._ensure_layers(view, found[1])
            else:
                view.legend.set_warning("")
        self.window.apply_layer_visibility()

    def _ensure_layers(self, view: SliceView, sr: SeriesResult) -> None:
        p = self.panel
        heat = sr.overlay(self.chosen_heatmap) if self.chosen_heatmap and self.chosen_heatmap != NO_HEATMAP \
            else None
        layer = view.layer(HEAT_LAYER)
        if heat is None:
            if layer is not None:
                view.remove_layer(HEAT_LAYER)
        elif layer is None or layer.array is not heat.array:
            new = ProbabilityLayer(heat.array, colormap=p.heatmap_colormap, opacity=p.heatmap_opacity,
                                   threshold=p.heatmap_threshold)
            new.title = heat.name
            view.add_layer(HEAT_LAYER, new)
        # the colour bar says when the map comes from a model shown images unlike its training data
        if heat is not None and sr.out_of_domain:
            view.legend.set_warning("out of domain", f"{OUT_OF_DOMAIN}\n{domain_detail(sr)}")
        else:
            view.legend.set_warning("")
        labels = next((o for o in sr.overlays if o.kind == "labels"), None)
        layer = view.layer(LABEL_LAYER)
        edited = self._edit_replaces_ai(view)
        if labels is not None and not edited and (layer is None or layer.array is not labels.array):
            view.add_layer(LABEL_LAYER, LabelLayer(labels.array, opacity=p.labels_opacity, outline=p.labels_outline))
        if HEAT_LAYER in view.layers and LABEL_LAYER in view.layers:
            self._heat_on_top(view)
        edit = view.layer(EDIT_LAYER_NAME)
        if edit is not None and LABEL_LAYER in view.layers:  # the user's strokes stay above the AI's map
            edit.item.setZValue(max(edit.item.zValue(), view.layer(LABEL_LAYER).item.zValue() + 1))

    def _edit_replaces_ai(self, view: SliceView) -> bool:
        """The segment editor's map replaces the AI's label layer where it started from it (or from a file);
        a map drawn from nothing, before the AI's result was there, does not hide it."""
        editor = getattr(self.window, "editor", None)
        if editor is None:
            return view.layer(EDIT_LAYER_NAME) is not None
        return editor.session.replaces_ai(view)

    @staticmethod
    def _heat_on_top(view: SliceView) -> None:
        heat, labels = view.layer(HEAT_LAYER), view.layer(LABEL_LAYER)
        heat.item.setZValue(max(heat.item.zValue(), labels.item.zValue() + 1))

    def _heatmap_chosen(self, name: str) -> None:
        self.chosen_heatmap = name
        self.refresh_overlays()

    def _restyle(self) -> None:
        p = self.panel
        for view in self.window.all_views():
            heat, labels = view.layer(HEAT_LAYER), view.layer(LABEL_LAYER)
            if heat is not None:
                heat.threshold = p.heatmap_threshold
                if heat.colormap != p.heatmap_colormap:
                    heat.colormap = p.heatmap_colormap
                heat.opacity = p.heatmap_opacity
            if labels is not None:
                labels.outline = p.labels_outline
                labels.opacity = p.labels_opacity
