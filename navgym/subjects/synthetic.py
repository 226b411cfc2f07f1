"""Synthetic subjects: the MNI152 template deformed, re-contrasted and re-acquired, deterministically from a seed.

Generation (all random draws from ``numpy.random.default_rng(seed)``):

1. **Anatomy**: a random affine (rotation up to +-12/12/18 deg about x/y/z, scale 0.88-1.12 per
   axis, shear up to 0.06, translation up to +-25 mm) composed with a smooth cubic B-spline
   displacement (control points every 25 mm, coefficients N(0, 1-2.5 mm) clipped to +-5 mm, so
   the map is invertible).  See :class:`~navgym.subjects.transform.WarpTransform`.
2. **Acquisition**: voxel grid axes in RAS order (p 0.5) or a random permutation with flips
   (LPS, PIR, ...); oblique by up to 15 deg (p 0.5); 1 mm isotropic voxels (p 0.4) or anisotropic
   (in-plane 0.8-1.2 mm, slice 1.2-2.5 mm along a random axis); field of view = the head's box
   + 8 mm, cropped by up to 25 mm on up to two faces (p 0.4) but never within 15 mm of a landmark.
3. **Contrast** from the template's tissue maps: T1-like (p 0.5, the template T1 with tissue
   weights jittered by +-10 %), T2-like (p 0.25, CSF > GM > WM) or PD-like (p 0.25, CSF >~ GM > WM,
   low contrast); then a smooth multiplicative bias field (exp of a B-spline, sd 0-0.25), gamma
   exp(N(0, 0.25)), Rician noise (sd 0-4 % of the range), robust normalisation to [0, 1] and
   quantisation to 256 levels (what is saved to disk, so a saved subject reloads bit-identically).

Labels (0 background, 1 CSF, 2 GM, 3 WM) are sampled nearest-neighbour through the same map as
the image; landmarks are mapped template -> subject by the transform's exact inverse; a plane
maps to the plane tangent to its image at the mapped point (normal ``J^T n``, J = d template /
d subject).  ``subject.to_template`` is the :class:`WarpTransform` itself (exact).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numba
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..anatomy import TEMPLATE_LANDMARKS, load_template, template_dir, template_planes
from ..configs import to_dict
from ..geometry import Plane
from ..volume import Volume, normalize_intensity
from .subject import Subject
from .transform import WarpTransform, basis_matrix, bspline_weights

__all__ = ["SyntheticConfig", "synthetic_subject", "synthetic_geometry", "synthetic_id", "CONTRASTS"]

CONTRASTS = ("T1w", "T2w", "PDw")


@dataclass(frozen=True)
class SyntheticConfig:
    """Ranges of the random variation (see the module docstring for the distributions).

    spacing : fixed isotropic voxel size in mm, or None to draw (1 mm iso or anisotropic).
    contrast : "T1w", "T2w", "PDw" or None to draw.
    intensity : apply bias field, gamma and noise (False: a clean image, for tests).
    """

    spacing: float | None = None
    contrast: str | None = None
    intensity: bool = True
    max_rotation_deg: tuple[float, float, float] = (12.0, 12.0, 18.0)
    scale_range: tuple[float, float] = (0.88, 1.12)
    max_shear: float = 0.06
    max_translation_mm: float = 25.0
    warp_spacing_mm: float = 25.0
    warp_sd_mm: tuple[float, float] = (1.0, 2.5)
    warp_max_mm: float = 5.0
    oblique_deg: float = 15.0
    margin_mm: float = 8.0
    max_crop_mm: float = 25.0

    def __post_init__(self):
        if self.contrast is not None and self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS} or None, got {self.contrast!r}")
        if self.spacing is not None and not (0.3 <= self.spacing <= 5):
            raise ValueError(f"spacing must be in [0.3, 5] mm, got {self.spacing}")


def synthetic_id(seed: int) -> str:
    """Subject id of the synthetic subject with this seed (BIDS-safe: letters and digits)."""
    return f"synth{int(seed):06d}"


@functools.lru_cache(maxsize=1)
def _template_maps():
    """(T1, CSF, GM, WM, non-brain weight) float32 maps on the template grid, and the template Volume."""
    tpl = load_template()
    folder = template_dir()
    gm = np.asarray(nib.load(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255
    wm = np.asarray(nib.load(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255
    brain = ndimage.gaussian_filter((tpl.labels > 0).astype(np.float32), 1.0)
    csf = np.clip(brain - gm - wm, 0, 1)
    return np.asarray(tpl.data), csf, gm, wm, (1 - brain).astype(np.float32), tpl


def _contrast_image(rng, contrast: str) -> np.ndarray:
    """Template-grid image of the given contrast with jittered tissue weights (float32)."""
    t1, csf, gm, wm, outside, _ = _template_maps()
    u = rng.uniform
    if contrast == "T1w":
        return t1 * (1 + u(-0.1, 0.1) * csf + u(-0.1, 0.1) * gm + u(-0.1, 0.1) * wm)
    if contrast == "T2w":
        w = (u(0.4, 0.8), u(0.85, 1.0), u(0.45, 0.6), u(0.3, 0.42))
    else:  # PDw
        w = (u(0.5, 0.8), u(0.75, 0.9), u(0.58, 0.68), u(0.42, 0.52))
    return (w[0] * t1 * outside + w[1] * csf + w[2] * gm + w[3] * wm).astype(np.float32)


def _random_affine(rng, cfg: SyntheticConfig) -> np.ndarray:
    """(4, 4) template mm -> subject world mm."""
    angles = rng.uniform(-1, 1, 3) * np.array(cfg.max_rotation_deg)
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    scale = np.diag(rng.uniform(*cfg.scale_range, 3))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-cfg.max_shear, cfg.max_shear, 3)
    out = np.eye(4)
    out[:3, :3] = rot @ shear @ scale
    out[:3, 3] = rng.uniform(-cfg.max_translation_mm, cfg.max_translation_mm, 3)
    return out


def _random_grid(rng, cfg: SyntheticConfig, head_pts: np.ndarray, landmarks: np.ndarray):
    """Voxel grid (affine (4, 4) rounded to float32, shape) covering ``head_pts`` (subject mm)."""
    axes = np.eye(3)
    if rng.random() < 0.5:  # non-RAS voxel order: permute and flip the axes
        axes = axes[:, rng.permutation(3)] * rng.choice([-1.0, 1.0], 3)
    if rng.random() < 0.5:  # oblique
        axis = rng.normal(size=3)
        tilt = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0, cfg.oblique_deg)))
        axes = tilt.as_matrix() @ axes
    if cfg.spacing is not None:
        spacing = np.full(3, float(cfg.spacing))
    elif rng.random() < 0.4:
        spacing = np.ones(3)
    else:
        spacing = rng.uniform(0.8, 1.2, 3)
        spacing[rng.integers(3)] = rng.uniform(1.2, 2.5)
    proj = head_pts @ axes  # coordinates along the grid axes (mm)
    lo, hi = proj.min(0) - cfg.margin_mm, proj.max(0) + cfg.margin_mm
    if rng.random() < 0.4:  # cropped field of view, keeping the landmarks 15 mm inside
        lm = landmarks @ axes
        for _ in range(rng.integers(1, 3)):
            a, side = rng.integers(3), rng.integers(2)
            cut = rng.uniform(0, cfg.max_crop_mm)
            if side == 0:
                lo[a] = min(lo[a] + cut, lm[:, a].min() - 15)
            else:
                hi[a] = max(hi[a] - cut, lm[:, a].max() + 15)
    shape = tuple(int(np.ceil((h - l) / s)) + 1 for l, h, s in zip(lo, hi, spacing))
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing
    affine[:3, 3] = axes @ lo
    return affine.astype(np.float32).astype(np.float64), shape


def synthetic_geometry(seed: int, config: SyntheticConfig | None = None):
    """The geometric draws of :func:`synthetic_subject` alone (cheap, no image).

    Returns (warp :class:`WarpTransform`, grid shape (3,), contrast, rng positioned for the
    intensity draws).
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng([int(seed), 0x5EED])
    t1, *_, tpl = _template_maps()
    contrast = cfg.contrast or str(rng.choice(CONTRASTS, p=[0.5, 0.25, 0.25]))
    fwd = _random_affine(rng, cfg)  # template mm -> subject mm; subject -> template is its inverse + a warp
    matrix_inv = np.linalg.inv(fwd[:3, :3])
    head_vox = np.argwhere(t1[::4, ::4, ::4] > 0.05) * 4.0
    head_pts = (head_vox @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]) @ fwd[:3, :3].T + fwd[:3, 3]
    lm_tpl = np.stack(list(TEMPLATE_LANDMARKS.values()))
    grid, shape = _random_grid(rng, cfg, head_pts, lm_tpl @ fwd[:3, :3].T + fwd[:3, 3])
    step = cfg.warp_spacing_mm / np.sqrt((grid[:3, :3] ** 2).sum(0))
    n_ctrl = [int(np.ceil((n - 1) / s)) + 3 for n, s in zip(shape, step)]
    sd = rng.uniform(*cfg.warp_sd_mm)
    coef = np.clip(rng.normal(0, sd, (*n_ctrl, 3)), -cfg.warp_max_mm, cfg.warp_max_mm).round(4)
    return WarpTransform(matrix_inv, -matrix_inv @ fwd[:3, 3], grid, step, coef), shape, contrast, rng


