"""Slice-plane geometry (pure: numpy/scipy, and numba for the per-frame pixel grid).

Frames and units
----------------
* World: RAS+ millimetres (x Right, y Anterior, z Superior), from the NIfTI affine.
* Plane frame: the rotation matrix's columns are the plane's in-plane right ``u``,
  in-plane up ``v`` and normal ``n = u x v`` (world unit vectors).
* Image: row 0 is the ``+v`` edge, column 0 the ``-u`` edge; pixels are square with
  spacing ``fov / W`` mm, so ``fov`` is the width of the view along ``u`` in mm and the
  height is ``fov * H / W``.
* Actions are physical deltas in the plane's own frame:
  ``(du, dv, dn)`` mm, ``(ru, rv, rn)`` degrees (rotation about u, v, n; right-handed)
  and ``zoom`` = ln(fov_before / fov_after) (positive zooms in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "SlicePose",
    "Plane",
    "apply_actions",
    "orthonormalize",
    "pixel_to_world_affines",
    "pixel_to_voxel",
    "plane_distance",
    "plane_angle_deg",
    "canonical_rotation",
    "random_view_rotations",
    "random_view_turns",
    "random_jumps",
    "view_rotations",
    "pack_poses",
    "unpack_poses",
    "CANONICAL_VIEWS",
]

# Canonical views, (u, v) as world axes and n = u x v.  Axial and coronal views follow the neurological
# convention (the patient's right on the image's right: u = R), with anterior (axial) or superior up;
# sagittal views have anterior on the right and superior up.
CANONICAL_VIEWS = {
    "axial": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float).T,  # u=R, v=A, n=S
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float).T,  # u=R, v=S, n=P
    "sagittal": np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float).T,  # u=A, v=S, n=R
}


def canonical_rotation(view: str) -> np.ndarray:
    """(3, 3) rotation (columns u, v, n) of an axial, coronal or sagittal view."""
    try:
        return CANONICAL_VIEWS[view].copy()
    except KeyError:
        raise ValueError(f"unknown view {view!r}; choose from {sorted(CANONICAL_VIEWS)}") from None


def random_view_rotations(n: int, max_angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) random view rotations: a uniformly drawn canonical view (axial, coronal or sagittal)
    turned about a uniformly random axis by an angle U(0, ``max_angle_deg``) degrees; the draws of
    :func:`random_view_turns` composed by :func:`view_rotations`."""
    return view_rotations(*random_view_turns(n, max_angle_deg, rng))


def random_view_turns(n: int, max_angle_deg: float, rng: np.random.Generator):
    """The draws of :func:`random_view_rotations`, in order: n view indices (into :data:`CANONICAL_VIEWS`),
    (n, 3) turn axes (not normalised), n angles U(0, ``max_angle_deg``) degrees (for n = 1 these are a
    Navigator reset's rotation draws)."""
    n = int(n)
    if n < 0 or not math.isfinite(max_angle_deg) or max_angle_deg < 0:
        raise ValueError(f"need n >= 0 and a finite max_angle_deg >= 0, got n={n}, max_angle_deg={max_angle_deg}")
    # one scalar draw equals a size-1 draw at a fifth of the cost (a Navigator reset draws one pose at a time)
    view = np.array([rng.integers(len(CANONICAL_VIEWS))]) if n == 1 else rng.integers(len(CANONICAL_VIEWS), size=n)
    return view, rng.normal(size=(n, 3)), rng.uniform(0, max_angle_deg, n)


_VIEWS = np.stack(list(CANONICAL_VIEWS.values()))


def view_rotations(view: np.ndarray, axis: np.ndarray, angle_deg: np.ndarray) -> np.ndarray:
    """(n, 3, 3) canonical views (``view`` (n,) indices into :data:`CANONICAL_VIEWS`) turned about
    ``axis`` (n, 3; normalised here) by ``angle_deg`` (n,) degrees, composed in one batch; row i is
    bit-identical to composing it alone."""
    view, axis, angle_deg = np.asarray(view), np.asarray(axis, float), np.asarray(angle_deg, float)
    if len(view) == 0:
        return np.zeros((0, 3, 3))
    norm = np.sqrt(axis[:, 0] * axis[:, 0] + axis[:, 1] * axis[:, 1] + axis[:, 2] * axis[:, 2])  # = norm of each row
    turn = axis / norm[:, None] * np.deg2rad(angle_deg)[:, None]
    return (Rotation.from_rotvec(turn) * Rotation.from_matrix(_VIEWS[view])).as_matrix()


