"""Deprecated module name (kept one release): the held-out episodes live in :mod:`agents.episodes`."""

import warnings

from .episodes import *  # noqa: F401,F403
from .episodes import __all__  # noqa: F401
from navgym.stats import bootstrap_median, wilson  # noqa: F401  (their home now)

warnings.warn("agents.evaluate is deprecated; import from agents.episodes", DeprecationWarning, stacklevel=2)
