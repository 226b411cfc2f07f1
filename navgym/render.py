"""Oblique slice rendering: sample a volume on a slice plane's pixel grid (no gymnasium).

Every renderer composes the plane's pixel -> world affine with the volume's world ->
voxel affine into one (3, 3) pixel -> voxel map, so a pixel costs two multiply-adds
per axis plus a trilinear (or nearest-neighbour) lookup.  Samples whose trilinear
footprint leaves the grid blend with ``fill`` (default 0, the normalised background),
exactly like ``torch.nn.functional.grid_sample(padding_mode="zeros", align_corners=True)``.

Two paths give the same result (within 1e-4):
* :func:`render_slice` / :func:`render_slices`: numba kernels on the CPU (parallel over
  poses; set threads with ``numba.set_num_threads``);
* :class:`TorchRenderer`: ``grid_sample`` on CPU or GPU, batched.
"""

from __future__ import annotations

import math
from typing import Sequence

import numba
import numpy as np

from .geometry import SlicePose, pixel_to_world_affines
from .volume import Volume

__all__ = ["render_slice", "render_slices", "pixel_to_voxel", "TorchRenderer"]


def pixel_to_voxel(volume: Volume, centers, rotations, fovs, size) -> np.ndarray:
    """(N, 3, 3) maps: ``voxel = M[:, 0] * row + M[:, 1] * col + M[:, 2]`` for each pose."""
    p2w = pixel_to_world_affines(np.asarray(centers, float), np.asarray(rotations, float), np.asarray(fovs, float), size)
    p2v = np.einsum("ij,njk->nik", volume.inverse_affine, p2w)
    return np.ascontiguousarray(p2v[:, :3][:, :, [0, 1, 3]])


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
    """Render N slices of one volume (parallel over poses).

    Parameters
    ----------
    centers : (N, 3) world mm; rotations : (N, 3, 3); fovs : (N,) mm; size : (H, W)
    labels : nearest-neighbour label sampling (uint8) instead of trilinear image sampling
    out : optional preallocated output; a ``uint8`` array for the image gets the image
        quantised as ``round(clip(x, 0, 1) * 255)`` in the same pass (what the env observes).

    Returns
    -------
    (N, H, W) float32 (or uint8 for labels / a uint8 ``out``)
    """
    h, w = _check_size(size)
    m = pixel_to_voxel(volume, centers, rotations, fovs, (h, w))
    if labels:
        if volume.labels is None:
            raise ValueError(f"{volume.name} has no label map")
        out = np.empty((len(m), h, w), np.uint8) if out is None else out
        _nearest_batch(volume.labels, m, out)
        return out
    out = np.empty((len(m), h, w), np.float32) if out is None else out
    if out.shape != (len(m), h, w):
        raise ValueError(f"out has shape {out.shape}, expected {(len(m), h, w)}")
    if out.dtype == np.uint8:
        _trilinear_batch_u8(volume.data, m, np.float32(fill), out)
    else:
        _trilinear_batch(volume.data, m, np.float32(fill), out)
    return out


def _check_size(size) -> tuple[int, int]:
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return h, w


@numba.njit(inline="always", fastmath=True)
def _trilinear(data, x, y, z, fill):
    ni, nj, nk = data.shape
    if x <= -1.0 or y <= -1.0 or z <= -1.0 or x >= ni or y >= nj or z >= nk:
        return fill
    fx0, fy0, fz0 = math.floor(x), math.floor(y), math.floor(z)
    i, j, k = int(fx0), int(fy0), int(fz0)
    fx, fy, fz = x - fx0, y - fy0, z - fz0
    if i >= 0 and j >= 0 and k >= 0 and i < ni - 1 and j < nj - 1 and k < nk - 1:
        c00 = data[i, j, k] + fx * (data[i + 1, j, k] - data[i, j, k])
        c01 = data[i, j, k + 1] + fx * (data[i + 1, j, k + 1] - data[i, j, k + 1])
        c10 = data[i, j + 1, k] + fx * (data[i + 1, j + 1, k] - data[i, j + 1, k])
        c11 = data[i, j + 1, k + 1] + fx * (data[i + 1, j + 1, k + 1] - data[i, j + 1, k + 1])
        c0 = c00 + fy * (c10 - c00)
        c1 = c01 + fy * (c11 - c01)
        return c0 + fz * (c1 - c0)
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
                if 0 <= ii < ni and 0 <= jj < nj and 0 <= kk < nk:
                    v = data[ii, jj, kk]
                else:
                    v = fill
                acc += wi * wj * wk * v
    return acc


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _trilinear_batch(data, m, fill, out):
    n, h, w = out.shape
    for p in numba.prange(n):
        for r in range(h):
            x0 = m[p, 0, 0] * r + m[p, 0, 2]
            y0 = m[p, 1, 0] * r + m[p, 1, 2]
            z0 = m[p, 2, 0] * r + m[p, 2, 2]
            for c in range(w):
                out[p, r, c] = _trilinear(data, x0 + m[p, 0, 1] * c, y0 + m[p, 1, 1] * c, z0 + m[p, 2, 1] * c, fill)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _trilinear_batch_u8(data, m, fill, out):
    n, h, w = out.shape
    for p in numba.prange(n):
        for r in range(h):
            x0 = m[p, 0, 0] * r + m[p, 0, 2]
            y0 = m[p, 1, 0] * r + m[p, 1, 2]
            z0 = m[p, 2, 0] * r + m[p, 2, 2]
            for c in range(w):
                v = _trilinear(data, x0 + m[p, 0, 1] * c, y0 + m[p, 1, 1] * c, z0 + m[p, 2, 1] * c, fill)
                v = min(max(v, 0.0), 1.0)
                out[p, r, c] = np.uint8(v * 255.0 + 0.5)


