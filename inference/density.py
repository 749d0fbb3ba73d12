"""Area-based breast density (percent of the breast that is fibroglandular), without training.

Method, after the unsupervised step of LIBRA (Keller et al., Med Phys 39(8):4903-17, 2012: the
breast is segmented, the pectoralis removed on MLO views, and the intensities inside the breast
are split into fatty and dense clusters) and the threshold idea of Cumulus (Byng et al., Phys Med
Biol 39:1629-38, 1994: dense area = breast pixels above a grey-level threshold):

1. breast = the largest region clearly above the air level (Otsu between air and tissue), holes filled;
2. MLO: the pectoralis, a bright wedge at the chest wall's upper corner, is found as a straight edge
   (the approach of Kwok et al., IEEE TMI 23(9):1129-40, 2004) and removed when the fit is plausible;
3. dense = breast pixels above a two-class Otsu split of the breast's intensity histogram, after the
   intensities are normalised to the breast's 1st-99th percentiles. LIBRA chooses its dense clusters
   with a trained SVM; this module uses no trained part, so it runs on any mammogram as it is;
4. percent density = dense area / breast area; per breast the mean of its views (as LIBRA reports).

The BI-RADS category uses the 4th edition's (2003) percent-density quartiles: a < 25 %, b 25-50 %,
c 50-75 %, d >= 75 %. The 5th edition (2013) dropped the percentages for a visual judgement of masking,
so the category is an ESTIMATE of what a reader would assign, never a reading.
Input: a 2D image with dense tissue bright (MONOCHROME1 already inverted), any size or spacing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CUT_POINTS = (25.0, 50.0, 75.0)  # BI-RADS 4th edition percent-density quartiles, a|b|c|d
CATEGORIES = ("a", "b", "c", "d")
CATEGORY_WORDS = {"a": "almost entirely fatty", "b": "scattered fibroglandular", "c": "heterogeneously dense",
                  "d": "extremely dense"}
METHOD = ("area-based percent density: breast segmentation, pectoralis removed on MLO, Otsu split of the "
          "normalised breast histogram (after LIBRA / Cumulus); BI-RADS 4th ed. quartiles; training-free")
ESTIMATE = "estimate, not a reading"
WORK_SIZE = 640  # longest side the analysis runs at: area fractions survive, a full-field view takes ~0.1 s
MIN_SIDE = 16
STRAIGHT_EDGE = 0.4  # share of rows on the fitted line that makes it the pectoralis whatever its contrast


class DensityError(ValueError):
    """The image cannot give a density (empty, flat, no breast found); ``str()`` says why."""


@dataclass(frozen=True)
class DensityEstimate:
    """Percent density of one view or one breast, with the BI-RADS category it maps to."""

    percent: float
    category: str
    breast_area_mm2: float
    dense_area_mm2: float
    pectoralis_removed: bool | None = None  # MLO: whether the muscle was found and removed; None on CC
    views: tuple[str, ...] = ()  # per breast: the views it averages

    def as_dict(self) -> dict:
        out = {"percent": round(self.percent, 1), "category": self.category,
               "category_words": CATEGORY_WORDS[self.category], "breast_area_mm2": round(self.breast_area_mm2, 1),
               "dense_area_mm2": round(self.dense_area_mm2, 1), "estimate": True, "label": ESTIMATE}
        if self.pectoralis_removed is not None:
            out["pectoralis_removed"] = self.pectoralis_removed
        if self.views:
            out["views"] = list(self.views)
        return out


def category(percent: float) -> str:
    """BI-RADS density category a-d of a percent density (4th edition quartiles)."""
    if not np.isfinite(percent):
        raise DensityError(f"percent density {percent!r} is not a number")
    return CATEGORIES[int(np.searchsorted(CUT_POINTS, float(percent), side="right"))]


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Threshold that maximises the between-class variance of ``values`` (Otsu 1979)."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centers)
    between = w0 * w1 * (m / np.maximum(w0, 1) - (m[-1] - m) / np.maximum(w1, 1)) ** 2
    return float(centers[int(np.argmax(between))])


def _shrink(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Block mean to at most WORK_SIZE on the longest side; (float32 image, factor). A float image's
    NaN and inf count as 0; an integer image (every stored mammogram) has none, so is not scanned.
    Sums along columns, then rows (np.add.reduceat): 3x faster than a mean over a 4D view of the
    blocks, and exact for integer pixels."""
    f = max(1, int(np.ceil(max(image.shape) / WORK_SIZE)))
    rows, cols = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    x = image[:rows, :cols]
    if not np.issubdtype(x.dtype, np.integer):
        x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if f == 1:
        return np.array(x, dtype=np.float32), 1
    sums = np.add.reduceat(x.astype(np.float32, copy=False), np.arange(0, cols, f), axis=1)
    sums = np.add.reduceat(sums, np.arange(0, rows, f), axis=0)
    return sums / np.float32(f * f), f


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected region with its holes filled (drops labels, markers and noise).

    SciPy's, with 8-connected background for the holes as SimpleITK's BinaryFillhole(fullyConnected)
    had it (equal on every mask tried): the mammography path then needs no SimpleITK, which is 50 MB
    a GPU machine would have to be sent."""
    mask = np.asarray(mask, bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(mask.shape, bool)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return ndimage.binary_fill_holes(labels == largest, structure=np.ones((3, 3)))


def breast_region(image: np.ndarray) -> np.ndarray:
    """Largest region clearly above the air level, holes filled (drops labels, markers and noise).

    Otsu separates air from tissue but sits between the class means and cuts the faint periphery;
    a quarter of the way up from the air level keeps the skin line."""
    t = otsu(image)
    below = image <= t
    air = float(np.median(image[below])) if below.any() else float(image.min())
    return largest_component(image > air + 0.25 * (t - air))


def chest_wall_side(breast: np.ndarray) -> str:
    """'left' or 'right': the image edge the breast touches more (the detector cuts the chest wall)."""
    band = max(1, breast.shape[1] // 50)
    return "left" if breast[:, :band].sum() >= breast[:, -band:].sum() else "right"


def pectoral_region(image: np.ndarray, breast: np.ndarray, per_row: int = 3) -> np.ndarray | None:
    """The pectoralis of an MLO view with the chest wall on the left, or None when no plausible wedge.

    Per row in the upper breast, the muscle's edge is one of the strongest intensity steps within the
    chest-wall half (either sign: the muscle may be brighter or darker than the dense tissue beside it);
    a robust straight line through those edges (Kwok et al. 2004) bounds the wedge, accepted only when it
    leans the way a pectoralis does, covers a sensible part of the breast and differs from the tissue
    beyond it. Several candidates per row let the line pass by dense tissue whose edge is stronger."""
    rows = np.flatnonzero(breast.any(axis=1))
    if rows.size < 8:
        return None
    width = int(breast.sum(axis=1).max())
    smooth = ndimage.gaussian_filter(image, max(1.0, width / 80))
    step = np.abs(np.diff(smooth, axis=1))
    peaks = (step >= ndimage.maximum_filter1d(step, 5, axis=1)) & (step > 0)
    top, bottom = rows[0], rows[0] + int(0.6 * (rows[-1] - rows[0]))
    ys, xs = [], []
    for y in range(top, bottom):
        inside = np.flatnonzero(breast[y, :-1])
        reach = int(0.6 * inside.size) if inside.size else 0
        cand = inside[2:reach][peaks[y, inside[2:reach]]] if reach >= 4 else inside[:0]
        for x in cand[np.argsort(step[y, cand])[::-1][:per_row]]:
            ys.append(y)
            xs.append(int(x))
    if len(set(ys)) < 8:
        return None
    ys, xs = np.asarray(ys, float), np.asarray(xs, float)
    slope, icept, on_line = _robust_line(ys, xs)
    if slope >= -0.05 or on_line < 0.25:  # the wedge narrows going down; a vertical or widening edge is not it
        return None
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    wedge = breast & (xx < slope * yy + icept)
    share = wedge.sum() / max(breast.sum(), 1)
    beyond = breast & ~wedge & (xx < slope * yy + icept + max(4.0, width / 15))
    if not 0.02 <= share <= 0.35 or not beyond.any() or not wedge[: max(2, image.shape[0] // 100)].any():
        return None  # an MLO's muscle runs up into the axilla at the image's top edge
    contrast = abs(float(image[wedge].mean()) - float(image[beyond].mean()))
    # a straight edge through most rows is the muscle even where it is as bright as the dense tissue beside it
    return wedge if on_line >= STRAIGHT_EDGE or contrast > 0.15 * float(image[breast].std()) else None


def _robust_line(ys: np.ndarray, xs: np.ndarray, tol: float = 3.0, tries: int = 400) -> tuple[float, float, float]:
    """x = slope * y + intercept through edge points of the most rows (RANSAC over leaning lines only,
    seeded so a view always gives the same answer), refined by least squares on the nearest point per
    row: stray edges of dense tissue do not pull it. The third value is the share of rows on the line."""
    rng = np.random.default_rng(0)
    row_ids = np.unique(ys, return_inverse=True)[1]
    n_rows = int(row_ids.max()) + 1
    best, best_n = None, -1
    for _ in range(tries):
        i, j = rng.choice(ys.size, 2, replace=False)
        if abs(ys[j] - ys[i]) < 4:
            continue
        slope = (xs[j] - xs[i]) / (ys[j] - ys[i])
        if slope >= -0.05:
            continue
        near = np.abs(xs - (xs[i] + slope * (ys - ys[i]))) <= tol
        n = np.unique(row_ids[near]).size
        if n > best_n:
            best, best_n = (i, slope), n
    if best is None:
        return 0.0, 0.0, 0.0
    i, slope = best
    resid = np.abs(xs - (xs[i] + slope * (ys - ys[i])))
    order = np.lexsort((resid, row_ids))  # per row, the nearest candidate first
    first = order[np.r_[True, row_ids[order][1:] != row_ids[order][:-1]]]
    keep = first[resid[first] <= tol]
    slope, icept = np.polyfit(ys[keep], xs[keep], 1)
    return float(slope), float(icept), keep.size / n_rows


def dense_region(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Breast pixels above a two-class Otsu split of the breast's normalised histogram.

    Measured on the phantoms against Kittler-Illingworth, Li, isodata and a two-Gaussian mixture, Otsu
    tracked the truth best; like every single-image split it pulls extremes towards the middle (a 5 %
    breast reads ~20 %, a 90 % breast ~80 %), so categories a and d are under-called."""
    values = image[tissue]
    lo, hi = np.percentile(values, (1.0, 99.0))
    if hi <= lo:
        raise DensityError("the breast has no contrast (all pixels alike): no density can be estimated")
    t = otsu(np.clip((values - lo) / (hi - lo), 0.0, 1.0))
    return tissue & (image > lo + t * (hi - lo))


