"""Oblique slice rendering: sample a volume on a slice plane's pixel grid (no gymnasium).

Every renderer composes the plane's pixel -> world affine with the volume's world ->
voxel affine into one (3, 3) pixel -> voxel map, so a pixel's voxel coordinate is linear
in (row, col).  Voxel (i, j, k) is sampled at its centre (the NIfTI affine maps integer indices
to voxel centres); samples whose trilinear footprint leaves the grid blend with ``fill``
(default 0, the normalised background), exactly like :func:`sample_at_indices`
(``torch.nn.functional.grid_sample(padding_mode="zeros")``).

Two paths give the same result (within 1e-4):

* :func:`render_slice` / :func:`render_slices`: numba kernels on the CPU, parallel over
  blocks of rows (so one large slice also uses every thread; set threads with
  ``numba.set_num_threads``);
* :class:`TorchRenderer`: ``grid_sample`` on CPU or GPU, batched.

How the CPU kernels are fast
----------------------------
* Per volume and process a :class:`SampleStore` is built once and shared by every caller
  (cached on the Volume object, weakly): with ``fill == 0`` it is the bounding box of the
  non-zero voxels (outside it the data are 0, so cropping changes no result), which keeps
  the working set small and lets pixels outside the anatomy cost only a comparison.
* Each image row is split analytically into columns whose footprint is wholly outside
  (``fill``), straddles the border (a general, checked path) or is wholly inside (the fast
  path, no per-pixel checks).  The fast path runs in three loops that the compiler
  vectorises except for the loads: voxel index + fractions, gather, interpolate.
* The box is stored as 16-bit indices into a float32 table of its distinct values (4 bytes
  -> 2 per voxel, two k-neighbours per 32-bit load).  MRI is usually stored as 8- or 16-bit
  integers and rescaled linearly, so a volume has at most 65536 distinct values (the MNI
  template: 208) and the table holds them *exactly*: results equal sampling the float32 array itself (an
  axis-aligned plane through voxel centres reproduces the array).  A volume with more
  distinct values renders float32 outputs from its float32 array (no copy when C-ordered)
  and uint8 outputs from a 16-bit linear quantisation (error <= 7.6e-6 of the value range,
  far below one grey level).
* ``uint8`` outputs (what the environment observes) are ``uint8(clip(x, 0, 1) * 255 + 0.5)``
  of the same float32 sample, computed in the same pass.
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from typing import Sequence

import numba
import numpy as np

from .geometry import SlicePose, check_poses, check_size, pixel_to_voxel, pixel_to_voxel_kernel
from .volume import Volume

__all__ = ["render_slice", "render_slices", "render_poses", "TorchRenderer", "SampleStore", "sample_store",
           "sample_at_indices"]

_ROWS_PER_BLOCK = 16  # rows per parallel work item (one pose of 128 rows = 8 items)
_PARALLEL_MIN_PIXELS = 32768  # below this a parallel launch costs more than it saves


_ZERO3 = np.zeros(3)


def render_slice(
    volume: Volume, pose: SlicePose, size: tuple[int, int] = (128, 128), *, labels: bool = False, fill: float = 0.0
) -> np.ndarray:
    """Render one slice.

    Parameters
    ----------
    volume : Volume
    pose : SlicePose
    size : (H, W) pixels
    labels : bool
        Sample ``volume.labels`` with nearest neighbour instead of the image (returns uint8;
        outside the grid is label 0).
    fill : float
        Value outside the volume (image only).

    Returns
    -------
    (H, W) float32 image (or uint8 labels); row 0 is the plane's +v edge, column 0 its -u edge.
    """
    return render_slices(volume, pose.center[None], pose.rotation[None], [pose.fov], size, labels=labels, fill=fill)[0]


def render_slices(
    volume: Volume,
    centers: np.ndarray,
    rotations: np.ndarray,
    fovs: Sequence[float],
    size: tuple[int, int] = (128, 128),
    *,
    labels: bool = False,
    fill: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render N slices of one volume (parallel over blocks of rows).

    Parameters
    ----------
    centers : (N, 3) world mm; rotations : (N, 3, 3); fovs : (N,) mm; size : (H, W)
    labels : nearest-neighbour label sampling (uint8) instead of trilinear image sampling
    fill : value outside the volume (image only)
    out : optional preallocated C-contiguous (N, H, W) output; a ``uint8`` array for the image
        gets the image quantised as ``uint8(clip(x, 0, 1) * 255 + 0.5)`` in the same pass
        (what the env observes).

    Returns
    -------
    (N, H, W) float32 (or uint8 for labels / a uint8 ``out``)
    """
    h, w = check_size(size)
    centers, rotations, fovs = check_poses(centers, rotations, fovs)
    n = len(fovs)
    m = np.empty((n, 3, 3))
    if labels:
        if volume.labels is None:
            raise ValueError(f"{volume.name} has no label map")
        out = _check_out(np.empty((n, h, w), np.uint8) if out is None else out, (n, h, w), (np.uint8,))
        pixel_to_voxel_kernel(volume.inverse_affine, centers, rotations, fovs, h, w, _ZERO3, m)
        _launch(_nearest_parallel, _nearest_serial, n * h * w, volume.labels, m, out)
        return out
    out = _check_out(np.empty((n, h, w), np.float32) if out is None else out, (n, h, w), (np.float32, np.uint8))
    if n == 0:
        return out
    store = sample_store(volume, fill)
    # voxel coordinates relative to the stored box
    pixel_to_voxel_kernel(volume.inverse_affine, centers, rotations, fovs, h, w, store.origin, m)
    pairs, q16, lut, exact = store.indexed()
    if out.dtype == np.uint8:
        _launch(_u8_parallel, _u8_serial, n * h * w, (pairs, q16, lut), m, np.float64(fill), out)
    elif exact:
        _launch(_indexed_parallel, _indexed_serial, n * h * w, (pairs, q16, lut), m, np.float64(fill), out)
    else:
        _launch(_f32_parallel, _f32_serial, n * h * w, store.float32(), m, np.float64(fill), out)
    return out