@numba.njit(parallel=True, cache=True, nogil=True)
def _nearest_batch(labels, m, out):
    n, h, w = out.shape
    ni, nj, nk = labels.shape
    for p in numba.prange(n):
        for r in range(h):
            for c in range(w):
                i = int(math.floor(m[p, 0, 0] * r + m[p, 0, 1] * c + m[p, 0, 2] + 0.5))
                j = int(math.floor(m[p, 1, 0] * r + m[p, 1, 1] * c + m[p, 1, 2] + 0.5))
                k = int(math.floor(m[p, 2, 0] * r + m[p, 2, 1] * c + m[p, 2, 2] + 0.5))
                if 0 <= i < ni and 0 <= j < nj and 0 <= k < nk:
                    out[p, r, c] = labels[i, j, k]
                else:
                    out[p, r, c] = 0


class TorchRenderer:
    """Batched ``grid_sample`` rendering of one volume on a torch device (CPU or GPU).

    Parameters
    ----------
    volume : Volume
    device : str or torch.device
    dtype : torch dtype of the stored volume (float32 default; float16/bfloat16 halve memory)
    """

    def __init__(self, volume: Volume, device="cpu", dtype=None):
        import torch

        self.torch = torch
        self.volume = volume
        self.device = torch.device(device)
        dtype = dtype or torch.float32
        self.data = torch.as_tensor(np.asarray(volume.data), dtype=dtype, device=self.device)[None, None]
        self._scale = torch.as_tensor(
            [2.0 / max(s - 1, 1) for s in volume.shape], dtype=torch.float64, device=self.device
        )
        self.inverse_affine = torch.as_tensor(volume.inverse_affine, dtype=torch.float64, device=self.device)

    def render(self, centers, rotations, fovs, size=(128, 128), fill: float = 0.0):
        """(N, H, W) float32 tensor of slices; inputs are tensors or arrays in world mm (as :func:`render_slices`)."""
        torch = self.torch
        h, w = _check_size(size)
        t = lambda a: torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a, dtype=torch.float64, device=self.device)  # noqa: E731
        centers, rotations, fovs = t(centers), t(rotations), t(fovs)
        s = (fovs / w)[:, None]
        u, v = rotations[:, :, 0], rotations[:, :, 1]
        rows = torch.arange(h, dtype=torch.float64, device=self.device)
        cols = torch.arange(w, dtype=torch.float64, device=self.device)
        origin = centers - u * s * (w - 1) / 2 + v * s * (h - 1) / 2  # world mm of pixel (0, 0)
        world = (
            origin[:, None, None, :]
            - (v * s)[:, None, None, :] * rows[None, :, None, None]
            + (u * s)[:, None, None, :] * cols[None, None, :, None]
        )
        vox = world @ self.inverse_affine[:3, :3].T + self.inverse_affine[:3, 3]
        grid = (vox * self._scale - 1.0).flip(-1)  # grid_sample wants (k, j, i) in [-1, 1]
        grid = grid[:, None].to(self.data.dtype)  # (N, 1, H, W, 3)
        data = self.data.expand(len(centers), -1, -1, -1, -1)
        if fill:
            data = data - fill
        out = torch.nn.functional.grid_sample(data, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out[:, 0, 0].float()
        return out + fill if fill else out
