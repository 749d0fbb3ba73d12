"""What an analysis produced, on the source image's own grid, and its JSON summary.

Every map is an array with exactly the shape of the analysed Volume (a
mammogram is (1, rows, cols)), so the viewer overlays it without resampling and
the writers can give it the volume's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from viewer.core.volume import Volume

HUNG_VIEWS = ("RCC", "LCC", "RMLO", "LMLO")  # the views a breast's density averages (not spot or extra views)
DISCLAIMER = ("Research software, not a medical device. The demo models are trained only on synthetic "
              "phantoms; their output must not be used for diagnosis.")


@dataclass
class Overlay:
    """One map on a volume's grid: a probability (float32 0..1) or a label map (uint8, 0 = background)."""

    name: str  # e.g. "mass", "Grad-CAM", "segmentation"
    kind: str  # "probability" | "labels"
    array: np.ndarray
    model: str  # "name version"
    classes: list[str] = field(default_factory=list)  # labels: index -> class name (0 = background)
    # labels the user edited: the model's map before the edits, so the SEG can say which segments are still
    # AUTOMATIC and which SEMIAUTOMATIC / MANUAL (None = the model's own output)
    original: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in ("probability", "labels"):
            raise ValueError(f"overlay kind must be 'probability' or 'labels', got {self.kind!r}")


@dataclass
class SeriesResult:
    """Results for one analysed image (a CT series, or one mammography view)."""

    series_key: str
    series_uid: str
    title: str  # "RCC", or the series label
    volume: Volume
    overlays: list[Overlay] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # e.g. {"malignancy": 0.83} or {"liver mL": 1520}
    notes: dict = field(default_factory=dict)  # e.g. {"spacing_estimated": {...}}: facts the scores rest on
    # the domain check of the model(s) that analysed it: {"in_domain": bool | None, "score": float | None,
    # "threshold": float | None, "model": "name version", "reason": str}; in_domain False = results not meaningful
    domain: dict = field(default_factory=dict)

    @property
    def out_of_domain(self) -> bool:
        return self.domain.get("in_domain") is False

    def overlay(self, name: str) -> Overlay | None:
        return next((o for o in self.overlays if o.name == name), None)

    def summary(self) -> dict:
        return {"series_uid": self.series_uid, "title": self.title,
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "overlays": [{"name": o.name, "kind": o.kind, "model": o.model,
                              **({"classes": o.classes} if o.classes else {})} for o in self.overlays],
                **({"domain": dict(self.domain)} if self.domain else {}),
                **dict(self.notes)}


@dataclass
class AnalysisResult:
    """One run of the models on one study (a 4-view exam) or one series (CT)."""

    kind: str  # "mammo-exam" | "ct"
    study_uid: str
    series: dict[str, SeriesResult]  # keyed by view name ("RCC") or series key
    exam_scores: dict[str, float] = field(default_factory=dict)  # mammography: {"R": p, "L": p}
    models: dict[str, str] = field(default_factory=dict)  # role -> "name version"
    device: str = "cpu"
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    verified: dict[str, bool] = field(default_factory=dict)  # role -> weights are ones shipped with Lightbox
    exam: dict = field(default_factory=dict)  # mammography: the exam grouping and breasts without a score
    # role -> {"name", "version", "sha256", "format", "task", "modality"}: the exact model behind each output
    model_cards: dict = field(default_factory=dict)

    def breast_density(self) -> dict:
        """{'R': {...}, 'L': {...}}: per-breast density from the hung views' notes (empty when none has
        one); rebuilt from the views, so a cached result gives the same."""
        from inference.density import breasts_from_entries

        return breasts_from_entries({name: sr.notes["density"] for name, sr in self.series.items()
                                     if name in HUNG_VIEWS and isinstance(sr.notes.get("density"), dict)})

    def density_summary(self) -> dict:
        """results.json's "density": per breast, with the method, cut-points and the estimate wording."""
        from inference.density import CUT_POINTS, ESTIMATE, METHOD

        breasts = self.breast_density()
        if not breasts:
            return {}
        return {**breasts, "method": METHOD, "estimate": True, "label": ESTIMATE,
                "categories": {"source": "BI-RADS 4th edition (2003) percent-density quartiles",
                               "cut_points_percent": list(CUT_POINTS)}}

    def summary(self) -> dict:
        """JSON-ready: scores per view/series and per breast, models and versions (no arrays)."""
        out = {"kind": self.kind, "study_uid": self.study_uid, "device": self.device,
               "seconds": round(self.seconds, 3), "models": dict(self.models),
               "models_verified": {role: bool(self.verified.get(role, False)) for role in self.models},
               "series": {k: s.summary() for k, s in self.series.items()}, "disclaimer": DISCLAIMER}
        if self.model_cards:
            out["model_cards"] = {role: dict(facts) for role, facts in self.model_cards.items()}
        if self.exam_scores:
            out["exam_scores"] = {k: round(float(v), 6) for k, v in self.exam_scores.items()}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.exam:
            out["exam"] = dict(self.exam)
        density = self.density_summary()
        if density:
            out["density"] = density
        return out
