"""Deprecated module name (kept one release): the held-out episodes live in :mod:`agents.episodes`."""

from navgym.deprecation import warn_deprecated
from navgym.stats import bootstrap_median, wilson  # noqa: F401  (their home now)

from .episodes import *  # noqa: F401,F403
from .episodes import __all__  # noqa: F401

warn_deprecated("agents.evaluate", "agents.episodes")