# numba's workqueue threading layer (the fork-safe choice when TBB is absent) aborts the whole process
# when two threads launch parallel kernels at once; only one thread at a time may be in one.
_PARALLEL_LOCK = threading.Lock()


def _launch(parallel_kernel, serial_kernel, pixels: int, *args) -> None:
    """Run ``parallel_kernel(*args)`` for large jobs when no other thread is in a parallel kernel,
    else ``serial_kernel(*args)`` (nogil, so concurrent callers still run side by side)."""
    if _use_parallel(pixels) and _PARALLEL_LOCK.acquire(blocking=False):
        try:
            parallel_kernel(*args)
        finally:
            _PARALLEL_LOCK.release()
    else:
        serial_kernel(*args)


def render_poses(
    subjects, subject_index, centers, rotations, fovs, size, *, labels: bool = False, out=None,
    device=None, renderers: dict | None = None,
):
    """(N, H, W) uint8 slices of N poses, pose i in ``subjects[subject_index[i]]``: one batched render per subject.

    subjects : anything indexable by the values of ``subject_index`` (a list, a pool, a dict) giving Subjects.
    centers (N, 3) world mm; rotations (N, 3, 3); fovs (N,) mm; size (H, W).
    labels : nearest-neighbour tissue labels instead of the image (CPU only).
    out : optional preallocated uint8 (N, H, W) output (C-contiguous; CPU only).
    device : None renders with the numba kernels into a numpy array (the image quantised as
        :func:`render_slices` does); a torch device renders with :class:`TorchRenderer` there and
        returns a uint8 tensor on it (``round(clip(x, 0, 1) * 255)``) from one :class:`TorchRenderer` call
        over every subject of the batch; ``renderers`` caches that renderer across calls, keyed by the
        sorted tuple of subject indices.
    """
    subject_index = np.asarray(subject_index).reshape(-1)
    h, w = check_size(size)
    centers, rotations, fovs = check_poses(centers, rotations, fovs)
    n = len(fovs)
    if len(subject_index) != n:
        raise ValueError(f"subject_index has {len(subject_index)} entries for {n} poses")
    groups = np.unique(subject_index)
    if device is not None:
        if labels or out is not None:
            raise ValueError("render_poses on a torch device renders images into a new tensor (no labels, no out)")
        import torch

        renderers = {} if renderers is None else renderers
        key = tuple(groups.tolist())
        if key not in renderers:
            renderers[key] = TorchRenderer([subjects[s].volume for s in key], device)
        img = renderers[key].render(centers, rotations, fovs, (h, w), volume_index=np.searchsorted(groups, subject_index))
        return (img.clamp(0, 1) * 255).round().to(torch.uint8)
    out = _check_out(np.empty((n, h, w), np.uint8) if out is None else out, (n, h, w), (np.uint8,))
    if len(groups) == 1:  # the common case: no gather/scatter
        render_slices(subjects[groups[0]].volume, centers, rotations, fovs, (h, w), labels=labels, out=out)
        return out
    for s in groups:
        sel = np.flatnonzero(subject_index == s)
        part = np.empty((len(sel), h, w), np.uint8)
        render_slices(subjects[s].volume, centers[sel], rotations[sel], fovs[sel], (h, w), labels=labels, out=part)
        out[sel] = part
    return out


