"""Feature standardisation, the one rule of the evaluation's probes and the agents' frozen encoders.

Per dimension ``(x - mean) / std`` with the mean and the population std (ddof 0) of a training
sample; a dimension whose std is at most ``EPS * (1 + |mean|)`` (constant up to rounding) keeps
std 1, so it is only centred.  :func:`statistics` works on NumPy arrays and torch tensors alike;
:func:`save_statistics` / :func:`load_statistics` keep them as plain arrays (``.npz``, no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from navgym.files import atomic_path

__all__ = ["EPS", "statistics", "Standardiser", "save_statistics", "load_statistics"]

#: relative threshold below which a dimension counts as constant (std <= EPS * (1 + |mean|))
EPS = 1e-6


def statistics(x, axis=0, keepdims: bool = True):
    """(mean, std) of ``x`` (NumPy array or torch tensor) over ``axis``, std 1 where a dimension is constant."""
    if isinstance(x, torch.Tensor):
        mean = x.mean(axis, keepdim=keepdims)
        std = x.std(axis, unbiased=False, keepdim=keepdims)
        return mean, torch.where(std > EPS * (1 + mean.abs()), std, torch.ones_like(std))
    mean = x.mean(axis=axis, keepdims=keepdims)
    std = x.std(axis=axis, keepdims=keepdims)
    return mean, np.where(std > EPS * (1 + np.abs(mean)), std, 1.0)


class Standardiser:
    """z-scores with the :func:`statistics` of ``x`` (float64) over ``axis``."""

    def __init__(self, x: np.ndarray, axis=0):
        self.mean, self.std = statistics(np.asarray(x, np.float64), axis)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


def save_statistics(path, mean, std, **about) -> None:
    """Write ``mean`` and ``std`` (D,) to ``path`` (.npz, atomically) with ``about`` (plain values saying
    what they standardise, e.g. the encoder spec and the sample)."""
    arrays = {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in (("mean", mean), ("std", std))}
    atomic_path(Path(path), lambda tmp: np.savez(tmp, **arrays, **{k: np.asarray(v) for k, v in about.items()}))


def load_statistics(path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mean, std, about) saved by :func:`save_statistics`; ``ValueError`` naming ``path`` when they are not
    readable plain arrays, not finite, with std <= 0, or not ``dim`` wide."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        mean, std = data.pop("mean"), data.pop("std")
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not readable standardisation statistics ({e})") from None
    width = mean.shape[0] if mean.ndim == 1 else None
    if mean.ndim != 1 or std.shape != mean.shape or (dim is not None and width != int(dim)) \
            or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"{path}: invalid standardisation statistics (shapes {mean.shape}, {std.shape}; need "
                         f"({dim if dim is not None else 'D'},) each, finite, std > 0)")
    return mean, std, {k: v.item() if v.ndim == 0 else v.tolist() for k, v in data.items()}
