"""Deprecated entry point (kept one release): ``python -m world_model.evaluate`` runs
``python -m world_model.evaluation`` (:mod:`world_model.evaluation.cli`) with a warning."""


from world_model.evaluation.cli import main as _main
from navgym.deprecation import warn_deprecated


def main(argv=None) -> dict:
    """:func:`world_model.evaluation.cli.main`, after a ``DeprecationWarning``."""
    warn_deprecated("python -m world_model.evaluate", "python -m world_model.evaluation")
    return _main(argv)


if __name__ == "__main__":
    main()
