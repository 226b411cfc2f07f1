"""Subject world mm <-> template mm: an affine composed with a smooth cubic B-spline displacement.

``WarpTransform`` maps subject world mm ``x`` to template mm ``y``::

    t = inv(grid_affine) @ x                    # continuous voxel index on the subject grid
    y = matrix @ x + offset + d(t)              # d: cubic B-spline, control points every
                                                #    `spacing` voxels, coefficients in template mm

``d`` is C2-smooth and tends to 0 outside its lattice; its coefficients are small enough that
``x -> y`` is a contraction-perturbed affine, so it is invertible and :meth:`inverse` (template ->
subject) converges by fixed-point iteration ``x = A^-1 (y - offset - d(t(x)))`` to ~1e-9 mm.
The forward direction (what the env's ground truth uses) is explicit and exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["WarpTransform", "bspline_weights"]


def bspline_weights(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline: for lattice coordinates u (N,), the first control index (N,) int and 4 weights (N, 4)."""
    base = np.floor(u).astype(np.int64) - 1
    f = u - np.floor(u)
    w = np.stack(
        [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6], axis=-1
    )
    return base, w


def basis_matrix(n: int, step: float, n_ctrl: int) -> np.ndarray:
    """(n, n_ctrl) dense B-spline basis: voxel indices 0..n-1 -> weights of the control points."""
    base, w = bspline_weights(np.arange(n) / step + 1.0)
    out = np.zeros((n, n_ctrl))
    for a in range(4):
        idx = base + a
        ok = (idx >= 0) & (idx < n_ctrl)
        out[np.flatnonzero(ok), idx[ok]] = w[ok, a]
    return out


@dataclass(frozen=True, eq=False)
class WarpTransform:
    """Subject world mm -> template mm (callable on (N, 3) arrays); see the module docstring.

    Attributes
    ----------
    matrix : (3, 3), offset : (3,)
        Affine part, subject world mm -> template mm.
    grid_affine : (4, 4)
        Voxel -> subject world mm of the grid the displacement lattice lives on.
    spacing : (3,) float
        Control-point spacing in voxels along i, j, k; control point c sits at voxel (c - 1) * spacing.
    coefficients : (Ci, Cj, Ck, 3)
        Displacement control values in template mm.
    """

    matrix: np.ndarray
    offset: np.ndarray
    grid_affine: np.ndarray
    spacing: np.ndarray
    coefficients: np.ndarray

    def __post_init__(self):
        for name in ("matrix", "offset", "grid_affine", "spacing", "coefficients"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.coefficients.ndim != 4 or self.coefficients.shape[-1] != 3:
            raise ValueError(f"coefficients must be (Ci, Cj, Ck, 3), got {self.coefficients.shape}")
        object.__setattr__(self, "_grid_inv", np.linalg.inv(self.grid_affine))
        object.__setattr__(self, "_matrix_inv", np.linalg.inv(self.matrix))

    # --- evaluation -------------------------------------------------------------------------
    def displacement(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) template-mm displacement d at subject world points (N, 3)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        t = pts @ self._grid_inv[:3, :3].T + self._grid_inv[:3, 3]
        return _displacement(t / self.spacing + 1.0, self.coefficients)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Subject world mm (..., 3) -> template mm (..., 3) (exact)."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 3)
        out = flat @ self.matrix.T + self.offset + self.displacement(flat)
        return out.reshape(pts.shape)

    def inverse(self, points: np.ndarray, tol: float = 1e-9, max_iter: int = 100) -> np.ndarray:
        """Template mm (..., 3) -> subject world mm (..., 3) by fixed-point iteration (error < ``tol`` mm)."""
        y = np.asarray(points, dtype=np.float64)
        flat = y.reshape(-1, 3) - self.offset
        x = flat @ self._matrix_inv.T
        for _ in range(max_iter):
            new = (flat - self.displacement(x)) @ self._matrix_inv.T
            done = np.max(np.abs(new - x), initial=0.0) < tol
            x = new
            if done:
                break
        else:
            raise RuntimeError("WarpTransform.inverse did not converge (warp not invertible?)")
        return x.reshape(y.shape)

    def jacobian(self, points: np.ndarray, step: float = 1e-3) -> np.ndarray:
        """(N, 3, 3) d template / d subject at subject world points (central differences)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cols = [(self(pts + step * e) - self(pts - step * e)) / (2 * step) for e in np.eye(3)]
        return np.stack(cols, axis=-1)

    # --- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready parameters (floats round-trip exactly through ``json``)."""
        return {
            "type": "affine+bspline",
            "matrix": self.matrix.tolist(),
            "offset": self.offset.tolist(),
            "grid_affine": self.grid_affine.tolist(),
            "spacing_vox": self.spacing.tolist(),
            "coefficients_shape": list(self.coefficients.shape),
            "coefficients": self.coefficients.reshape(-1).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "WarpTransform":
        if d.get("type") != "affine+bspline":
            raise ValueError(f"unknown transform type {d.get('type')!r}")
        coef = np.asarray(d["coefficients"], dtype=np.float64).reshape(d["coefficients_shape"])
        return cls(d["matrix"], d["offset"], d["grid_affine"], d["spacing_vox"], coef)


@numba.njit(cache=True, nogil=True)
def _displacement(u, coef):
    """Cubic B-spline displacement at lattice coordinates u (N, 3); zero coefficients beyond the lattice."""
    n = u.shape[0]
    ci, cj, ck = coef.shape[0], coef.shape[1], coef.shape[2]
    out = np.zeros((n, 3))
    wi = np.empty(4)
    wj = np.empty(4)
    wk = np.empty(4)
    for p in range(n):
        bi = int(np.floor(u[p, 0])) - 1
        bj = int(np.floor(u[p, 1])) - 1
        bk = int(np.floor(u[p, 2])) - 1
        _weights(u[p, 0] - np.floor(u[p, 0]), wi)
        _weights(u[p, 1] - np.floor(u[p, 1]), wj)
        _weights(u[p, 2] - np.floor(u[p, 2]), wk)
        for a in range(4):
            ia = bi + a
            if ia < 0 or ia >= ci:
                continue
            for b in range(4):
                jb = bj + b
                if jb < 0 or jb >= cj:
                    continue
                wab = wi[a] * wj[b]
                for c in range(4):
                    kc = bk + c
                    if kc < 0 or kc >= ck:
                        continue
                    w = wab * wk[c]
                    for d in range(3):
                        out[p, d] += w * coef[ia, jb, kc, d]
    return out


@numba.njit(inline="always")
def _weights(f, w):
    w[0] = (1 - f) ** 3 / 6
    w[1] = (3 * f**3 - 6 * f**2 + 4) / 6
    w[2] = (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6
    w[3] = f**3 / 6
