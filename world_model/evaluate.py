"""Deprecated entry point (kept one release): ``python -m world_model.evaluate`` runs
``python -m world_model.evaluation`` (:mod:`world_model.evaluation.cli`) with a warning."""

import warnings

from world_model.evaluation.cli import main as _main


def main(argv=None) -> dict:
    """:func:`world_model.evaluation.cli.main`, after a ``DeprecationWarning``."""
    warnings.warn("python -m world_model.evaluate is deprecated; use python -m world_model.evaluation",
                  DeprecationWarning, stacklevel=2)
    return _main(argv)


if __name__ == "__main__":
    main()
