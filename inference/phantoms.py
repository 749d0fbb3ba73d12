"""Synthetic CT, MR and mammography phantoms (pixels + masks) with known ground truth.

The demo, the tests and the AI pipeline all need realistic-looking images whose
anatomy, lesions and geometry are known exactly, without shipping patient data.
Every phantom is analytic (ellipsoids, rings, smooth random fields), so the same
description yields both the pixels and the masks, and a seed fully determines
both. Large grids are rendered in z-chunks in float32 so a 300x512x512 CT stays
within a modest memory budget.
"""
from __future__ import annotations

import numpy as np

CT_MASKS = ("body", "lungs", "liver", "bone", "lesions")
MR_MASKS = ("head", "brain", "ventricles", "lesion")
MG_MASKS = ("breast", "mass", "calcification")
MG_VIEWS = ("RCC", "LCC", "RMLO", "LMLO")
# Full-field digital mammography detector: 3328 x 2560 pixels at 0.07 mm.
MG_FULL_SIZE = (3328, 2560)
MG_FULL_SPACING = 0.07

_CHUNK_VOXELS = 2_000_000  # float32 temporaries of ~8 MB each per chunk

# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------
def _rng(seed: int, *stream: int) -> np.random.Generator:
    """Independent stream per purpose, so adding one draw never shifts the others."""
    return np.random.default_rng([int(seed), *stream])


def _ell(x, y, z, c, r):
    """Squared normalised ellipsoid radius (<= 1 inside); broadcasts over grids or points."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def _gauss_matrix(n: int, step: float, sigma: float, pad: int = 3) -> np.ndarray:
    """Rows interpolate a coarse lattice of white noise with a Gaussian kernel.

    Rows are L2-normalised so the resulting field has unit variance everywhere,
    including near the borders.
    """
    coords = np.arange(n) * step
    h = sigma
    nc = int(np.ceil(coords[-1] / h)) + 1 + 2 * pad
    ctrl = (np.arange(nc) - pad) * h
    w = np.exp(-0.5 * ((coords[:, None] - ctrl[None, :]) / sigma) ** 2)
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


class _SmoothField:
    """Unit-variance Gaussian random field, isotropic in millimetres.

    Built separably from a coarse lattice (a few matrix products) because a 3D
    FFT of a 300x512x512 grid would not fit the memory budget, and the result can
    be evaluated chunk by chunk along z.
    """

    def __init__(self, rng: np.random.Generator, shape, spacing, sigma_mm: float):
        wz, wy, wx = (_gauss_matrix(n, s, sigma_mm) for n, s in zip(shape, spacing))
        coarse = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1]), dtype=np.float32)
        t = coarse @ wx.T  # (cz, cy, nx)
        self._g = np.matmul(wy[None], t).reshape(wz.shape[1], -1)  # (cz, ny*nx)
        self._wz = wz
        self._plane = (shape[1], shape[2])

    def chunk(self, z0: int, z1: int) -> np.ndarray:
        w = self._wz[z0:z1]
        used = np.nonzero(w.max(axis=0) > 1e-6)[0]
        lo, hi = used[0], used[-1] + 1
        return (w[:, lo:hi] @ self._g[lo:hi]).reshape(z1 - z0, *self._plane)


def _chunks(shape, voxels: int = _CHUNK_VOXELS):
    step = max(1, voxels // (shape[1] * shape[2]))
    for z0 in range(0, shape[0], step):
        yield z0, min(shape[0], z0 + step)


def _render_chunked(shape, dtype, mask_keys, render_chunk) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Assemble a phantom from z-chunks so float32 temporaries stay small."""
    out = np.empty(shape, dtype=dtype)
    masks = {k: np.zeros(shape, dtype=np.uint8) for k in mask_keys}
    for z0, z1 in _chunks(shape):
        values, chunk_masks = render_chunk(z0, z1)
        out[z0:z1] = values
        for k in mask_keys:
            masks[k][z0:z1] = chunk_masks[k]
    return out, masks


def _sphere_probe() -> np.ndarray:
    """Unit directions (cube corners, edges, faces) to test that a sphere fits an organ."""
    d = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                  if (i, j, k) != (0, 0, 0)], dtype=float)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


_PROBE = np.vstack([np.zeros((1, 3)), _sphere_probe(), 0.5 * _sphere_probe()])


def _place_spheres(rng, inside, box_lo, box_hi, radii, placed, margin=2.0, tries=400, min_radius=4.0):
    """Rejection-sample sphere centres fully inside a region and clear of earlier spheres.

    A sphere that cannot be placed is shrunk (not below `min_radius` mm) and finally
    dropped, so tiny fields of view still produce a valid phantom.
    """
    out = []
    for r in radii:
        r = float(r)
        while r >= min_radius:
            for _ in range(tries):
                c = rng.uniform(box_lo, box_hi)
                pts = c + _PROBE * (r + margin)
                if not np.all(inside(pts[:, 0], pts[:, 1], pts[:, 2])):
                    continue
                if any(np.linalg.norm(c - pc) < r + pr + 3.0 for pc, pr in placed + out):
                    continue
                out.append((c, r))
                break
            else:
                r *= 0.8
                continue
            break
    return out


def _paint_spheres(values, masks_chunk, spheres, x, y, z, z0, z1, spacing, origin, key):
    """Paint spheres into a chunk through their bounding boxes only (cheap for small lesions)."""
    for center, radius, value in spheres:
        kz = (center[2] - origin[2]) / spacing[0]
        ky = (center[1] - origin[1]) / spacing[1]
        kx = (center[0] - origin[0]) / spacing[2]
        rz, ry, rx = radius / spacing[0], radius / spacing[1], radius / spacing[2]
        a0, a1 = max(z0, int(np.floor(kz - rz))), min(z1, int(np.ceil(kz + rz)) + 1)
        b0, b1 = max(0, int(np.floor(ky - ry))), min(y.size, int(np.ceil(ky + ry)) + 1)
        c0, c1 = max(0, int(np.floor(kx - rx))), min(x.size, int(np.ceil(kx + rx)) + 1)
        if a0 >= a1 or b0 >= b1 or c0 >= c1:
            continue
        inside = ((x[c0:c1][None, None, :] - center[0]) ** 2
                  + (y[b0:b1][None, :, None] - center[1]) ** 2
                  + (z[a0 - z0:a1 - z0][:, None, None] - center[2]) ** 2) <= radius ** 2
        sub = (slice(a0 - z0, a1 - z0), slice(b0, b1), slice(c0, c1))
        np.copyto(values[sub], np.float32(value), where=inside)
        masks_chunk[key][sub] |= inside


