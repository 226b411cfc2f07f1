"""The one device resolution: ``--device auto | cpu | cuda | cuda:N`` -> :class:`torch.device`, and the
``device`` field every config with a ``--device`` option declares."""

from __future__ import annotations

import argparse
import re

import torch

from navgym.configs import config_field

__all__ = ["resolve_device", "device_field"]


def resolve_device(spec: str = "auto", name: str = "device") -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.  Raises
    ``ValueError`` naming the argument ``name`` for any other spec."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(spec, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", spec):
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return torch.device(spec)


def _device_option(text: str) -> str:
    """argparse type of a ``--device`` option: ``text`` when :func:`resolve_device` accepts it."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def device_field(default: str = "auto"):
    """A config's ``device`` field: its ``--help`` text, and a ``--device`` option that argparse refuses (exit 2,
    naming it) unless :func:`resolve_device` accepts it."""
    return config_field(default, "auto (CUDA when available), cpu, cuda or cuda:N", parse=_device_option)
