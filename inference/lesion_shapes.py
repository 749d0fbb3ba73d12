"""Lesion shapes for the infill cGAN: cut from real label masks (a shape bank) or drawn like the phantoms'.

A synthetic positive's label is the mask the generator was asked to fill, so the shapes decide what the
fine-tuned models learn. With real positives their own masses and calcification clusters are reused
(flipped, rotated, rescaled 0.8-1.25); without any, shapes follow ``inference.phantoms``' lesion
statistics on the 0.42 mm model grid (lobulated masses 8-15 mm across, clusters of 5-15 dots ~8 mm wide).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MASS, CALCIFICATION = 1, 2
KINDS = {"mass": MASS, "calcification": CALCIFICATION}
CLUSTER_GAP_PX = 8  # calcification dots closer than this (3.4 mm) belong to one cluster
SPACING_MM = 0.42


def lesion_objects(label: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(kind, bool mask of the whole image) per mass component and per calcification cluster."""
    from scipy import ndimage

    label = np.asarray(label)
    out = []
    masses, n = ndimage.label(label == MASS, np.ones((3, 3), bool))
    out += [("mass", masses == i) for i in range(1, n + 1)]
    calcs = label == CALCIFICATION
    if calcs.any():
        near = ndimage.binary_dilation(calcs, iterations=CLUSTER_GAP_PX // 2)
        clusters, n = ndimage.label(near, np.ones((3, 3), bool))
        out += [("calcification", (clusters == i) & calcs) for i in range(1, n + 1)]
    return out


def bbox_crop(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].copy()


def phantom_mass(rng: np.random.Generator) -> np.ndarray:
    """A lobulated round mass like ``phantoms._render_mass``'s mask (radius 4-7.5 mm, harmonics 2-5)."""
    r = rng.uniform(4.0, 7.5) / SPACING_MM
    amp, phase = rng.uniform(0, 0.08, 4), rng.uniform(0, 2 * np.pi, 4)
    half = int(np.ceil(r * 1.35)) + 1
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    rho, phi = np.hypot(yy, xx), np.arctan2(yy, xx)
    rb = np.full_like(rho, r)
    for k, (a, p) in enumerate(zip(amp, phase), start=2):
        rb += r * a * np.cos(k * phi + p)
    return bbox_crop(rho <= rb)


def phantom_cluster(rng: np.random.Generator) -> np.ndarray:
    """A cluster of 5-15 dots (offsets ~N(0, 2 mm)) as ``phantoms._render_calcs`` places them."""
    n = int(rng.integers(5, 16))
    offsets = rng.normal(0.0, 2.0, (n, 2)) / SPACING_MM
    radii = rng.uniform(0.5, 1.2, n)
    half = int(np.ceil(np.abs(offsets).max() + radii.max())) + 1
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    mask = np.zeros(yy.shape, bool)
    for (dy, dx), rad in zip(offsets, radii):
        mask |= (yy - dy) ** 2 + (xx - dx) ** 2 <= rad ** 2
    return bbox_crop(mask)


def fit(shape: np.ndarray, max_extent: int) -> np.ndarray:
    """The shape shrunk (nearest neighbour) until both sides are at most ``max_extent``."""
    from scipy.ndimage import zoom

    scale = max_extent / max(shape.shape)
    if scale >= 1:
        return shape
    small = zoom(shape.astype(np.uint8), scale, order=0) > 0
    return bbox_crop(small) if small.any() else np.ones((1, 1), bool)


@dataclass
class ShapeBank:
    """Lesion masks by kind; empty kinds are drawn from the phantom statistics only when no real shape exists."""

    shapes: dict = field(default_factory=lambda: {"mass": [], "calcification": []})
    from_phantoms: bool = False

    @classmethod
    def from_masks(cls, masks) -> ShapeBank:
        """Every mass and calcification cluster in ``masks``; the phantom shapes when there are none."""
        bank = cls()
        for mask in masks:
            for kind, obj in lesion_objects(mask):
                bank.shapes[kind].append(bbox_crop(obj))
        if not any(bank.shapes.values()):
            bank.from_phantoms = True
        return bank

    def kinds(self) -> list[str]:
        return list(KINDS) if self.from_phantoms else [k for k in KINDS if self.shapes[k]]

    def sample(self, kind: str, rng: np.random.Generator, max_extent: int) -> np.ndarray:
        """One bool shape of ``kind``: a bank shape flipped/rotated and rescaled 0.8-1.25, at most ``max_extent``."""
        from scipy.ndimage import zoom

        if self.from_phantoms:
            shape = phantom_mass(rng) if kind == "mass" else phantom_cluster(rng)
        else:
            pool = self.shapes[kind]
            shape = pool[int(rng.integers(len(pool)))]
        shape = np.rot90(shape[::-1] if rng.random() < 0.5 else shape, int(rng.integers(4)))
        scaled = zoom(shape.astype(np.uint8), float(rng.uniform(0.8, 1.25)), order=0) > 0
        shape = bbox_crop(scaled) if scaled.any() else shape
        return fit(np.ascontiguousarray(shape), max_extent)