def random_jumps(n: int, max_mm: float, max_deg: float, max_zoom_pct: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 7) physical actions (the :func:`apply_actions` form) of independent far "jumps": a translation
    uniform in the ball of radius ``max_mm`` (plane frame), a rotation by U(0, ``max_deg``) degrees about a
    uniformly random axis, and a zoom ln-uniform in ln(1 +- ``max_zoom_pct`` / 100).

    Draws, in order: (n, 3) directions, n radii, (n, 3) axes, n angles, n zooms; nothing depends on any
    earlier pose or action, so a jump is unpredictable from a clip's history.
    """
    if int(n) < 0 or not all(np.isfinite(x) and x >= 0 for x in (max_mm, max_deg, max_zoom_pct)) or max_zoom_pct >= 100:
        raise ValueError(f"need n >= 0, finite max_mm, max_deg >= 0 and 0 <= max_zoom_pct < 100, got "
                         f"n={n}, max_mm={max_mm}, max_deg={max_deg}, max_zoom_pct={max_zoom_pct}")
    n = int(n)
    direction = rng.normal(size=(n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    radius = max_mm * rng.uniform(0, 1, n) ** (1 / 3)  # uniform in the ball
    axis = rng.normal(size=(n, 3))
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-12)
    angle = rng.uniform(0, max_deg, n)
    zoom = rng.uniform(np.log(1 - max_zoom_pct / 100), np.log(1 + max_zoom_pct / 100), n)
    return np.concatenate([direction * radius[:, None], axis * angle[:, None], zoom[:, None]], 1)


@dataclass(frozen=True, eq=False)
class SlicePose:
    """A square-pixel slice plane in world space.

    Parameters
    ----------
    center : (3,) array-like
        World RAS+ mm of the image centre.
    rotation : (3, 3) array-like or scipy ``Rotation``
        Columns are the plane's right ``u``, up ``v`` and normal ``n`` in world axes;
        must be orthonormal with determinant +1 (tolerance 1e-5; re-orthonormalised).
    fov : float
        Width of the field of view along ``u`` in mm (> 0).
    """

    center: np.ndarray
    rotation: np.ndarray
    fov: float

    def __post_init__(self):
        c = np.array(self.center, dtype=np.float64).reshape(-1)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise ValueError(f"center must be 3 finite numbers (mm), got {self.center!r}")
        r = self.rotation.as_matrix() if isinstance(self.rotation, Rotation) else np.array(self.rotation, float)
        if r.shape != (3, 3) or not np.all(np.isfinite(r)):
            raise ValueError(f"rotation must be a finite 3x3 matrix, got shape {r.shape}")
        if not np.allclose(r.T @ r, np.eye(3), atol=1e-5) or np.linalg.det(r) < 0:
            raise ValueError("rotation must be orthonormal with det +1 (columns u, v, n = u x v)")
        fov = float(self.fov)
        if not np.isfinite(fov) or fov <= 0:
            raise ValueError(f"fov must be a positive number of mm, got {self.fov!r}")
        r = Rotation.from_matrix(r).as_matrix()
        c.flags.writeable = False
        r.flags.writeable = False
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "fov", fov)

    @classmethod
    def from_quaternion(cls, center, quaternion, fov: float) -> "SlicePose":
        """Build from a scalar-last (x, y, z, w) quaternion, scipy's convention."""
        return cls(center, Rotation.from_quat(quaternion).as_matrix(), fov)

    @classmethod
    def canonical(cls, view: str, center=(0.0, 0.0, 0.0), fov: float = 200.0) -> "SlicePose":
        """An axial, coronal or sagittal pose (see :data:`CANONICAL_VIEWS`)."""
        return cls(center, canonical_rotation(view), fov)

    @property
    def u(self) -> np.ndarray:
        return self.rotation[:, 0]

    @property
    def v(self) -> np.ndarray:
        return self.rotation[:, 1]

    @property
    def normal(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def quaternion(self) -> np.ndarray:
        """(4,) scalar-last unit quaternion with w >= 0."""
        q = Rotation.from_matrix(self.rotation).as_quat()
        return q if q[3] >= 0 else -q

    def pixel_to_world(self, size: tuple[int, int]) -> np.ndarray:
        """(4, 4) affine mapping homogeneous ``(row, col, 0, 1)`` to world mm for an (H, W) image."""
        return pixel_to_world_affines(self.center[None], self.rotation[None], np.array([self.fov]), size)[0]

    def world_to_pixel(self, points, size: tuple[int, int]) -> np.ndarray:
        """(..., 2) float (row, col) of world points (..., 3) mm projected along the normal onto this pose's
        (H, W) image: the inverse of :meth:`pixel_to_world` in the plane (whole numbers at pixel centres)."""
        h, w = check_size(size)
        d = np.asarray(points, float) - self.center
        s = self.fov / w
        return np.stack([(h - 1) / 2 - d @ self.v / s, (w - 1) / 2 + d @ self.u / s], -1)

    def grid(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W, 3) world mm of every pixel centre."""
        h, w = size
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        a = self.pixel_to_world(size)
        return rows[..., None] * a[:3, 0] + cols[..., None] * a[:3, 1] + a[:3, 3]

    def moved(self, action) -> "SlicePose":
        """Pose after a physical action ``(du, dv, dn mm, ru, rv, rn deg, zoom)``; see :func:`apply_actions`."""
        c, r, f = apply_actions(self.center[None], self.rotation[None], np.array([self.fov]), np.asarray(action)[None])
        return SlicePose(c[0], r[0], f[0])

    def as_array(self) -> np.ndarray:
        """(13,) float64: center (3), rotation row-major (9), fov (1)."""
        return np.concatenate([self.center, self.rotation.reshape(-1), [self.fov]])

    @classmethod
    def from_array(cls, a) -> "SlicePose":
        a = np.asarray(a, float)
        return cls(a[:3], a[3:12].reshape(3, 3), a[12])

    def __repr__(self):
        c = np.array2string(self.center, precision=2)
        return f"SlicePose(center={c} mm, normal={np.array2string(self.normal, precision=3)}, fov={self.fov:.1f} mm)"


def pack_poses(centers, rotations, fovs) -> np.ndarray:
    """Poses as flat arrays: centers (..., 3) mm, rotations (..., 3, 3), fovs (...,) mm ->
    (..., 13) float64: centre, rotation row-major, fov (the :meth:`SlicePose.as_array` layout)."""
    r = np.asarray(rotations)
    return np.concatenate([np.asarray(centers), r.reshape(*r.shape[:-2], 9), np.asarray(fovs)[..., None]], -1)


def unpack_poses(a) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_poses`: (..., 13) -> centers (..., 3), rotations (..., 3, 3), fovs (...,)."""
    a = np.asarray(a, float)
    return a[..., :3], a[..., 3:12].reshape(*a.shape[:-1], 3, 3), a[..., 12]


def apply_actions(
    centers: np.ndarray, rotations: np.ndarray, fovs: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply physical actions to a batch of poses, each in its own plane frame.

    Parameters
    ----------
    centers : (N, 3) world mm
    rotations : (N, 3, 3) columns u, v, n
    fovs : (N,) mm
    actions : (N, 7)
        ``(du, dv, dn)`` mm along the current u, v, n; ``(ru, rv, rn)`` degrees about
        the current u, v, n (a rotation vector in the plane frame); ``zoom`` =
        ln(fov_before / fov_after).

    Returns
    -------
    centers (N, 3), rotations (N, 3, 3), fovs (N,)
        The translation uses the frame *before* the rotation. The local rotation comes from
        scipy's rotation vector; the product is re-orthonormalised every step.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != 7 or actions.shape[0] != len(centers):
        raise ValueError(f"actions must have shape ({len(centers)}, 7), got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions contain NaN or inf")
    # einsum, not matmul: stacked 3x3 matmuls go through BLAS, whose threads compete with numba's.
    new_centers = centers + np.einsum("nij,nj->ni", rotations, actions[:, :3])
    local = Rotation.from_rotvec(np.deg2rad(actions[:, 3:6])).as_matrix()
    new_rotations = orthonormalize(np.einsum("nij,njk->nik", rotations, local))
    new_fovs = fovs * np.exp(-actions[:, 6])
    return new_centers, new_rotations, new_fovs


def orthonormalize(rotations: np.ndarray) -> np.ndarray:
    """(N, 3, 3) nearly orthonormal matrices -> their nearest rotations (one Newton-Schulz polar step).

    The error ``|R^T R - I|`` is squared by each step, so rounding drift from composing
    rotations never accumulates (tested over a million steps).
    """
    gram = np.einsum("nji,njk->nik", rotations, rotations)
    return np.einsum("nij,njk->nik", rotations, 1.5 * np.eye(3) - 0.5 * gram)


def pixel_to_world_affines(centers, rotations, fovs, size: tuple[int, int]) -> np.ndarray:
    """(N, 4, 4) affines mapping ``(row, col, 0, 1)`` to world mm for (H, W) images.

    Column 0 is the world step per row (``-v * s``), column 1 per column (``u * s``),
    column 2 the normal and column 3 the world position of pixel (0, 0), where
    ``s = fov / W`` mm is the pixel spacing. Pixel centres sit at half-pixel offsets,
    so the image is centred on ``center``.
    """
    (h, w), (centers, rotations, fovs) = check_size(size), check_poses(centers, rotations, fovs)
    out = np.zeros((len(fovs), 4, 4))
    _pixel_to_world_kernel(centers, rotations, fovs, h, w, out)
    return out


def pixel_to_voxel(world_to_voxel, centers, rotations, fovs, size: tuple[int, int]) -> np.ndarray:
    """(N, 3, 3) maps ``voxel = M[:, :, 0] * row + M[:, :, 1] * col + M[:, :, 2]`` for (H, W) images.

    ``world_to_voxel`` is a volume's (4, 4) inverse affine (world mm -> voxel indices); the pixel
    grid is that of :func:`pixel_to_world_affines`.  The renderers sample volumes with these maps.
    """
    inv = np.asarray(world_to_voxel, dtype=np.float64)
    if inv.shape != (4, 4):
        raise ValueError(f"world_to_voxel must be a (4, 4) affine, got shape {inv.shape}")
    (h, w), (centers, rotations, fovs) = check_size(size), check_poses(centers, rotations, fovs)
    m = np.empty((len(fovs), 3, 3))
    pixel_to_voxel_kernel(inv, centers, rotations, fovs, h, w, np.zeros(3), m)
    return m


def check_size(size) -> tuple[int, int]:
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"image size must be positive integers (H, W), got {size!r}")
    return int(h), int(w)


def check_poses(centers, rotations, fovs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centers = np.asarray(centers, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    fovs = np.asarray(fovs, dtype=np.float64).reshape(-1)
    n = len(fovs)
    if centers.shape != (n, 3) or rotations.shape != (n, 3, 3):
        raise ValueError(
            f"need centers (N, 3), rotations (N, 3, 3), fovs (N,); got {centers.shape}, {rotations.shape}, {fovs.shape}"
        )
    return centers, rotations, fovs


# The pixel grid's one definition, compiled: the renderers call it per frame, where a dozen tiny
# numpy calls would cost more than the slice (and a small ``@`` wakes BLAS threads that then spin).
@numba.njit(inline="always")
def _pixel_axis(center, u, v, fov, h, w):
    """World mm along one world axis: (step per row, step per column, pixel (0, 0)) of an (h, w) image."""
    s = fov / w
    step_col = u * s  # +u per column
    step_row = -v * s  # -v per row
    return step_row, step_col, center - step_col * ((w - 1) / 2) - step_row * ((h - 1) / 2)


@numba.njit(cache=True, nogil=True)
def _pixel_to_world_kernel(centers, rotations, fovs, h, w, out):
    for p in range(len(fovs)):
        for b in range(3):
            row, col, origin = _pixel_axis(centers[p, b], rotations[p, b, 0], rotations[p, b, 1], fovs[p], h, w)
            out[p, b, 0] = row
            out[p, b, 1] = col
            out[p, b, 2] = rotations[p, b, 2]
            out[p, b, 3] = origin
        out[p, 3, 3] = 1.0


@numba.njit(cache=True, nogil=True)
def pixel_to_voxel_kernel(inv, centers, rotations, fovs, h, w, shift, m):
    """Fill ``m`` (N, 3, 3) as :func:`pixel_to_voxel` for ``world_to_voxel = inv``, minus ``shift`` (3,) voxels."""
    for p in range(len(fovs)):
        for a in range(3):
            row = col = org = 0.0
            for b in range(3):
                step_row, step_col, origin = _pixel_axis(
                    centers[p, b], rotations[p, b, 0], rotations[p, b, 1], fovs[p], h, w
                )
                row += inv[a, b] * step_row
                col += inv[a, b] * step_col
                org += inv[a, b] * origin
            m[p, a, 0] = row
            m[p, a, 1] = col
            m[p, a, 2] = org + inv[a, 3] - shift[a]


@dataclass(frozen=True, eq=False)
class Plane:
    """An unoriented plane in world space: a point on it (mm) and its unit normal."""

    point: np.ndarray
    normal: np.ndarray

    def __post_init__(self):
        p = np.array(self.point, dtype=np.float64).reshape(-1)
        n = np.array(self.normal, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or n.shape != (3,) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(n))):
            raise ValueError("plane point and normal must be 3 finite numbers each")
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            raise ValueError("plane normal must be non-zero")
        object.__setattr__(self, "point", p)
        object.__setattr__(self, "normal", n / norm)

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(...,) unsigned distance in mm of world points (..., 3) to the plane."""
        return plane_distance(points, self.point, self.normal)

    def angle_deg(self, normals: np.ndarray) -> np.ndarray:
        """(...,) angle in degrees (0..90) between the plane and planes with unit normals (..., 3)."""
        return plane_angle_deg(normals, self.normal)

    def pose(self, fov: float = 200.0, up=(0.0, 0.0, 1.0)) -> SlicePose:
        """A SlicePose lying in this plane, centred on ``point``, with ``v`` as close to ``up`` as possible."""
        n = self.normal
        up = np.asarray(up, float)
        if abs(up @ n) > 0.99:
            up = np.array([0.0, 1.0, 0.0])
        v = up - n * (up @ n)
        v /= np.linalg.norm(v)
        return SlicePose(self.point, np.stack([np.cross(v, n), v, n], axis=1), fov)


def plane_distance(points, plane_points, plane_normals) -> np.ndarray:
    """(...,) unsigned distance in mm of world points (..., 3) to planes through ``plane_points`` (..., 3)
    with unit normals ``plane_normals`` (..., 3); the arrays broadcast (one plane or one per point)."""
    d = np.asarray(points, float) - np.asarray(plane_points, float)
    return np.abs(np.einsum("...i,...i->...", d, np.broadcast_to(plane_normals, d.shape)))


def plane_angle_deg(normals, plane_normals) -> np.ndarray:
    """(...,) angle in degrees (0..90) between planes with unit normals ``normals`` (..., 3) and
    ``plane_normals`` (..., 3), broadcast; planes are unoriented (a flipped normal is the same plane)."""
    n, m = np.broadcast_arrays(np.asarray(normals, float), np.asarray(plane_normals, float))
    return np.degrees(np.arccos(np.clip(np.abs(np.einsum("...i,...i->...", n, m)), 0.0, 1.0)))