def _grid(shape, spacing, origin):
    """World coordinate vectors (LPS mm) of the index axes, float32 for big grids."""
    nz, ny, nx = shape
    x = (origin[0] + np.arange(nx) * spacing[2]).astype(np.float32)
    y = (origin[1] + np.arange(ny) * spacing[1]).astype(np.float32)
    z = (origin[2] + np.arange(nz) * spacing[0]).astype(np.float32)
    return x, y, z


def _centred_origin(shape, spacing) -> np.ndarray:
    """Patient centred on x = y = 0, slices from -(nz-1)*sz up to 0 (LPS)."""
    nz, ny, nx = shape
    return np.array([-(nx - 1) / 2 * spacing[2], -(ny - 1) / 2 * spacing[1], -(nz - 1) * spacing[0]])


# --------------------------------------------------------------------------
# CT chest / abdomen
# --------------------------------------------------------------------------
class CTPhantom:
    """Analytic chest/abdomen: one description answers 'which tissue is here' for grids and points.

    Sizes are in millimetres (body ~340 x 240 mm) and shrink uniformly only when
    the field of view is too small; heights are fractions of the scanned length
    so every organ appears whatever the slice count.
    """

    LIVER_HU = 58.0  # mean liver attenuation the lesion contrast is measured against

    def __init__(self, shape, spacing, seed: int, lesion_contrast_hu: float | None = None,
                 lesion_radius_mm: float | None = None):
        """lesion_contrast_hu: liver lesions' HU minus the liver's (default about -43, hypodense);
        lesion_radius_mm: radius of every lesion (+-10 %); None keeps the seed's own draws."""
        self.shape = tuple(int(v) for v in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = _centred_origin(self.shape, self.spacing)
        self.x, self.y, self.z = _grid(self.shape, self.spacing, self.origin)
        nz, ny, nx = self.shape
        sz, sy, sx = self.spacing
        self.zmin = float(self.origin[2])
        self.Z = float(max((nz - 1) * sz, sz))
        s = min(1.0, 0.95 * nx * sx / 340.0, 0.95 * ny * sy / 240.0)
        self.s = s
        rng = _rng(seed, 1)

        def j(v, rel=0.04):
            return v * (1.0 + rng.uniform(-rel, rel))

        def tz(t):
            return self.zmin + j(t, 0.02) * self.Z

        A = self.A = 170.0 * s * rng.uniform(0.94, 1.0)
        B = self.B = 120.0 * s * rng.uniform(0.94, 1.0)
        Z = self.Z
        self.yv, self.rv = j(0.45 * B), 19.0 * s
        self.canal_y, self.canal_r = self.yv + self.rv + 8.0 * s, 7.0 * s
        zscale = min(1.0, Z / 300.0)
        self.vert_period, self.disc = max(12.0, 30.0 * zscale), max(3.0, 7.0 * zscale)
        self.rib_period, self.rib_hz = max(10.0, 26.0 * zscale), max(2.5, 5.0 * zscale)
        self.vert_phase = rng.uniform(0, self.vert_period)
        self.rib_phase = rng.uniform(0, self.rib_period)
        self.lungs = [((side * j(0.47 * A), j(0.08 * B), tz(0.71)), (j(0.36 * A), j(0.85 * B), j(0.27 * Z)))
                      for side in (-1, 1)]
        self.heart = ((j(0.1 * A), j(-0.3 * B), tz(0.6)), (j(0.38 * A), j(0.42 * B), j(0.14 * Z)))
        self.aorta = (j(0.12 * A), self.yv - self.rv - 12.0 * s, 11.0 * s, tz(0.64))
        self.liver = ((j(-0.33 * A), j(-0.05 * B), tz(0.40)), (j(0.5 * A), j(0.75 * B), j(0.19 * Z)))
        self.spleen = ((j(0.5 * A), j(0.3 * B), tz(0.45)), (j(0.18 * A), j(0.35 * B), j(0.09 * Z)))
        self.stomach = ((j(0.28 * A), j(-0.3 * B), tz(0.44)), (j(0.27 * A), j(0.33 * B), j(0.08 * Z)))
        self.kidneys = [((side * j(0.33 * A), j(0.40 * B), tz(0.28)), (j(0.15 * A), j(0.24 * B), j(0.1 * Z)))
                        for side in (-1, 1)]
        self.trachea = (0.0, self.yv - self.rv - 30.0 * s, 9.0 * s, tz(0.78))
        self.hila = [(side * 0.2 * A, 0.0, tz(0.64)) for side in (-1, 1)]

        # Lesions: a couple of lung nodules (~30 HU) and hypodense liver lesions (~15 HU).
        n = int(rng.integers(3, 6))
        n_liver = n // 2
        placed: list = []
        spheres = []
        liver_hu = 15.0 if lesion_contrast_hu is None else self.LIVER_HU + float(lesion_contrast_hu)
        size_rng = _rng(seed, 5)  # its own stream: the default draws stay where they were
        for organ, count, rlo, rhi, hu in (("lungs", n - n_liver, 4.0, 9.0, 30.0),
                                           ("liver", n_liver, 6.0, 15.0, liver_hu)):
            boxes = self.lungs if organ == "lungs" else [self.liver]
            lo = np.min([np.subtract(c, r) for c, r in boxes], axis=0)
            hi = np.max([np.add(c, r) for c, r in boxes], axis=0)

            def inside(px, py, pz, organ=organ):
                return self.regions(px, py, pz)[organ]

            radii, min_r = rng.uniform(rlo, rhi, count), 4.0
            if lesion_radius_mm is not None:
                radii = float(lesion_radius_mm) * size_rng.uniform(0.9, 1.1, count)
                min_r = min(4.0, 0.8 * float(lesion_radius_mm))
            got = _place_spheres(rng, inside, lo, hi, radii, placed, min_radius=min_r)
            placed += got
            spheres += [(c, r, hu + rng.normal(0, 3)) for c, r in got]
        self.lesions = spheres

        self.f_tex = _SmoothField(_rng(seed, 2), self.shape, self.spacing, 12.0)
        self.f_v1 = _SmoothField(_rng(seed, 3), self.shape, self.spacing, 4.0)
        self.f_v2 = _SmoothField(_rng(seed, 4), self.shape, self.spacing, 4.0)
        self.seed = seed

    # -- shape primitives ------------------------------------------------
    def _axes(self, t):
        a = self.A * (0.9 + 0.1 * np.cos(2 * np.pi * 0.7 * (t - 0.62)))  # widest at the lower chest
        b = self.B * (0.9 + 0.1 * np.cos(2 * np.pi * 0.6 * (t - 0.3)))  # deepest at the abdomen
        return a, b

    def _shell(self, x, y, t, inset):
        """Normalised squared radius of the body outline moved inwards by `inset` mm."""
        a, b = self._axes(t)
        by = np.where(y < 0, y / (b - inset), y / (0.9 * b - inset))
        return (x / (a - inset)) ** 2 + by ** 2

    def regions(self, x, y, z) -> dict:
        """Boolean tissue regions for broadcastable LPS coordinates (grid chunk or point list)."""
        s = self.s
        t = (z - self.zmin) / self.Z
        fat = s * (10.0 + 14.0 * (1.0 - t))
        mus = 11.0 * s
        r = {}
        r["body"] = self._shell(x, y, t, 0.0) <= 1
        r["inner"] = self._shell(x, y, t, fat) <= 1
        r["cavity"] = self._shell(x, y, t, fat + mus) <= 1
        pleural = self._shell(x, y, t, fat + mus + 3.0 * s) <= 1
        cav = r["cavity"]

        spine_d2 = x ** 2 + (y - self.yv) ** 2
        r["renal_fat"] = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), bool)
        r["kidneys"] = r["renal_fat"].copy()
        for c, ax in self.kidneys:  # perirenal fat, thicker laterally and behind
            fc = (c[0] + np.sign(c[0]) * 6.0 * s, c[1] + 4.0 * s, c[2])
            r["renal_fat"] |= _ell(x, y, z, fc, np.add(ax, 12.0 * s)) <= 1
            r["kidneys"] |= _ell(x, y, z, c, ax) <= 1
        r["renal_fat"] &= cav
        r["kidneys"] &= cav
        ax_, ay_, ar_, atop = self.aorta
        r["aorta"] = ((x - ax_) ** 2 + (y - ay_) ** 2 <= ar_ ** 2) & (z <= atop) & cav
        r["liver"] = ((_ell(x, y, z, *self.liver) <= 1) & cav & ~r["renal_fat"]
                      & (spine_d2 > (self.rv + 6 * s) ** 2) & ~r["aorta"])
        r["spleen"] = (_ell(x, y, z, *self.spleen) <= 1) & cav & ~r["renal_fat"] & ~r["liver"]
        r["stomach"] = (_ell(x, y, z, *self.stomach) <= 1) & cav & ~r["liver"] & ~r["spleen"]
        sc, sa = self.stomach
        r["stomach_air"] = r["stomach"] & (y < sc[1] - 0.35 * sa[1])
        r["heart"] = (_ell(x, y, z, *self.heart) <= 1) & cav
        tx, ty, tr, tlow = self.trachea
        r["airway"] = ((x - tx) ** 2 + (y - ty) ** 2 <= tr ** 2) & (z >= tlow) & cav
        lungs = _ell(x, y, z, *self.lungs[0]) <= 1
        lungs |= _ell(x, y, z, *self.lungs[1]) <= 1
        lungs &= pleural & (np.abs(x) > 0.1 * self.A) & (spine_d2 > (self.rv + 14.0 * s) ** 2)
        lungs &= ~(r["liver"] | r["stomach"] | r["spleen"] | r["heart"] | r["aorta"] | r["airway"])
        r["lungs"] = lungs

        # Spine: vertebral bodies with discs, canal, arch and spinous process.
        in_disc = np.mod(z - self.vert_phase, self.vert_period) < self.disc
        vb = spine_d2 <= self.rv ** 2
        cortical = vb & (spine_d2 > (self.rv - 2.5) ** 2)
        canal_d2 = x ** 2 + (y - self.canal_y) ** 2
        r["canal"] = canal_d2 <= self.canal_r ** 2
        arch = (canal_d2 > self.canal_r ** 2) & (canal_d2 <= (self.canal_r + 5.0 * s) ** 2)
        tip_y = self.canal_y + self.canal_r + 10.0 * s
        arch |= (x / (4.0 * s)) ** 2 + ((y - tip_y) / (10.0 * s)) ** 2 <= 1
        inner = r["inner"]
        r["disc"] = vb & in_disc & inner
        r["cortical"] = cortical & ~in_disc & inner
        r["cancellous"] = vb & ~cortical & ~in_disc & inner
        r["arch"] = arch & inner

        # Ribs: ring segments in the chest wall sloping down anteriorly; sternum in front.
        _, b = self._axes(t)
        q = np.maximum(self._shell(x, y, t, fat + 0.5 * mus), 1e-6)
        rq = np.sqrt(q)
        wall_d = (rq - 1.0) * np.sqrt(x ** 2 + y ** 2) / rq
        phase = np.mod(z - 0.9 * y - self.rib_phase, self.rib_period) - 0.5 * self.rib_period
        ribs = (wall_d / (3.5 * s)) ** 2 + (phase / self.rib_hz) ** 2 <= 1
        ribs &= (t > 0.38) & (t < 0.97)
        ribs &= ~((np.abs(x) < 0.12 * self.A) & (y < 0))
        ribs &= ~((np.abs(x) < self.rv + 10.0 * s) & (y > 0))
        r["ribs"] = ribs & inner
        y_st = -(b - fat - 0.5 * mus)
        r["sternum"] = (((x / (14.0 * s)) ** 2 + ((y - y_st) / (6.0 * s)) ** 2 <= 1)
                        & (t > 0.5) & (t < 0.93) & inner)
        r["bone"] = r["cortical"] | r["cancellous"] | r["arch"] | r["ribs"] | r["sternum"]
        return r

    # -- rendering ---------------------------------------------------------
    def render(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _render_chunked(self.shape, np.int16, CT_MASKS, self._render_chunk)

    def _render_chunk(self, z0, z1):
        x = self.x[None, None, :]
        y = self.y[None, :, None]
        z = self.z[z0:z1, None, None]
        t = (z - self.zmin) / self.Z
        r = self.regions(x, y, z)
        shape = (z1 - z0, self.shape[1], self.shape[2])
        tex = self.f_tex.chunk(z0, z1)
        v = np.full(shape, -1000.0, dtype=np.float32)

        def paint(mask, value):
            np.copyto(v, np.asarray(value, dtype=np.float32), where=mask)

        paint(r["body"], -100.0)
        paint(r["inner"], 45.0 + 4.0 * tex)
        paint(r["cavity"], 35.0 + 8.0 * tex)
        lower = r["cavity"] & (t < 0.42)
        paint(lower & (tex > 1.1), -95.0)  # mesenteric fat
        paint(lower & (t < 0.35) & (tex < -2.0), -950.0)  # bowel gas
        paint(r["renal_fat"], -90.0)
        paint(r["kidneys"], 32.0 + 3.0 * tex)
        paint(r["aorta"], 42.0)
        paint(r["spleen"], 48.0 + 2.0 * tex)
        paint(r["stomach"], 12.0)
        paint(r["stomach_air"], -1000.0)
        paint(r["liver"], 58.0 + 3.0 * tex)
        paint(r["heart"], 42.0 + 2.0 * tex)
        paint(r["airway"], -990.0)
        if r["lungs"].any():
            f1, f2 = self.f_v1.chunk(z0, z1), self.f_v2.chunk(z0, z1)
            near = np.zeros(shape, np.float32)
            for hx, hy, hz in self.hila:
                near = np.maximum(near, np.exp(-((x - hx) ** 2 + (y - hy) ** 2 + (z - hz) ** 2)
                                               / np.float32(2 * (45.0 * self.s) ** 2)))
            eps = np.float32(0.16) * (1.0 + 1.8 * near)
            vessels = np.exp(-(f1 ** 2 + f2 ** 2) / (2.0 * eps ** 2))
            paint(r["lungs"], -870.0 + 910.0 * vessels + 10.0 * tex)
        paint(r["canal"] & r["inner"], 15.0)
        paint(r["disc"], 90.0)
        paint(r["arch"], 550.0)
        paint(r["sternum"], 450.0)
        paint(r["ribs"], 620.0)
        paint(r["cancellous"], 300.0 + 20.0 * tex)
        paint(r["cortical"], 850.0)
        masks = {"body": r["body"], "lungs": r["lungs"], "liver": r["liver"], "bone": r["bone"],
                 "lesions": np.zeros(shape, bool)}
        _paint_spheres(v, masks, [(c, rad, hu) for c, rad, hu in self.lesions], self.x, self.y,
                       self.z[z0:z1], z0, z1, self.spacing, self.origin, "lesions")
        for k in range(z0, z1):
            v[k - z0] += _rng(self.seed, 7, k).standard_normal(shape[1:], dtype=np.float32) * 12.0
        np.clip(v, -1024, 3071, out=v)
        return np.rint(v).astype(np.int16), {k: m.astype(np.uint8) for k, m in masks.items()}


def ct_phantom(shape=(120, 256, 256), spacing=(2.5, 1.4, 1.4), seed=0, *, lesion_contrast_hu: float | None = None,
               lesion_radius_mm: float | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Chest/abdomen CT in HU (int16) with masks body, lungs, liver, bone, lesions.

    Geometry is the one write_ct_study uses: body centred on x = y = 0, slices
    from -(nz-1)*sz up to 0 mm, standard axial direction. The lesion keywords grade
    difficulty (see CTPhantom); None keeps today's pixels exactly.
    """
    return CTPhantom(shape, spacing, seed, lesion_contrast_hu, lesion_radius_mm).render()


# --------------------------------------------------------------------------
# MR brain (T1-like)
# --------------------------------------------------------------------------
class MRPhantom:
    """Analytic head: scalp, skull with diploe, CSF, folded cortex, white matter,
    deep grey nuclei, lateral and third ventricles and one ring-enhancing lesion."""

    LIVER_HU = 58.0  # mean liver attenuation the lesion contrast is measured against

    def __init__(self, shape, spacing, seed: int, lesion_contrast_hu: float | None = None,
                 lesion_radius_mm: float | None = None):
        """lesion_contrast_hu: liver lesions' HU minus the liver's (default about -43, hypodense);
        lesion_radius_mm: radius of every lesion (+-10 %); None keeps the seed's own draws."""
        self.shape = tuple(int(v) for v in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = _centred_origin(self.shape, self.spacing)
        self.x, self.y, self.z = _grid(self.shape, self.spacing, self.origin)
        nz, ny, nx = self.shape
        sz, sy, sx = self.spacing
        Z = max((nz - 1) * sz, sz)
        s = min(1.0, 0.9 * nx * sx / 150.0, 0.9 * ny * sy / 190.0, 0.9 * Z / 110.0)
        self.s = s
        rng = _rng(seed, 11)
        self.axes = np.array([72.0, 92.0, 85.0]) * s * rng.uniform(0.96, 1.04, 3)
        top = self.origin[2] + (nz - 1) * sz - 0.06 * Z
        self.c = np.array([0.0, rng.uniform(-3, 3) * s, top - self.axes[2]])
        cz = self.c[2]
        self.zv = cz + 12.0 * s  # ventricle level
        self.vent = [(side * 9.0 * s, -4.0 * s) for side in (-1, 1)]
        self.deep = [((side * 17.0 * s, 2.0 * s, self.zv - 9.0 * s), (9.0 * s, 15.0 * s, 9.0 * s))
                     for side in (-1, 1)]
        self.fold_sigma = 4.0 * max(s, 0.5)
        self.f_fold = _SmoothField(_rng(seed, 12), self.shape, self.spacing, self.fold_sigma)
        self.f_tex = _SmoothField(_rng(seed, 13), self.shape, self.spacing, 6.0)
        self.seed = seed
        side = rng.choice([-1.0, 1.0])
        lo = self.c + np.array([side * 15.0, -60.0, -10.0]) * s
        hi = self.c + np.array([side * 50.0, 50.0, 45.0]) * s
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)

        def inside(px, py, pz):
            r = self.regions(px, py, pz)
            return r["brain_core"] & ~r["ventricles_zone"]

        got = _place_spheres(rng, inside, lo, hi, [rng.uniform(6.0, 11.0)], [])
        self.lesion = got[0] if got else None

    def _rel(self, x, y, z):
        return x - self.c[0], y - self.c[1], z - self.c[2]

    def _inset(self, x, y, z, d):
        return _ell(x, y, z, (0, 0, 0), self.axes - d)

    def regions(self, x, y, z) -> dict:
        s = self.s
        x, y, z = self._rel(x, y, z)
        r = {}
        r["head"] = self._inset(x, y, z, 0.0) <= 1
        r["outer_table"] = self._inset(x, y, z, 5.0 * s) <= 1
        r["diploe"] = self._inset(x, y, z, 7.0 * s) <= 1
        r["inner_table"] = self._inset(x, y, z, 9.5 * s) <= 1
        r["intracranial"] = self._inset(x, y, z, 11.0 * s) <= 1
        q = self._inset(x, y, z, 13.5 * s)
        r["brain"] = q <= 1
        r["brain_core"] = self._inset(x, y, z, 25.0 * s) <= 1
        zr = z - (self.zv - self.c[2])
        vent = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), bool)
        zone = vent.copy()
        for vx, vy in self.vent:
            zc = zr + 0.006 * (y - vy) ** 2 / s  # horns curve downwards front and back
            xc = x - vx - np.sign(vx) * 0.15 * (y - vy)  # and diverge towards the occiput
            e = (xc / (6.0 * s)) ** 2 + ((y - vy) / (33.0 * s)) ** 2 + (zc / (9.0 * s)) ** 2
            vent |= e <= 1
            zone |= e <= 2.5
        third = (x / (2.0 * s)) ** 2 + ((y - 4.0 * s) / (14.0 * s)) ** 2 + ((zr + 14.0 * s) / (8.0 * s)) ** 2 <= 1
        r["ventricles"] = (vent | third) & r["brain"]
        r["ventricles_zone"] = zone | third
        deep = np.zeros_like(vent)
        for c, ax in self.deep:
            deep |= _ell(x, y, z, np.subtract(c, self.c), ax) <= 1
        r["deep_gm"] = deep & r["brain"] & ~r["ventricles"]
        # Approximate depth below the brain surface, for the cortical ribbon.
        rq = np.sqrt(np.maximum(q, 1e-6))
        r["depth"] = (1.0 - rq) * np.sqrt(x ** 2 + y ** 2 + z ** 2) / rq
        r["falx"] = (zr > 10.0 * s) & r["brain"] & ~r["ventricles"]
        return r

    def render(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _render_chunked(self.shape, np.uint16, MR_MASKS, self._render_chunk)

    def _render_chunk(self, z0, z1):
        x = self.x[None, None, :]
        y = self.y[None, :, None]
        z = self.z[z0:z1, None, None]
        r = self.regions(x, y, z)
        shape = (z1 - z0, self.shape[1], self.shape[2])
        fold, tex = self.f_fold.chunk(z0, z1), self.f_tex.chunk(z0, z1)
        v = np.zeros(shape, dtype=np.float32)

        def paint(mask, value):
            np.copyto(v, np.asarray(value, dtype=np.float32), where=mask)

        paint(r["head"], 900.0 + 30.0 * tex)  # scalp fat
        paint(r["outer_table"], 70.0)
        paint(r["diploe"] & ~r["inner_table"], 520.0)
        paint(r["inner_table"], 70.0)
        paint(r["intracranial"], 170.0)  # subarachnoid CSF
        # Cortex: a surface ribbon plus ribbons either side of sulci, which are the
        # zero sheets of a smooth field (|fold| / |grad fold| ~ distance in mm).
        depth = r["depth"]
        sulcal_depth = 18.0 * self.s + 5.0 * tex
        near = np.abs(fold) * np.float32(self.fold_sigma / 1.25)  # ~ mm from the sulcal sheet
        cortical = depth < sulcal_depth
        medial = r["falx"] & (np.abs(self.x[None, None, :] - self.c[0]) < 3.5)
        gm = (depth < 3.0) | (cortical & (near < 3.0)) | medial
        sulcus = cortical & (near < 0.7) & (depth > -1.0)
        paint(r["brain"], 770.0 * (1.0 + 0.03 * tex))  # white matter
        paint(r["brain"] & gm, 520.0 * (1.0 + 0.04 * tex))
        paint(r["brain"] & sulcus, 190.0)
        # Falx: a sub-voxel sheet at the midline, rendered with partial volume.
        w = np.clip(1.0 - np.abs(self.x[None, None, :] - self.c[0]) / np.float32(self.spacing[2]), 0, 1)
        falx = r["falx"]
        np.copyto(v, v + (190.0 - v) * 0.6 * w, where=falx)
        paint(r["deep_gm"], 610.0 * (1.0 + 0.03 * tex))
        paint(r["ventricles"], 150.0)
        masks = {"head": r["head"], "brain": r["brain"], "ventricles": r["ventricles"],
                 "lesion": np.zeros(shape, bool)}
        if self.lesion is not None:
            c, rad = self.lesion
            _paint_spheres(v, masks, [(c, rad, 980.0)], self.x, self.y, self.z[z0:z1], z0, z1,
                           self.spacing, self.origin, "lesion")
            core = {"lesion": np.zeros(shape, bool)}
            _paint_spheres(v, core, [(c, rad - max(1.5, 1.2 * self.spacing.max()), 380.0)], self.x,
                           self.y, self.z[z0:z1], z0, z1, self.spacing, self.origin, "lesion")
        # Smooth receive-coil bias, then magnitude (Rician) noise.
        xr, yr, zr = self._rel(x, y, z)
        bias = np.exp(0.10 * xr / self.axes[0] - 0.07 * yr / self.axes[1] + 0.08 * zr / self.axes[2])
        v *= bias.astype(np.float32)
        sigma = np.float32(15.0)
        for k in range(z0, z1):
            n = _rng(self.seed, 17, k).standard_normal((2, *shape[1:]), dtype=np.float32) * sigma
            v[k - z0] = np.sqrt((v[k - z0] + n[0]) ** 2 + n[1] ** 2)
        np.clip(v, 0, 4095, out=v)
        return np.rint(v).astype(np.uint16), {k: m.astype(np.uint8) for k, m in masks.items()}


def mr_phantom(shape=(100, 192, 192), spacing=(1.5, 1.2, 1.2), seed=0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """T1-like brain MR (uint16, ~0..1200) with masks head, brain, ventricles, lesion."""
    return MRPhantom(shape, spacing, seed).render()


# --------------------------------------------------------------------------
# Mammography (raw-acquired orientation: chest wall on the image's left edge)
# --------------------------------------------------------------------------
def mammo_spacing(size) -> tuple[float, float]:
    """Pixel spacing (row, col) in mm: the detector is always 233 x 179 mm, so
    a smaller matrix means proportionally bigger pixels."""
    rows, cols = size
    return (MG_FULL_SPACING * MG_FULL_SIZE[0] / rows, MG_FULL_SPACING * MG_FULL_SIZE[1] / cols)


def _fft_noise(rng, shape, spacing, sigma, highpass) -> np.ndarray:
    """Band-passed, anisotropic Gaussian noise (unit std) shaped directly in Fourier space.

    sigma = (row, col) correlation widths in mm; highpass removes structure
    larger than about that many mm.
    """
    rows, cols = shape
    fv = np.fft.fftfreq(rows, d=spacing[0]).astype(np.float32)[:, None]
    fu = np.fft.rfftfreq(cols, d=spacing[1]).astype(np.float32)[None, :]
    k = np.float32(2 * np.pi ** 2)
    h = np.exp(-k * ((fv * sigma[0]) ** 2 + (fu * sigma[1]) ** 2))
    h *= 1.0 - np.exp(-k * highpass ** 2 * (fv ** 2 + fu ** 2))
    spec = rng.standard_normal((2, rows, cols // 2 + 1), dtype=np.float32)
    field = np.fft.irfft2((spec[0] + 1j * spec[1]) * h, s=shape).astype(np.float32)
    field /= max(float(field.std()), 1e-12)
    return field


class _Breast:
    """One breast: projected outline, pectoralis and lesion sites for CC and MLO.

    All random draws are per breast, so the CC and MLO of one breast agree:
    same size, same lesion depth from the chest wall, and vertical positions
    that are projections of the same 3D site.
    """

    H = MG_FULL_SIZE[0] * MG_FULL_SPACING  # 232.96 mm detector height
    W = MG_FULL_SIZE[1] * MG_FULL_SPACING  # 179.2 mm detector width

    def __init__(self, laterality: str, seed: int):
        rng = _rng(seed, 21, {"R": 1, "L": 2}[laterality])
        self.A = rng.uniform(95.0, 125.0)  # nipple distance from the chest wall (CC)
        self.B = rng.uniform(80.0, 98.0)  # half extent along the chest wall (CC)
        self.density = rng.uniform(-0.3, 0.7)  # fibroglandular bias: fatty .. dense
        self.v0_cc = rng.uniform(0.47, 0.53) * self.H
        self.b_down_cc = self.B * rng.uniform(0.95, 1.05)
        self.wobble = (rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.01, 0.03, 2))
        self.pect = (rng.uniform(0.28, 0.38) * self.W, rng.uniform(0.45, 0.6) * self.H)
        self.mass_r = rng.uniform(4.0, 7.5)  # 8-15 mm diameter
        self.mass_shape = (rng.uniform(0, 0.08, 4), rng.uniform(0, 2 * np.pi, 4))
        self.spiculated = bool(rng.random() < 0.6)
        self.spicules = (rng.uniform(0, 2 * np.pi, 12), rng.uniform(0.8, 2.0, 12), int(rng.integers(6, 13)))
        self.mass_gain = rng.uniform(750.0, 950.0)
        n_calc = int(rng.integers(5, 16))
        self.calc_offsets = rng.normal(0.0, 2.0, (n_calc, 3))  # cluster of ~8 mm
        self.calc_r = rng.uniform(0.1, 0.25, n_calc)  # 0.2-0.5 mm diameter
        self.calc_gain = rng.uniform(1800.0, 2300.0, n_calc)
        self.mass_site = self._site(rng, self.mass_r + 8.0, None)
        self.calc_site = self._site(rng, 12.0, self.mass_site)
        self.spicule_scale = 1.0  # spicule length factor; set_difficulty grades it
        self._seed, self._lat = seed, laterality

    def set_difficulty(self, mass_contrast=None, mass_radius_mm=None, spiculation=None, calc_count=None,
                       calc_radius_mm=None, calc_contrast=None, pixel_mm: float = 0.07) -> None:
        """Replace this breast's drawn lesion parameters (None keeps the draw) for a difficulty ladder.

        Lesion sites and shapes stay the seed's own, so one seed at two difficulties differs only
        in what was asked. New draws come from their own stream, so the defaults never move.
        pixel_mm: the image's (largest) pixel size, so a counted cluster's dots stay apart on its grid.
        """
        rng = _rng(self._seed, 23, {"R": 1, "L": 2}[self._lat])
        if mass_contrast is not None:
            self.mass_gain = float(mass_contrast)
        if mass_radius_mm is not None:
            if mass_radius_mm <= 0:
                raise ValueError(f"mass_radius_mm must be positive, got {mass_radius_mm}")
            self.mass_r = float(mass_radius_mm)
        if spiculation is not None:
            if not 0.0 <= spiculation <= 1.0:
                raise ValueError(f"spiculation must be within 0 (smooth) .. 1 (strongly spiculated), got {spiculation}")
            angles, lengths, _n = self.spicules
            self.spiculated = spiculation > 0
            self.spicules = (angles, lengths, max(1, int(round(12 * spiculation))))
            self.spicule_scale = 2.0 * float(spiculation)  # 0.5 ~ the drawn lengths, 1 twice as long
        if calc_count is not None:
            if int(calc_count) < 1:
                raise ValueError(f"calc_count must be at least 1, got {calc_count}")
            n = int(calc_count)
            self.calc_r = rng.uniform(0.1, 0.25, n)
            self.calc_gain = rng.uniform(1800.0, 2300.0, n)
        n = len(self.calc_r)
        if calc_radius_mm is not None:
            if calc_radius_mm <= 0:
                raise ValueError(f"calc_radius_mm must be positive, got {calc_radius_mm}")
            self.calc_r = float(calc_radius_mm) * rng.uniform(0.8, 1.2, n)
        if calc_count is not None:  # dots (mask: radius + 1.5 px) a pixel clear of each other
            gap = 2.0 * (float(np.max(self.calc_r)) + 1.5 * pixel_mm) + max(pixel_mm, 0.6)
            self.calc_offsets = self._spread_offsets(rng, n, gap)
        if calc_contrast is not None:
            self.calc_gain = float(calc_contrast) * rng.uniform(0.9, 1.1, n)

    def _spread_offsets(self, rng, n: int, gap_mm: float) -> np.ndarray:
        """Cluster offsets (~8 mm cluster) whose dots stay `gap_mm` apart in both projections,
        so a cluster of n calcifications shows n separate dots (and n mask components)."""
        sigma = 2.0
        out: list[np.ndarray] = []
        while len(out) < n:
            for _ in range(200):
                off = rng.normal(0.0, sigma, 3)
                if all(np.hypot(*np.subtract(self.project(off, mlo), self.project(o, mlo))) > gap_mm
                       for o in out for mlo in (False, True)):
                    out.append(off)
                    break
            else:
                sigma *= 1.15  # crowded: widen the cluster a little
        return np.array(out)

    def _view(self, mlo: bool):
        """(v0, depth, half extent up, half extent down, droop) of the outline."""
        if mlo:  # reaches the top edge (axillary tail) and droops a little
            v0 = 0.56 * self.H
            return v0, self.A * 1.06, v0 + 20.0, 0.33 * self.H, 0.15
        return self.v0_cc, self.A, self.B, self.b_down_cc, 0.0

    def project(self, site, mlo: bool):
        """(depth, lateral, superior) mm -> (u from chest wall, v from top edge) mm."""
        d, lat, sup = site
        if mlo:
            return d * 1.06, 0.56 * self.H - 0.7 * (sup + lat)
        return d, self.v0_cc - lat

    def edge_distance(self, u, v, mlo: bool):
        """Approximate distance (mm) inside the skin outline; negative outside."""
        v0, depth, b_up, b_down, rot = self._view(mlo)
        dv = v - v0
        rho = np.sqrt(u ** 2 + dv ** 2)
        safe = np.maximum(rho, 1e-3)
        c, s = u / safe, dv / safe
        cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
        c2, s2 = c * cr + s * sr, s * cr - c * sr
        b = np.where(s2 < 0, np.float32(b_up), np.float32(b_down))
        r = 1.0 / np.sqrt((c2 / np.float32(depth)) ** 2 + (s2 / b) ** 2)
        theta = np.arctan2(dv, u)
        (p1, p2), (a1, a2) = self.wobble
        r *= (1.0 + np.float32(a1) * np.sin(3 * theta + np.float32(p1))
              + np.float32(a2) * np.sin(5 * theta + np.float32(p2)))
        return r - rho

    def pectoral(self, u, v, mlo: bool):
        if not mlo:
            return np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)), bool)
        p0, p1 = self.pect
        return (np.maximum(u, 0) / np.float32(p0)) ** 1.2 + (np.maximum(v, 0) / np.float32(p1)) ** 1.2 < 1.0

    def _site(self, rng, margin, avoid):
        """A 3D site well inside the breast (and off the pectoralis) in both projections."""
        for _ in range(1000):
            site = (rng.uniform(0.3, 0.7) * self.A, rng.uniform(-0.45, 0.45) * self.B,
                    rng.uniform(-0.4, 0.4) * self.B)
            ok = True
            for mlo in (False, True):
                u, v = self.project(site, mlo)
                ok &= bool(self.edge_distance(np.float64(u), np.float64(v), mlo) > margin)
                ok &= not bool(self.pectoral(np.float64(u - margin), np.float64(v - margin), mlo))
                if avoid is not None:
                    ok &= bool(np.hypot(*np.subtract(self.project(avoid, mlo), (u, v))) > 20.0)
            if ok:
                return site
        return (0.5 * self.A, 0.0, 0.0)


