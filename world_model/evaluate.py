"""Entry point ``python -m world_model.evaluate``: see :mod:`world_model.evaluation.cli`."""

from world_model.evaluation.cli import main

if __name__ == "__main__":
    main()
