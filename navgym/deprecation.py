"""Renamed public names keep working for one release: one warning and one module ``__getattr__``.

``warn_deprecated("old", "new")`` warns with a ``DeprecationWarning`` naming both; a module whose names moved
sets ``__getattr__ = moved_names(__name__, {"old_name": "package.module.new_name"})``; a function whose keyword
argument was renamed is decorated with ``@renamed_keyword("old", "new")``.
"""

from __future__ import annotations

import functools
import importlib
import warnings

__all__ = ["warn_deprecated", "moved_names", "renamed_keyword"]


def warn_deprecated(old: str, new: str, stacklevel: int = 2) -> None:
    """A ``DeprecationWarning`` "``old`` is deprecated; use ``new``", attributed ``stacklevel`` frames above the
    caller of this function (2: the caller's caller, the code that used the old name)."""
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel + 1)


def moved_names(module: str, moved: dict[str, str], fallback=None):
    """A module ``__getattr__``: each old attribute of ``moved`` is the object at its new dotted path (imported
    on first use), with a warning; other names go to ``fallback(name)`` (e.g. lazy imports) or raise
    AttributeError."""
    def __getattr__(name: str):
        if name in moved:
            target = moved[name]
            warn_deprecated(f"{module}.{name}", target)
            home, _, attr = target.rpartition(".")
            return getattr(importlib.import_module(home), attr)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__


def renamed_keyword(old: str, new: str):
    """Decorator: the function's keyword argument ``new`` is also accepted as ``old``, its previous name, with a
    warning naming ``new`` (both at once: ``TypeError``)."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}: give {new}= alone ({old}= is its deprecated name)")
                warn_deprecated(f"{fn.__name__}({old}=...)", f"{new}=")
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return call
    return wrap