def _local(shape, spacing, center_uv, half_mm):
    """Index window and mm coordinates around a point, so lesions cost only their patch."""
    rows, cols = shape
    u, v = center_uv
    r0, r1 = max(0, int((v - half_mm) / spacing[0])), min(rows, int((v + half_mm) / spacing[0]) + 2)
    c0, c1 = max(0, int((u - half_mm) / spacing[1])), min(cols, int((u + half_mm) / spacing[1]) + 2)
    vv = ((np.arange(r0, r1) + 0.5) * spacing[0]).astype(np.float32)[:, None]
    uu = ((np.arange(c0, c1) + 0.5) * spacing[1]).astype(np.float32)[None, :]
    return (slice(r0, r1), slice(c0, c1)), uu - np.float32(u), vv - np.float32(v)


def mammo_image(laterality: str, view: str, size=(1664, 1280), seed=0, mass=False,
                calcifications=False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw-orientation 12-bit mammogram (uint16, brighter = denser), chest wall on the left.

    Returns the image and masks "breast" (skin outline, pectoralis included),
    "mass" and "calcification" (dots dilated by about a pixel; empty when absent).
    """
    image, masks, _truth = mammo_image_with_truth(laterality, view, size, seed, mass, calcifications)
    return image, masks


def mammo_image_with_truth(laterality: str, view: str, size=(1664, 1280), seed=0, mass=False,
                           calcifications=False, density_bias: float | None = None, *,
                           fibroglandular_fraction: float | None = None, mass_contrast: float | None = None,
                           mass_radius_mm: float | None = None, spiculation: float | None = None,
                           calc_count: int | None = None, calc_radius_mm: float | None = None,
                           calc_contrast: float | None = None,
                           ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """:func:`mammo_image` (the same pixels) plus the generator's own fibroglandular truth, so an
    area-based density estimate can be validated against what was drawn.

    truth: "percent_dense" = 100 * dense pixels / breast pixels, where the breast is the skin outline
    without the pectoralis and a pixel is dense when its fibroglandular weight (the logistic ``dense``
    map the tissue brightness is drawn from) is at least one half; "dense" is that mask and
    "pectoralis" the muscle mask (empty on CC views).

    ``density_bias`` replaces the breast's drawn fibroglandular bias (-0.3 .. 0.7, fatty .. dense) to
    reach the fatty and extremely dense ends a validation needs; None keeps the seed's own breast.

    Difficulty keywords (the phantom ladder, inference.ladder); None keeps the seed's own draw and
    the pixels bit-identical:
    - ``fibroglandular_fraction`` (0..1): the bias is solved per view so that exactly this fraction of
      the breast (pectoralis excluded) is dense, i.e. truth["percent_dense"] == 100 * fraction;
    - ``mass_contrast``: peak brightness the mass adds over the tissue around it, in stored values
      (drawn 750..950; the quantum noise is ~25..35 and the tissue texture some hundreds);
    - ``mass_radius_mm``: mass radius (drawn 4..7.5 mm);
    - ``spiculation``: 0 smooth .. 1 strongly spiculated (more and longer spicules);
    - ``calc_count``: calcifications in the cluster, spread so each is its own dot;
    - ``calc_radius_mm`` / ``calc_contrast``: their radius (drawn 0.1..0.25) and peak brightness
      (drawn 1800..2300).
    The masks stay exact: "mass" is the lobulated core (spicules are not part of it),
    "calcification" each dot grown by ~1.5 pixels.
    """
    laterality, view = laterality.upper(), view.upper()
    if laterality not in ("R", "L") or view not in ("CC", "MLO"):
        raise ValueError(f"need laterality R/L and view CC/MLO, got {laterality!r} {view!r}")
    mlo = view == "MLO"
    rows, cols = (int(n) for n in size)
    spacing = mammo_spacing((rows, cols))
    if density_bias is not None and fibroglandular_fraction is not None:
        raise ValueError("give density_bias or fibroglandular_fraction, not both")
    if fibroglandular_fraction is not None and not 0.0 <= fibroglandular_fraction <= 1.0:
        raise ValueError(f"fibroglandular_fraction must be within 0..1, got {fibroglandular_fraction}")
    breast = _Breast(laterality, seed)
    breast.set_difficulty(mass_contrast, mass_radius_mm, spiculation, calc_count, calc_radius_mm, calc_contrast,
                          pixel_mm=float(max(spacing)))
    if density_bias is not None:
        breast.density = float(density_bias)
    if fibroglandular_fraction is not None:
        breast.density = 0.0  # solved below, once the tissue field is known
    rng = _rng(seed, 22, {"R": 1, "L": 2}[laterality], int(mlo))
    v = ((np.arange(rows, dtype=np.float32) + 0.5) * np.float32(spacing[0]))[:, None]
    u = ((np.arange(cols, dtype=np.float32) + 0.5) * np.float32(spacing[1]))[None, :]

    edge = breast.edge_distance(u, v, mlo)
    inside = edge > 0
    # Fibroglandular tissue: coarse blobs plus fine strands, both elongated towards
    # the nipple; denser near the chest wall, fatty under the skin.
    coarse = _fft_noise(rng, (rows, cols), spacing, (3.5, 7.0), 30.0)
    mid = _fft_noise(rng, (rows, cols), spacing, (1.2, 3.0), 12.0)
    fine = _fft_noise(rng, (rows, cols), spacing, (0.4, 1.2), 5.0)
    g = 0.8 * coarse + 0.45 * mid + 0.3 * fine
    g += np.float32(breast.density + 1.0) - np.float32(2.2 / breast.A) * u
    g -= 2.0 * np.exp(-np.maximum(edge, 0) / np.float32(10.0))
    if fibroglandular_fraction is not None:  # dense <=> g >= 0, so the bias is a quantile of g
        tissue = inside & ~breast.pectoral(u, v, mlo)
        bias = _fraction_bias(g[tissue], float(fibroglandular_fraction))
        g += np.float32(bias)
        breast.density = bias
    dense = 1.0 / (1.0 + np.exp(-1.5 * g))
    # Cooper's ligaments: thin curvilinear lines along the zero sheet of `mid`, seen in fat.
    ligaments = np.exp(-(mid / np.float32(0.12)) ** 2) * (1.0 - dense)
    thick = np.sqrt(np.clip(edge / np.float32(18.0), 0, 1))  # compression falls off at the edge
    img = (1150.0 + 1650.0 * dense + 260.0 * ligaments) * (0.6 + 0.4 * thick)
    skin = inside & (edge < 1.2)
    np.copyto(img, np.float32(1700.0), where=skin)
    pect = breast.pectoral(u, v, mlo) & inside
    if mlo:
        p0, p1 = breast.pect
        pect_val = (2100.0 + 300.0 * (1.0 - u / np.float32(p0)) * (1.0 - v / np.float32(p1))
                    + 60.0 * coarse + 30.0 * fine)
        np.copyto(img, pect_val.astype(np.float32), where=pect & ~skin)
    np.copyto(img, np.float32(25.0), where=~inside)

    masks = {"breast": inside, "mass": np.zeros((rows, cols), bool),
             "calcification": np.zeros((rows, cols), bool)}
    if mass:
        _render_mass(img, masks["mass"], breast, spacing, mlo)
    if calcifications:
        _render_calcs(img, masks["calcification"], breast, spacing, mlo)
    # Quantum-like noise grows with signal; background stays near 0.
    img += rng.standard_normal((rows, cols), dtype=np.float32) * (6.0 + 0.01 * img)
    np.clip(img, 0, 4095, out=img)
    tissue = inside & ~pect
    dense_mask = tissue & (dense >= 0.5)
    truth = {"percent_dense": 100.0 * float(dense_mask.sum()) / max(int(tissue.sum()), 1),
             "dense": dense_mask, "pectoralis": pect, "density_bias": float(breast.density)}
    return np.rint(img).astype(np.uint16), {k: m.astype(np.uint8) for k, m in masks.items()}, truth


def _fraction_bias(g_tissue: np.ndarray, fraction: float) -> float:
    """The shift that makes exactly `fraction` of these field values non-negative."""
    if g_tissue.size == 0:
        return 0.0
    vals = np.sort(g_tissue.astype(np.float64))
    k = int(round(fraction * vals.size))  # pixels that must end up dense
    if k <= 0:
        return float(-vals[-1] - 1.0)
    if k >= vals.size:
        return float(-vals[0] + 1.0)
    return float(-(vals[-k] + vals[-k - 1]) / 2.0)  # midway: float32 rounding cannot flip either side


def _render_mass(img, mask, breast: _Breast, spacing, mlo: bool) -> None:
    """Lobulated round mass, optionally spiculated, added as extra density."""
    r = breast.mass_r
    reach = r * (1.3 + (2.2 * max(1.0, breast.spicule_scale) if breast.spiculated else 0.0))
    sl, du, dv = _local(img.shape, spacing, breast.project(breast.mass_site, mlo), reach)
    rho = np.sqrt(du ** 2 + dv ** 2)
    phi = np.arctan2(dv, du)
    amp, ph = breast.mass_shape
    rb = np.full_like(rho, r)
    for k, (a, p) in enumerate(zip(amp, ph), start=2):
        rb += np.float32(r * a) * np.cos(k * phi + np.float32(p))
    px = float(min(spacing))
    w = np.clip((rb - rho) / np.float32(max(px, 0.3)) + 0.5, 0, 1)
    add = breast.mass_gain * w
    if breast.spiculated:
        angles, lengths, n = breast.spicules
        for ang, ln in zip(angles[:n], lengths[:n]):
            ln = ln if breast.spicule_scale == 1.0 else ln * breast.spicule_scale
            d = np.array([np.cos(ang), np.sin(ang)], dtype=np.float32)
            along = du * d[0] + dv * d[1]
            across = np.abs(-du * d[1] + dv * d[0])
            frac = np.clip((along - 0.7 * r) / np.float32(ln * r), 0, 1)  # 0 at base .. 1 at tip
            width = np.float32(0.35) * (1.0 - frac) + np.float32(0.5 * px)
            spic = (along > 0.7 * r) & (frac < 1) & (across < width)
            add = np.maximum(add, np.where(spic, 0.55 * breast.mass_gain * (1.0 - frac), 0))
    img[sl] += add
    mask[sl] |= rho <= rb


def _render_calcs(img, mask, breast: _Breast, spacing, mlo: bool) -> None:
    """Cluster of tiny very bright dots; the mask is each dot grown by ~1.5 pixels.

    Even below the pixel size a dot keeps its full brightness on its nearest pixel,
    so small test images still show them.
    """
    px = float(max(spacing))
    for off, rad, gain in zip(breast.calc_offsets, breast.calc_r, breast.calc_gain):
        site = np.add(breast.calc_site, off)
        sl, du, dv = _local(img.shape, spacing, breast.project(site, mlo), rad + 3 * px)
        d2 = du ** 2 + dv ** 2
        sigma = max(rad / 1.2, 0.45 * px)
        profile = np.exp(-d2 / np.float32(2 * sigma ** 2))
        img[sl] += gain * profile / max(float(profile.max()), 1e-6)  # peak pixel at full brightness
        mask[sl] |= d2 <= (rad + 1.5 * px) ** 2


# --------------------------------------------------------------------------
# Studies on disk
# --------------------------------------------------------------------------
