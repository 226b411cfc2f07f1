"""The one device resolution: ``--device auto | cpu | cuda | cuda:N`` -> :class:`torch.device`."""

from __future__ import annotations

import re

import torch

__all__ = ["resolve_device", "DEVICE_HELP"]

#: the ``--help`` text of every ``--device`` option
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def resolve_device(spec: str = "auto", name: str = "device") -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.  Raises
    ``ValueError`` naming the argument ``name`` for any other spec."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(spec, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", spec):
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return torch.device(spec)