def synthetic_subject(seed: int, config: SyntheticConfig | None = None) -> Subject:
    """A synthetic subject, a deterministic function of ``seed`` (and ``config``); see the module docstring.

    ``subject.to_template`` is a :class:`WarpTransform` (subject world mm -> MNI mm, exact); its
    ``.inverse`` maps template mm into the subject.  ``subject.meta`` holds the generation record
    (seed, contrast, config) that :func:`navgym.subjects.save_subject` writes to the sidecar.
    """
    cfg = config or SyntheticConfig()
    warp, shape, contrast, rng = synthetic_geometry(seed, cfg)
    tpl = _template_maps()[-1]
    grid = warp.grid_affine
    spacing_mm = np.sqrt((grid[:3, :3] ** 2).sum(0))
    lm_names = list(TEMPLATE_LANDMARKS)
    lm_tpl = np.stack([TEMPLATE_LANDMARKS[k] for k in lm_names])

    # image and labels: subject voxel -> template voxel, sampled once
    image = _contrast_image(rng, contrast)
    data, labels = _resample(warp, shape, image, tpl)
    if cfg.intensity:
        data = _vary_intensity(rng, data, shape, spacing_mm)
    data = normalize_intensity(data)
    data = (np.rint(data * 255) / np.float32(255)).astype(np.float32)

    landmarks = dict(zip(lm_names, warp.inverse(lm_tpl)))
    planes = {}
    for name, plane in template_planes().items():
        point = warp.inverse(plane.point[None])[0]
        planes[name] = Plane(point, warp.jacobian(point[None])[0].T @ plane.normal)
    sid = synthetic_id(seed)
    meta = {"generator": "navgym.subjects.synthetic", "seed": int(seed), "contrast": contrast, "config": to_dict(cfg)}
    return Subject(sid, Volume(data, grid, labels, sid), landmarks, planes, warp, meta)