def _use_parallel(pixels: int) -> bool:
    """Parallel kernels only pay off above ~2 slices of 128 x 128 (see the note above :func:`_f32_serial`)."""
    return pixels >= _PARALLEL_MIN_PIXELS and numba.get_num_threads() > 1


def _check_out(out: np.ndarray, shape: tuple, dtypes: tuple) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.shape != shape:
        raise ValueError(f"out has shape {getattr(out, 'shape', None)}, expected {shape}")
    if out.dtype not in dtypes:
        raise ValueError(f"out must have dtype {' or '.join(np.dtype(d).name for d in dtypes)}, got {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    return out


# --- per-volume storage -------------------------------------------------------------------------
class SampleStore:
    """What the CPU kernels read for one volume and one kind of ``fill`` (built lazily, once).

    Attributes
    ----------
    origin : (3,) float64
        Voxel index (i, j, k) of the stored box's first voxel in the volume.
    shape : (3,) int
        Box shape.  With ``fill == 0`` the box is the bounding box of the non-zero voxels
        (at least 2 voxels per axis); otherwise the whole grid.
    """

    def __init__(self, volume: Volume, crop: bool):
        data = volume.data
        if crop:
            nz = data != 0
            lo, hi = [], []
            for axis in range(3):
                hit = np.flatnonzero(nz.any(axis=tuple(a for a in range(3) if a != axis)))
                a, b = (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)
                a = max(0, min(a, data.shape[axis] - 2))
                lo.append(a)
                hi.append(max(b, a + 2))
        else:
            lo, hi = [0, 0, 0], list(data.shape)
        self._volume = weakref.ref(volume)
        self._box = tuple(slice(a, b) for a, b in zip(lo, hi))
        self.origin = np.array(lo, dtype=np.float64)
        self.shape = tuple(b - a for a, b in zip(lo, hi))
        self._f32 = None
        self._q = None
        self._extra_bytes = 0
        self._lock = threading.Lock()

    def float32(self):
        """(flat, base, s_i, s_j, box): float32 values; flat[base + i*s_i + j*s_j + k] = box[i, j, k].

        A view of ``volume.data`` when that is C-ordered (no copy), else a C-ordered copy of the box.
        """
        if self._f32 is None:
            with self._lock:
                if self._f32 is None:
                    data = self._volume().data
                    if data.dtype != np.float32 or not data.flags.c_contiguous:
                        box = np.ascontiguousarray(data[self._box], dtype=np.float32)
                        data, base = box, 0
                        self._extra_bytes += box.nbytes
                    else:
                        box = data[self._box]
                        base = int(sum(int(self.origin[a]) * data.strides[a] for a in range(3)) // 4)
                    s_i, s_j = data.strides[0] // 4, data.strides[1] // 4
                    self._f32 = (data.reshape(-1), base, s_i, s_j, box)
        return self._f32

    def indexed(self):
        """(pairs, q16, lut, exact): the box as 16-bit indices into a float32 table, ``x = lut[q16]``.

        ``exact``: the box has at most 65536 distinct values (true of MRI stored as integers and
        linearly rescaled, e.g. the MNI template's 208) and ``lut`` holds them, so the values are
        the volume's own; otherwise ``lut[q] = lo + q * (hi - lo) / 65535`` (error <= 7.6e-6 of the
        range).  ``pairs`` is a uint32 view with ``pairs[b] = q16.flat[b] | q16.flat[b + 1] << 16``
        (two k-neighbours per load).
        """
        if self._q is None:
            with self._lock:
                if self._q is None:
                    box = np.asarray(self._volume().data[self._box], dtype=np.float32)
                    values = np.unique(box)
                    exact = values.size <= 65536
                    if exact:
                        lut = values
                        q16 = np.searchsorted(values, box).astype(np.uint16)
                    else:
                        lo = min(float(values[0]), 0.0)
                        step = max(float(values[-1]) - lo, 1e-12) / 65535.0
                        lut = (lo + step * np.arange(65536)).astype(np.float32)
                        q16 = np.rint((box - lo) / step).astype(np.uint16)
                    del box, values
                    raw = np.ascontiguousarray(q16).reshape(-1)
                    pairs = np.ndarray((raw.size - 1,), dtype="<u4", buffer=raw, strides=(2,))
                    self._q = (pairs, raw.reshape(q16.shape), np.ascontiguousarray(lut, np.float32), exact)
                    self._extra_bytes += raw.nbytes + lut.nbytes
        return self._q

    @property
    def nbytes(self) -> int:
        """Bytes this store holds beyond the volume itself (copies made so far)."""
        return self._extra_bytes


_STORES: "weakref.WeakKeyDictionary[Volume, dict]" = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def sample_store(volume: Volume, fill: float = 0.0) -> SampleStore:
    """The process-wide :class:`SampleStore` of ``volume`` (one per volume and ``fill == 0`` or not)."""
    crop = fill == 0
    with _STORES_LOCK:
        per_volume = _STORES.setdefault(volume, {})
        store = per_volume.get(crop)
        if store is None:
            store = per_volume[crop] = SampleStore(volume, crop)
    return store


# --- kernels ------------------------------------------------------------------------------------
@numba.njit(inline="always")
def _inner_cols(x0, dx, hi, w):
    """Columns [a, b) with 0 < x0 + dx * c < hi by a margin of one column step (conservative)."""
    if abs(dx) < 1e-9:  # (nearly) constant along the row: decide once, margin 1e-6 voxel
        if 1e-6 <= x0 and x0 < hi - 1e-6:
            return 0, w
        return 0, 0
    t0 = -x0 / dx
    t1 = (hi - x0) / dx
    if t0 > t1:
        t0, t1 = t1, t0
    t0 = min(max(t0, -2.0), w + 2.0)
    t1 = min(max(t1, -2.0), w + 2.0)
    return max(0, int(math.floor(t0)) + 2), min(w, int(math.ceil(t1)) - 1)


@numba.njit(inline="always")
def _touch_cols(x0, dx, n, w):
    """Columns [a, b) outside which -1 < x0 + dx * c < n fails (a superset)."""
    if abs(dx) < 1e-9:
        if -1.0 - 1e-6 < x0 and x0 < n + 1e-6:
            return 0, w
        return 0, 0
    t0 = (-1.0 - x0) / dx
    t1 = (n - x0) / dx
    if t0 > t1:
        t0, t1 = t1, t0
    t0 = min(max(t0, -2.0), w + 2.0)
    t1 = min(max(t1, -2.0), w + 2.0)
    return max(0, int(math.floor(t0)) - 1), min(w, int(math.ceil(t1)) + 2)


@numba.njit(inline="always")
def _row_split(x0, y0, z0, dx, dy, dz, ni, nj, nk, w):
    """(oa, a, b, ob): columns [0, oa) and [ob, w) are outside, [a, b) inside, the rest straddle."""
    a1, b1 = _inner_cols(x0, dx, ni - 1.0, w)
    a2, b2 = _inner_cols(y0, dy, nj - 1.0, w)
    a3, b3 = _inner_cols(z0, dz, nk - 1.0, w)
    o1, p1 = _touch_cols(x0, dx, float(ni), w)
    o2, p2 = _touch_cols(y0, dy, float(nj), w)
    o3, p3 = _touch_cols(z0, dz, float(nk), w)
    oa, ob = max(o1, o2, o3), min(p1, p2, p3)
    if ob < oa:
        ob = oa
    a, b = max(a1, a2, a3, oa), min(b1, b2, b3, ob)
    if b <= a:
        a = b = oa
    return oa, a, b, ob


@numba.njit(inline="always", fastmath=True)
def _checked_f32(box, x, y, z, fill):
    """Trilinear sample of ``box`` at voxel (x, y, z); corners off the grid count as ``fill``."""
    ni, nj, nk = box.shape
    if x <= -1.0 or y <= -1.0 or z <= -1.0 or x >= ni or y >= nj or z >= nk:
        return fill
    fx0, fy0, fz0 = math.floor(x), math.floor(y), math.floor(z)
    i, j, k = int(fx0), int(fy0), int(fz0)
    fx, fy, fz = x - fx0, y - fy0, z - fz0
    acc = 0.0
    for di in range(2):
        wi = fx if di else 1.0 - fx
        ii = i + di
        for dj in range(2):
            wj = fy if dj else 1.0 - fy
            jj = j + dj
            for dk in range(2):
                wk = fz if dk else 1.0 - fz
                kk = k + dk
                v = box[ii, jj, kk] if (0 <= ii < ni and 0 <= jj < nj and 0 <= kk < nk) else fill
                acc += wi * wj * wk * v
    return acc


@numba.njit(inline="always", fastmath=True)
def _checked_indexed(q16, lut, x, y, z, fill):
    """As :func:`_checked_f32` for the values ``lut[q16]``."""
    ni, nj, nk = q16.shape
    if x <= -1.0 or y <= -1.0 or z <= -1.0 or x >= ni or y >= nj or z >= nk:
        return fill
    fx0, fy0, fz0 = math.floor(x), math.floor(y), math.floor(z)
    i, j, k = int(fx0), int(fy0), int(fz0)
    fx, fy, fz = x - fx0, y - fy0, z - fz0
    acc = 0.0
    for di in range(2):
        wi = fx if di else 1.0 - fx
        ii = i + di
        for dj in range(2):
            wj = fy if dj else 1.0 - fy
            jj = j + dj
            for dk in range(2):
                wk = fz if dk else 1.0 - fz
                kk = k + dk
                v = lut[q16[ii, jj, kk]] if (0 <= ii < ni and 0 <= jj < nj and 0 <= kk < nk) else fill
                acc += wi * wj * wk * v
    return acc


@numba.njit(inline="always", fastmath=True)
def _inner_coords(x0, y0, z0, dx, dy, dz, a, n, s_i, s_j, base, idx, fx, fy, fz):
    """Loop 1 (vectorised): flat index of each inner column's (i, j, k) corner and its fractions."""
    for t in range(n):
        c = a + t
        x, y, z = x0 + dx * c, y0 + dy * c, z0 + dz * c
        i, j, k = np.int64(x), np.int64(y), np.int64(z)  # x, y, z > 0 here: truncation = floor
        idx[t] = base + i * s_i + j * s_j + k
        fx[t] = np.float32(x - i)
        fy[t] = np.float32(y - j)
        fz[t] = np.float32(z - k)


@numba.njit(inline="always", fastmath=True)
def _lerp3(fx, fy, fz, p00, p01, p10, p11, q00, q01, q10, q11):
    """Trilinear blend; p/q = i / i+1, then (j, k) offsets 00, 01 (k+1), 10 (j+1), 11."""
    c00 = p00 + fx * (q00 - p00)
    c01 = p01 + fx * (q01 - p01)
    c10 = p10 + fx * (q10 - p10)
    c11 = p11 + fx * (q11 - p11)
    c0 = c00 + fy * (c10 - c00)
    c1 = c01 + fy * (c11 - c01)
    return c0 + fz * (c1 - c0)


@numba.njit(inline="always", fastmath=True)
def _row_f32(flat, base, s_i, s_j, box, m, p, r, fill, idx, fx, fy, fz, g, row):
    """Row ``r`` of pose ``p`` from the float32 array into ``row`` (float32, length W)."""
    ni, nj, nk = box.shape
    w = len(row)
    dx, dy, dz = m[p, 0, 1], m[p, 1, 1], m[p, 2, 1]
    x0 = m[p, 0, 0] * r + m[p, 0, 2]
    y0 = m[p, 1, 0] * r + m[p, 1, 2]
    z0 = m[p, 2, 0] * r + m[p, 2, 2]
    oa, a, b, ob = _row_split(x0, y0, z0, dx, dy, dz, ni, nj, nk, w)
    fill32 = np.float32(fill)
    row[:oa] = fill32
    row[ob:] = fill32
    for c in range(oa, a):
        row[c] = _checked_f32(box, x0 + dx * c, y0 + dy * c, z0 + dz * c, fill)
    for c in range(b, ob):
        row[c] = _checked_f32(box, x0 + dx * c, y0 + dy * c, z0 + dz * c, fill)
    cnt = b - a
    _inner_coords(x0, y0, z0, dx, dy, dz, a, cnt, s_i, s_j, base, idx, fx, fy, fz)
    for t in range(cnt):  # loop 2: gather
        q = idx[t]
        g[0, t] = flat[q]
        g[1, t] = flat[q + 1]
        g[2, t] = flat[q + s_j]
        g[3, t] = flat[q + s_j + 1]
        g[4, t] = flat[q + s_i]
        g[5, t] = flat[q + s_i + 1]
        g[6, t] = flat[q + s_i + s_j]
        g[7, t] = flat[q + s_i + s_j + 1]
    for t in range(cnt):  # loop 3: blend (vectorised)
        row[a + t] = _lerp3(fx[t], fy[t], fz[t], g[0, t], g[1, t], g[2, t], g[3, t], g[4, t], g[5, t], g[6, t], g[7, t])


@numba.njit(inline="always", fastmath=True)
def _row_indexed(pairs, q16, lut, m, p, r, fill, idx, fx, fy, fz, g, row):
    """Row ``r`` of pose ``p`` from the indexed store into ``row`` (float32, length W)."""
    ni, nj, nk = q16.shape
    s_j, s_i = nk, nj * nk
    w = len(row)
    dx, dy, dz = m[p, 0, 1], m[p, 1, 1], m[p, 2, 1]
    x0 = m[p, 0, 0] * r + m[p, 0, 2]
    y0 = m[p, 1, 0] * r + m[p, 1, 2]
    z0 = m[p, 2, 0] * r + m[p, 2, 2]
    oa, a, b, ob = _row_split(x0, y0, z0, dx, dy, dz, ni, nj, nk, w)
    fill32 = np.float32(fill)
    row[:oa] = fill32
    row[ob:] = fill32
    for c in range(oa, a):
        row[c] = _checked_indexed(q16, lut, x0 + dx * c, y0 + dy * c, z0 + dz * c, fill)
    for c in range(b, ob):
        row[c] = _checked_indexed(q16, lut, x0 + dx * c, y0 + dy * c, z0 + dz * c, fill)
    cnt = b - a
    _inner_coords(x0, y0, z0, dx, dy, dz, a, cnt, s_i, s_j, 0, idx, fx, fy, fz)
    mask = np.uint32(0xFFFF)
    sixteen = np.uint32(16)
    for t in range(cnt):  # loop 2: gather, two k-neighbours per 32-bit load, values from the table
        q = idx[t]
        w0, w1, w2, w3 = pairs[q], pairs[q + s_j], pairs[q + s_i], pairs[q + s_i + s_j]
        g[0, t] = lut[w0 & mask]
        g[1, t] = lut[w0 >> sixteen]
        g[2, t] = lut[w1 & mask]
        g[3, t] = lut[w1 >> sixteen]
        g[4, t] = lut[w2 & mask]
        g[5, t] = lut[w2 >> sixteen]
        g[6, t] = lut[w3 & mask]
        g[7, t] = lut[w3 >> sixteen]
    for t in range(cnt):  # loop 3: blend (vectorised)
        row[a + t] = _lerp3(fx[t], fy[t], fz[t], g[0, t], g[1, t], g[2, t], g[3, t], g[4, t], g[5, t], g[6, t], g[7, t])


@numba.njit(inline="always")
def _scratch(w):
    """Per-block work arrays for rows of ``w`` pixels: flat index, fractions (x, y, z), 8 corner values."""
    return (np.empty(w, np.int64), np.empty(w, np.float32), np.empty(w, np.float32), np.empty(w, np.float32),
            np.empty((8, w), np.float32))  # fmt: skip


@numba.njit(fastmath=True, nogil=True)
def _block_f32(src, m, fill, out, blk):
    """Rows ``[16 b, 16 b + 16)`` of one pose (block ``blk``) from the float32 array ``src``."""
    flat, base, s_i, s_j, box = src
    n, h, w = out.shape
    per_pose = (h + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    p, first = blk // per_pose, (blk % per_pose) * _ROWS_PER_BLOCK
    idx, fx, fy, fz, g = _scratch(w)
    for r in range(first, min(h, first + _ROWS_PER_BLOCK)):
        _row_f32(flat, base, s_i, s_j, box, m, p, r, fill, idx, fx, fy, fz, g, out[p, r])


@numba.njit(fastmath=True, nogil=True)
def _block_indexed(src, m, fill, out, blk):
    """As :func:`_block_f32` from the indexed store ``src`` = (pairs, q16, lut)."""
    pairs, q16, lut = src
    n, h, w = out.shape
    per_pose = (h + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    p, first = blk // per_pose, (blk % per_pose) * _ROWS_PER_BLOCK
    idx, fx, fy, fz, g = _scratch(w)
    for r in range(first, min(h, first + _ROWS_PER_BLOCK)):
        _row_indexed(pairs, q16, lut, m, p, r, fill, idx, fx, fy, fz, g, out[p, r])


@numba.njit(fastmath=True, nogil=True)
def _block_u8(src, m, fill, out, blk):
    """As :func:`_block_indexed` into a uint8 ``out``: ``uint8(clip(x, 0, 1) * 255 + 0.5)``."""
    pairs, q16, lut = src
    n, h, w = out.shape
    per_pose = (h + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    p, first = blk // per_pose, (blk % per_pose) * _ROWS_PER_BLOCK
    idx, fx, fy, fz, g = _scratch(w)
    row = np.empty(w, np.float32)
    lo, hi, scale, half = np.float32(0.0), np.float32(1.0), np.float32(255.0), np.float32(0.5)
    for r in range(first, min(h, first + _ROWS_PER_BLOCK)):
        _row_indexed(pairs, q16, lut, m, p, r, fill, idx, fx, fy, fz, g, row)
        for c in range(w):
            out[p, r, c] = np.uint8(min(max(row[c], lo), hi) * scale + half)


# Each kernel twice: serial, and parallel over blocks of rows.  Launching a numba parallel
# region costs tens of microseconds (thread wake-up), more than one 128 x 128 slice on one
# thread, so render_slices takes the parallel one only for large jobs with threads > 1.
@numba.njit(fastmath=True, cache=True, nogil=True)
def _f32_serial(src, m, fill, out):
    for blk in range(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_f32(src, m, fill, out, blk)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _f32_parallel(src, m, fill, out):
    for blk in numba.prange(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_f32(src, m, fill, out, blk)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _indexed_serial(src, m, fill, out):
    for blk in range(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_indexed(src, m, fill, out, blk)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _indexed_parallel(src, m, fill, out):
    for blk in numba.prange(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_indexed(src, m, fill, out, blk)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _u8_serial(src, m, fill, out):
    for blk in range(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_u8(src, m, fill, out, blk)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _u8_parallel(src, m, fill, out):
    for blk in numba.prange(out.shape[0] * ((out.shape[1] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK)):
        _block_u8(src, m, fill, out, blk)


@numba.njit(nogil=True)
def _nearest_row(labels, m, p, r, out):
    ni, nj, nk = labels.shape
    for c in range(out.shape[2]):
        i = int(math.floor(m[p, 0, 0] * r + m[p, 0, 1] * c + m[p, 0, 2] + 0.5))
        j = int(math.floor(m[p, 1, 0] * r + m[p, 1, 1] * c + m[p, 1, 2] + 0.5))
        k = int(math.floor(m[p, 2, 0] * r + m[p, 2, 1] * c + m[p, 2, 2] + 0.5))
        if 0 <= i < ni and 0 <= j < nj and 0 <= k < nk:
            out[p, r, c] = labels[i, j, k]
        else:
            out[p, r, c] = 0


@numba.njit(cache=True, nogil=True)
def _nearest_serial(labels, m, out):
    n, h, w = out.shape
    for pr in range(n * h):
        _nearest_row(labels, m, pr // h, pr % h, out)


@numba.njit(parallel=True, cache=True, nogil=True)
def _nearest_parallel(labels, m, out):
    n, h, w = out.shape
    for pr in numba.prange(n * h):
        _nearest_row(labels, m, pr // h, pr % h, out)


class TorchRenderer:
    """Batched ``grid_sample`` rendering of one or several volumes on a torch device (CPU or GPU).

    Several volumes are zero-padded to one (S, 1, I, J, K) tensor, so slices of all of them render in
    one ``grid_sample`` call (the views of each volume side by side; see :meth:`render`).

    Parameters
    ----------
    volume : Volume, or a sequence of Volumes
    device : str or torch.device
    dtype : torch dtype of the stored volume (float32 default; float16/bfloat16 halve memory)
    """

    def __init__(self, volume, device="cpu", dtype=None):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"TorchRenderer needs PyTorch ({e}); install it with: pip install 'navgym[train]'") from e

        self.torch = torch
        self.volumes = [volume] if isinstance(volume, Volume) else list(volume)
        if not self.volumes or not all(isinstance(v, Volume) for v in self.volumes):
            raise TypeError(f"volume must be a Volume or a non-empty sequence of Volumes, got {volume!r}")
        self.volume = self.volumes[0]
        self.device = torch.device(device)
        dtype = dtype or torch.float32
        with warnings.catch_warnings():  # zero-copy on CPU: the read-only array is never written
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            arrays = [torch.as_tensor(np.asarray(v.data), dtype=dtype, device=self.device) for v in self.volumes]
        if len(arrays) == 1:
            self.data = arrays[0][None, None]
        else:
            shape = np.max([a.shape for a in arrays], axis=0)
            self.data = torch.zeros((len(arrays), 1, *shape), dtype=dtype, device=self.device)
            for d, a in zip(self.data, arrays):
                d[0, : a.shape[0], : a.shape[1], : a.shape[2]] = a

    def render(self, centers, rotations, fovs, size=(128, 128), fill: float = 0.0, volume_index=None):
        """(N, H, W) float32 tensor of slices; inputs are tensors or arrays in world mm (as :func:`render_slices`).

        volume_index : (N,) ints, pose i's volume in the renderer's sequence (None: the first and only one).
        """
        torch = self.torch
        h, w = check_size(size)
        host = lambda a: a.detach().cpu().numpy() if torch.is_tensor(a) else a  # noqa: E731
        centers, rotations, fovs = host(centers), host(rotations), host(fovs)
        n = len(fovs)
        if volume_index is None:
            if len(self.volumes) > 1:
                raise ValueError(f"volume_index is needed: this renderer holds {len(self.volumes)} volumes")
            volume_index = np.zeros(n, np.int64)
        volume_index = np.asarray(volume_index).reshape(-1)
        if len(volume_index) != n or not np.all((volume_index >= 0) & (volume_index < len(self.volumes))):
            raise ValueError(f"volume_index must be {n} indices in [0, {len(self.volumes)}), got {volume_index!r}")
        m = np.empty((n, 3, 3))
        for v in np.unique(volume_index):
            sel = volume_index == v
            m[sel] = pixel_to_voxel(self.volumes[v].inverse_affine, centers[sel], rotations[sel], fovs[sel], (h, w))
        m = torch.as_tensor(m, device=self.device)
        rows = torch.arange(h, dtype=torch.float64, device=self.device)
        cols = torch.arange(w, dtype=torch.float64, device=self.device)
        vox = (
            m[:, None, None, :, 0] * rows[None, :, None, None]
            + m[:, None, None, :, 1] * cols[None, None, :, None]
            + m[:, None, None, :, 2]
        )  # (N, H, W, 3) voxel (i, j, k)
        data = self.data
        if fill:  # zero outside each volume, its padding included, stands for the fill value
            data = data.clone()
            for d, v in zip(data, self.volumes):
                d[0, : v.shape[0], : v.shape[1], : v.shape[2]] -= fill
        if len(self.volumes) == 1:
            out = sample_at_indices(data, vox)[:, 0]
        else:  # views of volume v in row v of a (S, M, H, W, 3) index: one call for every volume
            rank = np.zeros(n, np.int64)
            for v in np.unique(volume_index):
                sel = np.flatnonzero(volume_index == v)
                rank[sel] = np.arange(len(sel))
            where = (torch.as_tensor(volume_index, device=self.device), torch.as_tensor(rank, device=self.device))
            index = torch.zeros((len(self.volumes), int(rank.max()) + 1, h, w, 3), dtype=vox.dtype, device=self.device)
            index[where] = vox
            out = sample_at_indices(data, index)[:, 0][where]
        out = out.float()
        return out + fill if fill else out


def sample_at_indices(data, index):
    """Trilinear samples of a torch tensor ``data`` (B, C, I, J, K) at array-index coordinates ``index``:
    an (N, H, W, 3) tensor ``(i, j, k)`` -> (N, C, H, W) in ``data``'s dtype, B 1 (shared) or N; or
    (B, M, H, W, 3), M points grids in each of the B arrays -> (B, C, M, H, W).

    Integer indices are sample centres (for a volume: voxel centres, as the NIfTI affine places them);
    points beyond the outer centres blend with zero, so half a sample outside gives half the edge
    value.  This is ``grid_sample(align_corners=False)`` with the index normalised as
    ``(2 index + 1) / size - 1`` (-1 and +1 are the outer samples' outer edges).
    """
    import torch

    size = torch.as_tensor(data.shape[2:], dtype=index.dtype, device=index.device)
    grid = ((2 * index + 1) / size - 1).flip(-1).to(data.dtype)  # grid_sample wants (k, j, i)
    if index.dim() == 5:
        return torch.nn.functional.grid_sample(data, grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)
    out = torch.nn.functional.grid_sample(data.expand(len(index), -1, -1, -1, -1), grid[:, None], mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    return out[:, :, 0]
