"""``python -m world_model.evaluation``: see :mod:`world_model.evaluation.cli`."""

from world_model.evaluation.cli import main

if __name__ == "__main__":
    main()
