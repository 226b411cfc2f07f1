"""Reading world-model checkpoints: the one home for ``torch.load`` of a file ``world_model.train`` wrote.

A checkpoint is a plain dict of tensors, numbers, strings and containers (at least ``config`` and
``model``), loaded with ``torch.load(weights_only=True)``, so a file that would need arbitrary code
to unpickle is refused.  Every failure names the file.
"""

from __future__ import annotations

import os
import pickle

import torch

__all__ = ["load_checkpoint", "REQUIRED_ENTRIES"]

REQUIRED_ENTRIES = ("config", "model")


def load_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict stored at ``path`` (``torch.load(weights_only=True)``).

    Raises ``FileNotFoundError`` (no such file), ``IsADirectoryError`` (a folder), or ``ValueError``
    for a truncated or corrupt file, a file that is not plain weights, or a dict without the
    entries of a navgym checkpoint; each message names ``path``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file (world_model.train writes <out>/last.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [x.strip() for x in str(e).splitlines() if "unsupported global" in x.lower()] or [type(e).__name__]
        reason = lines[0]
        raise ValueError(f"{path}: refused: not a plain-weights checkpoint ({reason})") from e
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for truncated or garbled files
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_ENTRIES):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a navgym world-model checkpoint (needs entries {list(REQUIRED_ENTRIES)}, found {found})")
    return state
