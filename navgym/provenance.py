"""Where a result came from: package versions, git commit and host (:func:`versions`), and the machine's load
(:func:`load_average`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["versions", "load_average"]


def _git_commit() -> str:
    """``GIT_COMMIT`` when set (a copy of the tree on a lent device may carry a stale .git), else the short
    commit of the checkout holding this file, else ``unknown``."""
    commit = os.environ.get("GIT_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip()
        except OSError:
            pass
    return commit or "unknown"


def versions(packages=("numpy",)) -> dict:
    """``python``, ``platform``, ``machine``, ``node`` (host name), ``git_commit`` and the installed version of
    each of ``packages`` (None where it is not installed)."""
    out = {"python": platform.python_version(), "platform": sys.platform, "machine": platform.machine(),
           "node": platform.node(), "git_commit": _git_commit()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as ``"['0.52', '0.61', '0.70']"`` (``n/a`` without /proc/loadavg)."""
    try:
        return repr(Path("/proc/loadavg").read_text().split(" ")[:3])
    except OSError:
        return "n/a"
