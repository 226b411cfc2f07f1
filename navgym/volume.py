"""Volumes in world space: a 3D image array plus its voxel-to-world affine.

World space is RAS+ in millimetres, as defined by the NIfTI affine (nibabel's
convention): x grows to the subject's Right, y to Anterior, z to Superior.
A volume keeps its native voxel grid and affine; nothing here assumes RAS
voxel order, axis-aligned axes or isotropic spacing.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np

__all__ = ["WORLD_LIMIT_MM", "Volume", "VolumeError", "load_volume", "normalize_intensity"]

WORLD_LIMIT_MM = 10_000.0
"""Every voxel grid lies within +-10 m of the world origin (a larger value means wrong units or a broken affine)."""


class VolumeError(ValueError):
    """A volume, label map or affine that cannot be used (4D, empty, NaN, singular, unreadable)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image with its voxel-to-world affine (like TorchIO's image-with-affine).

    Attributes
    ----------
    data : (I, J, K) float32 array
        Intensities, normalised to [0, 1] by :func:`load_volume` (read-only).
    affine : (4, 4) float64 array
        Maps voxel indices ``(i, j, k, 1)`` to world RAS+ millimetres.
    labels : (I, J, K) uint8 array or None
        Optional label map on the same voxel grid (e.g. 0 background, 1 CSF, 2 GM, 3 WM).
    name : str
        Identifier used in ``info`` and logs.
    """

    data: np.ndarray
    affine: np.ndarray
    labels: np.ndarray | None = None
    name: str = "volume"
    inverse_affine: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        data = np.asarray(self.data)
        _check_numeric(data, self.name)
        if data.ndim != 3 or min(data.shape) < 2:
            raise VolumeError(f"{self.name}: need a 3D array with at least 2 voxels per axis, got shape {data.shape}")
        affine = validate_affine(self.affine, self.name)
        corners = voxel_to_world(affine, np.array(np.meshgrid(*[[0, n - 1] for n in data.shape])).reshape(3, -1).T)
        reach = float(np.abs(corners).max())
        if reach > WORLD_LIMIT_MM:
            raise VolumeError(
                f"{self.name}: the voxel grid reaches {reach:g} mm from the world origin (limit "
                f"{WORLD_LIMIT_MM:g} mm); the affine must map voxels to millimetres (check its scale and translation)"
            )
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != data.shape:
                raise VolumeError(f"{self.name}: label map shape {labels.shape} != image shape {data.shape}")
            object.__setattr__(self, "labels", _readonly(labels))
        object.__setattr__(self, "data", _readonly(data))
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "inverse_affine", np.linalg.inv(affine))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel sizes in mm along the voxel axes i, j, k."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def center(self) -> np.ndarray:
        """(3,) world mm of the voxel grid's centre."""
        return voxel_to_world(self.affine, (np.array(self.shape) - 1) / 2.0)

    @functools.cached_property
    def brain_center(self) -> np.ndarray:
        """(3,) world mm: intensity-weighted centroid of the voxels above 0.1 (every 2nd voxel per axis;
        the grid's centre for an all-dark volume).  Computed once per volume."""
        data = self.data[::2, ::2, ::2]
        weights = np.where(data > 0.1, data, 0.0)
        ijk = np.stack(np.nonzero(weights), axis=1) * 2.0
        w = weights[weights > 0]
        center_vox = (ijk * w[:, None]).sum(0) / w.sum() if w.size else (np.array(self.shape) - 1) / 2
        center = voxel_to_world(self.affine, center_vox)
        center.flags.writeable = False
        return center

    @property
    def extent_mm(self) -> float:
        """Length in mm of the grid's diagonal (an upper bound on any useful field of view)."""
        return float(np.linalg.norm(self.spacing * (np.array(self.shape) - 1)))

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) world mm to (..., 3) continuous voxel indices."""
        return voxel_to_world(self.inverse_affine, points)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(...,) bool: whether world points (..., 3) lie within the voxel grid."""
        ijk = self.world_to_voxel(points)
        return np.all((ijk >= 0) & (ijk <= np.array(self.shape) - 1), axis=-1)


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine to (..., 3) points (voxel -> world, or world -> voxel with the inverse)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def validate_affine(affine, name: str = "volume") -> np.ndarray:
    """Return a (4, 4) float64 copy of ``affine`` or raise :class:`VolumeError` if unusable."""
    a = np.array(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise VolumeError(f"{name}: affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise VolumeError(f"{name}: affine contains NaN or inf")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise VolumeError(f"{name}: affine's last row must be [0, 0, 0, 1], got {a[3]}")
    # scale-invariant: compare the singular values (voxel axis lengths) with the largest, so tiny
    # voxels are fine but a collapsed axis is not; the absolute bound catches overflowing scales
    sv = np.linalg.svd(a[:3, :3], compute_uv=False)
    if sv[0] == 0 or sv[-1] < 1e-6 * sv[0]:
        raise VolumeError(f"{name}: affine is not invertible (singular values {np.array2string(sv, precision=3)})")
    if sv[0] > WORLD_LIMIT_MM:
        raise VolumeError(f"{name}: affine scales a voxel to {sv[0]:g} mm (limit {WORLD_LIMIT_MM:g} mm)")
    a.flags.writeable = False
    return a


def normalize_intensity(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Robustly rescale to float32 [0, 1].

    Percentiles ``low``/``high`` are taken over the non-zero (foreground) voxels, so
    empty background and a few bright outliers do not compress the contrast; values
    outside are clipped.
    """
    data = np.asarray(data, dtype=np.float32)
    fg = data[data != 0]
    if fg.size == 0:
        raise VolumeError("volume is empty: every voxel is zero")
    if data.min() == data.max():
        raise VolumeError(f"volume has no contrast: every voxel is {data.min():g}")
    lo, hi = (float(x) for x in np.percentile(fg, [low, high]))
    lo = min(lo, 0.0) if data.min() >= 0 else lo
    if hi <= lo:
        raise VolumeError(f"volume has no contrast: robust range [{lo:g}, {hi:g}]")
    out = ((data - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)
    np.clip(out, 0.0, 1.0, out=out)
    return out


VolumeSource = Union[str, os.PathLike, nib.spatialimages.SpatialImage, np.ndarray, Volume]


def load_volume(
    source: VolumeSource,
    affine: np.ndarray | None = None,
    labels: VolumeSource | None = None,
    *,
    name: str | None = None,
    normalize: bool = True,
    nan: str = "raise",
) -> Volume:
    """Load a 3D volume from a NIfTI path, a nibabel image, or an array plus affine.

    Parameters
    ----------
    source : path, nibabel image, (I, J, K) array or Volume
        The image. A 4D image whose trailing axes have length 1 is squeezed; any other
        4D image raises :class:`VolumeError` (pick a volume first).
    affine : (4, 4) array, optional
        Voxel -> world RAS+ mm. Required when ``source`` is an array, ignored otherwise.
    labels : path, nibabel image or (I, J, K) int array, optional
        Label map on the same voxel grid (integers 0..255).
    name : str, optional
        Identifier (default: the file name without extension).
    normalize : bool
        Rescale intensities to [0, 1] with :func:`normalize_intensity` (default True).
    nan : {"raise", "zero"}
        What to do with NaN/inf voxels: raise (default) or replace with 0. An all-NaN
        volume always raises.

    Returns
    -------
    Volume
    """
    if nan not in ("raise", "zero"):
        raise ValueError(f"nan must be 'raise' or 'zero', got {nan!r}")
    if isinstance(source, Volume):
        return source
    data, aff, default_name = _read(source, affine, "image")
    name = name or default_name
    _check_numeric(data, name)
    data = _squeeze_3d(data, name)
    if data.size == 0:
        raise VolumeError(f"{name}: volume is empty (shape {data.shape})")
    if min(data.shape) < 2:
        raise VolumeError(f"{name}: volume is too small: need at least 2 voxels per axis, got shape {data.shape}")
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        raise VolumeError(f"{name}: every voxel is NaN or inf")
    if not finite.all():
        if nan != "zero":
            raise VolumeError(
                f"{name}: {int((~finite).sum())} NaN/inf voxels; pass nan='zero' to replace them with 0"
            )
        data = np.where(finite, data, 0.0).astype(np.float32)
    if normalize:
        try:
            data = normalize_intensity(data)
        except VolumeError as e:
            raise VolumeError(f"{name}: {e}") from None
    label_data = None
    if labels is not None:
        label_data, label_aff, _ = _read(labels, aff, "labels")
        _check_numeric(label_data, f"{name} labels")
        label_data = _squeeze_3d(label_data, f"{name} labels")
        if label_aff is not aff and not np.allclose(label_aff, aff, atol=1e-4):
            raise VolumeError(f"{name}: label map affine differs from the image affine (different grids)")
        if not np.all(np.isfinite(label_data)) or np.any(label_data < 0) or np.any(label_data > 255):
            raise VolumeError(f"{name}: labels must be finite integers in 0..255")
        if not np.issubdtype(label_data.dtype, np.integer) and not np.allclose(label_data, np.round(label_data)):
            raise VolumeError(f"{name}: labels must be integers")
        label_data = np.asarray(np.round(label_data), dtype=np.uint8)
    return Volume(data=data, affine=aff, labels=label_data, name=name)


def _read(source, affine, what: str):
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise VolumeError(f"{what} file not found: {path}")
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except Exception as e:  # nibabel raises many types for corrupt files
            raise VolumeError(f"cannot read {what} file {path}: {type(e).__name__}: {e}") from e
        return data, validate_affine(img.affine, path.name), _stem(path)
    if isinstance(source, nib.spatialimages.SpatialImage):
        return np.asanyarray(source.dataobj), validate_affine(source.affine, what), what
    if isinstance(source, np.ndarray):
        if affine is None:
            raise VolumeError(f"{what} given as an array needs an affine (voxel -> world RAS+ mm)")
        return source, validate_affine(affine, what), what
    raise VolumeError(f"cannot load {what} from {type(source).__name__}; give a path, nibabel image or array")


def _check_numeric(data: np.ndarray, name: str) -> None:
    """Refuse complex, RGB (structured), string and object voxel data with a message naming ``name``."""
    kind = np.asarray(data).dtype.kind if not hasattr(data, "dtype") else data.dtype.kind
    if kind == "c":
        raise VolumeError(f"{name}: voxel data are complex-valued; pass np.abs(data) (magnitude) or data.real")
    if kind == "V":
        raise VolumeError(f"{name}: voxel data are RGB/structured ({data.dtype}); convert to one grey channel first")
    if kind not in "biuf":
        raise VolumeError(f"{name}: voxel data must be numbers, got dtype {data.dtype}")


def _squeeze_3d(data: np.ndarray, name: str) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{name}: need a 3D volume, got {data.ndim}D with shape {data.shape}")
    return data


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".mgz", ".img", ".hdr"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a
