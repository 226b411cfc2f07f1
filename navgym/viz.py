"""Pictures of navigation: the slice beside a 3-view locator of where its plane cuts the volume, and videos."""

from __future__ import annotations

import os

import numpy as np

from .files import atomic_path
from .geometry import SlicePose, canonical_rotation
from .render import render_slice
from .volume import Volume

__all__ = ["locator_frame", "write_video"]

_LINE = np.array([255, 64, 64], np.uint8)
_DOT = np.array([64, 255, 64], np.uint8)


def locator_frame(volume: Volume, pose: SlicePose, image: np.ndarray | None = None, panel: int = 160) -> np.ndarray:
    """(panel, 4 * panel, 3) uint8 RGB: the slice, then sagittal, coronal and axial views of the volume.

    Each view passes through the slice centre, is centred on the volume's centre in-plane, and
    shows in red the segment where the slice's plane (its fov square) cuts it, the centre in green.  ``image`` (uint8 or float in [0, 1])
    is the slice as the agent sees it; rendered from ``pose`` when omitted.
    """
    if image is None:
        image = render_slice(volume, pose, (panel, panel))
    tiles = [_to_rgb(_resize(np.asarray(image), panel))]
    fov = volume.extent_mm * 0.8
    for view in ("sagittal", "coronal", "axial"):
        rot = canonical_rotation(view)
        n = rot[:, 2]
        view_pose = SlicePose(volume.center + n * (n @ (pose.center - volume.center)), rot, fov)
        tile = _to_rgb(render_slice(volume, view_pose, (panel, panel)))
        _draw_cut(tile, view_pose, pose)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def _to_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D image to (size, size * W / H)."""
    h, w = img.shape
    rows = np.minimum((np.arange(size) * h / size).astype(int), h - 1)
    cols = np.minimum((np.arange(int(round(size * w / h))) * w / int(round(size * w / h))).astype(int), w - 1)
    return img[rows][:, cols]


def _draw_cut(tile: np.ndarray, view: SlicePose, pose: SlicePose) -> None:
    """Draw the part of ``pose``'s fov square lying in ``view``'s plane, and the centre."""
    n_view = view.normal
    # Direction within the slice plane that is also within the view plane.
    a, b = n_view @ pose.v, -(n_view @ pose.u)
    half_w = pose.fov / 2
    if np.hypot(a, b) > 1e-6:
        d = (a * pose.u + b * pose.v) / np.hypot(a, b)
        # Clip the line c + t d to the square |t d.u| <= half_w, |t d.v| <= half_h.
        half_h = half_w  # square observations; a non-square image is shown by its width
        limits = [half_w / abs(d @ pose.u) if abs(d @ pose.u) > 1e-9 else np.inf,
                  half_h / abs(d @ pose.v) if abs(d @ pose.v) > 1e-9 else np.inf]
        t = np.linspace(-min(limits), min(limits), 4 * tile.shape[0])
        pts = pose.center + t[:, None] * d
        _plot(tile, view, pts, _LINE)
    _plot(tile, view, pose.center[None], _DOT, radius=2)


def _plot(tile, view: SlicePose, pts: np.ndarray, color, radius: int = 0) -> None:
    size = tile.shape[0]
    rows, cols = np.round(view.world_to_pixel(pts, tile.shape[:2])).astype(int).T
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            tile[r[ok], c[ok]] = color


def write_video(path: str, frames, fps: float) -> None:
    """GIF or MP4 (needs imageio-ffmpeg) from a list of (H, W, 3) uint8 frames, written atomically."""
    import imageio.v3 as iio

    if os.path.splitext(path)[1].lower() == ".gif":
        atomic_path(path, lambda tmp: iio.imwrite(tmp, np.stack(frames), duration=1000.0 / fps, loop=0))
    else:
        atomic_path(path, lambda tmp: iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", plugin="FFMPEG"))
