"""Atomic file writes: the one home for "write to a temporary name, then move into place"; and the refusal of
a run folder that holds another run (:class:`RunFolderError`, :func:`differences`).

A reader never sees a half-written file: the data go to a temporary file in the destination's folder
(same file system), are flushed to disk, and ``os.replace`` swaps it in. On any error the temporary
file is removed and the destination is left as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_path", "write_atomic", "write_json_atomic", "RunFolderError", "differences"]


def atomic_path(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it onto ``path``.

    ``write`` may use any library that writes to a path (``torch.save``, ``imageio``, ``savefig``);
    the temporary name keeps ``path``'s suffixes so such libraries pick the right format.
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or str encoded as UTF-8) to ``path`` atomically."""
    payload = data.encode() if isinstance(data, str) else bytes(data)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(payload)

    return atomic_path(path, write)


def _jsonable(x: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (numpy values become lists/numbers)."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=_jsonable) + "\n")


class RunFolderError(ValueError):
    """An output folder holds another run (other settings), or one that cannot be continued as asked; the
    message says what differs and what to do.  CLIs print it as one line."""


def differences(saved: dict, now: dict) -> list[str]:
    """Where two settings dicts differ, as ``name: saved -> now`` (nested dicts per key: ``ppo.gamma: 0.99 -> 0.9``)."""
    out = []
    for k in sorted(saved.keys() | now.keys(), key=str):
        x, y = saved.get(k), now.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += [f"{k}.{d}" for d in differences(x, y)]
        elif x != y:
            out.append(f"{k}: {x!r} -> {y!r}")
    return out