def view_density(image, spacing=(1.0, 1.0), mlo: bool = False, chest_wall: str | None = None,
                 masks: dict | None = None) -> DensityEstimate:
    """Percent density of one view. ``image`` 2D (or (1, rows, cols)), dense tissue bright; ``spacing``
    (row, col) mm; ``chest_wall`` 'left'/'right' (None: the edge the breast touches). ``masks``, when
    given a dict, receives the working-grid 'breast', 'pectoralis' and 'dense' masks (for display/tests).
    Raises DensityError with a reason when the image cannot give one."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DensityError(f"density needs one 2D image, got shape {arr.shape}")
    if min(arr.shape) < MIN_SIDE:
        raise DensityError(f"image {arr.shape[0]}x{arr.shape[1]} is too small for a density (needs {MIN_SIDE}+ px)")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DensityError(f"image of type {arr.dtype} is not a grey-level image")
    work, factor = _shrink(arr)
    if float(work.max()) <= float(work.min()):
        raise DensityError("the image is blank (one value everywhere): no breast to measure")
    breast = breast_region(work)
    if breast.sum() < 0.01 * breast.size:
        raise DensityError("no breast found: the tissue covers under 1 % of the image")
    side = chest_wall or chest_wall_side(breast)
    flip = side == "right"
    if flip:
        work, breast = work[:, ::-1], breast[:, ::-1]
    pect = pectoral_region(work, breast) if mlo else None
    tissue = breast & ~pect if pect is not None else breast
    dense = dense_region(work, tissue)
    if masks is not None:
        for name, m in (("breast", breast), ("pectoralis", pect if pect is not None else np.zeros_like(breast)),
                        ("dense", dense)):
            masks[name] = m[:, ::-1] if flip else m
    px_mm2 = float(spacing[0]) * float(spacing[1]) * factor * factor
    n_tissue, n_dense = int(tissue.sum()), int(dense.sum())
    percent = 100.0 * n_dense / n_tissue
    return DensityEstimate(percent, category(percent), n_tissue * px_mm2, n_dense * px_mm2,
                           (pect is not None) if mlo else None)


def breast_density(views: dict[str, DensityEstimate]) -> DensityEstimate:
    """One breast from its views ({'RCC': ..., 'RMLO': ...}): the mean percent density (LIBRA's per-breast
    summary) and its category; areas are the views' means."""
    if not views:
        raise DensityError("no view of this breast has a density")
    names = tuple(sorted(views))
    percent = float(np.mean([views[n].percent for n in names]))
    return DensityEstimate(percent, category(percent), float(np.mean([views[n].breast_area_mm2 for n in names])),
                           float(np.mean([views[n].dense_area_mm2 for n in names])), None, names)


def breasts_from_entries(entries: dict[str, dict]) -> dict[str, dict]:
    """{'R': breast entry, 'L': ...} from per-view entries as :meth:`DensityEstimate.as_dict` writes them
    ({'RCC': {...}, 'LMLO': {...}}; entries with an 'error' are left out): what results.json and the
    results panel show per breast, rebuilt from the views so a cached analysis gives the same."""
    out = {}
    for side in ("R", "L"):
        views = {name: DensityEstimate(float(e["percent"]), str(e["category"]), float(e["breast_area_mm2"]),
                                       float(e["dense_area_mm2"]))
                 for name, e in entries.items() if name[:1] == side and "percent" in e}
        if views:
            out[side] = breast_density(views).as_dict()
    return out