def _resample(warp: WarpTransform, shape, image: np.ndarray, tpl: Volume):
    """Sample the template-grid ``image`` (trilinear) and labels (nearest) at every subject voxel."""
    tinv = tpl.inverse_affine
    p = warp.matrix @ warp.grid_affine[:3]  # subject voxel -> template mm (affine part), (3, 4)
    p[:, 3] += warp.offset
    q = tinv[:3, :3] @ p
    q[:, 3] += tinv[:3, 3]
    coef_vox = warp.coefficients @ tinv[:3, :3].T  # displacement in template voxels
    bases = []
    for n, s in zip(shape, warp.spacing):
        b, w = bspline_weights(np.arange(n) / s + 1.0)
        bases += [b, w]
    data = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    _warp_sample(q, coef_vox, *bases, image, tpl.labels, data, labels)
    return data, labels


@numba.njit(cache=True, nogil=True, fastmath=True)
def _warp_sample(q, coef, bi, wi, bj, wj, bk, wk, image, labels, out, out_labels):
    ni, nj, nk = out.shape
    ci, cj, ck = coef.shape[0], coef.shape[1], coef.shape[2]
    si, sj, sk = image.shape
    row = np.zeros((ck, 3))
    for i in range(ni):
        for j in range(nj):
            row[:] = 0.0
            for a in range(4):
                ia = bi[i] + a
                if ia < 0 or ia >= ci:
                    continue
                for b in range(4):
                    jb = bj[j] + b
                    if jb < 0 or jb >= cj:
                        continue
                    w = wi[i, a] * wj[j, b]
                    for c in range(ck):
                        for d in range(3):
                            row[c, d] += w * coef[ia, jb, c, d]
            x0 = q[0, 0] * i + q[0, 1] * j + q[0, 3]
            y0 = q[1, 0] * i + q[1, 1] * j + q[1, 3]
            z0 = q[2, 0] * i + q[2, 1] * j + q[2, 3]
            for k in range(nk):
                x = x0 + q[0, 2] * k
                y = y0 + q[1, 2] * k
                z = z0 + q[2, 2] * k
                for c in range(4):
                    kc = bk[k] + c
                    if 0 <= kc < ck:
                        w = wk[k, c]
                        x += w * row[kc, 0]
                        y += w * row[kc, 1]
                        z += w * row[kc, 2]
                fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
                ix, iy, iz = int(fx), int(fy), int(fz)
                dx, dy, dz = x - fx, y - fy, z - fz
                acc = 0.0
                for ox in range(2):
                    px = ix + ox
                    if px < 0 or px >= si:
                        continue
                    wx = dx if ox else 1 - dx
                    for oy in range(2):
                        py = iy + oy
                        if py < 0 or py >= sj:
                            continue
                        wy = dy if oy else 1 - dy
                        for oz in range(2):
                            pz = iz + oz
                            if pz < 0 or pz >= sk:
                                continue
                            acc += wx * wy * (dz if oz else 1 - dz) * image[px, py, pz]
                out[i, j, k] = acc
                rx, ry, rz = int(np.floor(x + 0.5)), int(np.floor(y + 0.5)), int(np.floor(z + 0.5))
                if 0 <= rx < si and 0 <= ry < sj and 0 <= rz < sk:
                    out_labels[i, j, k] = labels[rx, ry, rz]
                else:
                    out_labels[i, j, k] = 0


def _vary_intensity(rng, data: np.ndarray, shape, spacing_mm) -> np.ndarray:
    """Bias field (smooth, multiplicative), gamma and Rician noise, in subject voxel space."""
    mats = []
    for n, s in zip(shape, spacing_mm):
        step = 60.0 / s
        mats.append(basis_matrix(n, step, int(np.ceil((n - 1) / step)) + 3).astype(np.float32))
    coef = rng.normal(0, rng.uniform(0, 0.25), tuple(m.shape[1] for m in mats)).astype(np.float32)
    field = np.einsum("ia,jb,kc,abc->ijk", *mats, coef, optimize=True)
    out = data * np.exp(field, dtype=np.float32)
    hi = float(out.max()) or 1.0
    out /= hi
    np.power(out, np.float32(np.exp(rng.normal(0, 0.25))), out=out)
    sd = np.float32(rng.uniform(0, 0.04))
    noise_rng = np.random.default_rng(rng.integers(2**63))
    re = out + sd * noise_rng.standard_normal(shape, dtype=np.float32)
    im = sd * noise_rng.standard_normal(shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)
